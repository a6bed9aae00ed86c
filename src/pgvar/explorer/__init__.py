"""``pgvar explore``: the live gradient-variance explorer (lesson 07's widget, and more), in Panel.

``app(mdp)`` builds the page for one session (also usable in a notebook); ``serve(mdp, port)`` runs a
local server on 127.0.0.1, prints its URL and opens a browser. Pure session logic lives in
:mod:`pgvar.explorer.state` and runs without Panel; each session's work runs in its own thread
(:mod:`pgvar.explorer.jobs`) under ``pgvar.budget.EXPLORER``.
"""

from __future__ import annotations

import logging
import sys
import webbrowser

__all__ = ["app", "serve", "write_static"]

#: A session whose tab has gone is ended (its memory freed) this long after (Bokeh's default: 15 s).
UNUSED_SESSION_LIFETIME_MS = 5_000
CHECK_UNUSED_SESSIONS_MS = 1_000


def app(mdp: str = "lesson", **kwargs):
    """The explorer for the current session (a Panel layout); see :func:`pgvar.explorer.page.app`."""
    from pgvar.explorer.page import app as _app

    return _app(mdp, **kwargs)


def write_static(path: str, mdp: str = "lesson", **kwargs) -> int:
    """Write the static page (one self-contained HTML file, no server); see
    :func:`pgvar.explorer.static.write_static`. Returns its size in bytes."""
    from pgvar.explorer.static import write_static as _write

    return _write(path, mdp, **kwargs)


def serve(
    mdp: str = "lesson",
    port: int = 0,
    open_browser: bool = True,
    address: str = "127.0.0.1",
    *,
    history: int | None = None,
) -> None:
    """Serve the explorer on ``address:port`` (0: any free port) until Ctrl-C.

    Prints ``pgvar explorer: http://127.0.0.1:PORT/`` once the numba kernels the page needs are loaded
    (or compiled, with a progress line, on the first start after an install: :mod:`pgvar.explorer.warmup`),
    so the first page gets its first number at once. A bad ``mdp`` file does not stop the server: the
    page shows the message and runs the lesson's MDP. JavaScript is served by this server (no CDN).
    """
    from pgvar.explorer.warmup import warm_up

    warm_up(lambda line: print(f"pgvar explorer: {line}", file=sys.stderr, flush=True))

    import panel as pn

    from pgvar.explorer.page import app as _app
    from pgvar.explorer.state import DEFAULT_HISTORY, is_builtin_spec

    file_choice = None if is_builtin_spec(str(mdp)) and str(mdp) in _builtin_names() else str(mdp)
    length = DEFAULT_HISTORY if history is None else history

    def session():
        return _app(str(mdp), history=length, file_choice=file_choice)

    server = pn.serve(
        {"/": session},
        port=port,
        address=address,
        websocket_origin=[address, "localhost", "127.0.0.1"],
        show=False,
        start=False,
        threaded=False,
        title="pgvar explorer",
        verbose=False,
        unused_session_lifetime_milliseconds=UNUSED_SESSION_LIFETIME_MS,
        check_unused_sessions_milliseconds=CHECK_UNUSED_SESSIONS_MS,
    )
    _quiet_closed_sockets(server.io_loop.asyncio_loop)
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{server.port}/"
    print(f"pgvar explorer: {url}", flush=True)
    print("Press Ctrl-C to stop.", file=sys.stderr, flush=True)
    server.start()
    if open_browser:
        server.io_loop.add_callback(lambda: webbrowser.open(url))
    try:
        server.io_loop.start()  # Panel's SIGINT handler stops the loop; a bare KeyboardInterrupt may too
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("pgvar explorer: stopped", file=sys.stderr, flush=True)


def _quiet_closed_sockets(loop) -> None:
    """A write to a tab that has just closed fails with ``WebSocketClosedError`` in a task nobody
    awaits any more (the session has ended): log it in one line at debug level, not as a traceback."""
    from tornado.iostream import StreamClosedError
    from tornado.websocket import WebSocketClosedError

    def handler(loop, context) -> None:
        if isinstance(context.get("exception"), (WebSocketClosedError, StreamClosedError)):
            logging.getLogger(__name__).debug("pgvar explorer: a message to a closed tab was dropped")
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def _builtin_names() -> list[str]:
    from pgvar.envs import BUILTINS

    return list(BUILTINS)
