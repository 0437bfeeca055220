"""The one-shot HTTP listener on ``127.0.0.1`` that the browser comes back to after a sign-in.

:class:`LoopbackListener` serves in background threads from the moment it is made, answers each
browser request with a short HTML page, and hands the first callback that carries the expected
``state`` and names a loopback host (``localhost``, ``127.0.0.1``, ``[::1]``) to
:meth:`LoopbackListener.wait`. Other hosts (DNS rebinding), other paths, and a wrong or missing
``state`` are answered and ignored. It knows nothing of OAuth beyond ``code``, ``error`` and
``state``: the browser sign-in flow (:mod:`authlayer.flows.authorization_code`) decides what a
callback means. Its methods block; flows call them through :class:`~authlayer._http.Call`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import socket
import threading
import time
from typing import Optional
from urllib.parse import parse_qs, urlsplit

__all__ = ["Callback", "LoopbackListener"]

log = logging.getLogger("authlayer")

_READ_TIMEOUT = 10.0  # seconds a browser connection may take to send its request
_CLOSE_WAIT = 0.5  # seconds close() waits, in all, for the listener's threads to end
_MAX_REQUEST = 64 * 1024
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>authlayer</title></head>
<body style="font-family: sans-serif; margin: 3em;"><h1>{title}</h1><p>{text}</p></body></html>
"""
_SUCCESS = _PAGE.format(title="Signed in",
                        text="authlayer has your sign-in. You can close this window.")
_FAILURE = _PAGE.format(title="Sign-in failed",
                        text="The sign-in did not succeed. Go back to the terminal for details; "
                        "you can close this window.")
_IGNORED = _PAGE.format(title="Not this sign-in",
                        text="This answer does not belong to the sign-in authlayer is waiting "
                        "for, so it was ignored.")


class Callback:
    """The browser's answer that matched our ``state``: ``code``, or ``error`` and
    ``error_description``. Its ``repr`` never shows the code."""

    __slots__ = ("code", "error", "error_description")

    def __init__(self, params: dict[str, str]) -> None:
        self.code = params.get("code")
        self.error = params.get("error")
        self.error_description = params.get("error_description")

    def __repr__(self) -> str:
        return f"Callback(code={'<hidden>' if self.code else None}, error={self.error!r})"


class LoopbackListener:
    """A one-shot HTTP listener on ``127.0.0.1`` for the redirect back from the browser.

    It serves in a background thread from the moment it is made (some ``$BROWSER`` commands
    wait for the page to load before they return), answers each browser request with a short
    HTML page, and hands the first callback carrying the expected ``state``, sent to a loopback
    host name (``localhost``, ``127.0.0.1``, ``[::1]`` with our port), to :meth:`wait` once its
    page is written. :meth:`close` shuts every connection down at once (browsers keep idle
    ones open) and waits at most ``wait`` seconds, in all, for the threads to end.
    """

    def __init__(self, state: str, port: Optional[int] = None) -> None:
        self._state = state
        self._results: queue.Queue[Callback] = queue.Queue()
        self._closed = threading.Event()
        self._lock = threading.Lock()  # guards _conns, _workers and closing
        self._conns: set[socket.socket] = set()
        self._workers: list[threading.Thread] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            _allow_quick_reuse(self._sock)
            self._sock.bind(("127.0.0.1", port or 0))
            self._sock.listen(8)
            self._sock.settimeout(0.2)
        except OSError:
            self._sock.close()
            raise
        self.port: int = self._sock.getsockname()[1]
        self._hosts = frozenset(f"{name}:{self.port}" for name in _LOOPBACK_NAMES) | (
            frozenset(_LOOPBACK_NAMES) if self.port == 80 else frozenset())
        self._thread = threading.Thread(target=self._serve, name="authlayer-redirect-listener",
                                        daemon=True)
        self._thread.start()

    @property
    def redirect_uri(self) -> str:
        return f"http://localhost:{self.port}"

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _addr = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # closed
            with self._lock:
                if self._closed.is_set():
                    conn.close()
                    return
                self._conns.add(conn)
                worker = threading.Thread(target=self._handle, args=(conn,),
                                          name="authlayer-redirect-request", daemon=True)
                self._workers = [t for t in self._workers if t.is_alive()] + [worker]
            worker.start()

    def _handle(self, conn: socket.socket) -> None:
        callback: Optional[Callback] = None
        try:
            conn.settimeout(_READ_TIMEOUT)
            request = self._read_request(conn)
            if request is None:
                return
            status, page, callback = self._answer(*request)
            body = page.encode("utf-8")
            head = (f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
                    f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                    "Connection: close\r\n\r\n").encode("ascii")
            conn.sendall(head + body)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()
            if callback is not None:
                # Only now: the browser has its page before the flow closes the listener.
                self._results.put(callback)

    @staticmethod
    def _read_request(conn: socket.socket) -> Optional[tuple[str, Optional[str]]]:
        """``(target, Host header)`` of the request on ``conn``; ``None`` for no request."""
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
            if len(data) > _MAX_REQUEST:
                return None
        lines = data.decode("latin-1").replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")
        parts = lines[0].strip().split()
        if len(parts) != 3 or parts[0] not in ("GET", "POST", "HEAD"):
            return None
        hosts = [value.strip() for name, sep, value in (line.partition(":") for line in lines[1:])
                 if sep and name.strip().lower() == "host"]
        return parts[1], hosts[0] if len(hosts) == 1 else None

    def _answer(self, target: str, host: Optional[str]) -> tuple[str, str, Optional[Callback]]:
        """The status and page for one request, and the callback it brought, if ours."""
        if host is None or host.lower() not in self._hosts:
            # A page that had its own name resolve to 127.0.0.1 (DNS rebinding) says so here.
            log.warning("browser sign-in: ignored a request for another host than localhost")
            return "400 Bad Request", _IGNORED, None
        split = urlsplit(target)
        if split.path not in ("", "/"):
            return "404 Not Found", _IGNORED, None
        params = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        state = params.get("state")
        if state is None or not secrets.compare_digest(state.encode(), self._state.encode()):
            log.warning("browser sign-in: ignored a redirect with a %s state",
                        "missing" if state is None else "wrong")
            return "400 Bad Request", _IGNORED, None
        callback = Callback(params)
        if callback.code is None and callback.error is None:
            return "400 Bad Request", _IGNORED, None
        return "200 OK", _SUCCESS if callback.code else _FAILURE, callback

    def wait(self, timeout: float) -> Optional[Callback]:
        """The first matching callback, or ``None`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                # Short waits keep a blocking caller responsive to Ctrl+C.
                return self._results.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue

    def close(self, wait: float = _CLOSE_WAIT) -> None:
        """Stop listening and shut every connection down (idle ones included); then wait at
        most ``wait`` seconds in all for the threads to end. Safe to call twice."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            for conn in self._conns:  # wakes a handler blocked reading at once
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            threads = [self._thread, *self._workers]
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() at once
        with contextlib.suppress(OSError):
            self._sock.close()
        deadline = time.monotonic() + wait
        for thread in threads:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if thread is not threading.current_thread():
                thread.join(left)


def _allow_quick_reuse(sock: socket.socket) -> None:
    """Let a fixed ``redirect_port`` be listened on again at once: the listener closes its
    connections first, which leaves them in TIME_WAIT for a minute. On Windows SO_REUSEADDR
    would let another program take the port over, so there the port is made exclusive."""
    if os.name == "nt":
        exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)
        if exclusive is not None:
            sock.setsockopt(socket.SOL_SOCKET, exclusive, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
