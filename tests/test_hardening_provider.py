"""Issue 11, the provider's items: an API that refuses every token (3a), refresh ahead in the
background (3b), profiles files rewritten in the same process (12), many tenants (17, 21),
many tasks on a new profile (19) and the async Azure credential's fast path (20).

These tests use their own emulator, whose API has routes that refuse every token; its token
endpoint is held (``Emulator.hold``) to see what callers do while a refresh is under way."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import authlayer
from authlayer import TokenError, get_token, get_token_async
from authlayer import config as config_module
from authlayer import jwt as jwtlib
from authlayer.emulator import Emulator
from authlayer.emulator.wire import Request, Response, json_response
from authlayer.provider import MIN_VALIDITY, PROVIDER

from .conftest import Client, Clock, Profiles, write_cc_profile
from .test_singleflight import _as_trio_guest

_CLAIMS = base64.urlsafe_b64encode(json.dumps(
    {"access_token": {"acrs": {"essential": True, "value": "c9"}}}).encode()).decode().rstrip("=")


def _deny(emu: Emulator, req: Request) -> Response:
    body = {"error": "invalid_token", "error_description": "refused"}
    return json_response(body, 401, [("WWW-Authenticate", 'Bearer error="invalid_token"')])


def _deny_with_claims(emu: Emulator, req: Request) -> Response:
    header = f'Bearer realm="", error="insufficient_claims", claims="{_CLAIMS}"'
    body = {"error": "insufficient_claims", "error_description": "claims"}
    return json_response(body, 401, [("WWW-Authenticate", header)])


@pytest.fixture(scope="module")
def own() -> Iterator[Emulator]:
    with Emulator() as emu:
        emu.add_route("GET", "/api/deny", _deny, endpoint="deny")
        emu.add_route("GET", "/api/deny-claims", _deny_with_claims, endpoint="deny")
        yield emu


@pytest.fixture
def hemu(own: Emulator) -> Iterator[Emulator]:
    own.reset()
    yield own
    own.reset()  # (releases a hold left by a failed test)
    PROVIDER.join_background()
    own.reset()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(PROVIDER, "clock", clock)
    return clock


@pytest.fixture
def api(hemu: Emulator, profiles: Profiles) -> str:
    return write_cc_profile(profiles, hemu, "api")


# ------------------------------------------------------------------ 3a: an API refusing all


def test_an_api_refusing_every_token_does_not_hammer_the_identity_service(
    hemu: Emulator, api: str, clock: Clock, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    auth = authlayer.EntraAuth(api)
    answers = [client.get(f"{hemu.api_url}/deny", auth).status for _ in range(20)]
    assert answers == [401] * 20  # every refusal goes back to the caller ...
    assert hemu.count("deny") == 40  # ... after one resend each, with the current token
    assert hemu.count("token") == 2  # the first token, and one new one after the first 401
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "refused a token fetched moments ago" in r.getMessage()]
    assert len(warnings) == 1


def test_after_the_cooldown_one_new_token_is_tried_and_the_cooldown_doubles(
    hemu: Emulator, api: str, clock: Clock
) -> None:
    auth = authlayer.EntraAuth(api)
    url = f"{hemu.api_url}/deny"
    client = Client("httpx")
    for _ in range(3):
        client.get(url, auth)
    assert hemu.count("token") == 2
    clock.now += 6  # past the first cooldown (5 s): one more try with a new token
    client.get(url, auth)
    client.get(url, auth)
    assert hemu.count("token") == 3
    clock.now += 6  # the second cooldown is 10 s: still no new token
    client.get(url, auth)
    assert hemu.count("token") == 3
    clock.now += 5
    client.get(url, auth)
    assert hemu.count("token") == 4


def test_an_api_answering_every_token_with_a_claims_challenge_is_not_hammered(
    hemu: Emulator, api: str, clock: Clock, client: Client
) -> None:
    auth = authlayer.EntraAuth(api)
    answers = [client.get(f"{hemu.api_url}/deny-claims", auth).status for _ in range(20)]
    assert answers == [401] * 20
    assert hemu.count("deny") == 40
    # the first token, the claims token, and one plain token after the challenged one was
    # dropped: not two per request
    assert hemu.count("token") <= 3


# ------------------------------------------------------------------ 3b: refresh in the background


def test_the_request_that_passes_refresh_on_is_served_the_valid_token_at_once(
    hemu: Emulator, api: str, clock: Clock, client: Client
) -> None:
    auth = authlayer.EntraAuth(api)
    first = get_token(api)
    clock.now = first.expires_on - 200  # due for refresh, valid for 200 s more
    gate = hemu.hold()  # the identity service holds its answer
    assert client.get(f"{hemu.api_url}/x", auth).status == 200  # served with the old token
    assert get_token(api) == first
    assert asyncio.run(get_token_async(api)) == first
    gate.wait_for(1)  # the refresh is under way meanwhile, in the background
    gate.release()
    PROVIDER.join_background()
    second = get_token(api)
    assert second != first
    assert hemu.count("token") == 2  # one refresh, however many callers passed refresh_on


def test_failed_refreshes_are_spaced_so_that_the_token_serves_until_its_end(
    hemu: Emulator, api: str, clock: Clock
) -> None:
    first = get_token(api)
    key = PROVIDER.bind(api).key
    hemu.inject("status", count=100, status=400)  # refused, not retried
    clock.now = first.expires_on - 25
    failures = 0
    while True:
        assert get_token(api) == first  # a failure never reaches the caller meanwhile
        PROVIDER.join_background()
        assert hemu.count("token") == 1 + failures + 1
        failures += 1
        retry = PROVIDER.entries[key].refresh_on
        assert clock.now < retry  # spaced: not on every call
        if retry >= first.expires_on - MIN_VALIDITY:
            break
        clock.now = retry
    assert failures >= 3  # several attempts while the token still served, not one at its end
    clock.now = first.expires_on - MIN_VALIDITY
    with pytest.raises(TokenError):  # once it no longer serves, the failure is the caller's
        get_token(api)


def test_a_background_refresh_leaves_no_thread_behind(hemu: Emulator, api: str,
                                                      clock: Clock) -> None:
    first = get_token(api)
    clock.now = first.expires_on - 200
    get_token(api)
    PROVIDER.join_background()
    assert get_token(api) != first  # it landed ...
    assert not [t for t in threading.enumerate() if t.name == "authlayer-refresh"]  # and went


# ------------------------------------------------------------------ 12: rewritten profiles files


def _appid(token: str) -> str:
    return str(jwtlib.decode(token)[1]["appid"])


def test_a_rewritten_profiles_file_is_read_again(hemu: Emulator, profiles: Profiles,
                                                  clock: Clock) -> None:
    app = hemu.register_app(secret="first-secret-abc")
    other = hemu.register_app(secret="other-secret-abcdef")
    body = """
        [profiles.t]
        flow = "client_credentials"
        authority = "{url}"
        tenant = "{tenant}"
        client_id = "{client}"
        client_secret = "{secret}"
        scope = "{scope}"
    """
    path = profiles.write(body.format(url=hemu.url, tenant=hemu.tenant_id, scope=hemu.api_scope,
                                      client=app.client_id, secret="first-secret-abc"))
    assert _appid(get_token("t").token) == app.client_id
    # Rewritten in place, as a test suite does between tests (no reset, no cache clearing).
    path.write_text(__import__("textwrap").dedent(body.format(
        url=hemu.url, tenant=hemu.tenant_id, scope=hemu.api_scope, client=other.client_id,
        secret="other-secret-abcdef")))
    clock.now += 2  # files are looked at again at most once a second
    assert _appid(get_token("t").token) == other.client_id


def test_cached_calls_do_not_look_at_the_profiles_file(api: str, clock: Clock,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    get_token(api)
    looks: list[Any] = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **k: looks.append(a) or real_stat(*a, **k))
    for _ in range(100):
        get_token(api)
    assert looks == []


def test_reset_forgets_profiles_and_tokens(hemu: Emulator, profiles: Profiles) -> None:
    app = hemu.register_app(secret="first-secret-abc")
    other = hemu.register_app(secret="other-secret-abc")  # same length: same file size
    body = """
        [profiles.t]
        flow = "client_credentials"
        authority = "{url}"
        tenant = "{tenant}"
        client_id = "{client}"
        client_secret = "{secret}"
        scope = "{scope}"
    """
    path = profiles.write(body.format(url=hemu.url, tenant=hemu.tenant_id, scope=hemu.api_scope,
                                      client=app.client_id, secret="first-secret-abc"))
    first = get_token("t")
    stamp = os.stat(path)
    path.write_text(__import__("textwrap").dedent(body.format(
        url=hemu.url, tenant=hemu.tenant_id, scope=hemu.api_scope, client=other.client_id,
        secret="other-secret-abc")))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # nothing tells the change
    assert get_token("t") == first
    authlayer.reset()
    assert _appid(get_token("t").token) == other.client_id


# ------------------------------------------------------------------ 17, 21: many tenants


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    loads = [0]
    real = config_module.load_profile

    def counting(*a: Any, **k: Any) -> Any:
        loads[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(config_module, "load_profile", counting)
    return loads


def _count_hops(monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., Any]]:
    """Count the event loop's hops to a worker thread (anyio.to_thread.run_sync)."""
    import anyio.to_thread

    hops: list[Callable[..., Any]] = []
    real = anyio.to_thread.run_sync

    async def counting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    return hops


def test_a_tenant_override_does_not_read_the_profile_again(
    api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = _count_loads(monkeypatch)
    keys = {PROVIDER.bind(api, tenant=f"t{i}.example.com").key for i in range(12_000)}
    assert len(keys) == 12_000  # each tenant its own tokens
    assert loads[0] == 1  # the profile itself, once
    PROVIDER.bind(api, tenant="t0.example.com")  # 12,000 bindings later, still remembered
    PROVIDER.bind(api)
    assert loads[0] == 1


def test_a_bad_tenant_override_is_still_a_config_error(api: str) -> None:
    with pytest.raises(authlayer.ConfigError, match="tenant"):
        get_token(api, tenant="not a tenant!")


def test_the_binding_memo_forgets_one_entry_at_a_time(
    api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from authlayer import provider

    monkeypatch.setattr(provider, "MAX_BINDINGS", 5)
    PROVIDER.bind(api)
    loads = _count_loads(monkeypatch)
    for i in range(10):
        PROVIDER.bind(api, tenant=f"t{i}.example.com")
    PROVIDER.bind(api, tenant="t9.example.com")
    PROVIDER.bind(api, tenant="t8.example.com")
    assert len(PROVIDER._bindings) == 5
    assert loads[0] <= 1  # the profile's own binding was forgotten at most once


def test_each_tenant_gets_its_own_token_and_the_profiles_tenant_shares_the_plain_one(
    hemu: Emulator, api: str
) -> None:
    plain = get_token(api)
    assert get_token(api, tenant=hemu.tenant_id) == plain
    assert PROVIDER.bind(api, tenant=hemu.tenant_id).profile.tenant == hemu.tenant_id


# ------------------------------------------------------------------ 19, 20: async callers


def test_a_thousand_tasks_on_a_new_profile_load_it_once(
    hemu: Emulator, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = _count_loads(monkeypatch)
    hops = _count_hops(monkeypatch)

    async def main(tasks: int) -> set[str]:
        tokens = await asyncio.gather(*(get_token_async(api) for _ in range(tasks)))
        return {t.token for t in tokens}

    assert len(asyncio.run(main(1))) == 1
    alone = len(hops)  # the worker-thread hops of one task (profile, blocking steps)
    authlayer.reset()  # the profile is new to the process again
    hemu.reset()
    del hops[:]
    loads[0] = 0
    assert len(asyncio.run(main(1000))) == 1
    assert loads[0] == 1
    assert len(hops) == alone  # one task reads the profile; the others wait for it
    assert hemu.count("token") == 1


def test_trio_tasks_in_guest_mode_on_an_asyncio_loop_get_one_token(
    hemu: Emulator, api: str
) -> None:
    """A trio app run as a guest of an asyncio loop: its tasks see asyncio's loop running,
    yet must wait and hop to worker threads as trio tasks."""
    import trio

    async def main() -> set[str]:
        tokens: list[str] = []

        async def one() -> None:
            tokens.append((await get_token_async(api)).token)

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
        return set(tokens)

    assert len(_as_trio_guest(main)) == 1
    assert hemu.count("token") == 1


def test_a_failed_load_reaches_every_waiting_task(profiles: Profiles, hemu: Emulator) -> None:
    write_cc_profile(profiles, hemu, "api")

    async def main() -> list[BaseException]:
        results = await asyncio.gather(*(get_token_async("missing") for _ in range(50)),
                                       return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]

    errors = asyncio.run(main())
    assert len(errors) == 50
    assert all(isinstance(e, authlayer.ConfigError) and "missing" in str(e) for e in errors)


def test_the_async_credential_takes_get_token_asyncs_fast_path_in_an_sdk_only_process(
    hemu: Emulator, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from authlayer import aio

    cred = aio.credential(api)
    binds: list[Any] = []

    async def main() -> None:
        await cred.get_token(hemu.api_scope)  # nothing else in this process asks for tokens
        real = PROVIDER.bind_async

        async def counted(*args: Any, **kwargs: Any) -> Any:
            binds.append(args)
            return await real(*args, **kwargs)

        monkeypatch.setattr(PROVIDER, "bind_async", counted)
        for _ in range(20):
            await cred.get_token(hemu.api_scope)

    asyncio.run(main())
    assert binds == []  # served by the one dictionary read, not bound again


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_sdk_credentials_read_a_rewritten_profiles_file_again(
        hemu: Emulator, profiles: Profiles, clock: Clock, kind: str) -> None:
    from authlayer import aio, credential

    app = hemu.register_app(secret="first-secret-abc")
    other = hemu.register_app(secret="other-secret-abcdef")
    body = """
        [profiles.t]
        flow = "client_credentials"
        authority = "{url}"
        tenant = "{tenant}"
        client_id = "{client}"
        client_secret = "{secret}"
        scope = "{scope}"
    """

    def write(client: str, secret: str) -> Any:
        return profiles.write(body.format(url=hemu.url, tenant=hemu.tenant_id,
                                          scope=hemu.api_scope, client=client, secret=secret))

    def token() -> str:
        if kind == "sync":
            return credential("t").get_token(hemu.api_scope).token
        return asyncio.run(aio.credential("t").get_token(hemu.api_scope)).token

    write(app.client_id, "first-secret-abc")
    assert _appid(token()) == app.client_id
    write(other.client_id, "other-secret-abcdef")
    clock.now += 2  # files are looked at again at most once a second
    assert _appid(token()) == other.client_id


def test_the_async_credential_serves_a_cached_token_without_a_thread_hop(
    hemu: Emulator, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from authlayer import aio

    cred = aio.credential(api)

    async def main() -> tuple[set[str], list[Callable[..., Any]]]:
        first = await cred.get_token(hemu.api_scope)
        hops = _count_hops(monkeypatch)  # from here on: a cached token each time
        seen = {first.token} | {(await cred.get_token(hemu.api_scope)).token for _ in range(20)}
        return seen, hops

    tokens, hops = asyncio.run(main())
    assert len(tokens) == 1
    assert hops == []
