"""Opening the sign-in page in a browser without disturbing standard output.

:func:`open_browser` starts the browser :func:`webbrowser.open` chooses (it honours
``$BROWSER``) with file descriptor 1 pointed at standard error, so that ``$(authlayer token
web)`` holds the token only and does not wait for a browser left running; a browser that runs in
the terminal (lynx, w3m) is started only when a person is at one. Blocking: flows call it
through :class:`~authlayer._http.Call`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import webbrowser
from collections.abc import Iterator
from typing import Optional

__all__ = ["open_browser"]

log = logging.getLogger("authlayer")

# Browsers that run in the terminal and hold it until the person quits them.
_CONSOLE_BROWSERS = frozenset({"www-browser", "links", "links2", "elinks", "lynx", "w3m",
                               "browsh"})

_stdout_lock = threading.Lock()  # one redirection of file descriptor 1 at a time


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at standard error for the block, then back.

    Browser commands (``$BROWSER``, xdg-open, a browser's own launcher) inherit the process's
    standard output: what they print would land next to the token, and a process they leave
    behind would keep ``$(authlayer token ...)`` waiting for the end of its output. Started
    inside this block they get standard error instead. Not done on Windows (browsers are
    started through the shell there), nor when descriptor 1 or 2 was not open when Python
    started (``sys.__stdout__`` or ``sys.__stderr__`` is ``None``: the descriptor may belong
    to some file opened since), nor when it is not open now.
    """
    with _stdout_lock:
        saved: Optional[int] = None
        if os.name == "posix" and sys.__stdout__ is not None and sys.__stderr__ is not None:
            for stream in (sys.stdout, sys.__stdout__):
                with contextlib.suppress(Exception):  # None, closed, or not a real file
                    if stream is not None:
                        stream.flush()
            try:
                os.fstat(2)
                saved = os.dup(1)
            except OSError:
                saved = None
            if saved is not None:
                try:
                    os.dup2(2, 1)
                except OSError:
                    os.close(saved)
                    saved = None
        try:
            yield
        finally:
            if saved is not None:
                try:
                    os.dup2(saved, 1)
                finally:
                    os.close(saved)


def _on_a_terminal() -> bool:
    """Whether standard input, output and error are all a terminal (a person at a console, no
    output captured)."""
    try:
        return all(os.isatty(fd) for fd in (0, 1, 2))
    except OSError:
        return False


def _console_browser_first() -> bool:
    """Whether the browser :func:`webbrowser.open` would start first runs in the terminal
    (lynx, w3m, links), as it does without a graphical display."""
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    name = getattr(browser, "basename", None) or getattr(browser, "name", "")
    return os.path.basename(str(name)).lower() in _CONSOLE_BROWSERS


def open_browser(url: str) -> bool:
    """Open ``url`` in a browser, its standard output going to standard error. A console
    browser is started only on a terminal; elsewhere the printed URL is for the person."""
    try:
        if not _on_a_terminal() and _console_browser_first():
            log.info("browser sign-in: not starting a console browser without a terminal")
            return False
        with _stdout_to_stderr():
            return bool(webbrowser.open(url))
    except webbrowser.Error:
        return False
