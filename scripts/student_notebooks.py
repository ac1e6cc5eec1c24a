"""Write the student versions of the course notebooks: every solution replaced by a stub.

    python scripts/student_notebooks.py            # notebooks/NN_*.ipynb -> notebooks/student/NN_*.ipynb
    python scripts/student_notebooks.py --check    # exit 1 if a stored student version is stale

The source notebooks hold the solutions between nbgrader's markers, so a teacher can also use
nbgrader on them:

    def q_sample(schedule, x0, t, noise):
        ### BEGIN SOLUTION
        ab = schedule.alpha_bars[t][:, None]
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        ### END SOLUTION

    check_q_sample(q_sample)

In the student version the lines from BEGIN to END become ``raise NotImplementedError("...")``
at the same indentation (what nbgrader writes too), so the notebook still runs top to bottom and
the check right after says "not done yet". Cells without markers are copied unchanged; a
student version's code cells are written without outputs (execute it to store them).
Only the cell sources are compared by ``--check``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = 'raise NotImplementedError("your code here: replace this line")'
ROOT = Path(__file__).resolve().parents[1]


def strip_solutions(source: str, where: str = "cell") -> str:
    """The source with each BEGIN/END SOLUTION block replaced by a stub line. Raises ``ValueError``
    (naming ``where``) for a BEGIN without END, an END without BEGIN, or nested markers."""
    out, inside = [], False
    for number, line in enumerate(source.splitlines(), 1):
        mark = line.strip()
        if mark == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: {BEGIN} inside another solution block")
            inside = True
            out.append(line[: len(line) - len(line.lstrip())] + STUB)
        elif mark == END:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN} without {END}")
    return "\n".join(out)


def student_version(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """A copy of ``nb`` with every code cell's solutions stubbed (and that cell's outputs cleared)."""
    student = nbformat.from_dict(nb)
    for index, cell in enumerate(student.cells):
        if cell.cell_type == "code" and BEGIN in cell.source:
            cell.source = strip_solutions(cell.source, f"{name}, cell {index}")
            cell.outputs, cell.execution_count = [], None
    return student


def sources(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--notebooks", default=str(ROOT / "notebooks"))
    p.add_argument("--out", help="default: <notebooks>/student")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a student version is missing or stale")
    args = p.parse_args()
    folder = Path(args.notebooks)
    out = Path(args.out) if args.out else folder / "student"
    stale = []
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if not any(c.cell_type == "code" and BEGIN in c.source for c in nb.cells):
            continue
        student = student_version(nb, path.name)
        target = out / path.name
        if args.check:
            if not target.exists() or sources(nbformat.read(target, as_version=4)) != sources(student):
                stale.append(target)
            continue
        if target.exists() and sources(nbformat.read(target, as_version=4)) == sources(student):
            continue  # keep its stored outputs
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(student, target)
        print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target} (execute it to store outputs)")
    if stale:
        print("stale student versions (run python scripts/student_notebooks.py, then execute them):", file=sys.stderr)
        for target in stale:
            print(f"  {target}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
