"""Cliff benchmark: what stays flat as a process grows (issue 11, items 17, 19, 20, 21).

Run: ``python benchmarks/bench_cliffs.py`` (``--quick`` for a shorter run; add Authlib to
``PYTHONPATH`` to compare with its single-token client). Every figure is a ratio against a
baseline taken in the same run:

* a cached ``get_token("name")``, next to a dict read + clock call and, when Authlib is
  importable, Authlib's own cached-token check (``OAuth2Token.is_expired`` + the token read);
* a cached ``get_token("name", tenant=...)`` cycling over 4,500 / 12,000 / 50,000 tenants,
  against the same loop over as many calls for one tenant (median of five alternating runs),
  and a plain dict of the same tokens read in the same two loops (the floor that memory sets);
* memory held per cached tenant (tracemalloc, after the cache is warm);
* 1,000 asyncio tasks using a profile new to the process: profile loads, token requests, and
  the event loop's worst stall (a ticker task measures it);
* ``authlayer.aio.credential(...).get_token`` against ``get_token_async``, per cached call.

Tokens for the tenants are put in the cache as a flow would (store record and in-memory
entry), not fetched one by one: the emulator only knows its own tenant, and 50,000 round trips
would measure the loopback, not the cache.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

from bench_hot_path import per_call  # run as a script: benchmarks/ is on sys.path

from authlayer import config as config_module
from authlayer import get_token, get_token_async
from authlayer.emulator import Emulator
from authlayer.provider import PROVIDER, CachedToken
from authlayer.token import TokenResult

CLIENT = "Authlib's client (ensure_active_token)"
SECTIONS = ("cached", "tenants", "memory", "stampede", "aio")


def best(fn: Callable[[], Any], number: int, blocks: int) -> float:
    return min(per_call(fn, number) for _ in range(blocks))


def prefill(cfg: Optional[Path], tenants: list[str], token: str) -> None:
    """Put a token for each tenant in the in-memory cache (the timing runs measure the
    cached call, not how the cache was filled)."""
    now = int(time.time())
    for i, tenant in enumerate(tenants):
        binding = PROVIDER.bind("bench", config=cfg, tenant=tenant)
        result = TokenResult(f"{token}.{i}", now + 3600, now + 3300)
        PROVIDER._keep(binding.key, CachedToken.from_result(result))


def _cpu_seconds(run: Callable[[], None]) -> float:
    """CPU seconds that ``run`` takes, garbage collector off."""
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        run()
        return time.process_time() - start
    finally:
        gc.enable()


def cycle_cost(cfg: Optional[Path], tenants: list[str], calls: int) -> float:
    """CPU seconds per cached get_token, cycling over `tenants` (at least one whole cycle);
    ``cfg`` None: the profiles file from $AUTHLAYER_CONFIG, as the README writes the call."""
    rounds = max(1, calls // len(tenants))

    def run() -> None:
        for _ in range(rounds):
            for tenant in tenants:
                get_token("bench", config=cfg, tenant=tenant)

    return _cpu_seconds(run) / (rounds * len(tenants))


def dict_cycle_cost(table: dict[str, Any], tenants: list[str], calls: int) -> float:
    """The same loop reading a plain dict of the tenants' tokens: the floor that the
    processor's memory sets for any cache of that many distinct tokens."""
    rounds = max(1, calls // len(tenants))
    read = table.get

    def run() -> None:
        for _ in range(rounds):
            for tenant in tenants:
                read(tenant)

    return _cpu_seconds(run) / (rounds * len(tenants))


def _stampede(other: str) -> tuple[int, float]:
    """1,000 asyncio tasks asking for a token of a profile new to this process: how many times
    the profile was loaded, and the event loop's worst stall (a task ticking every 1 ms sees
    the longest gap)."""
    loads = 0
    real_load = config_module.load_profile

    def counting_load(*a: Any, **k: Any) -> Any:
        nonlocal loads
        loads += 1
        return real_load(*a, **k)

    async def stampede() -> float:
        worst = 0.0
        stop = False

        async def ticker() -> None:
            nonlocal worst
            last = time.perf_counter()
            while not stop:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                worst = max(worst, now - last)
                last = now

        tick = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.01)
        await asyncio.gather(*(get_token_async("fresh", config=other) for _ in range(1000)))
        stop = True
        await tick
        return worst

    setattr(config_module, "load_profile", counting_load)  # noqa: B010
    try:
        worst = asyncio.run(stampede())
    finally:
        setattr(config_module, "load_profile", real_load)  # noqa: B010
    return loads, worst


@contextlib.contextmanager
def _bytecode(folder: Path) -> Iterator[None]:
    """New processes started meanwhile write and read their modules' bytecode in ``folder``,
    as an installed package has it (this environment may forbid writing it, and compiling a
    module from source holds the GIL for milliseconds: a stall measured would be the
    compiler's)."""
    saved = dict(os.environ)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _serve_emulator(conn: Any) -> None:
    """Child process: an emulator with one app; answers "count" until told "stop"."""
    with Emulator() as emu:
        app = emu.register_app(secret="bench-secret")
        conn.send((emu.url, emu.tenant_id, app.client_id))
        while True:
            command = conn.recv()
            if command == "stop":
                return
            conn.send(emu.count("token"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--verbose", action="store_true", help="where the memory goes")
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run only this section (repeatable)")
    args = parser.parse_args()
    only = set(args.only or SECTIONS)
    scale = 5 if args.quick else 1
    emu = Emulator()
    emu.start()
    try:
        app = emu.register_app(secret="bench-secret")
        folder = Path(tempfile.mkdtemp())
        cfg = folder / "profiles.toml"
        body = (f'flow = "client_credentials"\nauthority = "{emu.url}"\n'
                f'tenant = "{emu.tenant_id}"\nclient_id = "{app.client_id}"\n'
                f'client_secret = "bench-secret"\nscope = "https://graph.microsoft.com/.default"\n')
        cfg.write_text(f"[profiles.bench]\n{body}\n[profiles.fresh]\n{body}")
        token = get_token("bench", config=cfg).token
        print(f"authlayer cliffs, Python {sys.version.split()[0]}; token of {len(token)} chars")

        os.environ["AUTHLAYER_CONFIG"] = str(cfg)  # the README's form of the call
        if "cached" in only:
            # 21. the cached call: by name (the profiles file from $AUTHLAYER_CONFIG, as the
            # README shows it), with the file as a str, and as a pathlib.Path (whose hash is a
            # Python method, paid at every call)
            as_str = str(cfg)
            table = {"k": 1}
            blocks = 30 // scale
            base = best(lambda: table.get("k") and time.time(), 10_000, blocks)
            forms = {
                'get_token("bench")': lambda: get_token("bench"),
                'get_token("bench", config=str)': lambda: get_token("bench", config=as_str),
                'get_token("bench", config=Path)': lambda: get_token("bench", config=cfg),
            }
            for call in forms.values():
                call()
            costs = {name: best(call, 10_000, blocks) for name, call in forms.items()}
            print(f"cached call (dict read + clock: {base * 1e6:.3f} µs/call):")
            try:
                from authlib.integrations.requests_client import OAuth2Session  # type: ignore[import-untyped,unused-ignore]
                from authlib.oauth2.rfc6749 import OAuth2Token  # type: ignore[import-untyped,unused-ignore]
            except ImportError:
                authlib: dict[str, float] = {}
                print("  (Authlib not importable)")
            else:
                expires_at = int(time.time()) + 3600
                held = OAuth2Token({"access_token": token, "expires_at": expires_at})
                session = OAuth2Session(client_id="x", token={
                    "access_token": token, "token_type": "Bearer", "expires_at": expires_at})

                def authlib_check() -> Any:
                    return None if held.is_expired() else held["access_token"]

                def authlib_client() -> Any:  # what compare.py times: the client's own check
                    return (session.ensure_active_token(session.token)
                            and session.token["access_token"])

                authlib = {CLIENT: best(authlib_client, 10_000, blocks),
                           "Authlib's bare token check (is_expired)": best(authlib_check, 10_000,
                                                                           blocks)}
            for name, cost in {**costs, **authlib}.items():
                ratio = ""
                if authlib and name in costs:
                    ratio = f"  {cost / authlib[CLIENT]:.2f}x Authlib's client"
                print(f"  {name:<42} {cost * 1e6:6.3f} µs/call{ratio}")

        if "tenants" in only:
            # 17, 21. many tenants, in the README's form (the file from $AUTHLAYER_CONFIG). The
            # one-tenant baseline runs the same loop over a list as long, every item that one
            # tenant: the two differ only in how many tenants' entries the calls read.
            for n in (4_500, 12_000, 50_000):
                if args.quick and n > 12_000:
                    continue
                tenants = [f"t{i}.example.com" for i in range(n)]
                one = [emu.tenant_id] * n
                prefill(None, one[:1], token)
                prefill(None, tenants, token)
                cycle_cost(None, tenants, n)  # warm: one whole cycle
                tokens = {t: get_token("bench", tenant=t) for t in tenants}
                runs = []
                for _ in range(max(1, 5 // scale)):  # alternating, each the best of two
                    many = min(cycle_cost(None, tenants, 50_000) for _ in range(2))
                    single = min(cycle_cost(None, one, 50_000) for _ in range(2))
                    runs.append((many / single, many, single))
                ratios = sorted(r[0] for r in runs)
                _, many, single = sorted(runs)[len(runs) // 2]
                floor_many = min(dict_cycle_cost(tokens, tenants, 50_000) for _ in range(3))
                floor_one = min(dict_cycle_cost(tokens, one, 50_000) for _ in range(3))
                extra, floor = (many - single) * 1e9, (floor_many - floor_one) * 1e9
                print(f"{n:6,} tenants cycled:  {many * 1e6:6.3f} µs/call vs one tenant "
                      f"{single * 1e6:.3f} µs: {ratios[len(ratios) // 2]:.2f}x "
                      f"(runs {ratios[0]:.2f}-{ratios[-1]:.2f}x); {extra:+.0f} ns per call, "
                      f"a plain dict of their tokens {floor:+.0f} ns "
                      f"({floor_many / floor_one:.2f}x)")
                del tokens
                PROVIDER.reset()
                config_module.clear_cache()

        if "memory" in only:
            # 21. memory per cached tenant: real tokens from the emulator, one tenant each
            count = 2_000 // scale
            domains = [f"m{i}.example.com" for i in range(count)]
            for domain in domains:
                emu.add_tenant(domain)
            get_token("bench", config=cfg, tenant=emu.tenant_id)
            gc.collect()
            # The emulator runs in this process: what its threads allocate (its request log, the
            # tokens it issued) is left out.
            server = [tracemalloc.Filter(False, "*/authlayer/emulator/*", all_frames=True)]
            tracemalloc.start(40)
            before = tracemalloc.take_snapshot().filter_traces(server)
            sizes = 0
            for domain in domains:
                sizes += len(get_token("bench", config=cfg, tenant=domain).token)
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces(server)
            tracemalloc.stop()
            if args.verbose:
                for stat in after.compare_to(before, "lineno")[:12]:
                    print("   ", stat)
            grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
            string = sys.getsizeof(get_token("bench", config=cfg, tenant=domains[0]).token)
            print(f"memory per cached tenant:    {grown / count:7.0f} B, of which the token's "
                  f"string is {string} B ({sizes / count:.0f} characters): "
                  f"{grown / count - string:.0f} B besides it ({count:,} tenants)")
            PROVIDER.reset()
            config_module.clear_cache()

        if "stampede" in only:
            # 19. 1,000 tasks, first use of a profile. The emulator runs in another process
            # here: in this one, its threads (signing tokens) would hold the GIL against the event
            # loop, and the stall measured would be the emulator's. The stampede runs twice: in a
            # fresh process, as a service's first use of a profile, and in this one, whose heap
            # the sections above filled (50,000 tenants, an emulator's log): the garbage
            # collector's full passes, which any thousand new tasks set off, take longer there.
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            ours, theirs = ctx.Pipe()
            child = ctx.Process(target=_serve_emulator, args=(theirs,), daemon=True)
            child.start()
            url, tenant_id, client_id = ours.recv()
            for where, fresh in (("a fresh process", True), ("this process", False)):
                other = folder / f"other-{fresh}.toml"
                other.write_text(
                    f'[profiles.fresh]\nflow = "client_credentials"\nauthority = "{url}"\n'
                    f'tenant = "{tenant_id}"\nclient_id = "{client_id}"\n'
                    f'client_secret = "bench-secret"\n'
                    f'scope = "https://graph.microsoft.com/.default"\n')
                if fresh:  # a first process compiles the bytecode; the second is measured
                    warm = folder / "warm.toml"
                    warm.write_text(other.read_text(encoding="utf-8"), encoding="utf-8")
                    with _bytecode(folder), ctx.Pool(1) as pool:
                        pool.apply(_stampede, (str(warm),))
                ours.send("count")
                before = ours.recv()
                if fresh:
                    with _bytecode(folder), ctx.Pool(1) as pool:
                        loads, worst = pool.apply(_stampede, (str(other),))
                else:
                    loads, worst = _stampede(str(other))
                ours.send("count")
                requests = ours.recv() - before
                print(f"1,000 tasks, new profile, {where}: {loads} profile load(s), {requests} "
                      f"token request(s), worst event-loop stall {worst * 1e3:.1f} ms")
            ours.send("stop")
            child.join()

        if "aio" in only:
            # 20. the async Azure credential's cached call
            from authlayer import aio

            cred = aio.credential("bench", config=cfg)
            scope = "https://graph.microsoft.com/.default"

            async def async_costs() -> tuple[float, float]:
                await cred.get_token(scope)
                await get_token_async("bench", config=cfg)
                n = 2_000 // scale
                t_cred, t_plain = [], []
                for _ in range(5):
                    start = time.process_time()
                    for _ in range(n):
                        await cred.get_token(scope)
                    t_cred.append((time.process_time() - start) / n)
                    start = time.process_time()
                    for _ in range(n):
                        await get_token_async("bench", config=cfg)
                    t_plain.append((time.process_time() - start) / n)
                return min(t_cred), min(t_plain)

            t_cred, t_plain = asyncio.run(async_costs())
            print(f"aio.credential().get_token:  {t_cred * 1e6:7.2f} µs/call vs get_token_async "
                  f"{t_plain * 1e6:.2f} µs: {t_cred / t_plain:.2f}x")
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
