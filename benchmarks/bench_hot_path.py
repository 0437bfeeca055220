"""Hot-path benchmark: what authlayer costs per request once a token is cached.

Run: ``python benchmarks/bench_hot_path.py`` (add ``--quick`` for a short run). Prints, from one
run, each figure with the baseline taken in the same run:

* cached ``get_token`` per call, next to a plain dict read + clock call;
* per-request cost of ``EntraAuth`` over a static ``Authorization`` header, through
  ``httpx.Client`` with ``MockTransport`` and through ``requests.Session`` with a stub adapter;
* token requests made by cold-cache stampedes (64 threads, 500 asyncio tasks).

Everything runs offline: tokens come from the emulator on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import requests
from requests.adapters import BaseAdapter

from authlayer import EntraAuth, get_token, get_token_async
from authlayer.emulator import Emulator
from authlayer.provider import PROVIDER


def per_call(fn: Callable[[], Any], number: int) -> float:
    """CPU seconds per call over one block of `number` calls, with the garbage collector off.

    CPU time of this process, not wall time: on a virtual machine, time stolen by the host or
    other tenants then does not count against either side.
    """
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        for _ in range(number):
            fn()
        return (time.process_time() - start) / number
    finally:
        gc.enable()


def paired(a: Callable[[], Any], b: Callable[[], Any], number: int,
           blocks: int) -> tuple[float, float]:
    """Alternate short blocks of `a` and `b` so that the machine's noise hits both, and keep the
    best block of each: on a shared virtual machine noise only ever adds time."""
    ta, tb = [], []
    for _ in range(blocks):
        ta.append(per_call(a, number))
        tb.append(per_call(b, number))
    return min(ta), min(tb)


class StubAdapter(BaseAdapter):
    """A requests adapter that answers 200 without a network."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        r = requests.Response()
        r.status_code = 200
        r.request = request
        r.url = request.url or ""
        r.raw = io.BytesIO(b"ok")
        return r

    def close(self) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    emu = Emulator()
    emu.start()
    try:
        app = emu.register_app(secret="bench-secret")
        folder = Path(tempfile.mkdtemp())
        cfg = folder / "profiles.toml"
        cfg.write_text(
            f'[profiles.bench]\nflow = "client_credentials"\nauthority = "{emu.url}"\n'
            f'tenant = "{emu.tenant_id}"\nclient_id = "{app.client_id}"\n'
            f'client_secret = "bench-secret"\nscope = "https://graph.microsoft.com/.default"\n'
        )
        get_token("bench", config=cfg)
        header = "Bearer " + get_token("bench", config=cfg).token
        print(f"authlayer hot path, Python {sys.version.split()[0]}")

        # 1. cached get_token
        table = {"k": 1}
        n = 2_000
        blocks = 60 // scale
        base, cached = paired(lambda: table.get("k") and time.time(),
                              lambda: get_token("bench", config=cfg), n * 5, blocks)
        print(f"cached get_token:           {cached * 1e6:7.3f} µs/call "
              f"(dict read + clock: {base * 1e6:.3f} µs)")

        # 2. httpx with MockTransport
        transport = httpx.MockTransport(lambda r: httpx.Response(200, content=b"ok"))
        static = httpx.Client(transport=transport, headers={"Authorization": header})
        authed = httpx.Client(transport=transport, auth=EntraAuth("bench", config=cfg))
        url = "https://graph.microsoft.com/v1.0/me"
        authed.get(url)
        t_static, t_auth = paired(lambda: static.get(url), lambda: authed.get(url), n // 10,
                                  blocks)
        print(f"httpx request, static header: {t_static * 1e6:7.2f} µs; with EntraAuth: "
              f"{t_auth * 1e6:7.2f} µs; overhead {100 * (t_auth / t_static - 1):+.2f}%")

        # 2b. the auth step alone: EntraAuth's flow vs httpx's no-op Auth on the same request
        request = httpx.Request("GET", url)
        response = httpx.Response(200)

        def drive(auth_obj: httpx.Auth) -> None:
            flow = auth_obj.sync_auth_flow(request)
            next(flow)
            with contextlib.suppress(StopIteration):
                flow.send(response)

        entra, noop = EntraAuth("bench", config=cfg), httpx.Auth()
        f_noop, f_entra = paired(lambda: drive(noop), lambda: drive(entra), n, blocks)
        print(f"httpx auth step alone: no-op Auth {f_noop * 1e6:.2f} µs; EntraAuth "
              f"{f_entra * 1e6:.2f} µs; difference {(f_entra - f_noop) * 1e6:.2f} µs = "
              f"{100 * (f_entra - f_noop) / t_static:.2f}% of a static-header request")

        # 3. requests with a stub adapter
        # The static header is set by a one-line auth callable: with no auth at all, requests
        # looks up ~/.netrc on every request, which would flatter EntraAuth.
        def static_auth(r: requests.PreparedRequest) -> requests.PreparedRequest:
            r.headers["Authorization"] = header
            return r

        s_static = requests.Session()
        s_static.mount("https://", StubAdapter())
        s_static.auth = static_auth
        s_auth = requests.Session()
        s_auth.mount("https://", StubAdapter())
        s_auth.auth = EntraAuth("bench", config=cfg)
        s_auth.get(url)
        r_static, r_auth = paired(lambda: s_static.get(url), lambda: s_auth.get(url), n // 10,
                                  blocks)
        print(f"requests request, static header: {r_static * 1e6:7.2f} µs; with EntraAuth: "
              f"{r_auth * 1e6:7.2f} µs; overhead {100 * (r_auth / r_static - 1):+.2f}%")

        # 3b. the auth step alone: EntraAuth's __call__ plus its response hook, vs the
        # one-line static auth, on the same prepared request and response
        prepared = requests.Request("GET", url).prepare()
        answered = requests.Response()
        answered.status_code = 200
        entra_requests = EntraAuth("bench", config=cfg)

        def run_auth(auth_obj: Any) -> None:
            prepared.hooks = {"response": []}
            auth_obj(prepared)
            for hook in prepared.hooks["response"]:
                hook(answered)

        q_static, q_entra = paired(lambda: run_auth(static_auth),
                                   lambda: run_auth(entra_requests), n, blocks)
        print(f"requests auth step alone: static {q_static * 1e6:.2f} µs; EntraAuth "
              f"{q_entra * 1e6:.2f} µs; difference {(q_entra - q_static) * 1e6:.2f} µs = "
              f"{100 * (q_entra - q_static) / r_static:.2f}% of a static-header request")

        # 4. stampedes on a cold cache
        emu.latency = 0.2
        PROVIDER.reset()
        emu.reset()
        barrier = threading.Barrier(64)

        def worker() -> None:
            barrier.wait()
            get_token("bench", config=cfg)

        threads = [threading.Thread(target=worker) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"64 threads, cold cache:     {emu.count('token')} token request(s)")
        PROVIDER.reset()
        emu.reset()

        async def tasks() -> None:
            await asyncio.gather(*(get_token_async("bench", config=cfg) for _ in range(500)))

        asyncio.run(tasks())
        print(f"500 asyncio tasks, cold cache: {emu.count('token')} token request(s)")
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
