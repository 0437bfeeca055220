"""EntraAuth on the wire: where the token goes, the 401 retry, claims challenges, bodies that
cannot be sent twice."""

from __future__ import annotations

import io
import threading
from typing import Any, Callable

import httpx
import pytest
import requests
from requests.adapters import BaseAdapter

from authlayer import EntraAuth, get_token
from authlayer.emulator import Emulator

from .conftest import Client


def test_after_revocation_the_request_is_resent_once(emu: Emulator, cc_profile: str,
                                                     client: Client) -> None:
    auth = EntraAuth(cc_profile)
    assert client.get(f"{emu.api_url}/a", auth).status == 200
    emu.revoke_all()
    answer = client.get(f"{emu.api_url}/a", auth)
    assert answer.status == 200
    # The first 401 is kept in the history (aiohttp's history holds redirects only: a
    # middleware cannot add to it).
    assert answer.history == (0 if client.kind == "aiohttp" else 1)
    assert emu.count("token") == 2
    assert emu.count("api") == 3


def test_second_401_is_returned_to_the_caller(emu: Emulator, client: Client,
                                              app_profile: Callable[..., str]) -> None:
    # A token for another audience: the API refuses every one of them.
    app_profile("wrongaud", scope="https://graph.microsoft.com/.default",
                allowed_hosts=["127.0.0.1"])
    answer = client.get(f"{emu.api_url}/a", EntraAuth("wrongaud"))
    assert answer.status == 401
    assert emu.count("api") == 2
    assert emu.count("token") == 2


def test_many_requests_seeing_the_same_401_cause_one_token_request(
    emu: Emulator, cc_profile: str
) -> None:
    auth = EntraAuth(cc_profile)
    get_token(cc_profile)
    emu.revoke_all()
    emu.reset()
    statuses: list[int] = []
    barrier = threading.Barrier(16)

    def call() -> None:
        with httpx.Client(auth=auth) as c:
            barrier.wait()
            statuses.append(c.get(f"{emu.api_url}/a").status_code)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 16
    assert emu.count("token") == 1


def test_claims_challenge_asks_for_a_token_with_those_claims(emu: Emulator, cc_profile: str,
                                                            client: Client) -> None:
    auth = EntraAuth(cc_profile)
    assert client.get(f"{emu.api_url}/a", auth).status == 200
    emu.claims_challenge(1)
    answer = client.get(f"{emu.api_url}/a", auth)
    assert answer.status == 200
    asked = [r for r in emu.requests if r.endpoint == "token"][-1]
    assert "claims" in asked.form
    assert '"xms_cc":{"values":["cp1"]}' in asked.form["claims"]


def test_arm_style_claims_challenge(emu: Emulator, cc_profile: str, client: Client) -> None:
    auth = EntraAuth(cc_profile)
    emu.claims_challenge(1, style="invalid_token")
    assert client.get(f"{emu.api_url}/a", auth).status == 200
    assert any("claims" in r.form for r in emu.requests if r.endpoint == "token")


def test_claims_token_does_not_enter_the_plain_cache(emu: Emulator, cc_profile: str) -> None:
    auth = EntraAuth(cc_profile)
    plain = get_token(cc_profile)
    emu.claims_challenge(1)
    with httpx.Client(auth=auth) as c:
        assert c.get(f"{emu.api_url}/a").status_code == 200
    asked = [r for r in emu.requests if r.endpoint == "token"]
    assert len(asked) == 2
    assert "claims" in asked[-1].form
    after = get_token(cc_profile)  # a plain token, asked for plainly
    asked = [r for r in emu.requests if r.endpoint == "token"]
    assert len(asked) == 3
    assert "claims" not in asked[-1].form
    assert after.token != plain.token  # the challenged token was dropped


def _gen_body() -> Any:
    yield b"chunk-1;"
    yield b"chunk-2;"


@pytest.mark.parametrize("kind", ["requests", "httpx"])
def test_body_that_cannot_be_replayed_is_not_resent(emu: Emulator, cc_profile: str,
                                                    kind: str) -> None:
    auth = EntraAuth(cc_profile)
    get_token(cc_profile)
    emu.revoke_all()
    emu.reset()
    if kind == "requests":
        status = requests.post(f"{emu.api_url}/upload", data=_gen_body(), auth=auth).status_code
    else:
        with httpx.Client(auth=auth) as c:
            status = c.post(f"{emu.api_url}/upload", content=_gen_body()).status_code
    assert status == 401
    assert emu.count("api") == 1
    assert emu.count("token") == 0


def test_async_generator_body_is_not_resent(emu: Emulator, cc_profile: str) -> None:
    import asyncio

    async def body() -> Any:
        yield b"abc"

    async def go() -> int:
        async with httpx.AsyncClient(auth=EntraAuth(cc_profile)) as c:
            return (await c.post(f"{emu.api_url}/upload", content=body())).status_code

    get_token(cc_profile)
    emu.revoke_all()
    emu.reset()
    assert asyncio.run(go()) == 401
    assert emu.count("api") == 1


def test_requests_rewinds_a_seekable_body(emu: Emulator, cc_profile: str) -> None:
    auth = EntraAuth(cc_profile)
    get_token(cc_profile)
    emu.revoke_all()
    payload = io.BytesIO(b"prefix|" + b"x" * 5000)
    payload.seek(7)  # send from the current position, as requests does
    r = requests.put(f"{emu.api_url}/upload", data=payload, auth=auth)
    assert r.status_code == 200
    assert r.json()["body_bytes"] == 5000
    assert len(r.history) == 1


def test_replayable_bodies_are_resent_whole(emu: Emulator, cc_profile: str,
                                            client: Client) -> None:
    auth = EntraAuth(cc_profile)
    get_token(cc_profile)
    emu.revoke_all()
    answer = client.request("POST", f"{emu.api_url}/upload", auth, data={"field": "v" * 100})
    assert answer.status == 200
    assert answer.json()["body_bytes"] == len("field=" + "v" * 100)


def test_multipart_upload_is_resent(emu: Emulator, cc_profile: str, client: Client) -> None:
    auth = EntraAuth(cc_profile)
    get_token(cc_profile)
    emu.revoke_all()
    answer = client.request("POST", f"{emu.api_url}/upload", auth,
                            files={"f": ("a.txt", io.BytesIO(b"hello" * 100))})
    assert answer.status == 200
    assert answer.json()["body_bytes"] > 500


# ------------------------------------------------------------------ where the token goes


def test_token_is_not_sent_to_another_host(emu: Emulator, cc_profile: str,
                                           client: Client) -> None:
    other = emu.api_url.replace("127.0.0.1", "localhost")  # same server, another host name
    answer = client.get(f"{other}/a", EntraAuth(cc_profile))
    assert answer.status == 401  # no token: the API refuses, and no retry happens
    assert emu.count("api") == 1
    assert emu.count("token") == 0
    assert "authorization" not in {k.lower() for k in emu.requests[-1].headers}


class _Capture(BaseAdapter):
    """A requests adapter that answers 200 and remembers the headers it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, str]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.seen.append(dict(request.headers))
        r = requests.Response()
        r.status_code = 200
        r.request = request
        r.raw = io.BytesIO(b"{}")
        return r

    def close(self) -> None:
        pass


@pytest.fixture
def example_profile(app_profile: Callable[..., str]) -> str:
    app_profile("ex", allowed_hosts=[".example.com"])
    return "ex"


@pytest.mark.parametrize(("url", "carries"), [
    ("https://api.example.com/x", True),
    ("https://example.com/x", True),
    ("http://api.example.com/x", False),  # plain http to a non-loopback host: never
    ("https://example.org/x", False),
    ("https://example.com.evil.test/x", False),
    ("https://user:pw@evil.test/x?h=api.example.com", False),
])
def test_token_goes_only_to_allowed_hosts_over_https(example_profile: str, url: str,
                                                     carries: bool) -> None:
    seen: list[httpx.Request] = []
    with httpx.Client(auth=EntraAuth(example_profile),
                      transport=httpx.MockTransport(lambda r: (seen.append(r),
                                                               httpx.Response(200))[1])) as c:
        c.get(url)
    assert ("authorization" in seen[0].headers) is carries

    session = requests.Session()
    adapter = _Capture()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.auth = EntraAuth(example_profile)
    session.get(url)
    assert ("Authorization" in adapter.seen[0]) is carries


def test_redirect_to_another_host_drops_the_token(example_profile: str) -> None:
    seen: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(r)
        if r.url.host == "api.example.com":
            return httpx.Response(302, headers={"Location": "https://files.example.net/blob"})
        return httpx.Response(200)

    with httpx.Client(auth=EntraAuth(example_profile), transport=httpx.MockTransport(handler),
                      follow_redirects=True) as c:
        c.get("https://api.example.com/download")
    assert "authorization" in seen[0].headers
    assert "authorization" not in seen[1].headers
