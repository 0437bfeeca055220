"""``authlayer demo``: a short end-to-end tour against the local emulator, offline.

Starts the emulator on loopback, writes a throwaway profile in a temporary folder, and shows
what authlayer does: a token through requests, httpx and httpx's async client, a cache hit, a
revoked token recovered by the 401 retry, and the clear error a wrong secret gets. Prints the
story on standard output; never a secret or a token.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from pathlib import Path

__all__ = ["run"]


def _step(text: str) -> None:
    print(f"\n== {text}")


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
        import os

        os.environ["AUTHLAYER_DEMO_SECRET"] = secret
        print(f"authlayer demo: an Entra ID emulator is listening on {emu.url}")
        print(f"profile 'demo' (client credentials, secret from $AUTHLAYER_DEMO_SECRET) in "
              f"{config}")
        auth = EntraAuth("demo", config=config)
        url = f"{emu.api_url}/me"

        _step("requests: session.auth = EntraAuth('demo')")
        with requests.Session() as session:
            session.auth = auth
            r = session.get(url, timeout=10)
            claims = r.json()["claims"]
            print(f"GET {url} -> {r.status_code}; the API saw app {claims['appid']} "
                  f"with roles {claims.get('roles')}")

        _step("httpx: httpx.Client(auth=EntraAuth('demo'))")
        with httpx.Client(auth=auth) as client:
            print(f"GET {url} -> {client.get(url).status_code}")

        _step("httpx async: httpx.AsyncClient(auth=EntraAuth('demo'))")

        async def fetch_many() -> list[int]:
            async with httpx.AsyncClient(auth=auth) as client:
                answers = await asyncio.gather(*(client.get(url) for _ in range(20)))
                return [a.status_code for a in answers]

        statuses = asyncio.run(fetch_many())
        print(f"20 concurrent GETs -> {statuses.count(200)} x 200")

        _step("cache: one token served all of the above")
        print(f"the emulator was asked for a token {emu.count('token')} time(s) for "
              f"{emu.count('api')} API calls")
        token = get_token("demo", config=config)
        print(f"get_token('demo') -> {token!r}  (the token itself is never shown)")

        _step("401 retry: the emulator revokes every token issued so far")
        emu.revoke_all()
        before = emu.count("token")
        with httpx.Client(auth=auth) as client:
            r2 = client.get(url)
        print(f"GET {url} -> 401, new token fetched ({emu.count('token') - before} request), "
              f"sent again -> {r2.status_code}")

        _step("a wrong secret gets a clear error")
        try:
            get_token("wrong-secret", config=config)
        except TokenError as exc:
            print(f"TokenError: {exc}")
        else:
            print("unexpected: the wrong secret was accepted")
            return 1
        finally:
            os.environ.pop("AUTHLAYER_DEMO_SECRET", None)
            PROVIDER.reset()
        ok = r.status_code == 200 and r2.status_code == 200 and set(statuses) == {200}
        print("\ndemo finished " + ("successfully" if ok else "with unexpected answers"))
        return 0 if ok else 1
