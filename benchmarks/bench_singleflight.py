"""Single-flight benchmark: what leading a flight costs when nobody else wants the key.

Run: ``python benchmarks/bench_singleflight.py`` (add ``--quick`` for a short run). Prints, from
one run, CPU time per lead + land with no waiters:

* ``SingleFlight.run(key, work)`` with a work that returns at once (the whole public call);
* ``SingleFlight``'s join + land alone;
* the provider's present ``_Flight`` as ``Provider._join`` + ``Provider._land`` drive it (with
  its flight-key parsing), and the bare ``_Flight`` (construct + finish, dict and lock);
* ``await SingleFlight.run_async(key, work)`` inside a running asyncio loop.

The ``_Flight`` lines are printed only while ``authlayer.provider`` still has it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import sys
import threading
import time
from typing import Any, Callable

from bench_hot_path import per_call  # run as a script: benchmarks/ is on sys.path

from authlayer._singleflight import SingleFlight


def best(cases: dict[str, Callable[[], Any]], number: int, blocks: int) -> dict[str, float]:
    """Alternate short blocks of every case, keep each one's best block (noise only adds)."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(blocks):
        for name, fn in cases.items():
            times[name].append(per_call(fn, number))
    return {name: min(t) for name, t in times.items()}


def async_per_call(number: int, blocks: int) -> float:
    """CPU seconds per uncontended ``run_async`` inside one running loop (best block)."""
    flights: SingleFlight[str, int] = SingleFlight()

    async def work() -> int:
        return 1

    async def block() -> float:
        gc.collect()
        gc.disable()
        try:
            start = time.process_time()
            for _ in range(number):
                await flights.run_async("k", work)
            return (time.process_time() - start) / number
        finally:
            gc.enable()

    async def main() -> float:
        return min([await block() for _ in range(blocks)])

    return asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    number, blocks = 20_000 // scale, max(3, 30 // scale)

    flights: SingleFlight[str, int] = SingleFlight()
    key = "client_credentials|https://login.example|tenant|client|secret:ab12||||scope"

    def work() -> int:
        return 1

    def join_and_land() -> None:
        flight, _ = flights._join(key, None, True)
        flights._land(key, flight, 1, None)

    cases: dict[str, Callable[[], Any]] = {
        "SingleFlight.run (whole call)": lambda: flights.run(key, work),
        "SingleFlight join + land": join_and_land,
    }

    provider_module = importlib.import_module("authlayer.provider")
    present: Any = getattr(provider_module, "_Flight", None)
    if present is not None:
        provider: Any = provider_module.Provider()

        def present_join_and_land() -> None:
            flight, _ = provider._join(key, "plain")
            provider._land(key, flight, None, None)

        table: dict[str, Any] = {}
        guard = threading.Lock()

        def bare_flight() -> None:
            with guard:
                flight = table[key] = present("plain", key)
            with guard:
                del table[key]
            flight.finish(None, None)

        cases["present Provider._join + _land"] = present_join_and_land
        cases["present bare _Flight + finish"] = bare_flight

    print(f"single flight, uncontended lead + land, Python {sys.version.split()[0]}")
    for name, seconds in best(cases, number, blocks).items():
        print(f"  {name:34s} {seconds * 1e9:7.0f} ns/call")
    seconds = async_per_call(number, blocks)
    print(f"  {'SingleFlight.run_async (in a loop)':34s} {seconds * 1e9:7.0f} ns/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
