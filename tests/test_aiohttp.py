"""EntraAuth as an aiohttp client middleware, through a real aiohttp.ClientSession against the
emulator over loopback: the token, single flight, the event loop, which bodies are sent again
after a 401, proxies, redirects (checked for every client: aiohttp runs its middlewares for each
hop, requests and httpx do not), and that requests/httpx users never import aiohttp. The
contract tests that take the `client` fixture run with aiohttp as well."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from authlayer import ConfigError, EntraAuth, get_token
from authlayer.emulator import Emulator

from .conftest import Client, local_server, release_when, waiting_callers
from .test_concurrency import _ticks_while


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def session(auth: EntraAuth, **kwargs: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(middlewares=(auth,),
                                 timeout=aiohttp.ClientTimeout(total=10), **kwargs)


# ------------------------------------------------------------------ the token


def test_a_session_with_the_middleware_calls_the_api(emu: Emulator, cc_profile: str) -> None:
    async def main() -> tuple[int, Any]:
        async with session(EntraAuth(cc_profile)) as s, s.get(f"{emu.api_url}/me") as r:
            return r.status, await r.json()

    status, body = run(main())
    assert status == 200
    assert body["claims"]["aud"] == emu.api_resource
    assert emu.count("token") == 1


def test_per_request_middlewares_work_too(emu: Emulator, cc_profile: str) -> None:
    auth = EntraAuth(cc_profile)

    async def main() -> list[int]:
        async with aiohttp.ClientSession() as s:
            statuses = []
            for _ in range(3):
                async with s.get(f"{emu.api_url}/x", middlewares=(auth,)) as r:
                    statuses.append(r.status)
            return statuses

    assert run(main()) == [200, 200, 200]
    assert emu.count("token") == 1


def test_a_scope_that_names_no_host_is_refused_by_every_client(emu: Emulator, cc_profile: str,
                                                               client: Client) -> None:
    auth = EntraAuth(cc_profile, scope="api://my-api/.default")
    with pytest.raises(ConfigError) as info:
        client.get(f"{emu.api_url}/x", auth)
    assert info.value.key == "scope"
    assert "names no host the token may be sent to" in str(info.value)


# ------------------------------------------------------------------ single flight, the loop


def test_many_tasks_on_a_cold_cache_make_one_token_request(emu: Emulator,
                                                           cc_profile: str) -> None:
    # The first token request is held until the 99 other tasks wait for it.
    release_when(emu.hold(), lambda: waiting_callers() == 99)

    async def main() -> list[int]:
        async with session(EntraAuth(cc_profile),
                           connector=aiohttp.TCPConnector(limit=0)) as s:

            async def one(i: int) -> int:
                async with s.get(f"{emu.api_url}/n/{i}") as r:
                    return r.status

            return list(await asyncio.gather(*(one(i) for i in range(100))))

    assert run(main()) == [200] * 100
    assert emu.count("token") == 1


def test_many_tasks_seeing_the_same_401_make_one_token_request(emu: Emulator,
                                                               cc_profile: str) -> None:
    auth = EntraAuth(cc_profile)
    get_token(cc_profile)
    emu.revoke_all()
    emu.reset()

    async def main() -> list[int]:
        async with session(auth, connector=aiohttp.TCPConnector(limit=0)) as s:

            async def one(i: int) -> int:
                async with s.get(f"{emu.api_url}/n/{i}") as r:
                    return r.status

            return list(await asyncio.gather(*(one(i) for i in range(32))))

    assert run(main()) == [200] * 32
    assert emu.count("token") == 1
    assert emu.count("api") == 64  # each request sent twice: refused, then accepted


def test_the_event_loop_runs_while_the_token_is_fetched(emu: Emulator, cc_profile: str) -> None:
    token, api = emu.hold(), emu.hold(endpoint="api")
    ticks = {"token": 0, "api": 0}

    def tick() -> None:
        for name, gate in (("token", token), ("api", api)):
            if gate.held:
                ticks[name] += 1
                if ticks[name] == 10:
                    gate.release()

    auth = EntraAuth(cc_profile)

    async def work() -> None:
        async with session(auth) as s, s.get(f"{emu.api_url}/x") as r:
            assert r.status == 200

    # The token request and the API call are each answered only after the loop ran other
    # tasks ten times while it waited: one that blocked the loop would never be answered.
    _ticks_while(work(), tick)
    assert ticks["token"] >= 10
    assert ticks["api"] >= 10


# ------------------------------------------------------------------ 401: what is sent again


@pytest.fixture
def revoked(emu: Emulator, cc_profile: str) -> EntraAuth:
    """An EntraAuth whose cached token the API now refuses."""
    get_token(cc_profile)
    emu.revoke_all()
    return EntraAuth(cc_profile)


def _post(auth: EntraAuth, url: str, **kwargs: Any) -> tuple[int, bytes]:
    async def main() -> tuple[int, bytes]:
        async with session(auth) as s, s.post(url, **kwargs) as r:
            return r.status, await r.read()

    return run(main())  # type: ignore[no-any-return]


@pytest.mark.parametrize(("kwargs", "length"), [
    ({"data": b"x" * 3000}, 3000),
    ({"data": "é" * 100}, 200),
    ({"json": {"k": "v"}}, len('{"k": "v"}')),
    ({"data": {"field": "v" * 100}}, len("field=" + "v" * 100)),
    ({"data": io.BytesIO(b"y" * 5000)}, 5000),
], ids=["bytes", "str", "json", "form", "bytesio"])
def test_bodies_aiohttp_can_send_again_are_resent_whole(emu: Emulator, revoked: EntraAuth,
                                                        kwargs: dict[str, Any],
                                                        length: int) -> None:
    status, body = _post(revoked, f"{emu.api_url}/upload", **kwargs)
    assert status == 200
    assert json.loads(body)["body_bytes"] == length
    assert emu.count("api") == 2
    assert emu.count("token") == 2


@pytest.mark.parametrize("multipart", [False, True], ids=["file", "multipart"])
def test_a_file_and_a_multipart_upload_are_resent_whole(emu: Emulator, revoked: EntraAuth,
                                                        tmp_path: Path, multipart: bool) -> None:
    path = tmp_path / "payload.bin"
    path.write_bytes(b"z" * 70_000)  # more than one read
    with path.open("rb") as f:
        data: Any = f
        if multipart:
            data = aiohttp.FormData()
            data.add_field("f", f, filename="payload.bin")
        status, body = _post(revoked, f"{emu.api_url}/upload", data=data)
    assert status == 200
    sent = json.loads(body)["body_bytes"]
    assert sent > 70_000 if multipart else sent == 70_000
    assert emu.count("api") == 2


def test_an_async_generator_body_is_not_resent(emu: Emulator, revoked: EntraAuth) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"c" * 100

    status, _ = _post(revoked, f"{emu.api_url}/upload", data=chunks())
    assert status == 401  # the 401 goes back to the caller as it came
    assert emu.count("api") == 1
    assert emu.count("token") == 1


def test_a_pipe_body_is_not_resent(emu: Emulator, revoked: EntraAuth) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"p" * 1000)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        status, _ = _post(revoked, f"{emu.api_url}/upload", data=pipe)
    assert status == 401
    assert emu.count("api") == 1


# ------------------------------------------------------------------ proxies


def test_a_proxy_given_in_code_gets_no_loopback_http_token(
        emu: Emulator, cc_profile: str, proxy: ThreadingHTTPServer,
        caplog: pytest.LogCaptureFixture) -> None:
    """Unlike an httpx auth, the middleware sees the proxy a request goes through, even one
    given in code."""
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"

    async def main() -> bytes:
        async with session(EntraAuth(cc_profile)) as s, \
                s.get(f"{emu.api_url}/things", proxy=proxy_url) as r:
            return await r.read()

    assert run(main()) == b"from the proxy"
    seen = proxy.seen  # type: ignore[attr-defined]
    assert len(seen) == 1
    assert "authorization" not in seen[0]
    assert emu.count("token") == 0
    assert "this request goes through a proxy" in caplog.text
    assert "no token for http host '127.0.0.1'" in caplog.text


def test_all_proxy_which_aiohttp_does_not_read_leaves_the_token_on(
        emu: Emulator, cc_profile: str, proxy: ThreadingHTTPServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")

    async def main() -> int:
        async with session(EntraAuth(cc_profile), trust_env=True) as s, \
                s.get(f"{emu.api_url}/things") as r:
            return r.status

    assert run(main()) == 200  # straight to the API, with the token
    assert proxy.seen == []  # type: ignore[attr-defined]


# ------------------------------------------------------------------ redirects, every client


class _Redirector(BaseHTTPRequestHandler):
    """``/away?to=URL`` redirects there, ``/same`` to ``/echo`` on this server; ``/echo`` says
    whether it was given an Authorization header. Every request's is recorded."""

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        carried = "Authorization" in self.headers
        self.server.seen.append((split.path, carried))  # type: ignore[attr-defined]
        if split.path == "/echo":
            body = json.dumps({"authorization": carried}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        target = parse_qs(split.query)["to"][0] if split.path == "/away" else "/echo"
        self.send_response(302)
        self.send_header("location", target)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def redirector() -> Iterator[ThreadingHTTPServer]:
    with local_server(_Redirector) as server:
        yield server


def _base(server: ThreadingHTTPServer, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{server.server_address[1]}"


def test_a_redirect_within_the_origin_keeps_the_token(cc_profile: str, client: Client,
                                                      redirector: ThreadingHTTPServer) -> None:
    answer = client.get(f"{_base(redirector)}/same", EntraAuth(cc_profile))
    assert answer.json() == {"authorization": True}
    assert redirector.seen == [("/same", True), ("/echo", True)]  # type: ignore[attr-defined]


def test_a_redirect_to_another_allowed_origin_gets_no_token(
        emu: Emulator, cc_profile: str, client: Client,
        redirector: ThreadingHTTPServer) -> None:
    """127.0.0.1 is allowed on any port, but the redirect target is another origin: like
    requests and httpx, the aiohttp middleware leaves it without the token, and the 401 it
    answers goes back as it came."""
    answer = client.get(f"{_base(redirector)}/away?to={emu.api_url}/x", EntraAuth(cc_profile))
    assert answer.status == 401
    assert answer.history == 1
    assert redirector.seen == [("/away", True)]  # type: ignore[attr-defined]
    assert emu.count("token") == 1
    assert emu.count("api") == 1
    assert "authorization" not in {k.lower() for k in emu.requests[-1].headers}


def test_a_token_dropped_on_a_redirect_is_not_regained_on_the_way_back(
        cc_profile: str, client: Client, redirector: ThreadingHTTPServer) -> None:
    back = f"{_base(redirector)}/echo"
    via_localhost = f"{_base(redirector, 'localhost')}/away?to={back}"
    answer = client.get(f"{_base(redirector)}/away?to={via_localhost}", EntraAuth(cc_profile))
    assert answer.json() == {"authorization": False}
    assert redirector.seen == [  # type: ignore[attr-defined]
        ("/away", True), ("/away", False), ("/echo", False)]


def test_a_request_after_a_redirect_is_judged_on_its_own(
        emu: Emulator, cc_profile: str, redirector: ThreadingHTTPServer) -> None:
    """The redirect rule holds for the hops aiohttp follows, not for the next request."""
    auth = EntraAuth(cc_profile)

    async def main() -> list[int]:
        async with session(auth) as s:
            async with s.get(f"{_base(redirector)}/away?to={emu.api_url}/x") as r:
                first = r.status
            async with s.get(f"{emu.api_url}/x") as r:
                return [first, r.status]

    assert run(main()) == [401, 200]


# ------------------------------------------------------------------ who imports aiohttp


def test_requests_and_httpx_users_never_import_aiohttp(emu: Emulator, cc_profile: str) -> None:
    script = (
        "import sys, requests, httpx\n"
        "from authlayer import EntraAuth\n"
        f"url = {emu.api_url + '/x'!r}\n"
        "assert requests.get(url, auth=EntraAuth('app'), timeout=10).status_code == 200\n"
        "assert httpx.get(url, auth=EntraAuth('app'), timeout=10).status_code == 200\n"
        "assert 'aiohttp' not in sys.modules, 'aiohttp was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ))
    assert done.returncode == 0, done.stderr

