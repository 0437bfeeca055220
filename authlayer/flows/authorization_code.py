"""Browser sign-in: the authorization code grant with PKCE, through a loopback redirect.

The flow makes a PKCE pair (S256) and a random ``state``, listens on ``127.0.0.1`` only (port
``redirect_port``, or any free port), prints the authorize URL through ``ctx.prompt`` and opens
it with :func:`webbrowser.open` (which honours ``$BROWSER``). The browser comes back to
``http://localhost:{port}`` with ``code`` and ``state``; callbacks with a wrong or missing
``state`` are answered and ignored, an ``error`` callback ends the flow with a
:class:`~authlayer.errors.TokenError`, and so does :data:`SIGN_IN_TIMEOUT` without a callback.
The wait is blocking work, so it is yielded as a :class:`~authlayer._http.Call` (a worker
thread under async). The listener is always closed. Then the code is redeemed with its
verifier (and the client's credential for a confidential client). A refresh token in the cache
is tried first, silently.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import queue
import re
import secrets
import socket
import threading
import time
import webbrowser
from collections.abc import Generator
from typing import Any, Optional
from urllib.parse import parse_qs, urlencode, urlsplit

from .._http import Action, Call
from ..errors import TokenError, redact
from ..token import TokenResult
from . import FlowContext, endpoint
from .client_auth import token_request
from .refresh import complete, sign_in_scope, silently_first

__all__ = ["SIGN_IN_TIMEOUT", "Callback", "LoopbackListener", "acquire", "pkce_pair"]

log = logging.getLogger("authlayer")

SIGN_IN_TIMEOUT = 300.0  # seconds to wait for the browser to come back
WAIT_STEP = 0.5  # seconds of one blocking wait for the browser (a Call)
_READ_TIMEOUT = 10.0  # seconds a browser connection may take to send its request
_MAX_REQUEST = 64 * 1024

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
    HTML page, and hands the first callback carrying the expected ``state`` to :meth:`wait`.
    """

    def __init__(self, state: str, port: Optional[int] = None) -> None:
        self._state = state
        self._results: queue.Queue[Callback] = queue.Queue()
        self._closed = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._sock.bind(("127.0.0.1", port or 0))
            self._sock.listen(8)
            self._sock.settimeout(0.2)
        except OSError:
            self._sock.close()
            raise
        self.port: int = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
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
            worker = threading.Thread(target=self._handle, args=(conn,),
                                      name="authlayer-redirect-request", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [worker]
            worker.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(_READ_TIMEOUT)
                target = self._read_target(conn)
                if target is None:
                    return
                status, page = self._answer(target)
                body = page.encode("utf-8")
                head = (f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
                        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                        "Connection: close\r\n\r\n").encode("ascii")
                conn.sendall(head + body)
            except OSError:
                return

    @staticmethod
    def _read_target(conn: socket.socket) -> Optional[str]:
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
            if len(data) > _MAX_REQUEST:
                return None
        line = data.split(b"\n", 1)[0].decode("latin-1").strip()
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("GET", "POST", "HEAD"):
            return None
        return parts[1]

    def _answer(self, target: str) -> tuple[str, str]:
        split = urlsplit(target)
        if split.path not in ("", "/"):
            return "404 Not Found", _IGNORED
        params = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        state = params.get("state")
        if state is None or not secrets.compare_digest(state.encode(), self._state.encode()):
            log.warning("browser sign-in: ignored a redirect with a %s state",
                        "missing" if state is None else "wrong")
            return "400 Bad Request", _IGNORED
        callback = Callback(params)
        if callback.code is None and callback.error is None:
            return "400 Bad Request", _IGNORED
        self._results.put(callback)
        return ("200 OK", _SUCCESS) if callback.code else ("200 OK", _FAILURE)

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

    def close(self) -> None:
        """Stop listening and wait briefly for answers being written. Safe to call twice."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() at once
        with contextlib.suppress(OSError):
            self._sock.close()
        self._thread.join(1)
        for worker in list(self._threads):
            worker.join(1)


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """A token for a person: from the cached refresh token, else by browser sign-in."""
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
    if ctx.claims:
        params["claims"] = ctx.claims
    return f"{endpoint(profile, 'authorize')}?{urlencode(params)}"


def _open_browser(url: str) -> bool:
    try:
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
        ctx.prompt("Opening your browser to sign in. If it does not open, visit this URL:\n"
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
        listener.close()  # at once when the flow fails or is closed (Ctrl+C, cancelled task)
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
