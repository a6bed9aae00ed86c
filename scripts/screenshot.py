"""Refresh docs/explorer.png: the explorer after the lesson's walk through the three knobs.

    .venv/bin/python scripts/screenshot.py [--out docs/explorer.png]

Starts ``python -m pgvar.explorer`` on a free port (the browser tests' server, tests/conftest.py),
drives Debian's Chromium with Playwright: vanilla, then reward-to-go, then the baseline, then
N = 1024, then "measure every N"; each step waits for a few ticks with exact values. The tests never
write this file; run this script when the page changes.
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

TICKS_PER_STEP = 6

STATUS_JS = """el => ({tick: parseInt(el.dataset.tick),
  exact: el.getRootNode().querySelector('#pgvar-variance')?.dataset.exact || ''})"""


def wait_ticks(page, count: int, timeout: float = 30.0) -> None:
    """Wait until ``count`` more ticks with exact values have been shown."""
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while len(seen) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshot: the page stopped ticking ({len(seen)} of {count} ticks)")
        state = page.locator("#pgvar-status").evaluate(STATUS_JS)
        if state["exact"]:
            seen.add(state["tick"])
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "explorer.png")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as logs:
        server = ExplorerServer(log_dir=Path(logs))
        try:
            server.wait_ready()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1150})
                page.goto(server.url)
                page.wait_for_selector("#pgvar-status", timeout=60_000)
                wait_ticks(page, TICKS_PER_STEP)
                for knob in ("pgvar-rtg", "pgvar-baseline"):
                    page.locator(f".{knob} button").click()
                    wait_ticks(page, TICKS_PER_STEP)
                handle = page.locator(".pgvar-n-slider .noUi-handle").first
                handle.focus()
                page.keyboard.press("End")
                wait_ticks(page, TICKS_PER_STEP)
                page.locator(".pgvar-sweep button").click()
                page.wait_for_function(
                    """() => { for (const doc of window.Bokeh.documents) {
                        const s = doc.get_model_by_name('pgvar-vs-n'); if (s) return s.data.n.length >= 11; }
                        return false; }""",
                    timeout=60_000,
                )
                wait_ticks(page, 3)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=True)
                browser.close()
        finally:
            server.interrupt()
    print(f"screenshot: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
