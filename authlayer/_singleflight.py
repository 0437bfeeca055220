"""Single flight: while one caller does the work for a key, everyone else who needs that key
waits and shares its outcome.

Generic: it knows nothing about what the work is (authlayer runs token acquisitions and
profile loads through it). Callers may be threads, asyncio tasks and trio tasks, on any number
of event loops in any number of threads, all on the same key at once. It needs neither
``sniffio`` nor ``anyio``: a task's event loop is found with ``asyncio.get_running_loop()``,
and, when there is none, trio's token.

``flights = SingleFlight()`` (typed ``SingleFlight[K, V]``; keys are hashable) offers:

``flights.run(key, work, *, tag=None, shares=None, takes=None, instead=None) -> V``
    For blocking callers. With no flight under way for ``key``, the caller *leads* one: it
    calls ``work()`` and gets ``work()``'s own value or exception; the outcome also goes to
    everyone who joined meanwhile. ``tag`` describes what this leader is doing (e.g. what it
    was asked for), for followers' predicates. Otherwise the caller *follows*, in this order:

    1. ``instead()``, when given, is asked first: a value other than ``None`` is returned at
       once, without waiting (e.g. a cached value that is still good while a refresh runs);
    2. if the leader is a caller on this very thread (an async leader on this thread's event
       loop, or the leader's own ``work`` asking again), waiting would never end: ``work()``
       runs directly (not as a leader: nobody shares its outcome);
    3. wait for the flight to land;
    4. ``shares(leader_tag)`` false: this flight's outcome is not for this caller at all, not
       even its error: start again at the top;
    5. the leader failed with an ``Exception``: raise a copy of it, one for each follower,
       caused by (``__cause__``) the leader's own. The leader was interrupted instead (a
       ``BaseException`` that is not an ``Exception``: a cancelled task, ``KeyboardInterrupt``):
       start again at the top, perhaps as the new leader;
    6. ``takes(leader_tag, value)`` false (e.g. this caller needs more than the leader was
       asked for, or must not use that very value): start again at the top;
    7. return the leader's value (``None`` is a value like any other).

``await flights.run_async(key, work, *, tag=None, shares=None, takes=None, instead=None) -> V``
    The same for tasks; ``work()`` returns an awaitable. A waiting task never blocks its event
    loop: it awaits an event of its own loop, which the thread that lands the flight wakes
    thread-safely. Step 2 applies to a blocking leader on this thread (an event loop run
    inside the leader's ``work``); an async leader on this thread's loop is awaited normally.

``flights.spawn(key, work, *, tag=None, name="authlayer-flight") -> bool``
    Lead ``key``'s flight from a new daemon thread (e.g. a refresh ahead of expiry that no
    caller waits for), unless a flight for ``key`` is under way: then nothing starts and the
    answer is False. Callers join a spawned flight like any other. Its error goes to the
    followers it has and is otherwise dropped (``work`` logs what it must); nothing reaches
    ``threading.excepthook``. ``flights.join_background(timeout=None)`` waits for spawned
    threads (a clean shutdown, tests) and says whether none is left.

``len(flights)`` and ``key in flights``: flights under way. ``flights.waiting(key)``: how many
callers wait for ``key``'s flight now (a task whose wait was cancelled, e.g. because its event
loop shut down, no longer counts and is no longer woken).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import os
import threading
import time
from collections.abc import Awaitable, Hashable
from typing import Any, Callable, Generic, Optional, TypeVar

__all__ = ["SingleFlight", "off_loop", "running_library"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _NotStarted(BaseException):
    """The outcome of a spawned flight whose thread could not start: followers try again."""


class _Flight:
    """One flight under way. Its mutable fields change under the owner's lock."""

    __slots__ = ("blocking", "error", "event", "landed", "tag", "thread", "value", "waiting",
                 "wakers")

    def __init__(self, tag: Any, thread: int, blocking: bool) -> None:
        self.tag = tag
        self.thread = thread  # the leader's thread (0: not known yet)
        self.blocking = blocking  # the leader blocks its thread (not an async task)
        self.landed = False
        self.value: Any = None
        self.error: Optional[BaseException] = None
        # Made on demand, so that a flight nobody waits for costs one small object.
        self.event: Optional[threading.Event] = None  # for waiting threads
        self.wakers: Optional[list[_Waiter]] = None  # for waiting tasks
        self.waiting = 0


def _shared(flight: _Flight) -> bool:
    """False if the leader was interrupted (try again); raises a copy of the leader's error."""
    error = flight.error
    if error is None:
        return True
    if not isinstance(error, Exception):
        return False
    try:
        mine = copy.copy(error)  # each follower's traceback on its own object
    except Exception:
        raise error from None
    raise mine from error


#: How many waiting asyncio tasks one event-loop iteration wakes: a thousand tasks woken in one
#: iteration would run back to back and hold the loop (and every other task on it) for tens
#: of milliseconds; in batches, the loop's other work runs between them.
WAKE_BATCH = 50


class _Waiter:
    """A waiting task: its event loop (None for trio) and what wakes it (a future of that
    loop, or a callable for trio)."""

    __slots__ = ("loop", "wake")

    def __init__(self, loop: Any, wake: Any) -> None:
        self.loop = loop
        self.wake = wake


def _asyncio_loop() -> Any:
    """The running asyncio loop if the caller is an asyncio task, else None (trio, including
    trio in guest mode on an asyncio loop, whose tasks see that loop running but are no
    asyncio task). Found without sniffio."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop if asyncio.current_task(loop) is not None else None


def _loop_waiter() -> tuple[_Waiter, Callable[[], Awaitable[Any]]]:
    """``(waiter, wait)`` for the running task: ``await wait()`` returns once :func:`_wake`
    woke the waiter, from any thread. asyncio or trio, found without sniffio."""
    loop = _asyncio_loop()
    if loop is None:
        try:
            import trio
        except ImportError:
            raise RuntimeError("SingleFlight.run_async needs a running asyncio or trio "
                               "event loop") from None
        token = trio.lowlevel.current_trio_token()
        event = trio.Event()

        def wake_trio() -> None:
            token.run_sync_soon(event.set)

        return _Waiter(None, wake_trio), event.wait

    future = loop.create_future()
    return _Waiter(loop, future), lambda: future


def running_library() -> str:
    """``"asyncio"`` or ``"trio"``: the event loop library of the running task."""
    return "trio" if _asyncio_loop() is None else "asyncio"


class _Threads:
    """Runs jobs in daemon threads, at most ``limit`` at once: more wait their turn, and a
    thread that finishes a job takes the next one. No thread is kept waiting for work."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._reset()
        if hasattr(os, "register_at_fork"):  # a child has none of its parent's threads
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pending: collections.deque[Callable[[], None]] = collections.deque()
        self._running = 0

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` (which raises nothing) in a thread, now or when one is free."""
        with self._lock:
            if self._running >= self.limit:
                self._pending.append(job)
                return
            self._running += 1
        try:
            threading.Thread(target=self._run, args=(job,), name="authlayer-off-loop",
                             daemon=True).start()
        except BaseException:
            with self._lock:
                self._running -= 1
            raise

    def _run(self, job: Optional[Callable[[], None]]) -> None:
        while job is not None:
            with contextlib.suppress(BaseException):  # (jobs catch their own): never stop
                job()
            with self._lock:
                if self._pending:
                    job = self._pending.popleft()
                else:
                    job = None
                    self._running -= 1


#: At most this many :func:`off_loop` jobs run at once (anyio's default is 40).
OFF_LOOP_THREADS = _Threads(32)


async def off_loop(fn: Callable[[], V]) -> V:
    """``fn()`` in a worker thread (:data:`OFF_LOOP_THREADS`), awaited without blocking the
    running event loop (asyncio or trio), and without anyio: for work that must not run on
    the loop before anyio itself is imported (its first import takes tens of ms). A cancelled
    caller stops waiting; ``fn`` still runs to its end."""
    waiter, wait = _loop_waiter()
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # handed to the awaiting task, raised there
            outcome.append((False, exc))
        finally:
            _wake([waiter])

    def start() -> None:
        try:
            OFF_LOOP_THREADS.submit(run)
        except BaseException as exc:  # RuntimeError: can't start new thread
            outcome.append((False, exc))
            _wake([waiter])

    if waiter.loop is not None:
        # Started once the tasks ready now have run: a thread busy from the start (imports,
        # parsing) would take the GIL from them, and a stampede's thousand first steps in
        # this very iteration would take three times as long.
        waiter.loop.call_soon(start)
    else:
        start()
    await wait()
    done, value = outcome[0]
    if not done:
        raise value
    return value  # type: ignore[no-any-return]


def _wake(waiters: list[_Waiter]) -> None:
    """Wake every waiter, from any thread: asyncio tasks through one call into each of their
    loops, which resolves their futures :data:`WAKE_BATCH` per loop iteration."""
    by_loop: dict[Any, list[Any]] = {}
    for waiter in waiters:
        if waiter.loop is None:
            # RuntimeError: that trio run has ended, so nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                waiter.wake()
        else:
            by_loop.setdefault(waiter.loop, []).append(waiter.wake)
    for loop, futures in by_loop.items():
        # RuntimeError: that event loop has closed, so nobody is waiting there any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, loop, futures, 0)


def _resolve(loop: Any, futures: list[Any], start: int) -> None:
    """In ``loop``: resolve one batch of ``futures`` from ``start``; the next batch in the next
    iteration (the tasks of this one run first)."""
    end = start + WAKE_BATCH
    for future in futures[start:end]:
        if not future.done():  # (cancelled meanwhile)
            future.set_result(None)
    if end < len(futures):
        loop.call_soon(_resolve, loop, futures, end)


class SingleFlight(Generic[K, V]):
    """One leader per key does the work; the others share its outcome (see the module)."""

    def __init__(self) -> None:
        self._flights: dict[K, _Flight] = {}
        self._guard = threading.Lock()
        self._background: set[threading.Thread] = set()

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    def waiting(self, key: K) -> int:
        """How many callers wait for ``key``'s flight now."""
        flight = self._flights.get(key)
        return flight.waiting if flight is not None else 0

    # ------------------------------------------------------------------ blocking callers

    def run(self, key: K, work: Callable[[], V], *, tag: Any = None,
            shares: Optional[Callable[[Any], bool]] = None,
            takes: Optional[Callable[[Any, V], bool]] = None,
            instead: Optional[Callable[[], Optional[V]]] = None) -> V:
        """``work()``'s value, as ``key``'s leader or from the leader under way."""
        while True:
            flight, leader = self._join(key, tag, True)
            if leader:
                try:
                    value = work()
                except BaseException as exc:
                    self._land(key, flight, None, exc)
                    raise
                self._land(key, flight, value, None)
                return value
            if instead is not None:
                now = instead()
                if now is not None:
                    return now
            if flight.thread == threading.get_ident():
                return work()
            self._wait(flight)
            if shares is not None and not shares(flight.tag):
                continue
            if not _shared(flight):
                continue
            value = flight.value
            if takes is None or takes(flight.tag, value):
                return value

    def _wait(self, flight: _Flight) -> None:
        with self._guard:
            if flight.landed:
                return
            event = flight.event
            if event is None:
                event = flight.event = threading.Event()
            flight.waiting += 1
        try:
            event.wait()
        finally:
            with self._guard:
                flight.waiting -= 1

    # ------------------------------------------------------------------ tasks

    async def run_async(self, key: K, work: Callable[[], Awaitable[V]], *, tag: Any = None,
                        shares: Optional[Callable[[Any], bool]] = None,
                        takes: Optional[Callable[[Any, V], bool]] = None,
                        instead: Optional[Callable[[], Optional[V]]] = None) -> V:
        """:meth:`run` for tasks (asyncio or trio): never blocks the event loop."""
        while True:
            flight, leader = self._join(key, tag, False)
            if leader:
                try:
                    value = await work()
                except BaseException as exc:
                    self._land(key, flight, None, exc)
                    raise
                self._land(key, flight, value, None)
                return value
            if instead is not None:
                now = instead()
                if now is not None:
                    return now
            if flight.blocking and flight.thread == threading.get_ident():
                return await work()  # an event loop inside the leader's own work
            await self._wait_async(flight)
            if shares is not None and not shares(flight.tag):
                continue
            if not _shared(flight):
                continue
            value = flight.value
            if takes is None or takes(flight.tag, value):
                return value

    async def _wait_async(self, flight: _Flight) -> None:
        waiter, wait = _loop_waiter()
        with self._guard:
            if flight.landed:
                return
            if flight.wakers is None:
                flight.wakers = []
            flight.wakers.append(waiter)
            flight.waiting += 1
        try:
            await wait()
        finally:
            with self._guard:
                flight.waiting -= 1
                if flight.wakers is not None:  # not landed: cancelled (or its loop closing)
                    with contextlib.suppress(ValueError):
                        flight.wakers.remove(waiter)

    # ------------------------------------------------------------------ background leaders

    def spawn(self, key: K, work: Callable[[], V], *, tag: Any = None,
              name: str = "authlayer-flight") -> bool:
        """Lead ``key``'s flight from a new daemon thread; False if one is under way."""
        with self._guard:
            if key in self._flights:
                return False
            flight = self._flights[key] = _Flight(tag, 0, True)
            thread = threading.Thread(target=self._lead_in_background, args=(key, flight, work),
                                      name=name, daemon=True)
            self._background.add(thread)
        try:
            thread.start()
        except BaseException:
            with self._guard:
                self._background.discard(thread)
            self._land(key, flight, None, _NotStarted())
            raise
        return True

    def _lead_in_background(self, key: K, flight: _Flight, work: Callable[[], V]) -> None:
        flight.thread = threading.get_ident()  # before work(): it may ask for key again
        try:
            try:
                value = work()
            except BaseException as exc:  # for the followers; nobody else wants it
                self._land(key, flight, None, exc)
            else:
                self._land(key, flight, value, None)
        finally:
            with self._guard:
                self._background.discard(threading.current_thread())

    def join_background(self, timeout: Optional[float] = None) -> bool:
        """Wait for the spawned threads (at most ``timeout`` seconds in all); True if none is
        left running (other than the calling thread, if it is one)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.current_thread()
        with self._guard:
            threads = [t for t in self._background if t is not me]
        for thread in threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        return not any(t.is_alive() for t in threads)

    # ------------------------------------------------------------------ the flights

    def _join(self, key: K, tag: Any, blocking: bool) -> tuple[_Flight, bool]:
        """``key``'s flight under way, or a new one; True if the caller leads it."""
        with self._guard:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = _Flight(tag, threading.get_ident(), blocking)
            return flight, True

    def _land(self, key: K, flight: _Flight, value: Any, error: Optional[BaseException]) -> None:
        with self._guard:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.value, flight.error, flight.landed = value, error, True
            event, wakers, flight.wakers = flight.event, flight.wakers, None
        if event is not None:
            event.set()
        if wakers:
            _wake(wakers)
