"""Shared fixtures."""

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def load_script():
    """``load_script("sample")`` -> ``scripts/sample.py`` as a module (the scripts are not a package), so a test can
    call its ``main``."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_script", SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread avoids oversubscription on a shared 2-core machine (use with pytest.mark.usefixtures)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- a real browser (headless Chromium driven by Playwright), for the site, JupyterLab and demo-page tests ----
# Debian's chromium (apt-get install chromium): Playwright's own browser download is not used. Flags as measured
# in a root container with no display and no network beyond 127.0.0.1.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for one test module; skips, saying how to install what is missing."""
    import shutil

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need Playwright: pip install -e '.[site]' (make test installs it)")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("browser tests need Chromium: sudo apt-get install chromium (Debian/Ubuntu); "
                    ".ci/run installs it, so CI runs these tests")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


class PageProblems:
    """What went wrong while a page was open: console errors, uncaught exceptions, failed or off-host requests.

    Not a problem: a request that the browser itself cancelled (``net::ERR_ABORTED``) for something a reader never
    sees fail -- the tab's icon, a prefetch or a ping -- as happens when a page is left while its favicon is still
    loading on a busy machine. A missing image is still caught: it fails with HTTP 404 (below) or is left unloaded
    (the site test checks every image)."""

    UNSEEN = ("prefetch", "ping")

    def __init__(self, page, allowed_origin: str) -> None:
        self.problems: list[str] = []
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: None if self.unseen_cancel(r)
                else self.problems.append(f"request failed: {r.url} ({r.failure})"))
        page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        page.on("request", lambda r: None if r.url.startswith((allowed_origin, "data:", "blob:"))
                else self.problems.append(f"request off the local server: {r.url}"))

    @classmethod
    def unseen_cancel(cls, request) -> bool:
        """A cancelled request for the tab's icon, a prefetch or a ping."""
        icon = request.url.split("?")[0].rsplit("/", 1)[-1].startswith("favicon")
        return "ERR_ABORTED" in (request.failure or "") and (icon or request.resource_type in cls.UNSEEN)

    def take(self) -> list[str]:
        found, self.problems[:] = list(self.problems), []
        return found


@pytest.fixture
def page_problems():
    return PageProblems
