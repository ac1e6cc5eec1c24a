"""scripts/student_notebooks.py: solutions become stubs, everything else is kept, and --check finds stale copies;
each student version's stubs run and say "not done yet"."""

import ast
import contextlib
import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "student_notebooks.py"
spec = importlib.util.spec_from_file_location("student_notebooks", SCRIPT)
student_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(student_notebooks)

SOLVED = '''def q_sample(schedule, x0, t, noise):
    """x_t in closed form."""
    ### BEGIN SOLUTION
    ab = schedule.alpha_bars[t][:, None]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    ### END SOLUTION

check_q_sample(q_sample)'''


def test_a_solution_becomes_a_stub_at_its_indentation():
    out = student_notebooks.strip_solutions(SOLVED)
    assert "alpha_bars" not in out and "BEGIN" not in out
    assert f'    """x_t in closed form."""\n    {student_notebooks.STUB}\n\ncheck_q_sample(q_sample)' in out
    namespace = {"check_q_sample": lambda fn: fn(None, None, None, None)}
    with pytest.raises(NotImplementedError):  # the stub runs, and raises what tinydiff.checks reports as "not done yet"
        exec(out, namespace)


def test_unbalanced_markers_are_errors():
    with pytest.raises(ValueError, match="without ### END"):
        student_notebooks.strip_solutions("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ValueError, match="without ### BEGIN"):
        student_notebooks.strip_solutions("x = 1\n### END SOLUTION")
    with pytest.raises(ValueError, match="inside another"):
        student_notebooks.strip_solutions("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION")


def make_notebook(folder: Path) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 99 · test"),
                                         nbformat.v4.new_code_cell("import math"),
                                         nbformat.v4.new_code_cell(SOLVED, outputs=[nbformat.v4.new_output("stream", text="correct")])])
    path = folder / "99_test.ipynb"
    nbformat.write(nb, path)
    return path


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_write_then_check_then_stale(tmp_path):
    source = make_notebook(tmp_path)
    assert run("--notebooks", str(tmp_path), "--check").returncode == 1  # missing
    assert run("--notebooks", str(tmp_path)).returncode == 0
    student = nbformat.read(tmp_path / "student" / "99_test.ipynb", as_version=4)
    assert [c.source for c in student.cells[:2]] == ["# 99 · test", "import math"]
    assert student.cells[2].outputs == [] and student_notebooks.STUB in student.cells[2].source
    assert run("--notebooks", str(tmp_path), "--check").returncode == 0
    nb = nbformat.read(source, as_version=4)
    nb.cells[1].source = "import math, os"  # the source changed; its student version did not
    nbformat.write(nb, source)
    result = run("--notebooks", str(tmp_path), "--check")
    assert result.returncode == 1 and "stale" in result.stderr


def test_the_course_student_versions_are_up_to_date():
    result = run("--check")
    assert result.returncode == 0, result.stderr


STUDENTS = sorted((ROOT / "notebooks" / "student").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("path", STUDENTS, ids=lambda p: p.name)
def test_each_student_stub_runs_on_its_own_and_says_not_done_yet(path):
    """A student version is its source notebook, cell for cell (``--check`` above), with each solution replaced by a
    stub; nbval runs the source. What is left to show is what a learner meets first: the stub cells run -- without
    the cells above them, since they need nothing from those -- and show what their stored outputs say, the check's
    "not done yet". So ``make test`` does not run every notebook's heavy cells a second time (``make notebooks`` still runs
    the student versions whole). The stub cells must come last: no cell after them may use what they define."""
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    first = next(i for i, c in enumerate(cells) if student_notebooks.STUB in c.source)
    assert all(student_notebooks.STUB in c.source for c in cells[first:]), (
        f"{path.name}: a code cell after the first exercise stub has no stub; run this notebook whole under nbval")
    namespace = {"__name__": "__main__"}  # the stub cells run in order, as in one kernel
    for cell in cells[first:]:
        assert run_cell(cell.source, namespace, path.name) == stored_text(cell) and "not done yet" in stored_text(cell)


def run_cell(source: str, namespace: dict, name: str) -> str:
    """What a notebook shows for one cell: its printed text, then the repr of a last bare expression."""
    body = ast.parse(source)
    last = body.body.pop() if body.body and isinstance(body.body[-1], ast.Expr) else None
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(body, name, "exec"), namespace)
        value = eval(compile(ast.Expression(last.value), name, "eval"), namespace) if last else None
    return printed.getvalue() + ("" if value is None else repr(value))


def stored_text(cell) -> str:
    """The cell's stored stream text, then its result's text/plain (as :func:`run_cell` returns them)."""
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    return text + "".join("".join(o["data"].get("text/plain", "")) for o in cell.outputs
                          if o.get("output_type") == "execute_result")
