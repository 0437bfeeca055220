"""Device code sign-in end to end against the emulator: instructions on standard error, polling
(pending, slow_down, declined, expired, bad code, the code's own deadline), async without
blocking, Ctrl+C, silent reuse of the refresh token, and the ``authlayer`` command."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import types
import warnings
from typing import Any, Callable, Optional

import pytest

from authlayer import EntraAuth, TokenError, _actions, get_token, get_token_async, jwt
from authlayer._http import HttpResponse, Send, Sleep, run_sync
from authlayer.cli import main
from authlayer.config import load_profile
from authlayer.emulator import Emulator
from authlayer.emulator.device import DEVICE_CODE_GRANT, DeviceCodes, device_codes
from authlayer.emulator.users import revoke_refresh_tokens
from authlayer.flows import FlowContext, _person, device_code
from authlayer.provider import FORCED, PLAIN, PROVIDER

from .conftest import Client, Profiles, until
from .signin_helpers import Approver, approve_in_background, new_person, write_profile


@pytest.fixture
def device(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> DeviceCodes:
    monkeypatch.setattr(device_code, "MIN_INTERVAL", 0.0)  # the emulator says interval 0
    controls = device_codes(emu)
    controls.interval = 0  # emu.reset() puts the default back
    controls.expires_in = 30
    return controls


@pytest.fixture
def person(emu: Emulator) -> str:
    return new_person(emu)


@pytest.fixture
def me(emu: Emulator, profiles: Profiles) -> str:
    app = emu.register_app(public=True)
    return write_profile(profiles, emu, "me", "device_code", client_id=app.client_id)


def _no_prompt(message: str) -> None:
    raise AssertionError(f"nobody should be asked to sign in, but was told: {message}")


def _polls(emu: Emulator) -> int:
    return emu.count("token", grant_type=DEVICE_CODE_GRANT)


# --------------------------------------------------------------------------- end to end


def test_device_code_sign_in_reaches_the_api(emu: Emulator, device: DeviceCodes, person: str,
                                            me: str, client: Client) -> None:
    approver = Approver(emu, person)
    answer = client.get(f"{emu.api_url}/me", EntraAuth(me, prompt=approver))
    assert answer.status == 200
    claims = answer.json()["claims"]
    assert claims["preferred_username"] == person
    assert claims["scp"] == "user_impersonation"
    assert claims["idtyp"] == "user"
    assert len(approver.messages) == 1
    assert "enter the code" in approver.messages[0]
    assert emu.count("devicecode") == 1
    asked = emu.requests[0].form["scope"].split()
    assert asked == [emu.api_scope, "openid", "profile", "offline_access"]


def test_instructions_go_to_standard_error(emu: Emulator, device: DeviceCodes, person: str,
                                          me: str, capsys: pytest.CaptureFixture[str]) -> None:
    thread = approve_in_background(emu, person)
    get_token(me)
    thread.join(5)
    out, err = capsys.readouterr()
    assert out == ""
    assert "devicelogin" in err
    assert device_codes(emu).pending() == []


def test_instructions_are_built_when_the_service_sends_no_message(
        emu: Emulator, device: DeviceCodes, person: str, me: str) -> None:
    device.send_message = False
    device.send_complete_uri = True
    approver = Approver(emu, person)
    get_token(me, prompt=approver)
    (message,) = approver.messages
    assert "/devicelogin?otc=" in message
    assert "enter the code" in message


def test_the_account_and_refresh_token_are_kept_but_not_in_the_cache_key(
        emu: Emulator, device: DeviceCodes, person: str, me: str) -> None:
    token = get_token(me, prompt=Approver(emu, person))
    binding = PROVIDER.bind(me)
    assert "offline_access" not in binding.store_key
    record = PROVIDER.store_for(binding.profile).load(binding.store_key,
                                                          binding.store_account_key)
    assert record is not None
    claims = jwt.decode(token.token)[1]
    assert record["account"] == {"home_account_id": f"{claims['oid']}.{claims['tid']}",
                                 "username": person, "tenant_id": emu.tenant_id}
    assert record["refresh_token"]


# --------------------------------------------------------------------------- polling outcomes


@pytest.mark.parametrize(("action", "error", "words"), [
    ("decline", "authorization_declined", "declined"),
    ("expire", "expired_token", "expired before the sign-in finished"),
    ("forget", "bad_verification_code", "does not know the device code"),
])
def test_polling_ends_with_a_clear_error(emu: Emulator, device: DeviceCodes, me: str,
                                         action: str, error: str, words: str) -> None:
    with pytest.raises(TokenError) as info:
        get_token(me, prompt=Approver(emu, "nobody", action=action))
    assert info.value.error == error
    assert words in str(info.value)
    assert str(info.value).startswith("profile 'me': device code sign-in failed")
    assert info.value.hint


def test_pending_then_slow_down_then_approved(emu: Emulator, device: DeviceCodes, person: str,
                                              me: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_code, "SLOW_DOWN_STEP", 0.01)
    device.slow_down(2)

    def person_approves_after_four_polls() -> None:
        until(lambda: _polls(emu) >= 4)
        device.approve(username=person)

    thread = threading.Thread(target=person_approves_after_four_polls, daemon=True)
    thread.start()
    get_token(me, prompt=Approver(emu, person, action="nothing"))
    thread.join()
    assert _polls(emu) >= 5


def test_the_codes_own_deadline_is_kept_by_the_clock(emu: Emulator, device: DeviceCodes,
                                                     me: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    offset = [0.0]
    monkeypatch.setattr(PROVIDER, "clock", lambda: time.time() + offset[0])

    def prompt(message: str) -> None:
        offset[0] = 31.0  # the person takes longer than the code's 30 s

    with pytest.raises(TokenError) as info:
        get_token(me, prompt=prompt)
    assert info.value.error == "expired_token"
    assert "expired before the sign-in finished" in str(info.value)
    assert _polls(emu) == 1  # one last poll at the deadline, then no more


def test_ctrl_c_while_polling_propagates_and_leaves_nothing_behind(
        emu: Emulator, device: DeviceCodes, person: str, me: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(_actions, "time", types.SimpleNamespace(
            sleep=interrupted, time=time.time, perf_counter=time.perf_counter))
        with pytest.raises(KeyboardInterrupt):
            get_token(me, prompt=Approver(emu, person, action="nothing"))
    assert _polls(emu) == 0
    # The profile's lock was released: the next attempt signs in normally.
    assert get_token(me, prompt=Approver(emu, person)).token


def test_async_polling_does_not_block_the_event_loop(emu: Emulator, device: DeviceCodes,
                                                    person: str, me: str) -> None:
    device.interval = 0.01

    async def run() -> int:
        ticks = 0

        async def the_person() -> None:
            nonlocal ticks
            # The loop keeps running this task while the flow polls (twice, pending): a flow
            # that blocked the loop would never be approved, and its code would expire.
            while device.latest() is None or _polls(emu) < 2 or ticks < 4:
                ticks += 1
                await asyncio.sleep(0.005)
            device.approve(username=person)

        task = asyncio.create_task(the_person())
        token = await get_token_async(me, prompt=lambda message: None)
        await task
        assert jwt.decode(token.token)[1]["preferred_username"] == person
        return ticks

    assert asyncio.run(run()) >= 4
    assert _polls(emu) >= 2


def test_a_cancelled_async_sign_in_stops_polling(emu: Emulator, device: DeviceCodes,
                                                 me: str) -> None:
    device.interval = 0.01
    gate = emu.hold()  # the first poll is held: the task is cancelled while it waits

    async def run() -> None:
        task = asyncio.create_task(get_token_async(me, prompt=lambda message: None))
        while not gate.held:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    gate.release()
    polls = _polls(emu)
    assert polls == 1
    time.sleep(0.1)  # (a window for a poll that should not come)
    assert _polls(emu) == polls


def test_interval_and_slow_down_steps_sans_io(emu: Emulator, profiles: Profiles) -> None:
    write_profile(profiles, emu, "me", "device_code", client_id="11111111-2222-3333-4444-5555")
    shown: list[str] = []
    ctx = FlowContext(load_profile("me"), prompt=shown.append)

    def answer(status: int, body: dict[str, Any]) -> HttpResponse:
        return HttpResponse(status, {"content-type": "application/json"},
                            json.dumps(body).encode())

    flow = device_code.acquire(ctx)
    action = next(flow)
    assert isinstance(action, Send)
    assert action.request.url.endswith("/oauth2/v2.0/devicecode")
    action = flow.send(answer(200, {"device_code": "dc", "user_code": "ABC",
                                    "verification_uri": "https://example.test/devicelogin"}))
    assert action == Sleep(5.0)  # no interval: five seconds
    assert shown == ["To sign in, use a web browser to open https://example.test/devicelogin "
                     "and enter the code ABC."]
    sleeps = []
    for error in ("slow_down", "slow_down", "authorization_pending"):
        poll = flow.send(None)
        assert isinstance(poll, Send)
        assert poll.request.form is not None
        assert poll.request.form["device_code"] == "dc"
        sleep = flow.send(answer(400, {"error": error}))
        assert isinstance(sleep, Sleep)
        sleeps.append(sleep.seconds)
    assert sleeps == [10.0, 15.0, 15.0]
    flow.send(None)
    id_token = ".".join([jwt.b64url_encode(b'{"alg":"none"}'), jwt.b64url_encode(json.dumps(
        {"oid": "o1", "tid": "t1", "preferred_username": "p@x"}).encode()), "sig"])
    with pytest.raises(StopIteration) as done:
        flow.send(answer(200, {"access_token": "at", "expires_in": 3600, "refresh_token": "rt",
                               "id_token": id_token}))
    result = done.value.value
    assert result.account == {"home_account_id": "o1.t1", "username": "p@x", "tenant_id": "t1"}
    assert result.refresh_token == "rt"


def _json(status: int, body: dict[str, Any]) -> HttpResponse:
    return HttpResponse(status, {"content-type": "application/json"}, json.dumps(body).encode())


_CODE = {"device_code": "dc", "user_code": "ABC",
         "verification_uri": "https://example.test/devicelogin"}
_TOKEN = {"access_token": "at", "expires_in": 3600, "token_type": "Bearer"}


def _sans_io_ctx(emu: Emulator, profiles: Profiles,
                 clock: Optional[Callable[[], float]] = None) -> FlowContext:
    write_profile(profiles, emu, "me", "device_code", client_id="11111111-2222-3333-4444-5555")
    return FlowContext(load_profile("me"), prompt=lambda message: None,
                       clock=clock or time.time)


@pytest.mark.parametrize("advertised", [0, 0.2, "0"])
def test_polling_is_never_faster_than_min_interval(emu: Emulator, profiles: Profiles,
                                                   advertised: Any) -> None:
    assert device_code.MIN_INTERVAL == 1.0
    flow = device_code.acquire(_sans_io_ctx(emu, profiles))
    next(flow)
    assert flow.send(_json(200, {**_CODE, "interval": advertised})) == Sleep(1.0)
    assert isinstance(flow.send(None), Send)
    assert flow.send(_json(400, {"error": "authorization_pending"})) == Sleep(1.0)
    assert isinstance(flow.send(None), Send)
    assert flow.send(_json(400, {"error": "slow_down"})) == Sleep(6.0)
    flow.close()


def test_one_last_poll_when_an_answer_comes_after_the_deadline(emu: Emulator,
                                                              profiles: Profiles) -> None:
    now = [1000.0]
    flow = device_code.acquire(_sans_io_ctx(emu, profiles, clock=lambda: now[0]))
    next(flow)
    assert flow.send(_json(200, {**_CODE, "interval": 5, "expires_in": 12})) == Sleep(5.0)
    now[0] += 5
    assert isinstance(flow.send(None), Send)
    now[0] += 8  # a slow answer: "pending" arrives after the code's deadline (13 s > 12 s)
    last = flow.send(_json(400, {"error": "authorization_pending"}))
    assert isinstance(last, Send)  # the person may have approved meanwhile: ask once more
    with pytest.raises(StopIteration) as done:
        flow.send(_json(200, _TOKEN))
    assert done.value.value.access_token == "at"


def test_no_poll_after_the_one_at_the_deadline(emu: Emulator, profiles: Profiles) -> None:
    now = [1000.0]
    flow = device_code.acquire(_sans_io_ctx(emu, profiles, clock=lambda: now[0]))
    actions: list[Any] = [next(flow)]
    answer: Any = _json(200, {**_CODE, "interval": 5, "expires_in": 12})

    def the_person_never_approves() -> None:
        nonlocal answer
        while True:
            action = flow.send(answer)
            actions.append(action)
            if isinstance(action, Sleep):
                now[0] += action.seconds
                answer = None
            else:
                answer = _json(400, {"error": "authorization_pending"})

    with pytest.raises(TokenError) as info:
        the_person_never_approves()
    assert info.value.error == "expired_token"
    assert [a.seconds if isinstance(a, Sleep) else "poll" for a in actions[1:]] == [
        5.0, "poll", 5.0, "poll", 2.0, "poll"]


def test_a_device_code_answer_without_a_code_is_a_token_error(emu: Emulator, me: str) -> None:
    emu.inject("missing_field", endpoint="devicecode", field="device_code")
    with pytest.raises(TokenError) as info:
        get_token(me, prompt=_no_prompt)
    assert info.value.error == "malformed_response"


# --------------------------------------------------------------------------- silent reuse


def test_the_refresh_token_is_used_silently_and_the_newest_one_kept(
        emu: Emulator, device: DeviceCodes, person: str, me: str) -> None:
    first = get_token(me, prompt=Approver(emu, person))
    second = get_token(me, force_refresh=True, prompt=_no_prompt)
    third = get_token(me, force_refresh=True, prompt=_no_prompt)
    assert len({first.token, second.token, third.token}) == 3
    refreshes = [r.form["refresh_token"] for r in emu.requests
                 if r.form.get("grant_type") == "refresh_token"]
    assert len(refreshes) == 2
    assert refreshes[0] != refreshes[1]  # the rotated one was kept and used
    assert emu.count("devicecode") == 1


def test_second_run_is_silent_with_the_file_cache(emu: Emulator, device: DeviceCodes,
                                                  person: str, profiles: Profiles) -> None:
    app = emu.register_app(public=True)
    write_profile(profiles, emu, "me", "device_code", client_id=app.client_id, cache="file")
    first = get_token("me", prompt=Approver(emu, person))
    PROVIDER.reset()  # a new process
    assert get_token("me", prompt=_no_prompt) == first
    PROVIDER.reset()
    renewed = get_token("me", force_refresh=True, prompt=_no_prompt)
    assert renewed.token != first.token
    assert emu.count("devicecode") == 1
    assert emu.count("token", grant_type="refresh_token") == 1


def test_a_refused_refresh_token_means_signing_in_again(emu: Emulator, device: DeviceCodes,
                                                        person: str, me: str) -> None:
    get_token(me, prompt=Approver(emu, person))
    revoke_refresh_tokens(emu, username=person)
    binding = PROVIDER.bind(me)
    with pytest.raises(TokenError) as info:
        PROVIDER.get(binding, FORCED.but(interactive=False))
    assert info.value.error_codes == (50173,)
    assert "sign in again" in str(info.value)
    approver = Approver(emu, person)
    get_token(me, force_refresh=True, prompt=approver)
    assert len(approver.messages) == 1
    assert emu.count("devicecode") == 2


def test_a_fresh_sign_in_ignores_the_kept_refresh_token(emu: Emulator, device: DeviceCodes,
                                                        person: str, me: str) -> None:
    get_token(me, prompt=Approver(emu, person))
    binding = PROVIDER.bind(me)
    record = PROVIDER.store_for(binding.profile).load(binding.store_key,
                                                          binding.store_account_key)
    assert record is not None
    assert record["refresh_token"]
    someone_else = new_person(emu)
    approver = Approver(emu, someone_else)
    ctx = FlowContext(binding.profile, refresh_token=record["refresh_token"],
                      account=record["account"], fresh_sign_in=True, prompt=approver)
    result = run_sync(device_code.acquire(ctx))
    assert len(approver.messages) == 1
    assert result.account is not None
    assert result.account["username"] == someone_else
    assert emu.count("token", grant_type="refresh_token") == 0
    assert emu.count("devicecode") == 2


def test_no_sign_in_when_no_person_may_be_asked(emu: Emulator, device: DeviceCodes,
                                                me: str) -> None:
    with pytest.raises(TokenError) as info:
        PROVIDER.get(PROVIDER.bind(me), PLAIN.but(interactive=False))
    assert info.value.error == "interaction_required"
    assert "authlayer login me" in str(info.value)
    assert emu.count("any") == 0


# --------------------------------------------------------------------------- command line


def test_cli_token_prints_only_the_token(emu: Emulator, device: DeviceCodes, person: str,
                                         me: str, capsys: pytest.CaptureFixture[str]) -> None:
    thread = approve_in_background(emu, person)
    assert main(["token", me]) == 0
    thread.join(5)
    out, err = capsys.readouterr()
    token = out.strip()
    assert out == token + "\n"
    assert jwt.decode(token)[1]["preferred_username"] == person
    assert "enter the code" in err
    assert token not in err


def test_cli_login_keeps_the_sign_in_and_logout_forgets_it(
        emu: Emulator, device: DeviceCodes, person: str, profiles: Profiles,
        capsys: pytest.CaptureFixture[str]) -> None:
    app = emu.register_app(public=True)
    write_profile(profiles, emu, "me", "device_code", client_id=app.client_id, cache="file")
    thread = approve_in_background(emu, person)
    assert main(["login", "me"]) == 0
    thread.join(5)
    out, err = capsys.readouterr()
    assert out == ""
    assert "signed in with profile 'me'" in err
    PROVIDER.reset()  # a new process
    assert main(["token", "me"]) == 0
    assert emu.count("devicecode") == 1
    thread = approve_in_background(emu, person)
    assert main(["login", "me"]) == 0  # login always signs in anew
    thread.join(5)
    assert emu.count("devicecode") == 2
    assert emu.count("token", grant_type="refresh_token") == 0
    assert main(["logout", "me"]) == 0
    PROVIDER.reset()
    thread = approve_in_background(emu, person)
    assert main(["token", "me"]) == 0
    thread.join(5)
    assert emu.count("devicecode") == 3


def test_cli_declined_sign_in_is_one_line_and_exit_1(emu: Emulator, device: DeviceCodes,
                                                     me: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def decline() -> None:
        device.wait_for_pending(5)
        device.decline()

    thread = threading.Thread(target=decline, daemon=True)
    thread.start()
    assert main(["token", me]) == 1
    thread.join(5)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1].startswith("authlayer: profile 'me': device code sign-in failed")


# --------------------------------------------------------------------------- prompt callbacks


def test_an_async_prompt_is_not_awaited_but_the_instructions_are_shown(
        emu: Emulator, device: DeviceCodes, person: str, me: str,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_person, "_warned_async_prompt", False)
    called: list[str] = []

    async def prompt(message: str) -> None:
        called.append(message)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            PROVIDER.reset()  # no kept sign-in: the person is asked each time
            thread = approve_in_background(emu, person)
            get_token(me, prompt=prompt)  # type: ignore[arg-type]
            thread.join(5)
        gc.collect()
    assert called == []
    texts = [str(w.message) for w in caught]
    assert not [t for t in texts if "never awaited" in t]
    (warning,) = [w for w in caught if "plain function" in str(w.message)]  # once only
    assert issubclass(warning.category, RuntimeWarning)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("enter the code") == 2
