"""Every number that a notebook's text quotes is a number that the notebook prints.

A sentence such as "FD falls from 4.60 to 4.88" or "the judge is right on 98.3 % of digits" is a claim
about the notebook's own results. When a model, a seed or a figure changes, the printed numbers move
and the text must move with them. This test reads each notebook's stored outputs (the run that nbval
compares against) and fails on a number in a markdown cell that no code cell prints.

The rules it applies, which are also the rules for writing the course's text:

* Checked: every number in a markdown cell written with a decimal point (``0.983``, ``4.6``) and every
  percentage (``46 %``, ``4.4%``). Plain integers are not checked (step counts, years and sizes are
  too common to tell apart from claims); quote a measured quantity with its decimals.
* Checked inside inline math too (``$0.017 \\times 1{,}024 \\approx 17$`` quotes 0.017), but not in displayed
  equations (``$$...$$``), sub- and superscripts (``\\bar\\alpha_{0.5}``, ``10^{-4}``), code (`` `...` `` and fenced
  blocks), link targets, or references such as "sec. 4.3", "eqs. 2.81-2.82", "Table 2", "Algorithm 1".
* A quoted number matches a printed one that rounds to it at the quoted precision: "0.25" matches a
  printed 0.2463, "46 %" a printed 0.4617 or 46.2. A number that appears verbatim in a code cell's
  source also matches (a parameter such as ``s = 1.5`` or ``t0 = 0.55``).
* A number that the notebook cannot print -- a result quoted from a paper, a value to try in an
  exercise -- is listed in an HTML comment in the same cell, invisible on the page and in JupyterLab:
  ``<!-- quoted: 2.57 3.00 (Salimans & Ho 2022, Table 2) -->``.

What this cannot check is a claim in words ("the FD keeps falling", "twice as bad"): each such claim
is pinned by an ``assert`` in the code cell that produces its numbers, so that nbval fails when a
re-run makes the sentence false.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

# A number as written in prose: 0.983, 1,080.5, 46 %, 4.4%. Not part of a word (v1.5, x_0), not scientific.
QUOTED_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(\s?%)?(?![\w]|\.\d)")
PRINTED_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
REFERENCE = re.compile(
    r"\b(?:secs?|sections?|eqs?|equations?|app|appendix|tables?|tab|figs?|figures?|algorithms?|alg|ch|chapter|"
    r"lines?|p|pp|version|python|torch|pytorch)\.?\s*\(?[\d.]+\)?(?:\s*(?:-|–|,|and|to)\s*\(?[\d.]+\)?)*"
    r"|§\s*[\d.]+", re.IGNORECASE)
QUOTED_COMMENT = re.compile(r"<!--\s*quoted:(.*?)-->", re.DOTALL)


def prose(markdown: str) -> str:
    """The markdown with what is not prose blanked out: math, code, links' targets, HTML, references."""
    text = QUOTED_COMMENT.sub(" ", markdown)
    for pattern in (r"```.*?```", r"\$\$.*?\$\$", r"`[^`\n]*`", r"<!--.*?-->"):
        text = re.sub(pattern, " ", text, flags=re.DOTALL)
    text = re.sub(r"\\cdot\s*10\^\{?-?\d+\}?|[_^]\{[^}]*\}|[_^]\w", " ", text)  # 10^{-4}, sub- and superscripts
    text = re.sub(r"\]\([^)]*\)", "]", text)  # [label](target): keep the label
    text = re.sub(r"<[^>\n]*>", " ", text)  # HTML tags
    return REFERENCE.sub(" ", text)


def quoted_numbers(markdown: str) -> list[tuple[str, float, int, bool]]:
    """(as written, value, decimals, is a percentage) for each number the prose of a markdown cell checks."""
    out = []
    for m in QUOTED_NUMBER.finditer(prose(markdown)):
        whole, frac, pct = m.group(1), m.group(2) or "", bool(m.group(3))
        if not frac and not pct:
            continue  # a plain integer: not checked
        out.append((m.group(0).strip(), float(whole.replace(",", "") + frac), max(len(frac) - 1, 0), pct))
    return out


def exempt(markdown: str) -> set[str]:
    """Numbers listed in the cell's ``<!-- quoted: ... -->`` comments."""
    return {tok.strip(",;") for body in QUOTED_COMMENT.findall(markdown) for tok in body.split()
            if re.fullmatch(r"[\d.,]+%?", tok.strip(",;"))}


def printed_and_literal(nb: dict) -> tuple[list[float], set[str]]:
    """Every number the stored outputs print, and every number written in a code cell's source."""
    printed, literal = [], set()
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        literal.update(re.findall(r"(?<![\w.])\d+\.\d+|(?<![\w.])\d+", "".join(cell["source"])))
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            texts = ["".join(out.get("text", "")), "".join(data.get("text/plain", "")),
                     "".join(data.get("text/markdown", "")), re.sub(r"<[^>]+>", " ", "".join(data.get("text/html", "")))]
            for text in texts:
                text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,080 -> 1080
                printed.extend(float(m) for m in PRINTED_NUMBER.findall(text))
    return printed, literal


def matches(value: float, decimals: int, percent: bool, printed: list[float]) -> bool:
    """Does some printed number round to ``value`` at ``decimals`` places (as a fraction or as a percentage)?"""
    half = 0.5 * 10.0 ** -decimals + 1e-9
    for x in printed:
        candidates = (abs(x), abs(x) * 100) if percent else (abs(x),)
        if any(abs(c - value) <= half for c in candidates):
            return True
    return False


def unprinted_claims(nb: dict) -> list[str]:
    """'cell i: 0.246 (...context...)' for each quoted number that the notebook neither prints nor writes in code."""
    printed, literal = printed_and_literal(nb)
    bad = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        markdown = "".join(cell["source"])
        allowed = exempt(markdown)
        for written, value, decimals, percent in quoted_numbers(markdown):
            number = written.replace(" ", "")
            if number in allowed or number.rstrip("%") in literal or matches(value, decimals, percent, printed):
                continue
            at = markdown.find(written)
            context = " ".join(markdown[max(at - 50, 0): at + len(written) + 30].split())
            bad.append(f"cell {i}: {written!r} in '...{context}...'")
    return bad


# ---- the checker itself, on made-up cells ----

def _nb(markdown: str, printed: str = "", code: str = "") -> dict:
    return {"cells": [
        {"cell_type": "code", "source": [code], "outputs": [{"output_type": "stream", "name": "stdout", "text": [printed]}]},
        {"cell_type": "markdown", "source": [markdown]},
    ]}


def test_a_number_printed_to_more_digits_matches_its_rounding():
    assert unprinted_claims(_nb("FD falls from 4.60 to 4.9.", "FD 4.6012 4.8799")) == []
    assert unprinted_claims(_nb("right on 98.3 % of digits and 46% of the rest", "acc 0.9834 rest 0.4617")) == []
    assert unprinted_claims(_nb("1,080.5 images", "n 1080.48")) == []


def test_a_number_the_notebook_does_not_print_fails():
    assert len(unprinted_claims(_nb("FD falls from 4.60 to 4.88.", "FD 4.6012 4.7111"))) == 1
    assert len(unprinted_claims(_nb("accuracy 97.3 %", "acc 0.9834"))) == 1
    assert len(unprinted_claims(_nb("0.290 -> 0.289", "nothing printed"))) == 2


def test_math_code_references_integers_and_listed_quotes_are_not_checked():
    text = ("$$\\alpha = 0.5$$ and `s = 7.5`, $\\bar\\alpha_{0.5} 10^{-4.5}$, see sec. 4.3, eqs. 2.81-2.82, Table 2.1 and "
            "[x](a/1.5.html); 1,000 steps. "
            "FID 2.57 <!-- quoted: 2.57 (Salimans & Ho 2022, Table 2) -->")
    assert unprinted_claims(_nb(text)) == []


def test_a_number_in_inline_math_is_checked():
    assert len(unprinted_claims(_nb("The label is worth $0.017 \\times 1{,}024 \\approx 17$ bits.", "1.026 1.008"))) == 1
    assert unprinted_claims(_nb("The label is worth $0.018 \\times 1{,}024$ bits.", "gain 0.0181")) == []


def test_a_parameter_written_in_code_matches():
    assert unprinted_claims(_nb("at t = 0.55 with s = 1.5", code="t = 0.55; s = 1.5")) == []


# ---- every notebook ----

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_number_the_text_quotes_is_printed(path):
    bad = unprinted_claims(json.loads(path.read_text()))
    assert not bad, (
        f"{path.name}: the text quotes numbers that no code cell prints:\n  " + "\n  ".join(bad) +
        "\nPrint the number the sentence quotes (and assert what the sentence says about it), correct the text, "
        "or, for a number quoted from a paper, list it in the cell as <!-- quoted: 2.57 (source) -->."
    )


@pytest.mark.parametrize("path", NOTEBOOKS[6:7] + NOTEBOOKS[-1:], ids=lambda p: p.name)
def test_a_wrong_number_in_a_real_notebook_fails(path):
    """Change the first checked number of a real notebook to one it does not print: the check must fail."""
    nb = json.loads(path.read_text())
    printed, literal = printed_and_literal(nb)
    for i, cell in enumerate(nb["cells"]):
        claims = quoted_numbers("".join(cell["source"])) if cell["cell_type"] == "markdown" else []
        if claims:
            break
    else:
        pytest.fail(f"{path.name} quotes no number")
    written, value, decimals, percent = claims[0]
    step = 10.0 ** -decimals
    wrong = next(value + k * step for k in range(1, 1000)
                 if not matches(value + k * step, decimals, percent, printed)
                 and f"{value + k * step:.{decimals}f}" not in literal)
    broken = copy.deepcopy(nb)
    wrong_text = f"{wrong:.{decimals}f}" + (" %" if percent else "")
    broken["cells"][i]["source"] = ["".join(cell["source"]).replace(written, wrong_text, 1)]
    before, after = unprinted_claims(nb), unprinted_claims(broken)
    assert len(after) == len(before) + 1 and any(f"cell {i}: {wrong_text!r}" in line for line in after), (written, wrong_text)
