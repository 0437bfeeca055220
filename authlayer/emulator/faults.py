"""Misbehaviour on demand: the faults ``Emulator.inject`` queues and the answers they make.

A fault names an endpoint (``"token"``, ``"api"``, ... or ``"any"``) and how many requests it
spoils. The next request to that endpoint takes the oldest matching fault. Kinds:

- ``status``: answer ``status`` (default 503) with an Entra-shaped error body, and
  ``Retry-After`` when ``retry_after`` is given; the handler does not run.
- ``drop``: close the connection without an answer; the handler does not run.
- ``html``: a ``text/html`` page with ``status`` (default 200), as a proxy or a sign-in page
  would send; the handler does not run.
- ``truncated``: the handler's answer, sent as a 200 with its JSON body cut in half (a
  malformed body with a correct ``Content-Length``).
- ``missing_field``: the handler's answer, sent as a 200 without ``field`` (default
  ``access_token``).
- ``latency``: wait ``seconds``, then answer normally.

A :class:`Hold` (``Emulator.hold``) is not queued: while it is in place, every request to its
endpoint waits before any fault or handler, until the test releases it. Tests use it to make a
race happen for sure (many callers arrive while one request is under way) without sleeping.

This module holds no sockets: the server asks :meth:`FaultQueue.take` and :meth:`Hold.enter`
and applies the result.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Optional

from .wire import EntraError, Request, Response, entra_error_response, text_response

__all__ = ["FAULT_KINDS", "Fault", "FaultQueue", "Hold", "mangle", "short_circuit"]

FAULT_KINDS = ("status", "drop", "html", "truncated", "missing_field", "latency")

_CANNED_TOKEN = {
    "token_type": "Bearer",
    "expires_in": 3599,
    "ext_expires_in": 3599,
    "access_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJlbXVsYXRvciJ9.c2lnbmF0dXJl",
}

_HTML = (
    "<!DOCTYPE html><html><head><title>Sign in to your account</title></head>"
    "<body><p>Something went wrong. Please try again later.</p></body></html>"
)


@dataclass(frozen=True)
class Fault:
    """One queued fault; ``remaining`` is how many more requests it spoils."""

    kind: str
    endpoint: str = "token"
    remaining: int = 1
    status: Optional[int] = None
    retry_after: Optional[float] = None
    seconds: float = 0.0
    field: str = "access_token"


class FaultQueue:
    """Thread-safe queue of pending faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {fault.kind!r}; use one of {FAULT_KINDS}")
        if fault.remaining > 0:
            with self._lock:
                self._faults.append(fault)

    def take(self, endpoint: str) -> Optional[Fault]:
        """The fault for the next request to ``endpoint``, using up one of its count."""
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.endpoint in (endpoint, "any"):
                    if fault.remaining <= 1:
                        del self._faults[i]
                    else:
                        self._faults[i] = replace(fault, remaining=fault.remaining - 1)
                    return fault
        return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


class Hold:
    """Requests to ``endpoint`` (or to any, for ``"any"``) wait until :meth:`release`.

    Made by ``Emulator.hold``; ``count`` holds only the next ``count`` matching requests
    (``None``: all of them). ``with emu.hold() as gate:`` releases it at the end of the block.
    The emulator's ``reset()`` and ``stop()`` :meth:`abandon` it, so that nothing waits forever
    and nothing held for a test that is over is answered (or takes a fault) in the next one.
    """

    def __init__(self, endpoint: str = "token", count: Optional[int] = None) -> None:
        self.endpoint = endpoint
        self.count = count
        self._cond = threading.Condition()
        self._released = False
        self._abandoned = False
        self._held = 0
        self._arrived = 0

    @property
    def held(self) -> int:
        """How many requests wait here now."""
        with self._cond:
            return self._held

    @property
    def arrived(self) -> int:
        """How many requests this hold has held so far (released ones included)."""
        with self._cond:
            return self._arrived

    @property
    def released(self) -> bool:
        with self._cond:
            return self._released

    def matches(self, endpoint: str) -> bool:
        return self.endpoint in (endpoint, "any")

    def enter(self) -> bool:
        """Called by the server for a matching request: wait until released. False if the hold
        was abandoned instead: the request gets no answer (its connection is closed)."""
        with self._cond:
            if self._released or (self.count is not None and self._arrived >= self.count):
                return True
            self._arrived += 1
            self._held += 1
            self._cond.notify_all()
            try:
                while not self._released:
                    self._cond.wait()
            finally:
                self._held -= 1
            return not self._abandoned

    def wait_for(self, n: int = 1, timeout: Optional[float] = None) -> bool:
        """Wait until ``n`` requests have been held (they stay held until :meth:`release`).
        No time limit unless ``timeout`` is given; False if it ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._arrived >= n, timeout)

    def release(self) -> None:
        """Let every held request go on, and hold no more. Safe to call twice."""
        with self._cond:
            self._released = True
            self._cond.notify_all()

    def abandon(self) -> None:
        """Let every held request go without an answer (its connection is closed), and hold no
        more: what the emulator's ``reset()`` and ``stop()`` do."""
        with self._cond:
            if not self._released:
                self._abandoned = True
            self._released = True
            self._cond.notify_all()

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self.released else f"holding {self.held}"
        return f"<Hold {self.endpoint!r} {state}>"


def _retry_after(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def short_circuit(fault: Fault, req: Request) -> Optional[Response]:
    """The answer a ``status`` or ``html`` fault gives instead of the handler's; ``None`` for
    the other kinds."""
    headers: list[tuple[str, str]] = []
    if fault.retry_after is not None:
        headers.append(("Retry-After", _retry_after(fault.retry_after)))
    if fault.kind == "status":
        status = 503 if fault.status is None else fault.status
        if status == 429:
            err = EntraError("temporarily_unavailable", 90055,
                             "Too many requests: the request was throttled. Retry later.",
                             status=429)
        elif status >= 500:
            err = EntraError("temporarily_unavailable", 90033,
                             "The service is temporarily unavailable. Retry later.",
                             status=status)
        elif status == 401:
            err = EntraError("invalid_client", 7000215, "The request was refused (injected).",
                             status=401)
            if req.endpoint == "api":
                headers.append(("WWW-Authenticate",
                                'Bearer realm="", error="invalid_token", '
                                'error_description="the token was refused (injected fault)"'))
        else:
            err = EntraError("invalid_request", 90023,
                             f"The request was refused with HTTP {status} (injected).",
                             status=status)
        response = entra_error_response(req, err)
        response.headers.extend(headers)
        return response
    if fault.kind == "html":
        status = 200 if fault.status is None else fault.status
        return text_response(_HTML, status=status, content_type="text/html; charset=utf-8",
                             headers=headers)
    return None


def mangle(fault: Fault, response: Response) -> Response:
    """Spoil a handler's answer for a ``truncated`` or ``missing_field`` fault."""
    try:
        obj = json.loads(response.body) if 200 <= response.status < 300 else None
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        obj = dict(_CANNED_TOKEN)
    if fault.kind == "missing_field":
        obj.pop(fault.field, None)
        body = json.dumps(obj, separators=(",", ":")).encode()
    else:
        full = json.dumps(obj, separators=(",", ":")).encode()
        body = full[: len(full) // 2]
    return Response(200, body, list(response.headers), "application/json; charset=utf-8")
