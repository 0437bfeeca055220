"""What a flow yields, and the two drivers that carry it out.

A flow is a generator that never does I/O: it yields actions and receives their results.
:class:`Send` makes one HTTP attempt, :class:`Sleep` waits, :class:`Call` runs a blocking
function (a file or command secret source, a token cache, ``az``); :func:`call` is ``Call``
with its result typed. :func:`run_sync` carries a flow out with blocking calls,
:func:`run_async` without blocking an event loop (asyncio or trio).

This module is light on purpose: a token served from a cache runs a flow of ``Call`` actions
only (reading the token cache), and must not pay for HTTP. A ``Send`` is handed to
:mod:`authlayer._http`, the one HTTP boundary, imported at the first request actually sent.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union

from ._record import field, record

if TYPE_CHECKING:
    import httpx

    from ._http import HttpRequest

__all__ = ["ASYNC_READY", "Action", "Call", "Flow", "Send", "Sleep", "call", "drive",
           "import_async_stack", "on_wait", "run_async", "run_sync"]

T = TypeVar("T")


@record
class Send:
    """Action: make one HTTP attempt. Answered with :class:`~authlayer._http.HttpResponse` or
    :class:`~authlayer._http.ConnectionFailed`."""

    request: HttpRequest


@record
class Sleep:
    """Action: wait ``seconds`` (without blocking an event loop). Answered with ``None``.
    ``why`` says what for, in words a person reads ("waiting for the sign-in"): the command
    line shows it on a terminal while it waits (:data:`on_wait`). Two waits of the same length
    are equal, whatever their ``why``."""

    seconds: float
    why: str = field(default="", compare=False)


@record
class Call:
    """Action: run a blocking function (in a worker thread under async). Answered with its
    result; its exception is thrown into the flow."""

    fn: Callable[[], Any]


Action = Union[Send, Sleep, Call]
Flow = Generator[Action, Any, T]

# Told of every wait before the drivers make it: the command line sets it to show progress on a
# terminal (device-code polling, retries). Never set by the library itself.
on_wait: Optional[Callable[[Sleep], None]] = None


def call(fn: Callable[[], T]) -> Flow[T]:
    """``result = yield from call(fn)``: :class:`Call` with ``fn``'s result typed as it returns
    it, so that a flow needs no ``isinstance`` check on what the driver sent back."""
    result: T = yield Call(fn)
    return result


def drive(flow: Flow[T], perform: Callable[[Action], Any]) -> T:
    """Run ``flow`` to its end, ``perform`` carrying out each action it yields: its result is
    sent back into the flow, its exception thrown into it. The protocol of every blocking
    driver (:func:`run_sync`, and the scripted drivers of the tests); :func:`run_async` is its
    ``await`` twin."""
    try:
        action = next(flow)
        while True:
            try:
                result = perform(action)
            except Exception as exc:
                action = flow.throw(exc)
                continue
            action = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        flow.close()


def run_sync(flow: Flow[T]) -> T:
    """Run a flow to completion with blocking I/O."""
    clients: dict[tuple[bool, Optional[str]], httpx.Client] = {}

    def perform(action: Action) -> Any:
        if isinstance(action, Send):
            from . import _http  # only now: a flow served from a cache sends nothing

            req = action.request
            kind = (req.via_proxy, req.pin)
            client = clients.get(kind)
            if client is None:
                client = clients[kind] = _http.new_client(False, *kind)
            return _http.exchange_sync(client, req)
        if isinstance(action, Sleep):
            if on_wait is not None:
                on_wait(action)
            time.sleep(action.seconds)
            return None
        return action.fn()

    try:
        return drive(flow, perform)
    finally:
        for client in clients.values():
            client.close()


#: The event loop libraries whose async transport :func:`import_async_stack` has imported.
ASYNC_READY: set[str] = set()


def import_async_stack(library: str) -> None:
    """Import what :func:`run_async` needs on ``library`` ("asyncio" or "trio"): httpx, anyio
    and anyio's backend for it. Called in a worker thread before a first async flow runs: on
    the event loop, these imports would stall every task for tens of milliseconds."""
    import contextlib
    import importlib

    import anyio.to_thread  # noqa: F401

    from . import _http  # noqa: F401

    # anyio's own lazy import of its backend: a private name, so if it ever moves, the
    # backend is simply imported later, as before.
    with contextlib.suppress(ImportError):
        importlib.import_module(f"anyio._backends._{library}")
    ASYNC_READY.add(library)


async def run_async(flow: Flow[T]) -> T:
    """Run a flow to completion without blocking the event loop (asyncio or trio)."""
    import anyio
    import anyio.to_thread

    from . import _http

    clients: dict[tuple[bool, Optional[str]], httpx.AsyncClient] = {}
    # A worker thread of our own: if every thread of the shared pool is busy (sync callers
    # waiting for this very acquisition, say), the flow must still be able to go on.
    own_thread = anyio.CapacityLimiter(1)
    try:
        action = next(flow)
        while True:
            try:
                if isinstance(action, Send):
                    req = action.request
                    kind = (req.via_proxy, req.pin)
                    client = clients.get(kind)
                    if client is None:
                        # Loading the CA bundle and building a client take tens of ms the
                        # first time: not on the event loop.
                        client = clients[kind] = await anyio.to_thread.run_sync(
                            _http.new_client, True, *kind, limiter=own_thread)
                    result: Any = await _http.exchange_async(client, req)
                elif isinstance(action, Sleep):
                    if on_wait is not None:
                        on_wait(action)
                    await anyio.sleep(action.seconds)
                    result = None
                else:
                    result = await anyio.to_thread.run_sync(action.fn, limiter=own_thread)
            except Exception as exc:
                action = flow.throw(exc)
                continue
            action = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        flow.close()
        for client in clients.values():
            await client.aclose()
