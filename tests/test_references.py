"""Every citation resolves: "Author year" in the package, notebooks, scripts and READMEs is a key of REFERENCES.md."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = r"[A-ZÀ-Þ](?:'[A-Z])?[\w\-]+"  # O'Shaughnessy too
# "Ho et al. 2020", "Ho & Salimans (2022", "Song, Meng & Ermon 2021", "Vincent 2011"
CITATION = re.compile(rf"\b({NAME}(?:(?:, {NAME})* & {NAME}| et al\.)?),? \(?((?:19|20)\d{{2}}[a-z]?)\b")
KEY = re.compile(r"^- \*\*(.+?)\*\* — ", re.MULTILINE)


def cited_texts() -> dict[str, str]:
    files = [*ROOT.glob("tinydiff/**/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("benchmarks/*.py"),
             *ROOT.glob("*.md"), *ROOT.glob("benchmarks/*.md"), *ROOT.glob("data/**/*.md"), *ROOT.glob("site/*.md")]
    texts = {str(f.relative_to(ROOT)): f.read_text(encoding="utf-8") for f in files if f.name != "REFERENCES.md"}
    for nb in ROOT.glob("notebooks/*.ipynb"):  # the cells as written, not their outputs
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        texts[str(nb.relative_to(ROOT))] = "\n".join("".join(c["source"]) for c in cells)
    return texts


def citations(text: str) -> set[str]:
    flat = re.sub(r"\s+", " ", text.replace("#", " "))  # citations broken across lines or comment markers
    return {f"{m.group(1)} {m.group(2)}" for m in CITATION.finditer(flat)}


def reference_keys() -> set[str]:
    return set(KEY.findall((ROOT / "REFERENCES.md").read_text(encoding="utf-8")))


def test_the_citation_pattern_finds_what_we_write():
    text = ("as Ho et al. (2020) showed; Ho & Salimans 2022, eq. 6; Song, Meng &\nErmon 2021; Vincent 2011; Hyvärinen 2005; "
            "O'Shaughnessy 1987")
    assert citations(text) == {"Ho et al. 2020", "Ho & Salimans 2022", "Song, Meng & Ermon 2021", "Vincent 2011",
                               "Hyvärinen 2005", "O'Shaughnessy 1987"}


def test_every_citation_is_in_the_reference_list():
    keys = reference_keys()
    unknown = sorted(f"{cite} ({where})" for where, text in cited_texts().items() for cite in citations(text) - keys)
    assert not unknown, ("citations without an entry in REFERENCES.md (add the paper, or use its key as written "
                         "there -- DDIM is 'Song, Meng & Ermon 2021', the score SDE paper 'Song et al. 2021'): "
                         + "; ".join(unknown))


def test_every_reference_is_cited_somewhere():
    used = set().union(*(citations(text) for text in cited_texts().values()))
    assert not sorted(reference_keys() - used), "entries of REFERENCES.md that nothing cites"
