"""authlayer runs on what `pip install authlayer` brings: sniffio is not among it (current anyio
no longer depends on it), so the async single flight must not need it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Callable

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
