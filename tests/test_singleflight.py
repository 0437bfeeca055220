"""The generic single flight: one leader per key does the work, every caller that needs the key
meanwhile (threads, asyncio and trio tasks, on any loop in any thread) shares its outcome.

No test waits for wall-clock time: leaders hold their work on events until the followers are
there, and the test reads ``waiting()`` / counts arrivals to know when they are.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import threading
import time
from typing import Any, Callable, Optional

import pytest
import trio

from authlayer._singleflight import WAKE_BATCH, SingleFlight, _Threads, off_loop, running_library


def _until(condition: Callable[[], bool]) -> None:
    """Let other threads run until ``condition`` holds (the code under test makes it true; no
    time limit here: pytest-timeout guards a hang)."""
    while not condition():
        time.sleep(0.001)


class Arrivals:
    """A follower's ``instead``: tells the test that the follower has joined the flight (and
    offers nothing instead, so it goes on to wait)."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    def __call__(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_for(self, n: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.count >= n)


class Held:
    """Work that a test holds until it says go; counts its calls."""

    def __init__(self, value: Any = "value") -> None:
        self.value = value
        self.calls = 0
        self.started = threading.Event()
        self.go = threading.Event()
        self.returned = False

    def __call__(self) -> Any:
        self.calls += 1
        self.started.set()
        self.go.wait()
        self.returned = True
        return self.value


def _start(target: Callable[[], Any], results: list[Any]) -> threading.Thread:
    """A thread that appends ``target()``'s value, or the exception it raised, to ``results``."""

    def run() -> None:
        try:
            results.append(target())
        except BaseException as exc:  # KeyboardInterrupt too: the test looks at it
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _in_thread(main: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    return _start(main, results), results


# ---------------------------------------------------------------------- sharing one outcome


def test_64_threads_share_one_run_of_the_work() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work, arrivals = Held(), Arrivals()
    results: list[Any] = []
    threads = [_start(lambda: flights.run("k", work, instead=arrivals), results)
               for _ in range(64)]
    arrivals.wait_for(63)  # every caller but the leader has joined its flight
    work.go.set()
    for t in threads:
        t.join()
    assert results == ["value"] * 64
    assert work.calls == 1
    assert len(flights) == 0


def test_500_asyncio_tasks_share_one_run_of_the_work() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    calls = 0

    async def main() -> list[str]:
        go = asyncio.Event()

        async def work() -> str:
            nonlocal calls
            calls += 1
            await go.wait()
            return "value"

        tasks = [asyncio.create_task(flights.run_async("k", work)) for _ in range(500)]
        while flights.waiting("k") < 499:
            await asyncio.sleep(0)
        go.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == ["value"] * 500
    assert calls == 1
    assert len(flights) == 0


def test_waiting_tasks_are_woken_a_batch_per_loop_iteration() -> None:
    """1,000 tasks woken in one iteration would hold the loop for all of them back to back;
    each iteration wakes at most WAKE_BATCH, so the loop's other work runs in between."""
    flights: SingleFlight[str, str] = SingleFlight()
    iteration = 0
    woken_in: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        go = threading.Event()
        done = False

        def count() -> None:  # runs once per loop iteration
            nonlocal iteration
            iteration += 1
            if not done:
                loop.call_soon(count)

        async def follow() -> None:
            await flights.run_async("k", work)
            woken_in.append(iteration)

        async def work() -> str:  # a leader in a worker thread, as the provider's loads are
            return await asyncio.to_thread(go.wait) and "value"

        tasks = [asyncio.create_task(follow()) for _ in range(1_000)]
        while flights.waiting("k") < 999:
            await asyncio.sleep(0)
        count()
        go.set()
        await asyncio.gather(*tasks)
        done = True

    asyncio.run(main())
    assert len(woken_in) == 1_000
    per_iteration = collections.Counter(woken_in)
    assert max(per_iteration.values()) <= WAKE_BATCH
    assert len(per_iteration) >= 1_000 // WAKE_BATCH


def test_500_trio_tasks_share_one_run_of_the_work() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    calls = 0
    results: list[str] = []

    async def main() -> None:
        go = trio.Event()

        async def work() -> str:
            nonlocal calls
            calls += 1
            await go.wait()
            return "value"

        async def one() -> None:
            results.append(await flights.run_async("k", work))

        async with trio.open_nursery() as nursery:
            for _ in range(500):
                nursery.start_soon(one)
            while flights.waiting("k") < 499:
                await trio.lowlevel.checkpoint()
            go.set()

    trio.run(main)
    assert results == ["value"] * 500
    assert calls == 1


def test_tasks_on_several_loops_in_several_threads_share_a_threads_work() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work = Held()
    leader, led = _in_thread(lambda: flights.run("k", work))
    work.started.wait()

    async def follow(n: int) -> list[str]:
        async def other() -> str:
            raise AssertionError("a follower ran the work")

        return list(await asyncio.gather(*(flights.run_async("k", other) for _ in range(n))))

    async def follow_trio(n: int, into: list[str]) -> None:
        async def other() -> str:
            raise AssertionError("a follower ran the work")

        async def one() -> None:
            into.append(await flights.run_async("k", other))

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)

    loops = [_in_thread(lambda: asyncio.run(follow(50))) for _ in range(3)]
    trio_results: list[list[str]] = [[], []]
    trios = [_in_thread(functools.partial(trio.run, follow_trio, 50, into))
             for into in trio_results]
    _until(lambda: flights.waiting("k") == 250)
    work.go.set()
    for thread, _ in [(leader, led), *loops, *trios]:
        thread.join()
    assert led == ["value"]
    assert [r for _, r in loops] == [[["value"] * 50]] * 3
    assert trio_results == [["value"] * 50] * 2
    assert work.calls == 1


def test_threads_and_tasks_of_other_loops_share_an_async_leaders_work() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    calls = 0
    started = threading.Event()
    go: list[Callable[[], object]] = []

    async def lead() -> str:
        async def work() -> str:
            nonlocal calls
            calls += 1
            event = asyncio.Event()
            loop = asyncio.get_running_loop()
            go.append(lambda: loop.call_soon_threadsafe(event.set))
            started.set()
            await event.wait()
            return "value"

        return await flights.run_async("k", work)

    def never() -> str:
        raise AssertionError("a follower ran the work")

    async def never_async() -> str:
        raise AssertionError("a follower ran the work")

    leader, led = _in_thread(lambda: asyncio.run(lead()))
    started.wait()
    followers: list[Any] = []
    threads = [_start(lambda: flights.run("k", never), followers) for _ in range(8)]

    async def twenty() -> list[str]:
        return list(await asyncio.gather(*(flights.run_async("k", never_async)
                                           for _ in range(20))))

    other_loop, from_loop = _in_thread(lambda: asyncio.run(twenty()))
    _until(lambda: flights.waiting("k") == 28)
    go[0]()
    for t in [leader, other_loop, *threads]:
        t.join()
    assert led == ["value"]
    assert followers == ["value"] * 8
    assert from_loop == [["value"] * 20]
    assert calls == 1


def test_none_is_shared_like_any_value() -> None:
    flights: SingleFlight[str, Optional[str]] = SingleFlight()
    work, arrivals = Held(value=None), Arrivals()
    results: list[Any] = []
    threads = [_start(lambda: flights.run("k", work, instead=arrivals), results)
               for _ in range(4)]
    arrivals.wait_for(3)
    work.go.set()
    for t in threads:
        t.join()
    assert results == [None] * 4
    assert work.calls == 1


# ---------------------------------------------------------------------- failures


class Refused(Exception):
    pass


def test_each_follower_gets_its_own_copy_of_the_leaders_error() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    go = threading.Event()
    raised: list[BaseException] = []

    def work() -> str:
        go.wait()
        error = Refused("refused: AADSTS7000215")
        raised.append(error)
        raise error

    leader, led = _in_thread(lambda: flights.run("k", work))
    _until(lambda: "k" in flights)
    followers: list[Any] = []
    threads = [_start(lambda: flights.run("k", work), followers) for _ in range(6)]

    async def tasks() -> list[BaseException]:
        answers = await asyncio.gather(*(flights.run_async("k", _unreachable)
                                         for _ in range(6)), return_exceptions=True)
        return [a for a in answers if isinstance(a, BaseException)]

    loop, from_loop = _in_thread(lambda: asyncio.run(tasks()))
    _until(lambda: flights.waiting("k") == 12)
    go.set()
    for t in [leader, loop, *threads]:
        t.join()
    (original,) = raised
    assert led == [original]  # the leader gets its own error, not a copy
    copies = followers + from_loop[0]
    assert len(copies) == 12
    for error in copies:
        assert type(error) is Refused
        assert str(error) == "refused: AADSTS7000215"
        assert error is not original
        assert error.__cause__ is original
    assert len({id(e) for e in copies}) == 12


async def _unreachable() -> str:
    raise AssertionError("a follower ran the work")


class Uncopyable(Exception):
    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


def test_an_error_that_cannot_be_copied_reaches_followers_as_it_is() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    go = threading.Event()
    arrivals = Arrivals()

    def work() -> str:
        go.wait()
        raise Uncopyable("no", code=7)

    leader, led = _in_thread(lambda: flights.run("k", work))
    _until(lambda: "k" in flights)
    follower, followed = _in_thread(lambda: flights.run("k", work, instead=arrivals))
    arrivals.wait_for(1)
    go.set()
    leader.join()
    follower.join()
    assert isinstance(led[0], Uncopyable)
    assert followed == led


def test_followers_try_again_when_the_leader_is_interrupted() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    arrivals = Arrivals()
    go = threading.Event()
    calls = 0

    def work() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            go.wait()
            raise KeyboardInterrupt
        arrivals.wait_for(5 + 4)  # the other four followers have joined the second flight
        return "second"

    leader, led = _in_thread(lambda: flights.run("k", work))
    _until(lambda: "k" in flights)
    followers: list[Any] = []
    threads = [_start(lambda: flights.run("k", work, instead=arrivals), followers)
               for _ in range(5)]
    arrivals.wait_for(5)
    go.set()
    for t in [leader, *threads]:
        t.join()
    assert len(led) == 1
    assert isinstance(led[0], KeyboardInterrupt)  # only the interrupted leader sees it
    assert followers == ["second"] * 5
    assert calls == 2


def test_tasks_try_again_when_the_leading_task_is_cancelled() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    calls = 0

    async def main() -> tuple[list[str], bool]:
        forever = asyncio.Event()

        async def work() -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                await forever.wait()
            while flights.waiting("k") < 8:  # the others have joined the second flight
                await asyncio.sleep(0)
            return "second"

        leader = asyncio.create_task(flights.run_async("k", work))
        await asyncio.sleep(0)
        followers = [asyncio.create_task(flights.run_async("k", work)) for _ in range(9)]
        while flights.waiting("k") < 9:
            await asyncio.sleep(0)
        leader.cancel()
        results = await asyncio.gather(*followers)
        return list(results), leader.cancelled()

    results, cancelled = asyncio.run(main())
    assert cancelled
    assert results == ["second"] * 9
    assert calls == 2


# ---------------------------------------------------------------------- what a follower takes


def test_a_follower_that_needs_more_runs_its_own_work_after_the_flight() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    plain, arrivals = Held("plain token"), Arrivals()
    leader, led = _in_thread(lambda: flights.run("k", plain, tag="plain"))
    plain.started.wait()
    after_plain: list[bool] = []

    def forced() -> str:
        after_plain.append(plain.returned)  # it waited for the plain flight, then ran
        return "forced token"

    follower, followed = _in_thread(lambda: flights.run(
        "k", forced, tag="forced", takes=lambda tag, _: tag == "forced", instead=arrivals))
    arrivals.wait_for(1)
    plain.go.set()
    leader.join()
    follower.join()
    assert led == ["plain token"]
    assert followed == ["forced token"]
    assert after_plain == [True]
    assert plain.calls == 1


def test_a_follower_does_not_take_a_value_it_must_not_use() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    rejected, arrivals = Held("rejected token"), Arrivals()
    leader, _ = _in_thread(lambda: flights.run("k", rejected))
    rejected.started.wait()
    follower, followed = _in_thread(lambda: flights.run(
        "k", lambda: "new token", takes=lambda _, value: value != "rejected token",
        instead=arrivals))
    arrivals.wait_for(1)
    rejected.go.set()
    leader.join()
    follower.join()
    assert followed == ["new token"]


def test_a_follower_that_does_not_share_the_flight_never_sees_its_error() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    go, arrivals = threading.Event(), Arrivals()

    def failing() -> str:
        go.wait()
        raise Refused("for another scope")

    leader, led = _in_thread(lambda: flights.run("signin", failing, tag="scope-a"))
    _until(lambda: "signin" in flights)
    follower, followed = _in_thread(lambda: flights.run(
        "signin", lambda: "token for scope b", tag="scope-b",
        shares=lambda tag: tag == "scope-b", instead=arrivals))
    arrivals.wait_for(1)
    go.set()
    leader.join()
    follower.join()
    assert isinstance(led[0], Refused)
    assert followed == ["token for scope b"]


def test_tasks_use_the_same_predicates() -> None:
    flights: SingleFlight[str, str] = SingleFlight()

    async def main() -> list[str]:
        go = asyncio.Event()

        async def plain() -> str:
            await go.wait()
            return "plain"

        async def forced() -> str:
            return "forced"

        async def other_scope() -> str:
            return "other scope"

        leader = asyncio.create_task(flights.run_async("k", plain, tag="plain"))
        await asyncio.sleep(0)
        needs_more = asyncio.create_task(flights.run_async(
            "k", forced, takes=lambda tag, _: tag == "forced"))
        not_sharing = asyncio.create_task(flights.run_async(
            "k", other_scope, shares=lambda tag: tag == "other"))
        while flights.waiting("k") < 2:
            await asyncio.sleep(0)
        go.set()
        return list(await asyncio.gather(leader, needs_more, not_sharing))

    assert asyncio.run(main()) == ["plain", "forced", "other scope"]


def test_a_follower_with_something_usable_does_not_wait() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work = Held("new token")
    leader, led = _in_thread(lambda: flights.run("k", work))
    work.started.wait()
    assert flights.run("k", work, instead=lambda: "still valid token") == "still valid token"

    async def task() -> str:
        return await flights.run_async("k", _unreachable, instead=lambda: "still valid token")

    assert asyncio.run(task()) == "still valid token"
    assert "k" in flights  # the leader is still at work
    work.go.set()
    leader.join()
    assert led == ["new token"]
    assert work.calls == 1


# ---------------------------------------------------------------------- the leader's own thread


def test_the_leaders_work_asking_for_its_key_again_runs_directly() -> None:
    flights: SingleFlight[str, str] = SingleFlight()

    def outer() -> str:
        return "outer+" + flights.run("k", lambda: "inner")

    assert flights.run("k", outer) == "outer+inner"


def test_a_blocking_caller_on_an_async_leaders_loop_runs_the_work_directly() -> None:
    flights: SingleFlight[str, str] = SingleFlight()

    async def main() -> list[str]:
        go = asyncio.Event()

        async def work() -> str:
            await go.wait()
            return "async leader's"

        leader = asyncio.create_task(flights.run_async("k", work))
        await asyncio.sleep(0)
        assert "k" in flights
        # A blocking call on the loop's thread: waiting for the task would never end.
        mine = flights.run("k", lambda: "its own")
        go.set()
        return [mine, await leader]

    assert asyncio.run(main()) == ["its own", "async leader's"]


def test_an_event_loop_inside_the_leaders_work_runs_the_work_directly() -> None:
    flights: SingleFlight[str, str] = SingleFlight()

    async def inner() -> str:
        return "inner"

    def outer() -> str:
        return "outer+" + asyncio.run(flights.run_async("k", inner))

    def outer_trio() -> str:
        return "outer+" + trio.run(flights.run_async, "k", inner)

    assert flights.run("k", outer) == "outer+inner"
    assert flights.run("k", outer_trio) == "outer+inner"


# ---------------------------------------------------------------------- background leaders


def test_a_spawned_flight_is_joined_by_callers() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work, arrivals = Held("refreshed"), Arrivals()
    names: list[str] = []

    def spawned() -> str:
        names.append(threading.current_thread().name)
        return str(work())

    assert flights.spawn("k", spawned, tag="plain", name="authlayer-refresh")
    assert "k" in flights
    assert not flights.spawn("k", spawned)  # one under way: nothing more starts
    followers: list[Any] = []
    threads = [_start(lambda: flights.run("k", _never, instead=arrivals), followers)
               for _ in range(3)]

    async def task() -> str:
        return await flights.run_async("k", _unreachable)

    loop, from_loop = _in_thread(lambda: asyncio.run(task()))
    _until(lambda: flights.waiting("k") == 4)
    work.go.set()
    for t in [loop, *threads]:
        t.join()
    assert flights.join_background()
    assert followers == ["refreshed"] * 3
    assert from_loop == ["refreshed"]
    assert names == ["authlayer-refresh"]
    assert work.calls == 1
    assert len(flights) == 0


def _never() -> str:
    raise AssertionError("a follower ran the work")


def test_a_spawned_failure_goes_to_its_followers_and_nowhere_else(
        monkeypatch: pytest.MonkeyPatch) -> None:
    uncaught: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", uncaught.append)
    flights: SingleFlight[str, str] = SingleFlight()
    go, arrivals = threading.Event(), Arrivals()

    def failing() -> str:
        go.wait()
        raise Refused("refresh failed")

    assert flights.spawn("k", failing)
    follower, followed = _in_thread(lambda: flights.run("k", _never, instead=arrivals))
    arrivals.wait_for(1)
    go.set()
    follower.join()
    assert flights.join_background()
    assert isinstance(followed[0], Refused)
    assert isinstance(followed[0].__cause__, Refused)
    assert uncaught == []
    # With nobody following, the failure is simply dropped.
    assert flights.spawn("k", lambda: (_ for _ in ()).throw(Refused("again")))
    assert flights.join_background()
    assert uncaught == []
    assert len(flights) == 0


def test_a_spawned_works_own_call_for_its_key_runs_directly() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    results: list[str] = []

    def spawned() -> str:
        results.append(flights.run("k", lambda: "inner"))
        return "outer"

    assert flights.spawn("k", spawned)
    assert flights.join_background()
    assert results == ["inner"]


def test_a_spawn_whose_thread_cannot_start_sends_its_followers_to_try_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    start = threading.Thread.start
    follower: list[tuple[threading.Thread, list[Any]]] = []

    def refuse(self: threading.Thread) -> None:
        if self.name != "authlayer-flight":
            start(self)
            return
        # Someone joins the flight before it turns out that its thread cannot start.
        follower.append(_in_thread(lambda: flights.run("k", lambda: "its own")))
        _until(lambda: flights.waiting("k") == 1)
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="start new thread"):
        flights.spawn("k", _never)
    monkeypatch.undo()
    ((thread, followed),) = follower
    thread.join()
    assert followed == ["its own"]
    assert len(flights) == 0
    assert flights.join_background()


@pytest.mark.parametrize("library", ["asyncio", "trio"])
def test_off_loop_runs_in_a_thread_and_hands_back_value_and_error(library: str) -> None:
    async def main() -> tuple[bool, Any]:
        here = threading.get_ident()
        elsewhere = await off_loop(lambda: threading.get_ident() != here)
        with pytest.raises(KeyError, match="missing"):
            await off_loop(lambda: {}["missing"])
        return elsewhere, await off_loop(lambda: None)

    result = trio.run(main) if library == "trio" else asyncio.run(main())
    assert result == (True, None)


@pytest.mark.parametrize("library", ["asyncio", "trio"])
def test_off_loop_whose_thread_cannot_start_raises_instead_of_waiting_forever(
        monkeypatch: pytest.MonkeyPatch, library: str) -> None:
    start = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        if self.name != "authlayer-off-loop":
            start(self)
            return
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)

    async def main() -> None:
        await off_loop(_never)

    with pytest.raises(RuntimeError, match="start new thread"):
        trio.run(main) if library == "trio" else asyncio.run(main())


def _as_trio_guest(main: Callable[[], Any]) -> Any:
    """Run trio's ``main`` in guest mode on an asyncio loop: its tasks see asyncio's loop
    running, yet are trio tasks (what a trio app embedded in an asyncio one does)."""
    async def host() -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        trio.lowlevel.start_guest_run(main, run_sync_soon_threadsafe=loop.call_soon_threadsafe,
                                      done_callback=done.set_result)
        return (await done).unwrap()

    return asyncio.run(host())


def test_trio_in_guest_mode_on_an_asyncio_loop_waits_and_runs_off_loop_as_trio() -> None:
    flights: SingleFlight[str, str] = SingleFlight()

    async def main() -> list[str]:
        assert running_library() == "trio"
        results: list[str] = []

        async def one() -> None:
            results.append(await flights.run_async(
                "k", lambda: off_loop(lambda: time.sleep(0.05) or "value")))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
        return results

    assert _as_trio_guest(main) == ["value"] * 20


def test_off_loop_runs_at_most_its_limit_of_threads_and_every_job() -> None:
    threads = _Threads(3)
    go = threading.Event()
    lock = threading.Lock()
    running = peak = 0
    done: list[int] = []

    def job(n: int) -> Callable[[], None]:
        def run() -> None:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            go.wait()
            with lock:
                running -= 1
                done.append(n)
        return run

    for n in range(20):
        threads.submit(job(n))
    _until(lambda: running == 3)
    go.set()
    _until(lambda: len(done) == 20)
    assert peak == 3
    assert sorted(done) == list(range(20))
    _until(lambda: threads._running == 0)  # nobody kept waiting for work


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_runs_off_loop_jobs_though_its_parents_threads_were_busy() -> None:
    threads = _Threads(1)
    go = threading.Event()
    threads.submit(go.wait)  # the parent's only thread is busy
    pid = os.fork()
    if pid == 0:  # the child: none of the parent's threads, so its own job must still run
        ran = threading.Event()
        threads.submit(ran.set)
        os._exit(0 if ran.wait(10) else 1)
    go.set()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# ---------------------------------------------------------------------- waiters do not leak


def test_tasks_of_a_loop_that_shuts_down_stop_waiting() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work = Held()
    leader, led = _in_thread(lambda: flights.run("k", work))
    work.started.wait()

    async def abandon() -> None:
        for _ in range(20):
            asyncio.create_task(flights.run_async("k", _unreachable))  # noqa: RUF006
        while flights.waiting("k") < 20:
            await asyncio.sleep(0)
        # Returning: asyncio.run cancels the 20 waiting tasks and closes the loop.

    asyncio.run(abandon())
    assert flights.waiting("k") == 0

    async def abandon_trio() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(flights.run_async, "k", _unreachable)
            while flights.waiting("k") < 20:
                await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()

    trio.run(abandon_trio)
    assert flights.waiting("k") == 0
    work.go.set()  # landing now wakes nobody, on no closed loop
    leader.join()
    assert led == ["value"]
    assert len(flights) == 0


def test_landing_after_a_waiting_loop_closed_troubles_nobody() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work = Held()
    leader, led = _in_thread(lambda: flights.run("k", work))
    work.started.wait()
    loop = asyncio.new_event_loop()
    task = loop.create_task(flights.run_async("k", _unreachable))

    async def until_waiting() -> None:
        while flights.waiting("k") < 1:
            await asyncio.sleep(0)

    loop.run_until_complete(until_waiting())
    loop.close()  # the task still waits: its wake-up will find the loop closed
    work.go.set()
    leader.join()
    assert led == ["value"]
    assert len(flights) == 0
    assert not task.done()


def test_a_follower_that_finds_the_flight_landed_does_not_wait() -> None:
    flights: SingleFlight[str, str] = SingleFlight()

    def landed_meanwhile(work: Held, leader: threading.Thread) -> Callable[[], None]:
        def land_it() -> None:  # the flight lands after the follower joined, before it waits
            work.go.set()
            leader.join()

        return land_it

    work = Held("for a thread")
    leader, _ = _in_thread(lambda: flights.run("k", work))
    work.started.wait()
    assert flights.run("k", _never, instead=landed_meanwhile(work, leader)) == "for a thread"

    work = Held("for a task")
    leader, _ = _in_thread(lambda: flights.run("k", work))
    work.started.wait()

    async def task() -> str:
        return await flights.run_async("k", _unreachable,
                                       instead=landed_meanwhile(work, leader))

    assert asyncio.run(task()) == "for a task"
    assert len(flights) == 0
