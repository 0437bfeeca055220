"""``authlayer demo``: a short end-to-end tour against the local emulator, offline.

Starts the emulator on loopback, writes a throwaway profile in a temporary folder, and shows
what authlayer does: a token through requests, httpx and httpx's async client, a cache hit,
cold-cache stampedes (many async requests, many threads) that cost one token request each, a
revoked token recovered by the 401 retry, and the clear error a wrong secret gets. Prints the
story on standard output; never a secret or a token. Exit status 1 if any step did not behave
as shown: CI runs it in an environment with nothing but ``pip install .``, as a smoke test of
what a fresh install can do.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import threading
from pathlib import Path

from .cli import out

__all__ = ["run"]

STAMPEDE = 50  # concurrent requests on a cold cache
TOKEN_LATENCY = 0.2  # seconds the token endpoint takes then, so that every request piles up


def _step(text: str) -> None:
    out(f"\n== {text}")


def run() -> int:
    """Run the tour; return the exit status (0 when every step behaved as shown)."""
    import httpx
    import requests

    from . import EntraAuth, TokenError, get_token
    from .emulator import Emulator
    from .provider import PROVIDER

    with Emulator() as emu, tempfile.TemporaryDirectory(prefix="authlayer-demo-") as folder:
        secret = secrets.token_urlsafe(24)
        app = emu.register_app(secret=secret, roles=("Data.Read",))
        config = Path(folder) / "profiles.toml"
        config.write_text(
            "[profiles.demo]\n"
            'flow = "client_credentials"\n'
            f'authority = "{emu.url}"\n'
            f'tenant = "{emu.tenant_id}"\n'
            f'client_id = "{app.client_id}"\n'
            'client_secret = { env = "AUTHLAYER_DEMO_SECRET" }\n'
            f'scope = "{emu.api_scope}"\n'
            "\n[profiles.wrong-secret]\n"
            'extends = "demo"\n'
            'client_secret = "not-the-right-secret"\n',
            encoding="utf-8",
        )
        os.environ["AUTHLAYER_DEMO_SECRET"] = secret
        out(f"authlayer demo: an Entra ID emulator is listening on {emu.url}")
        out(f"profile 'demo' (client credentials, secret from $AUTHLAYER_DEMO_SECRET) in "
            f"{config}")
        auth = EntraAuth("demo", config=config)
        url = f"{emu.api_url}/me"

        _step("requests: session.auth = EntraAuth('demo')")
        with requests.Session() as session:
            session.auth = auth
            r = session.get(url, timeout=10)
            claims = r.json()["claims"]
            out(f"GET {url} -> {r.status_code}; the API saw app {claims['appid']} "
                f"with roles {claims.get('roles')}")

        _step("httpx: httpx.Client(auth=EntraAuth('demo'))")
        with httpx.Client(auth=auth) as client:
            out(f"GET {url} -> {client.get(url).status_code}")

        _step("httpx async: httpx.AsyncClient(auth=EntraAuth('demo'))")

        async def fetch_many() -> list[int]:
            async with httpx.AsyncClient(auth=auth) as client:
                answers = await asyncio.gather(*(client.get(url) for _ in range(20)))
                return [a.status_code for a in answers]

        statuses = asyncio.run(fetch_many())
        out(f"20 concurrent GETs -> {statuses.count(200)} x 200")

        _step("cache: one token served all of the above")
        out(f"the emulator was asked for a token {emu.count('token')} time(s) for "
            f"{emu.count('api')} API calls")
        token = get_token("demo", config=config)
        out(f"get_token('demo') -> {token!r}  (the token itself is never shown)")

        _step(f"cold cache, async: {STAMPEDE} concurrent AsyncClient requests, slow token "
              "endpoint")
        PROVIDER.reset()  # forget the token: every request below finds the cache empty
        emu.inject("latency", seconds=TOKEN_LATENCY)
        before = emu.count("token")

        async def stampede() -> list[int]:
            async with httpx.AsyncClient(auth=EntraAuth("demo", config=config)) as client:
                answers = await asyncio.gather(*(client.get(url) for _ in range(STAMPEDE)))
                return [a.status_code for a in answers]

        async_statuses = asyncio.run(stampede())
        async_asked = emu.count("token") - before
        out(f"{STAMPEDE} requests -> {async_statuses.count(200)} x 200, "
            f"token requests: {async_asked}")

        _step(f"cold cache, threads: {STAMPEDE} threads with one requests.Session, slow token "
              "endpoint")
        PROVIDER.reset()
        emu.inject("latency", seconds=TOKEN_LATENCY)
        before = emu.count("token")
        thread_statuses: list[int] = []
        with requests.Session() as session:
            session.auth = EntraAuth("demo", config=config)
            start = threading.Barrier(STAMPEDE)

            def one() -> None:
                start.wait()
                thread_statuses.append(session.get(url, timeout=10).status_code)

            threads = [threading.Thread(target=one) for _ in range(STAMPEDE)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        thread_asked = emu.count("token") - before
        out(f"{STAMPEDE} requests -> {thread_statuses.count(200)} x 200, "
            f"token requests: {thread_asked}")

        _step("401 retry: the emulator revokes every token issued so far")
        emu.revoke_all()
        before = emu.count("token")
        with httpx.Client(auth=auth) as client:
            r2 = client.get(url)
        out(f"GET {url} -> 401, new token fetched ({emu.count('token') - before} request), "
            f"sent again -> {r2.status_code}")

        _step("a wrong secret gets a clear error")
        try:
            get_token("wrong-secret", config=config)
        except TokenError as exc:
            out(f"TokenError: {exc}")
        else:
            out("unexpected: the wrong secret was accepted")
            return 1
        finally:
            os.environ.pop("AUTHLAYER_DEMO_SECRET", None)
            PROVIDER.reset()
        ok = (r.status_code == 200 and r2.status_code == 200 and set(statuses) == {200}
              and async_statuses == [200] * STAMPEDE and thread_statuses == [200] * STAMPEDE
              and async_asked == 1 and thread_asked == 1)
        out("\ndemo finished " + ("successfully" if ok else "with unexpected answers"))
        return 0 if ok else 1
