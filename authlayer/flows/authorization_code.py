"""Browser sign-in: the authorization code grant with PKCE, through a loopback redirect.

The flow makes a PKCE pair (S256) and a random ``state``, listens on ``127.0.0.1`` only (port
``redirect_port``, or any free port), prints the authorize URL through ``ctx.prompt`` and opens
it with :func:`webbrowser.open` (which honours ``$BROWSER``), with the browser's standard output
sent to standard error, so that ``$(authlayer token web)`` holds the token only and does not
wait for the browser. The browser comes back to ``http://localhost:{port}`` with ``code`` and
``state``; requests for another host, and callbacks with a wrong or missing ``state``, are
answered and ignored, an ``error`` callback ends the flow with a
:class:`~authlayer.errors.TokenError`, and so does :data:`SIGN_IN_TIMEOUT` without a callback.
The wait is blocking work, so it is yielded as a :class:`~authlayer._http.Call` (a worker
thread under async). The listener is always closed, at once. Then the code is redeemed with its
verifier (and the client's credential for a confidential client). A refresh token in the cache
is tried first, silently, except for a fresh sign-in (``ctx.fresh_sign_in``, ``authlayer
login``), which also lets the person choose the account (``prompt=select_account``).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import os
import queue
import re
import secrets
import socket
import sys
import threading
import time
import webbrowser
from collections.abc import Generator, Iterator
from dataclasses import replace
from typing import Any, Optional
from urllib.parse import parse_qs, urlencode, urlsplit

from .._http import Action, Call
from ..errors import TokenError, redact
from ..token import TokenResult
from . import FlowContext, endpoint
from .client_auth import token_request
from .refresh import complete, show, sign_in_scope, silently_first

__all__ = ["SIGN_IN_TIMEOUT", "Callback", "LoopbackListener", "acquire", "pkce_pair"]

log = logging.getLogger("authlayer")

SIGN_IN_TIMEOUT = 300.0  # seconds to wait for the browser to come back
WAIT_STEP = 0.5  # seconds of one blocking wait for the browser (a Call)
_READ_TIMEOUT = 10.0  # seconds a browser connection may take to send its request
_CLOSE_WAIT = 0.5  # seconds close() waits, in all, for the listener's threads to end
_MAX_REQUEST = 64 * 1024
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
# Browsers that run in the terminal and hold it until the person quits them.
_CONSOLE_BROWSERS = frozenset({"www-browser", "links", "links2", "elinks", "lynx", "w3m",
                               "browsh"})

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


def pkce_pair() -> tuple[str, str]:
    """``(code_verifier, code_challenge)``: 64 characters from ``secrets`` and their S256."""
    verifier = secrets.token_urlsafe(48)  # 48 random bytes -> 64 URL-safe characters
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


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


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """A token for a person: from the cached refresh token, else by browser sign-in.
    A fresh sign-in (``authlayer login``) ignores the kept refresh token and account."""
    if ctx.fresh_sign_in:
        ctx = replace(ctx, refresh_token=None, account=None)
    return (yield from silently_first(ctx, sign_in))


def authorize_url(ctx: FlowContext, *, redirect_uri: str, state: str, challenge: str) -> str:
    """The URL the browser opens."""
    profile = ctx.profile
    assert profile.client_id is not None
    params = {
        "client_id": profile.client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": sign_in_scope(ctx),
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "response_mode": "query",
    }
    for key in ("login_hint", "domain_hint", "prompt"):
        value = getattr(profile, key)
        if value:
            params[key] = value
    if ctx.fresh_sign_in and "prompt" not in params:
        params["prompt"] = "select_account"  # authlayer login: perhaps as someone else
    if ctx.claims:
        params["claims"] = ctx.claims
    return f"{endpoint(profile, 'authorize')}?{urlencode(params)}"


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


def _open_browser(url: str) -> bool:
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


def sign_in(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Send the person to the browser, wait for the redirect, redeem the code."""
    profile = ctx.profile
    name = profile.name
    assert profile.client_id is not None
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(24)
    try:
        listener = yield Call(lambda: LoopbackListener(state, profile.redirect_port))
    except OSError as exc:
        raise TokenError(
            f"browser sign-in: cannot listen on 127.0.0.1 port {profile.redirect_port or 0} "
            f"({exc.strerror or exc})", profile=name, error="listener_failed",
            hint="set redirect_port to a free port, or 0 for any free port",
        ) from None
    assert isinstance(listener, LoopbackListener)
    timeout = SIGN_IN_TIMEOUT
    try:
        redirect_uri = listener.redirect_uri
        url = authorize_url(ctx, redirect_uri=redirect_uri, state=state, challenge=challenge)
        show(ctx, "Opening your browser to sign in. If it does not open, visit this URL:\n"
             + url)
        opened = yield Call(lambda: _open_browser(url))
        if not opened:
            log.info("profile %r: no browser could be opened; waiting for the URL to be "
                     "visited", name)
        # Waited for in short steps, so that a cancelled task or Ctrl+C ends the wait soon.
        deadline = time.monotonic() + timeout
        callback = None
        while callback is None and time.monotonic() < deadline:
            step = min(WAIT_STEP, max(0.0, deadline - time.monotonic()))
            callback = yield Call(functools.partial(listener.wait, step))
        yield Call(listener.close)
    finally:
        # At once when the flow fails or is closed (Ctrl+C, a cancelled task: then this runs
        # on the event loop's thread, so it does not wait for the listener's threads).
        listener.close(wait=0.0)
    if callback is None:
        raise TokenError(
            f"browser sign-in: no answer from the browser within {timeout:g} s",
            profile=name, error="timeout", hint="run it again and finish the sign-in sooner",
        )
    assert isinstance(callback, Callback)
    if callback.error is not None:
        codes = _codes(callback.error_description)
        text = f"browser sign-in failed: {callback.error}"
        first = (callback.error_description or "").strip().splitlines()
        if first:
            text += f" - {redact(first[0])}"
        raise TokenError(text, profile=name, error=callback.error, error_codes=codes,
                         description=callback.error_description)
    assert callback.code is not None
    return (yield from _redeem(ctx, callback.code, redirect_uri, verifier))


def _codes(description: Optional[str]) -> list[int]:
    found = re.match(r"\s*AADSTS(\d+)", description or "")
    return [int(found.group(1))] if found else []


def _redeem(
    ctx: FlowContext, code: str, redirect_uri: str, verifier: str
) -> Generator[Action, Any, TokenResult]:
    profile = ctx.profile
    assert profile.client_id is not None
    form = {
        "grant_type": "authorization_code",
        "client_id": profile.client_id,
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
        "scope": sign_in_scope(ctx),
    }
    result = yield from token_request(ctx, form, what="authorization code token request")
    return complete(result, account=ctx.account)


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import CLIENT, COMMON, FlowSpec  # noqa: E402 - kept next to the entry it declares

FLOW = FlowSpec(
    name="authorization_code",
    acquire=acquire,
    keys=COMMON | CLIENT | {"redirect_port", "login_hint", "domain_hint", "prompt"},
    required=("client_id",),
    credential="optional",
    default_tenant="organizations",
    file_cache=True,
    names_profile=True,
    may_prompt=True,
    summary="a person signs in with the browser",
)
