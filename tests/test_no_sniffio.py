"""authlayer runs on what `pip install authlayer` brings: sniffio is not among it (current anyio
no longer depends on it), so the async single flight must not need it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Callable

import pytest

from authlayer.emulator import Emulator

_SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["sniffio"] = None  # as on a fresh install: importing it fails
    import asyncio, httpx
    from authlayer import EntraAuth
    from authlayer.provider import PROVIDER

    def waiting():
        return sum(f.waiting for f in list(PROVIDER._flights._flights.values()))

    async def main():
        async with httpx.AsyncClient(auth=EntraAuth(sys.argv[1])) as client:
            calls = asyncio.gather(*(client.get(sys.argv[2]) for _ in range(50)))
            while waiting() < 49:  # the leader's token request is held meanwhile
                await asyncio.sleep(0.001)
            print("all wait", flush=True)
            answers = await calls
        print(sorted({a.status_code for a in answers}))

    asyncio.run(main())
""")


def test_cold_async_stampede_works_without_sniffio(entra_emulator: Emulator,
                                                   authlayer_profile: Callable[..., str]) -> None:
    # The pytest plugin's fixtures: the profile's file is $AUTHLAYER_CONFIG, which the child
    # process inherits.
    emulator = entra_emulator
    name = authlayer_profile("cold")
    before = emulator.count("token")
    with emulator.hold() as gate:  # the leader's request is held until all 49 others wait
        process = subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, name, f"{emulator.api_url}/me"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert process.stdout is not None
        said = process.stdout.readline()
        gate.release()
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert said.strip() == "all wait"
    assert out.strip() == "[200]"
    assert emulator.count("token") - before == 1


_OFF_LOOP = textwrap.dedent("""
    import importlib.abc, sys, threading
    library = sys.argv[2]
    if library == "trio":
        import trio
    else:
        import asyncio
    from authlayer import get_token_async

    loop_thread = threading.get_ident()
    on_loop = []

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):  # called for modules not imported yet
            if name.split(".")[0] in ("anyio", "httpx", "httpcore", "h11", "ssl") and (
                    threading.get_ident() == loop_thread):
                on_loop.append(name)
            return None

    async def main():
        tokens = [await get_token_async(sys.argv[1])]
        if library == "trio":
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(lambda: get_token_async(sys.argv[1]))
        else:
            tokens += await asyncio.gather(*(get_token_async(sys.argv[1]) for _ in range(20)))
        assert len({t.token for t in tokens}) == 1

    sys.meta_path.insert(0, Watch())
    trio.run(main) if library == "trio" else asyncio.run(main())
    print(sorted(set(on_loop)))
""")


@pytest.mark.parametrize("library", ["asyncio", "trio"])
def test_a_first_async_token_imports_the_transport_off_the_event_loop(
        entra_emulator: Emulator, authlayer_profile: Callable[..., str], library: str) -> None:
    """httpx, anyio and anyio's backend take tens of ms to import: in a process that has not
    imported them yet (an aiohttp service, say), they are imported in a worker thread, not on
    the event loop, where every task would wait for them."""
    name = authlayer_profile("first-async")
    done = subprocess.run([sys.executable, "-c", _OFF_LOOP, name, library],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert entra_emulator.count("token") >= 1
