"""Behaviour found missing by review: single flight across threads, tasks and event loops,
shared failures, refresh ahead without waiting, claims single flight, fresh assertions on
retries, redirects and 401s, people never sharing tokens, logins that fail, cache write
failures."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import requests

from authlayer import EntraAuth, TokenError, get_token, get_token_async
from authlayer import jwt as jwtlib
from authlayer.emulator import Emulator, Response
from authlayer.emulator.device import device_codes
from authlayer.emulator.users import mint_refresh_token
from authlayer.provider import LOGIN, PROVIDER, SWEEP_ABOVE, CachedToken
from authlayer.token import AccessToken

from .conftest import Clock, Profiles, release_when, waiting_callers
from .signin_helpers import Approver, new_person, write_profile


@pytest.fixture(autouse=True)
def _fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    from authlayer.flows import device_code

    monkeypatch.setattr(device_code, "MIN_INTERVAL", 0.0)  # the emulator says interval 0


def _threads(n: int, target: Any) -> list[Any]:
    results: list[Any] = []
    barrier = threading.Barrier(n)

    def run() -> None:
        barrier.wait()
        try:
            results.append(target())
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_threads_waiting_for_a_token_share_the_leaders_failure(emu: Emulator,
                                                               cc_profile: str) -> None:
    emu.inject("status", count=100, status=400)
    release_when(emu.hold(), lambda: waiting_callers() == 15)  # the leader's, until all wait
    results = _threads(16, lambda: get_token(cc_profile))
    assert all(isinstance(r, TokenError) for r in results)
    assert emu.count("token") == 1


def test_threads_each_with_its_own_event_loop_make_one_request(emu: Emulator,
                                                               cc_profile: str) -> None:
    release_when(emu.hold(), lambda: waiting_callers() == 11)
    results = _threads(12, lambda: asyncio.run(get_token_async(cc_profile)).token)
    assert len(set(results)) == 1
    assert emu.count("token") == 1


def test_sync_and_async_callers_share_one_request(emu: Emulator, cc_profile: str) -> None:
    release_when(emu.hold(), lambda: waiting_callers() == 1)

    async def both() -> list[str]:
        sync_call = asyncio.to_thread(lambda: get_token(cc_profile).token)
        async_call = get_token_async(cc_profile)
        first, second = await asyncio.gather(sync_call, async_call)
        return [first, second.token]

    assert len(set(asyncio.run(both()))) == 1
    assert emu.count("token") == 1


def test_refresh_ahead_makes_only_the_leader_wait(emu: Emulator, cc_profile: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(PROVIDER, "clock", clock)
    first = get_token(cc_profile)
    clock.now = first.expires_on - 200  # due for refresh, still valid for 200 s
    gate = emu.hold()  # the refresh's token request is held until the end
    leader = threading.Thread(target=lambda: get_token(cc_profile))
    leader.start()
    gate.wait_for(1)
    assert PROVIDER._flights, "the leader never started"
    assert get_token(cc_profile) == first  # a follower keeps using the valid token at once
    assert PROVIDER._flights  # ... while the leader is still waiting for the new one
    gate.release()
    leader.join()
    PROVIDER.join_background()  # the refresh runs in the background: nobody waits for it
    assert get_token(cc_profile) != first
    assert emu.count("token") == 2


def test_concurrent_claims_challenges_make_one_token_request(emu: Emulator,
                                                             cc_profile: str) -> None:
    auth = EntraAuth(cc_profile)
    get_token(cc_profile)
    emu.reset()
    emu.claims_challenge(16)
    # Token requests are held until every caller waits: for the token with claims, or for a
    # new plain one (a challenge drops the challenged token) to be challenged in turn.
    gate = emu.hold()
    release_when(gate, lambda: waiting_callers() + gate.held >= 16)

    def call() -> int:
        with httpx.Client(auth=auth) as c:
            return c.get(f"{emu.api_url}/a").status_code

    assert _threads(16, call) == [200] * 16
    with_claims = [r for r in emu.requests if r.endpoint == "token" and "claims" in r.form]
    assert len(with_claims) == 1


def _cert_profile(emu: Emulator, profiles: Profiles, tmp_path: Path, extra: str = "") -> None:
    """Profile `cert`: client credentials with a certificate registered on a new app."""
    from .test_client_credentials import _cert, _cert_profile, _pem

    cert = _cert()
    app = emu.register_app(certificate=cert)
    (tmp_path / "app.pem").write_bytes(_pem(cert))
    _cert_profile(emu, profiles, app.client_id, '"app.pem"', extra)


def test_a_retried_request_gets_a_fresh_assertion(emu: Emulator, profiles: Profiles,
                                                  tmp_path: Path) -> None:
    _cert_profile(emu, profiles, tmp_path)
    emu.inject("status", count=1, status=503, retry_after=0)
    assert get_token("cert").token
    jtis = [jwtlib.decode(r.form["client_assertion"])[1]["jti"] for r in emu.requests
            if r.endpoint == "token"]
    assert len(jtis) == 2
    assert jtis[0] != jtis[1]


def test_an_answer_lost_after_the_server_used_the_assertion_is_retried(
    emu: Emulator, profiles: Profiles, tmp_path: Path
) -> None:
    """The server saw (and spent) the jti, the answer timed out: the retry must not reuse it."""
    _cert_profile(emu, profiles, tmp_path, "timeout = 0.5")
    emu.hold(count=1)  # the first request is seen, but not answered before our timeout
    assert get_token("cert").token
    jtis = [jwtlib.decode(r.form["client_assertion"])[1]["jti"] for r in emu.requests
            if r.endpoint == "token"]
    assert len(jtis) == 2
    assert jtis[0] != jtis[1]


def _redirecting_api(emu: Emulator) -> str:
    """/api/go redirects to the same API under another host name (not allowed)."""
    other = emu.api_url.replace("127.0.0.1", "localhost")

    def go(_emu: Any, _req: Any) -> Response:
        return Response(302, b"", [("Location", f"{other}/capture")], None)

    emu.add_route("GET", "/api/go", go, endpoint="api")
    return f"{emu.api_url}/go"


def test_requests_never_resends_the_token_to_a_redirect_target(emu: Emulator,
                                                               cc_profile: str) -> None:
    url = _redirecting_api(emu)
    get_token(cc_profile)
    emu.reset()
    r = requests.get(url, auth=EntraAuth(cc_profile))
    assert r.status_code == 401  # the redirect target has no token and refuses
    capture = [rec for rec in emu.requests if rec.path.endswith("/capture")]
    assert len(capture) == 1
    assert "authorization" not in {k.lower() for k in capture[0].headers}
    assert emu.count("token") == 0  # and no token was thrown away for it


@pytest.mark.parametrize("kind", ["httpx", "httpx-async"])
def test_httpx_401_from_a_redirect_target_is_not_our_token_refused(
    emu: Emulator, cc_profile: str, kind: str
) -> None:
    url = _redirecting_api(emu)
    auth = EntraAuth(cc_profile)
    get_token(cc_profile)
    emu.reset()
    if kind == "httpx":
        with httpx.Client(auth=auth, follow_redirects=True) as c:
            status = c.get(url).status_code
    else:
        async def go() -> int:
            async with httpx.AsyncClient(auth=auth, follow_redirects=True) as c:
                return (await c.get(url)).status_code

        status = asyncio.run(go())
    assert status == 401
    assert emu.count("token") == 0
    assert emu.count("api") == 2


def test_two_profiles_of_one_app_are_two_people(emu: Emulator, app: Any, secret: str,
                                                profiles: Profiles,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = new_person(emu), new_person(emu)
    monkeypatch.setenv("ALICE_RT", mint_refresh_token(emu, client_id=app.client_id,
                                                      username=alice))
    monkeypatch.setenv("BOB_RT", mint_refresh_token(emu, client_id=app.client_id,
                                                    username=bob))
    common = (f'flow = "refresh_token"\nauthority = "{emu.url}"\ntenant = "{emu.tenant_id}"\n'
              f'client_id = "{app.client_id}"\nclient_secret = "{secret}"\n'
              f'scope = "{emu.api_scope}"\ncache = "file"\n')
    profiles.write(f"[profiles.alice]\n{common}refresh_token = {{ env = \"ALICE_RT\" }}\n"
                   f"[profiles.bob]\n{common}refresh_token = {{ env = \"BOB_RT\" }}\n")
    a = jwtlib.decode(get_token("alice").token)[1]
    b = jwtlib.decode(get_token("bob").token)[1]
    assert a["preferred_username"] == alice
    assert b["preferred_username"] == bob


def test_a_failed_login_keeps_the_previous_sign_in(emu: Emulator, profiles: Profiles) -> None:
    person = new_person(emu)
    public = emu.register_app(public=True)
    write_profile(profiles, emu, "me", "device_code", client_id=public.client_id, cache="file")
    device_codes(emu).interval = 0
    first = get_token("me", prompt=Approver(emu, person))
    binding = PROVIDER.bind("me")
    with pytest.raises(TokenError):
        PROVIDER.get(binding, LOGIN, prompt=Approver(emu, person, action="decline"))
    PROVIDER.reset()  # a new process: the kept sign-in is still there
    assert get_token("me", prompt=Approver(emu, person, action="nothing")) == first


def test_login_as_someone_else_replaces_every_token_of_the_sign_in(emu: Emulator,
                                                                  profiles: Profiles) -> None:
    alice, bob = new_person(emu), new_person(emu)
    public = emu.register_app(public=True)
    write_profile(profiles, emu, "me", "device_code", client_id=public.client_id, cache="file")
    device_codes(emu).interval = 0
    get_token("me", prompt=Approver(emu, alice))
    graph = get_token("me", scope="https://graph.microsoft.com/.default",
                      prompt=Approver(emu, alice))
    assert jwtlib.decode(graph.token)[1]["preferred_username"] == alice
    PROVIDER.get(PROVIDER.bind("me"), LOGIN, prompt=Approver(emu, bob))
    PROVIDER.reset()
    again = get_token("me", scope="https://graph.microsoft.com/.default",
                      prompt=Approver(emu, bob))
    assert jwtlib.decode(again.token)[1]["preferred_username"] == bob


def test_logout_forgets_every_scope_of_the_sign_in(emu: Emulator, profiles: Profiles) -> None:
    person = new_person(emu)
    public = emu.register_app(public=True)
    write_profile(profiles, emu, "me", "device_code", client_id=public.client_id, cache="file")
    device_codes(emu).interval = 0
    get_token("me", prompt=Approver(emu, person))
    get_token("me", scope="https://graph.microsoft.com/.default", prompt=Approver(emu, person))
    PROVIDER.forget(PROVIDER.bind("me"))
    PROVIDER.reset()
    asked = Approver(emu, person)
    get_token("me", scope="https://graph.microsoft.com/.default", prompt=asked)
    assert asked.messages  # signed in again: nothing was left behind


def test_a_cache_that_cannot_be_written_keeps_the_token_in_memory(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, app_profile: Callable[..., str],
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("AUTHLAYER_CACHE_DIR", str(blocker / "cache"))
    app_profile("filed", cache="file")
    token = get_token("filed")
    assert get_token("filed") == token
    assert emu.count("token") == 1
    assert "kept in memory only" in caplog.text


def test_expired_entries_are_swept_when_the_cache_grows(emu: Emulator, cc_profile: str) -> None:
    old = CachedToken(AccessToken("x", 1), 0)
    for i in range(SWEEP_ABOVE + 5):
        PROVIDER.entries[f"stale-{i}"] = old  # type: ignore[index]
    get_token(cc_profile)
    assert not any(isinstance(k, str) and k.startswith("stale-") for k in PROVIDER.entries)


# ------------------------------------------------------------------ second review


def test_a_sync_call_on_the_loop_thread_does_not_wait_for_an_async_leader(
    emu: Emulator, cc_profile: str
) -> None:
    gate = emu.hold(count=1)  # the async leader's request, until the sync call is done

    async def main() -> tuple[str, str]:
        leader = asyncio.create_task(get_token_async(cc_profile))
        while not gate.held:
            await asyncio.sleep(0.001)
        mixed = get_token(cc_profile)  # sync code on the loop's own thread: must not hang
        gate.release()
        return mixed.token, (await leader).token

    sync_token, async_token = asyncio.run(main())
    assert sync_token
    assert async_token


def test_sync_callers_filling_the_thread_pool_do_not_starve_an_async_leader(
    emu: Emulator, profiles: Profiles, app: Any, secret: str, tmp_path: Path
) -> None:
    """A web app's sync endpoints run in anyio's worker threads (40 by default); if they all
    wait for an async leader, the leader's own blocking steps still get a thread."""
    import anyio
    import anyio.to_thread

    (tmp_path / "secret.txt").write_text(secret)  # a file source: read in a worker thread
    profiles.write(f"""
        [profiles.filesecret]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{app.client_id}"
        client_secret = {{ file = "secret.txt" }}
        scope = "{emu.api_scope}"
    """)
    # The leader's request is held until the worker threads (40) all wait for it.
    release_when(emu.hold(), lambda: waiting_callers() == 40)

    async def main() -> list[str]:
        tokens: list[str] = []

        async def sync_endpoint() -> None:
            tokens.append(await anyio.to_thread.run_sync(lambda: get_token("filesecret").token))

        async def async_endpoint() -> None:
            tokens.append((await get_token_async("filesecret")).token)

        async with anyio.create_task_group() as tg:
            tg.start_soon(async_endpoint)
            while not PROVIDER._flights:  # the async endpoint leads
                await anyio.sleep(0.001)
            for _ in range(45):
                tg.start_soon(sync_endpoint)
        return tokens

    tokens = anyio.run(main)
    assert len(tokens) == 46
    assert len(set(tokens)) == 1


def test_a_refresh_that_fails_after_the_token_expired_does_not_serve_it(
    emu: Emulator, cc_profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Racing(Clock):
        """Every look at the clock is 100 s later: the failing refresh outlives the token."""

        step = 0.0

        def __call__(self) -> float:
            self.now += self.step
            return self.now

    clock = Racing()
    monkeypatch.setattr(PROVIDER, "clock", clock)
    first = get_token(cc_profile)
    clock.now = first.expires_on - 250  # due for refresh, valid for 250 s
    clock.step = 100
    emu.inject("status", count=10, status=503, retry_after=0)
    with pytest.raises(TokenError):
        get_token(cc_profile)


def test_a_failed_refresh_close_to_expiry_stops_serving_before_expiry(
    emu: Emulator, cc_profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from authlayer.provider import MIN_VALIDITY

    clock = Clock()
    monkeypatch.setattr(PROVIDER, "clock", clock)
    first = get_token(cc_profile)
    clock.now = first.expires_on - 20
    emu.inject("status", count=10, status=503, retry_after=0)
    assert get_token(cc_profile) == first
    PROVIDER.join_background()
    entry = PROVIDER.entries[PROVIDER.bind(cc_profile).key]
    # the next attempt is spaced, and never later than when the fallback stops
    assert entry.refresh_on <= first.expires_on - MIN_VALIDITY


def test_force_refresh_never_takes_a_plain_flights_token(emu: Emulator,
                                                         cc_profile: str) -> None:
    gate = emu.hold(count=1)  # the plain leader's request, until the forced caller waits
    plain: list[str] = []
    leader = threading.Thread(target=lambda: plain.append(get_token(cc_profile).token))
    leader.start()
    gate.wait_for(1)
    release_when(gate, lambda: waiting_callers() == 1)
    forced = get_token(cc_profile, force_refresh=True)
    leader.join()
    assert forced.token != plain[0]
    assert emu.count("token") == 2


def test_a_claims_token_refused_in_turn_is_not_reused(emu: Emulator, cc_profile: str) -> None:
    auth = EntraAuth(cc_profile)
    with httpx.Client(auth=auth) as c:
        emu.claims_challenge(1)
        assert c.get(f"{emu.api_url}/a").status_code == 200  # a claims token, cached
        emu.revoke_all()  # ... and now revoked, like the plain one
        emu.claims_challenge(1)
        assert c.get(f"{emu.api_url}/a").status_code == 401  # the cached claims token failed
        emu.claims_challenge(1)
        assert c.get(f"{emu.api_url}/a").status_code == 200  # so it was not used again


def test_every_waiter_gets_its_own_copy_of_the_error(emu: Emulator, cc_profile: str) -> None:
    emu.inject("status", count=100, status=400)
    release_when(emu.hold(), lambda: waiting_callers() == 7)
    errors = _threads(8, lambda: get_token(cc_profile))
    assert all(isinstance(e, TokenError) for e in errors)
    assert len({id(e) for e in errors}) == 8
    assert {e.status for e in errors} == {400}
    assert emu.count("token") == 1


def test_a_profile_name_with_the_separator_does_not_share_keys(profiles: Profiles,
                                                               emu: Emulator) -> None:
    from authlayer.provider import Binding

    public = emu.register_app(public=True)
    body = (f'flow = "device_code"\nauthority = "{emu.url}"\ntenant = "{emu.tenant_id}"\n'
            f'client_id = "{public.client_id}"\nscope = "{emu.api_scope}"\n')
    profiles.write(f'[profiles.me]\n{body}[profiles."me|x"]\n{body}')
    from authlayer.config import load_profile

    me = Binding.make(load_profile("me"))
    other = Binding.make(load_profile("me|x"))
    assert not other.store_key.startswith(me.store_account_key + "|")


def test_an_unusable_cache_still_keeps_the_sign_in_in_memory(
    emu: Emulator, profiles: Profiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("AUTHLAYER_CACHE_DIR", str(blocker / "cache"))
    person = new_person(emu)
    public = emu.register_app(public=True)
    write_profile(profiles, emu, "me", "device_code", client_id=public.client_id, cache="file")
    device_codes(emu).interval = 0
    clock = Clock()
    monkeypatch.setattr(PROVIDER, "clock", clock)
    first = get_token("me", prompt=Approver(emu, person))
    clock.now = first.expires_on + 1  # expired: a new token is needed
    asked = Approver(emu, person, action="nothing")
    again = get_token("me", prompt=asked)
    assert again != first
    assert asked.messages == []  # the refresh token kept in memory was used, nobody asked


@pytest.mark.parametrize("kind", ["threads", "tasks"])
def test_two_scopes_needed_at_once_make_one_sign_in(emu: Emulator, profiles: Profiles,
                                                    kind: str) -> None:
    person = new_person(emu)
    public = emu.register_app(public=True)
    write_profile(profiles, emu, "me", "device_code", client_id=public.client_id)
    device_codes(emu).interval = 0
    # The sign-in's first request is held until the two other scopes' callers wait for it.
    release_when(emu.hold(endpoint="devicecode"), lambda: waiting_callers() == 2)
    approver = Approver(emu, person)
    scopes = [emu.api_scope, "https://graph.microsoft.com/.default",
              "https://management.azure.com/.default"]
    if kind == "threads":
        results: list[Any] = []

        def one(scope: str) -> None:
            results.append(get_token("me", scope=scope, prompt=approver))

        workers = [threading.Thread(target=one, args=(s,)) for s in scopes]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        tokens = results
    else:
        async def main() -> list[Any]:
            return list(await asyncio.gather(
                *(get_token_async("me", scope=s, prompt=approver) for s in scopes)))

        tokens = asyncio.run(main())
    assert len(tokens) == 3
    assert all(isinstance(t, AccessToken) for t in tokens)
    audiences = {jwtlib.decode(t.token)[1]["aud"] for t in tokens}
    assert audiences == {emu.api_resource, "https://graph.microsoft.com",
                         "https://management.azure.com"}
    assert emu.count("devicecode") == 1  # one person, asked once
    assert len(approver.messages) == 1
