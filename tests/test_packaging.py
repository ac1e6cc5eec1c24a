"""pyproject.toml (pip users) and environment.yml (conda users) list the same packages with the same lower bounds."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # pip name -> conda-forge name where they differ

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")


def _split(req: str) -> tuple[str, str | None]:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?.*", req)
    assert m, f"cannot parse requirement {req!r}"
    return m.group(1).lower(), m.group(2)


def _pyproject_requirements() -> dict[str, str | None]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return dict(_split(r) for r in reqs)


def _conda_requirements() -> dict[str, str | None]:
    out = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.fullmatch(r"\s{2}- ([A-Za-z0-9_.\-]+)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?\s*", line)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_every_pyproject_dependency_is_in_environment_yml_with_the_same_lower_bound():
    conda = _conda_requirements()
    for name, bound in _pyproject_requirements().items():
        conda_name = CONDA_NAMES.get(name, name)
        assert conda_name in conda, f"{name} is in pyproject.toml but not in environment.yml (as {conda_name})"
        assert conda[conda_name] == bound, f"{name}: pyproject says >={bound}, environment.yml says >={conda[conda_name]}"


def test_torch_is_a_range_not_a_pin():
    assert _pyproject_requirements()["torch"] is not None
    assert "==" not in (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[0]


def test_python_versions_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    low = re.search(r">=\s*([0-9.]+)", project["requires-python"]).group(1)
    assert _conda_requirements()["python"] == low
