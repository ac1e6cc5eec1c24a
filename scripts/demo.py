"""Serve the classroom demo page: the course's widget demos as a web app, code hidden (Voila), on 127.0.0.1.

    python scripts/demo.py              # or: make demo; then open the address it prints
    python scripts/demo.py --port 8900

The page is ``demo/classroom.ipynb``: the schedule explorer (notebook 01), the Langevin explorer (02), the
DDIM eta explorer (06), the guidance explorer (07), SDEdit's t0 (10), a distilled student against its teacher
at few steps (11), the adapters (12), the prompt explorer (13), the guidance explorer on the colour emoji
model (14) and the super-resolution explorer (15). Each visitor gets a kernel of their own that
runs the notebook (about 15 s on 2 CPU cores before the page shows), so the figures are live. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "demo" / "classroom.ipynb"


def voila_command(port: int, ip: str = "127.0.0.1") -> list[str]:
    """The Voila command line that serves the demo page (code cells hidden is Voila's default)."""
    command = [sys.executable, "-m", "voila", str(PAGE), f"--port={port}", f"--Voila.ip={ip}", "--no-browser",
               "--template=tinydiff", "--show_tracebacks=True"]
    if hasattr(os, "getuid") and os.getuid() == 0:       # containers and cloud shells run as root
        command.append("--ServerApp.allow_root=True")
    return command


def voila_environment() -> dict[str, str]:
    """The environment Voila runs in: our template (demo/voila/templates/tinydiff) found through JUPYTER_PATH."""
    env = dict(os.environ)
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(ROOT / "demo"), env.get("JUPYTER_PATH", "")) if p)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=8866)
    args = p.parse_args()
    try:
        import voila  # noqa: F401
    except ImportError:
        raise SystemExit("the demo page needs Voila: pip install -e '.[site]' (make demo installs it)") from None
    print(f"classroom demo page: http://127.0.0.1:{args.port}/  (Ctrl-C stops it)")
    subprocess.run(voila_command(args.port), env=voila_environment(), check=False)


if __name__ == "__main__":
    main()
