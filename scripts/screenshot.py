"""Refresh docs/explorer.png: the explorer's story mode on the lesson's MDP, on a laptop's screen.

    .venv/bin/python scripts/screenshot.py [--out docs/explorer.png] [--step 4]

Starts ``python -m pgvar.explorer`` on a free port (the browser tests' server, tests/conftest.py),
drives Debian's Chromium with Playwright at 1366 x 768: starts the story and presses "next" through
vanilla, reward-to-go, the baseline and N raised, waiting at each step for a few ticks with exact
values, and saves the screen at the last step. The PNG carries a text chunk ``pgvar-view`` naming
what it shows (the tests check that the README's picture is the story mode). The tests never write
this file; run this script when the page changes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CHROMIUM, CHROMIUM_ARGS, ExplorerServer  # noqa: E402  (the tests' helpers)

TICKS_PER_STEP = 8
VIEWPORT = {"width": 1366, "height": 768}

STATUS_JS = """el => ({tick: parseInt(el.dataset.tick), story: parseInt(el.dataset.story || '0'),
  exact: el.getRootNode().querySelector('#pgvar-variance')?.dataset.shareExact || ''})"""


def wait_ticks(page, count: int, step: int, timeout: float = 30.0) -> None:
    """Wait until ``count`` more ticks with exact values have been shown at story ``step``."""
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while len(seen) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshot: the page stopped ticking ({len(seen)} of {count} ticks)")
        state = page.locator("#pgvar-status").evaluate(STATUS_JS)
        if state["exact"] and state["story"] == step:
            seen.add(state["tick"])
        time.sleep(0.1)


def tag(path: Path, text: str) -> None:
    """Add a ``pgvar-view`` text chunk to the PNG at ``path``."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("pgvar-view", text)
    with Image.open(path) as image:
        image.load()
        image.save(path, pnginfo=info, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "explorer.png")
    parser.add_argument("--step", type=int, default=4, choices=[1, 2, 3, 4], help="story step to show")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as logs:
        server = ExplorerServer(log_dir=Path(logs))
        try:
            server.wait_ready()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(server.url)
                page.wait_for_selector("#pgvar-status", timeout=60_000)
                wait_ticks(page, TICKS_PER_STEP, 0)
                for step in range(1, args.step + 1):
                    page.locator("#pgvar-next").click()
                    wait_ticks(page, TICKS_PER_STEP, step)
                page.mouse.move(0, 0)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                browser.close()
        finally:
            server.interrupt()
    tag(args.out, f"story mode, step {args.step} of 4, lesson, {VIEWPORT['width']}x{VIEWPORT['height']}")
    print(f"screenshot: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
