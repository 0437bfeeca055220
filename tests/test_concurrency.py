"""Single flight: many threads or tasks on a cold cache make one token request; the event loop is
never blocked by a token request."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from authlayer import EntraAuth, get_token, get_token_async
from authlayer.emulator import Emulator
from authlayer.provider import PROVIDER

from .conftest import Profiles, release_when, until, waiting_callers


def test_64_threads_on_a_cold_cache_make_one_token_request(emu: Emulator,
                                                           cc_profile: str) -> None:
    gate = emu.hold()  # the first token request is held until all 63 others wait for it
    tokens: list[str] = []

    def worker() -> None:
        tokens.append(get_token(cc_profile).token)

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for t in threads:
        t.start()
    gate.wait_for(1)
    until(lambda: waiting_callers() == 63)
    gate.release()
    for t in threads:
        t.join()
    assert len(tokens) == 64
    assert len(set(tokens)) == 1
    assert emu.count("token") == 1


def test_500_asyncio_tasks_on_a_cold_cache_make_one_token_request(emu: Emulator,
                                                                  cc_profile: str) -> None:
    release_when(emu.hold(), lambda: waiting_callers() == 499)

    async def main() -> list[str]:
        results = await asyncio.gather(*(get_token_async(cc_profile) for _ in range(500)))
        return [r.token for r in results]

    tokens = asyncio.run(main())
    assert len(tokens) == 500
    assert len(set(tokens)) == 1
    assert emu.count("token") == 1


def test_500_trio_tasks_on_a_cold_cache_make_one_token_request(emu: Emulator,
                                                               cc_profile: str) -> None:
    trio = pytest.importorskip("trio")
    release_when(emu.hold(), lambda: waiting_callers() == 499)
    tokens: list[str] = []

    async def one() -> None:
        tokens.append((await get_token_async(cc_profile)).token)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(500):
                nursery.start_soon(one)

    trio.run(main)
    assert len(tokens) == 500
    assert len(set(tokens)) == 1
    assert emu.count("token") == 1


def test_async_client_requests_share_one_token_request(emu: Emulator, cc_profile: str) -> None:
    release_when(emu.hold(), lambda: waiting_callers() == 49)
    auth = EntraAuth(cc_profile)

    async def main() -> list[int]:
        async with httpx.AsyncClient(auth=auth) as client:
            answers = await asyncio.gather(*(client.get(f"{emu.api_url}/n/{i}")
                                             for i in range(50)))
            return [a.status_code for a in answers]

    assert asyncio.run(main()) == [200] * 50
    assert emu.count("token") == 1


def _ticks_while(work: Awaitable[Any], on_tick: Callable[[], None]) -> None:
    """Await ``work`` while a ticker task runs on the same event loop every 10 ms, calling
    ``on_tick()`` each time (as long as the loop is free to run it)."""
    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            on_tick()
            await asyncio.sleep(0.01)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        await work
        stop.set()
        await task

    asyncio.run(main())


def test_token_request_never_blocks_the_event_loop(emu: Emulator, cc_profile: str) -> None:
    gate = emu.hold()
    ticks = 0

    def tick() -> None:
        nonlocal ticks
        if gate.held:  # the token request is under way (held)
            ticks += 1
            if ticks == 10:
                gate.release()

    # The request is answered only after the loop ran other tasks ten times while it waited: a
    # request that blocked the loop would never be answered (its timeout would fail the test).
    _ticks_while(get_token_async(cc_profile), tick)
    assert ticks >= 10
    assert emu.count("token") == 1


def test_command_secret_source_runs_off_the_event_loop(emu: Emulator, app: Any, secret: str,
                                                       profiles: Profiles,
                                                       tmp_path: Path) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    script = tmp_path / "slow_secret.py"
    script.write_text(f"import os, time\n"
                      f"open({str(started)!r}, 'w').close()\n"
                      f"while not os.path.exists({str(go)!r}):\n"
                      f"    time.sleep(0.005)\n"
                      f"print({secret!r})\n")
    profiles.write(f"""
        [profiles.cmd]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{app.client_id}"
        client_secret = {{ command = [{json.dumps(sys.executable)}, "slow_secret.py"] }}
        scope = "{emu.api_scope}"
    """)
    ticks = 0

    def tick() -> None:
        nonlocal ticks
        if started.exists():  # the command runs, waiting for "go"
            ticks += 1
            if ticks == 10:
                go.touch()

    # The command answers only after the loop ran other tasks ten times while it waited.
    _ticks_while(get_token_async("cmd"), tick)
    assert ticks >= 10
    assert emu.count("token") == 1


def test_concurrent_failures_reach_every_waiter(emu: Emulator, cc_profile: str) -> None:
    from authlayer import TokenError

    emu.inject("status", count=100, status=400)
    # The leader's request is held until all 19 others wait for it: none comes too late to
    # share its failure (and so makes a request of its own).
    release_when(emu.hold(), lambda: waiting_callers() == 19)

    async def main() -> list[BaseException | None]:
        async def one() -> BaseException | None:
            try:
                await get_token_async(cc_profile)
            except TokenError as exc:
                return exc
            return None

        return await asyncio.gather(*(one() for _ in range(20)))

    errors = asyncio.run(main())
    assert all(isinstance(e, TokenError) for e in errors)
    assert emu.count("token") == 1
    PROVIDER.reset()
