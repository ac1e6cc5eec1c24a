"""The interactive demos where learners and teachers use them: in JupyterLab and on the classroom demo page, in
headless Chromium.

Each notebook with a widget is opened in JupyterLab (a server of its own on 127.0.0.1, on a copy of the notebooks
so nothing in the repository is saved over), run top to bottom through the Run menu; then its widget's main slider
is moved one step and the figure must change. The demo page (``make demo``, Voila) is checked the same way for each
of its explorers. Screenshots before and after each move go to ``build/screenshots/<test name>/``.
"""

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
SCREENSHOTS = ROOT / "build" / "screenshots"
TOKEN = "tinydiff-browser-test"
VISIBLE = ".jp-NotebookPanel:not(.lm-mod-hidden)"

import build_site  # noqa: E402  (scripts/build_site.py: which stored widgets are progress bars)
import demo  # noqa: E402  (scripts/demo.py: the Voila command line)


def widget_notebooks() -> list[str]:
    """The course notebooks that show an interactive widget (a stored widget output that is not a progress bar)."""
    names = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        models = build_site.widget_models(nb)
        views = [o["data"][build_site.WIDGET_VIEW]["model_id"] for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []) if build_site.WIDGET_VIEW in o.get("data", {})]
        if any(not build_site.is_progress_bar(v, models) for v in views):
            names.append(path.stem)
    return names


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names a cell binds at the top level -- assigned, imported, defined, or changed in place through ``x[i] =``
    or ``x.a =`` -- and names it reads). Of IPython's syntax, ``%%cell`` and ``!shell`` lines are left out and a
    ``%line`` magic is read as the code after it (``%time y = f(x)`` binds y)."""
    code = "\n".join(line.partition(" ")[2] if line.startswith("%") else line for line in source.splitlines()
                     if not line.lstrip().startswith(("%%", "!")))
    tree = ast.parse(code)
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, ast.Store):
            base = node.value
            while isinstance(base, (ast.Subscript, ast.Attribute)):
                base = base.value
            if isinstance(base, ast.Name):
                bound.add(base.id)
    return bound, read


def widget_part(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook cut down to what its first interactive widget needs: the widget's cell and, walking back, every
    code cell that binds a name a kept cell reads (markdown dropped). What nbval checks -- that the whole notebook
    runs -- is not repeated here; the browser test is about the widget in JupyterLab."""
    models = build_site.widget_models(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = next(i for i, c in enumerate(code) for o in c.get("outputs", []) if build_site.WIDGET_VIEW in o.get("data", {})
                 and not build_site.is_progress_bar(o["data"][build_site.WIDGET_VIEW]["model_id"], models))
    def outside(source: str) -> tuple[set[str], set[str]]:  # a name a cell binds itself is its own (a loop variable)
        bound, read = _names(source)
        return bound, read - bound

    keep, needed = [first], outside(code[first].source)[1]
    for i in range(first - 1, -1, -1):
        bound, read = outside(code[i].source)
        if bound & needed:
            keep.append(i)
            needed |= read
    part = nbformat.from_dict(nb)
    part.cells = [nbformat.from_dict(code[i]) for i in sorted(keep)]
    for cell in part.cells:
        cell.outputs, cell.execution_count = [], None
    return part


def test_widget_part_keeps_what_the_widget_reads():
    cells = [nbformat.v4.new_code_cell(s) for s in (
        "import math\nimport torch", "x = torch.zeros(3)\nunused = 1", "%time y = math.pi * 2",
        "x[0] = y", "slow = sum(range(10**6))", "w = explore(x)")]
    nb = nbformat.v4.new_notebook(cells=cells)
    cells[-1].outputs = [nbformat.v4.new_output("display_data", {build_site.WIDGET_VIEW: {"model_id": "m"}})]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"m": {"model_name": "VBoxModel", "state": {}}}}}
    part = widget_part(nb)
    assert [c.source for c in part.cells] == [cells[i].source for i in (0, 1, 2, 3, 5)]  # not the slow, unread cell
    assert all(c.outputs == [] for c in part.cells)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no answer from {url} after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 serving a copy of the notebooks, with its own settings: no autosave, no news."""
    home = tmp_path_factory.mktemp("jupyterlab")
    shutil.copytree(ROOT / "notebooks", home / "notebooks", ignore=shutil.ignore_patterns("student", ".ipynb_checkpoints"))
    for name in widget_notebooks():  # JupyterLab runs what the widget needs; nbval runs the whole notebook
        path = home / "notebooks" / f"{name}.ipynb"
        nbformat.write(widget_part(nbformat.read(path, as_version=4)), path)
    settings = home / "settings" / "@jupyterlab"
    (settings / "docmanager-extension").mkdir(parents=True)
    (settings / "docmanager-extension" / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               OMP_WAIT_POLICY="PASSIVE")
    port = free_port()
    log = home / "lab.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={home / 'notebooks'}",
               "--LabApp.news_url=None"]
    if hasattr(os, "getuid") and os.getuid() == 0:
        command.append("--allow-root")
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/api/status?token={TOKEN}", process, log)
        yield base
    finally:
        stop(process)


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("voila") / "voila.log"
    process = subprocess.Popen(demo.voila_command(port), env=demo.voila_environment(), stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base, process, log)
        yield base
    finally:
        stop(process)


def shut_down_kernels(base: str) -> list[str]:
    """Shut down every kernel of the JupyterLab server (its REST API), so that a notebook's kernel does not stay
    running, holding memory and CPU, while the next notebook runs. Returns the ids it shut down."""
    def call(method: str, path: str):
        request = urllib.request.Request(f"{base}{path}?token={TOKEN}", method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    ids = [kernel["id"] for kernel in call("GET", "/api/kernels")]
    for kernel_id in ids:
        call("DELETE", f"/api/kernels/{kernel_id}")
    return ids


def screenshot_dir(request) -> Path:
    folder = SCREENSHOTS / request.node.originalname
    folder.mkdir(parents=True, exist_ok=True)
    return folder


FIGURES = "e => Array.from(e.querySelectorAll('img')).map(i => i.src).join(' ')"
"""The figures a widget's output area shows: the Image widget's blob URL, or the image in an Output widget.
Only the images: the slider's own readout changes at once, before the kernel has redrawn anything."""


def figure_of(output) -> str:
    return output.evaluate(FIGURES)


def move_main_slider(page, output, shots: Path, name: str, timeout_ms: int = 120_000) -> None:
    """Press ArrowRight on the widget's first slider and wait until its figure changes; screenshots around it."""
    output.scroll_into_view_if_needed()
    output.screenshot(path=str(shots / f"{name}-before.png"))
    before = figure_of(output)
    handle = output.locator(".widget-slider .noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")
    assert before, f"{name}: no figure in the widget's output before the move"
    page.wait_for_function(f"([e, before]) => ({FIGURES})(e) !== before && ({FIGURES})(e) !== ''",
                           arg=[output.element_handle(), before], timeout=timeout_ms, polling=500)
    page.wait_for_timeout(300)
    output.screenshot(path=str(shots / f"{name}-after.png"))
    assert figure_of(output) != before


def test_the_widget_notebooks_are_found():
    found = widget_notebooks()
    assert {"01_forward_process", "02_scores_langevin", "06_ddim"} <= set(found), found


@pytest.mark.parametrize("name", widget_notebooks())
def test_widget_notebook_in_jupyterlab(name, jupyterlab, browser, page_problems, request):
    """Run the notebook through JupyterLab's Run menu: no error output; its widget redraws when its slider moves."""
    shots = screenshot_dir(request)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        run_widget_notebook(name, jupyterlab, page, page_problems, shots)
    finally:
        page.close()
        shut_down_kernels(jupyterlab)
    assert shut_down_kernels(jupyterlab) == []


def run_widget_notebook(name, jupyterlab, page, page_problems, shots) -> None:
    problems = page_problems(page, jupyterlab)
    page.goto(f"{jupyterlab}/lab/workspaces/test-{name}/tree/{name}.ipynb?reset&token={TOKEN}")
    page.wait_for_selector(VISIBLE, timeout=120_000)
    idle = "() => (document.querySelector('#jp-main-statusbar') || {textContent: ''}).textContent.includes('Idle')"
    page.wait_for_function(idle, timeout=120_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_timeout(2000)
    page.wait_for_function(f"""() => {{
        const prompts = Array.from(document.querySelectorAll('{VISIBLE} .jp-CodeCell .jp-InputPrompt')).map(e => e.textContent);
        return prompts.length > 0 && prompts.every(t => /\\[\\d+\\]/.test(t)) && ({idle})(); }}""",
                           timeout=420_000, polling=1000)
    errors = page.locator(f'{VISIBLE} [data-mime-type="application/vnd.jupyter.error"]')
    assert errors.count() == 0, errors.first.inner_text()[:2000]
    output = page.locator(f"{VISIBLE} .jp-OutputArea-output").filter(has=page.locator(".widget-slider")).first
    move_main_slider(page, output, shots, name)
    page.screenshot(path=str(shots / f"{name}-page.png"))
    found = problems.take()
    assert not found, found


def test_classroom_demo_page(demo_page, browser, page_problems, request):
    """Voila serves the demos with the code hidden; each explorer redraws when its main slider moves."""
    shots = screenshot_dir(request)
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    problems = page_problems(page, demo_page)
    page.goto(demo_page, timeout=180_000)
    names = ["schedule", "langevin", "ddim-eta", "guidance", "sdedit", "few-steps", "adapters", "prompts", "emoji",
             "superres", "prompt-edit", "spoken-digits"]
    page.wait_for_function(f"document.querySelectorAll('.widget-image').length >= {len(names)}", timeout=180_000,
                           polling=500)
    text = page.evaluate("document.body.innerText")
    assert "schedule_explorer(" not in text and "import torch" not in text      # the code is hidden
    outputs = page.locator(".jp-OutputArea-output").filter(has=page.locator(".widget-image"))
    assert outputs.count() == len(names)
    for i, name in enumerate(names):
        move_main_slider(page, outputs.nth(i), shots, name)
    page.screenshot(path=str(shots / "demo-page.png"), full_page=True)
    found = problems.take()
    page.close()
    assert not found, found
