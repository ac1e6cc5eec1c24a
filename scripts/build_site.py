"""Build the offline course website: every notebook with its stored outputs, the course map, notation and references.

    python scripts/build_site.py            # or: make site; open build/site/index.html

Nothing is executed: the pages show the outputs stored in ``notebooks/*.ipynb``, the ones nbval checks.
The site needs no network when it is read: MathJax comes from the ``jupyter-server-mathjax`` package
(installed from PyPI), Sphinx's theme ships its own assets, and no widget JavaScript is loaded.

Sources: ``site/`` (Sphinx's ``conf.py``, the index, the notation page), ``README.md`` (its course map is
included in the index), ``REFERENCES.md``, ``TEACHING.md`` and the notebooks. They are staged in ``build/site-src``, where each
notebook is copied with its widget outputs replaced (see :func:`static_notebook`), and Sphinx writes
``build/site``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ('<p class="widget-note"><em>An interactive widget is here when the notebook runs in Jupyter '
               "(or on the classroom demo page, <code>make demo</code>). The static figure drawn by the same "
               "function is next to it.</em></p>")


def widget_models(nb: nbformat.NotebookNode) -> dict[str, dict]:
    """The notebook's stored widget state: model id -> {model_name, state}."""
    widgets = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return widgets.get("state", {})


def is_progress_bar(model_id: str, models: dict[str, dict]) -> bool:
    """True if the widget is (or contains) a progress bar: tqdm's HBox(HTML, FloatProgress, HTML)."""
    model = models.get(model_id)
    if model is None:
        return False
    if model["model_name"] in ("FloatProgressModel", "IntProgressModel"):
        return True
    children = model["state"].get("children", [])
    return any(is_progress_bar(child.removeprefix("IPY_MODEL_"), models) for child in children)


def static_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` for a static page.

    A widget cannot run without a kernel: a progress bar's output is dropped (its stored text is the bar at
    0 %), any other widget's output becomes a short note. The widget state in the metadata is removed, so no
    page asks for the widget manager's JavaScript. ``# NBVAL_...`` markers (for the tests) are taken off the
    code shown.
    """
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    models = widget_models(nb)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = cell.source.split("\n")
        cell.source = "\n".join(line for line in lines if not line.startswith("# NBVAL_"))
        outputs = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                outputs.append(output)
            elif not is_progress_bar(view["model_id"], models):
                outputs.append(nbformat.v4.new_output("display_data", data={"text/html": WIDGET_NOTE}))
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return nb


def mathjax_dir() -> Path:
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise SystemExit("the site needs MathJax from the jupyter-server-mathjax package: "
                         "pip install -e '.[site]' (or make site, which installs it)") from None
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def stage(src: Path) -> int:
    """Copy the site's sources into ``src``; returns the number of notebooks staged."""
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ROOT / "site", src, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "README.md", src / "README.md")
    shutil.copy(ROOT / "REFERENCES.md", src / "references.md")
    shutil.copy(ROOT / "TEACHING.md", src / "teaching.md")
    shutil.copytree(mathjax_dir(), src / "_static" / "mathjax")
    (src / "notebooks").mkdir()
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for path in notebooks:
        nbformat.write(static_notebook(nbformat.read(path, as_version=4)), src / "notebooks" / path.name)
    return len(notebooks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "build" / "site"), help="where the HTML goes")
    p.add_argument("--src", default=str(ROOT / "build" / "site-src"), help="where the sources are staged")
    args = p.parse_args()
    start = time.perf_counter()
    n = stage(Path(args.src))
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going", args.src, args.out]
    result = subprocess.run(command)
    if result.returncode != 0:
        raise SystemExit(f"sphinx-build failed (exit {result.returncode}): {' '.join(command)}")
    pages = len(list(Path(args.out).rglob("*.html"))) - len(list(Path(args.out).glob("_*/**/*.html")))
    print(f"site: {n} notebooks, {pages} pages in {args.out} ({time.perf_counter() - start:.1f} s); "
          f"open {Path(args.out) / 'index.html'}")


if __name__ == "__main__":
    main()
