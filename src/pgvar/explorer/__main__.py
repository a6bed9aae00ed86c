"""``python -m pgvar.explorer [--mdp NAME|FILE] [--port P] [--no-browser]``: serve the explorer."""

from __future__ import annotations

import argparse

from pgvar.explorer import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pgvar.explorer", description=__doc__)
    parser.add_argument(
        "--mdp", default="lesson", help="built-in MDP name or a YAML/JSON file (default: lesson)"
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument(
        "--history", type=int, default=None, help="length of the rolling history (default 200)"
    )
    args = parser.parse_args(argv)
    serve(mdp=args.mdp, port=args.port, open_browser=not args.no_browser, history=args.history)


if __name__ == "__main__":
    main()
