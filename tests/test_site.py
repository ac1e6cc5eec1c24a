"""The offline course website (``make site``): it builds without a warning, and every page, opened in headless
Chromium from a server on 127.0.0.1, renders its math, loads every image, requests nothing from elsewhere and
logs no error."""

import functools
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
pytest.importorskip("sphinx", reason="the site needs Sphinx: pip install -e '.[site]' (make test installs it)")
pytest.importorskip("myst_nb", reason="the site needs myst-nb: pip install -e '.[site]'")
pytest.importorskip("jupyter_server_mathjax", reason="the site needs jupyter-server-mathjax: pip install -e '.[site]'")

import build_site  # noqa: E402  (scripts/build_site.py)

MATHJAX_DONE = """() => !document.querySelector('script[src*="MathJax.js"]')
    || (window.MathJax && MathJax.isReady && MathJax.Hub.queue.pending === 0 && !MathJax.Hub.queue.running)"""

RAW_MATH = r"""() => {
    // text a reader sees (not code, not MathJax's own source scripts) that still looks like TeX
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const found = [];
    const tex = /\\\(|\\\[|\$\$|\$[^$\s][^$]*\$|\\(frac|sqrt|alpha|beta|epsilon|mathcal)\b/;
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const parent = node.parentElement;
        if (parent.closest('script, style, pre, code, textarea, .highlight, .MathJax, .MathJax_Display')) continue;
        if (tex.test(node.textContent)) found.push(node.textContent.trim().slice(0, 80));
    }
    return found;
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_site.py"), "--out", str(out / "html"),
                             "--src", str(out / "src")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"make site failed (Sphinx runs with -W: a warning fails it):\n{result.stdout}\n{result.stderr}"
    return out / "html"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def pages(site: Path) -> list[str]:
    return sorted(str(p.relative_to(site)) for p in site.rglob("*.html") if not p.relative_to(site).parts[0].startswith("_"))


def stored_figures(notebook: Path) -> tuple[int, int]:
    """(PNG figures, HTML animations) among a notebook's stored outputs, as the site shows them."""
    nb = build_site.static_notebook(build_site.nbformat.read(notebook, as_version=4))
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    pngs = sum("image/png" in o.get("data", {}) for o in outputs)
    animations = sum("animation" in o.get("data", {}).get("text/html", "") and "image/png" not in o.get("data", {})
                     for o in outputs)
    return pngs, animations


def test_static_notebook_replaces_widgets():
    nb = build_site.nbformat.read(ROOT / "notebooks" / "01_forward_process.ipynb", as_version=4)
    static = build_site.static_notebook(nb)
    dumped = json.dumps(static)
    assert build_site.WIDGET_VIEW not in dumped and "widgets" not in static.metadata
    assert "NBVAL_IGNORE_OUTPUT" not in dumped
    notes = [o for c in static.cells if c.cell_type == "code" for o in c.outputs
             if o.get("data", {}).get("text/html") == build_site.WIDGET_NOTE]
    assert len(notes) == 1                                       # the schedule explorer is noted, not dropped
    assert build_site.WIDGET_VIEW in json.dumps(nb)              # the original is left alone


def test_progress_bars_are_dropped():
    nb = build_site.nbformat.read(ROOT / "notebooks" / "03_score_matching.ipynb", as_version=4)
    views = [o["data"][build_site.WIDGET_VIEW]["model_id"] for c in nb.cells if c.cell_type == "code"
             for o in c.outputs if build_site.WIDGET_VIEW in o.get("data", {})]
    models = build_site.widget_models(nb)
    assert views and all(build_site.is_progress_bar(v, models) for v in views)   # the training cell's tqdm bar
    assert "widget-note" not in json.dumps(build_site.static_notebook(nb))


def test_site_has_every_notebook_and_reference(site):
    names = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert names and names <= {p.stem for p in (site / "notebooks").glob("*.html")}
    references = (site / "references.html").read_text(encoding="utf-8")
    keys = build_site_keys()
    # as HTML writes them: & escaped, and ' a typographic apostrophe (Sphinx's smart quotes: O'Shaughnessy)
    assert keys and all(key.replace("&", "&amp;").replace("'", "\u2019") in references for key in keys)
    assert (site / "notation.html").exists() and (site / "_static" / "mathjax" / "MathJax.js").exists()


def build_site_keys() -> list[str]:
    import re

    return re.findall(r"^- \*\*(.+?)\*\* — ", (ROOT / "REFERENCES.md").read_text(encoding="utf-8"), re.MULTILINE)


def test_a_cancelled_icon_is_not_a_problem_but_a_cancelled_image_is(page_problems):
    from types import SimpleNamespace as Request

    aborted = "net::ERR_ABORTED"
    assert page_problems.unseen_cancel(Request(url="http://127.0.0.1:1/_static/favicon.svg", failure=aborted, resource_type="other"))
    assert page_problems.unseen_cancel(Request(url="http://127.0.0.1:1/next.html", failure=aborted, resource_type="prefetch"))
    assert not page_problems.unseen_cancel(Request(url="http://127.0.0.1:1/_images/fig.png", failure=aborted, resource_type="image"))
    assert not page_problems.unseen_cancel(Request(url="http://127.0.0.1:1/_static/favicon.svg",
                                                   failure="net::ERR_CONNECTION_REFUSED", resource_type="other"))


def test_every_page_in_a_browser(site, server, browser, page_problems):
    """Math rendered (no raw TeX, no MathJax error), every image loaded, every stored figure and animation of a
    notebook present, no console error, no failed request and no request that leaves 127.0.0.1."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(180_000)  # a busy 2-core machine (the other test worker runs notebooks) is slow, not broken
    problems = page_problems(page, server)
    failures = {}
    for name in pages(site):
        page.goto(f"{server}/{name}", wait_until="load")
        page.wait_for_function(MATHJAX_DONE, polling=250)
        page.wait_for_load_state("networkidle")  # nothing still loading when the next page is opened
        found = problems.take()
        found += [f"raw TeX: {text!r}" for text in page.evaluate(RAW_MATH)]
        errors = page.evaluate("document.querySelectorAll('.noError, .merror, .MathJax_Error').length")
        found += [f"{errors} MathJax errors"] if errors else []
        broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
        found += [f"image not loaded: {src}" for src in broken]
        if name.startswith("notebooks/"):
            pngs, animations = stored_figures(ROOT / "notebooks" / Path(name).with_suffix(".ipynb").name)
            shown = page.evaluate("Array.from(document.querySelectorAll('.cell_output img'))"
                                  ".filter(i => !i.closest('.animation')).length")  # not a player's frame
            players = page.evaluate("document.querySelectorAll('.cell_output .animation').length")
            if (shown, players) != (pngs, animations):
                found.append(f"{shown} figures and {players} animations shown, {pngs} and {animations} stored")
        if found:
            failures[name] = found
    page.close()
    assert len(pages(site)) >= 13
    assert not failures, json.dumps(failures, indent=1)
