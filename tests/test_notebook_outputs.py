"""The stored notebook outputs that nbval compares print no round-off residue.

nbval compares a cell's printed text with the stored text, character for character.
A float64 check whose residue is printed (``6.2e-15``) passes on the CPU that stored it
and fails on another CPU or thread count, where the last bits differ. The rule (README,
Development): assert a bound and print the bound. This test reads every notebook's stored
outputs and fails on a cell that nbval compares and that prints a number below 1e-9.
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# A number written with an exponent of -10 or below, e.g. 3.8e-12, 5e-13, 1.0E-16 -- unless it
# follows "<": then it is the bound a cell asserted ("agrees to < 1e-10"), which is what to print.
TINY = re.compile(r"(?<![\w.<])(?<!< )\d(?:\.\d+)?[eE]-0*(?:1\d|[2-9]\d|\d{3,})\b")
IGNORED = ("NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP")


def compared_outputs(path: Path) -> list[tuple[int, str]]:
    """(nbval's cell number, printed text) for each code cell whose output nbval compares."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    out = []
    for i, cell in enumerate(cells):  # nbval numbers code cells from 0: "Cell i"
        if any(marker in "".join(cell["source"]) for marker in IGNORED):
            continue
        text = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))
        out.append((i, text))
    return out


def test_the_pattern_catches_residues_and_spares_ordinary_numbers():
    for residue in ("max |a - b| = 6.2e-15", "gap 3.8e-12,", "(1E-10)", "-5.7e-13 -> timestep -1", "1.0e-100"):
        assert TINY.search(residue), residue
    for ok in ("lr 1e-3", "alpha_bar[T-1]=4.04e-05", "2.43e-09", "FD 0.421", "0.0e+00", "agrees to < 1e-10", "gap <1e-12"):
        assert not TINY.search(ok), ok


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_compared_output_prints_a_round_off_residue(path):
    bad = [f"Cell {i}: {TINY.search(text).group(0)!r}" for i, text in compared_outputs(path) if TINY.search(text)]
    assert not bad, (
        f"{path.name} stores round-off residues in outputs that nbval compares ({', '.join(bad)}); "
        "they differ between CPUs. Assert a bound and print the bound instead (README, Development)."
    )
