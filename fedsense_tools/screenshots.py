"""Screenshots of a run's TensorBoard tabs for docs/img, taken by headless
Chromium (Debian's ``chromium``) against ``fedsense board``'s TensorBoard.

    .venv/bin/python -m fedsense_tools.screenshots RUN_DIR [--out docs/img]

writes ``tensorboard_custom_scalars.png``, ``tensorboard_images.png`` and,
when the run has a projector snapshot (``output.projector_rounds``, as
``make run`` sets), ``tensorboard_projector.png``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from fedsense_tools.commands import board_view, run_labels
from fedsense_tools.launcher import free_port
from fedsense_tools.processes import stop_tree

TABS = ("custom_scalars", "images", "projector")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                  "--virtual-time-budget=25000", "--hide-scrollbars"]


def _wait(url: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"TensorBoard did not answer at {url}")


def tabs_of(run_dir: Path) -> list[str]:
    """The tabs worth a picture: the projector only when the run recorded one."""
    return [t for t in TABS if t != "projector" or (run_dir / "tb" / "projector_config.pbtxt").exists()]


def screenshots(run_dir: Path, out: Path) -> list[Path]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("screenshots need Debian's chromium: apt-get install chromium")
    tabs = tabs_of(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="fedsense-shots-") as tmp:
        port = free_port()
        view = board_view(run_labels([str(run_dir)]), Path(tmp) / "view")
        board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(view),
                                  "--host", "127.0.0.1", "--port", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait(f"http://127.0.0.1:{port}/data/runs")
            for tab in tabs:
                path = out / f"tensorboard_{tab}.png"
                subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/chromium",
                                f"--screenshot={path}", f"http://127.0.0.1:{port}/#{tab}"],
                               check=True, capture_output=True, timeout=180)
                written.append(path)
        finally:
            stop_tree(board.pid, grace=5)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", metavar="RUN_DIR")
    parser.add_argument("--out", default="docs/img")
    args = parser.parse_args()
    for path in screenshots(Path(args.run).expanduser().resolve(), Path(args.out)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
