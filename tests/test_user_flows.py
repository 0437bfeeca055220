"""Refresh token, on-behalf-of and password flows end to end against the emulator, and a scan
that no secret of the sign-in flows (refresh tokens, codes, verifiers, passwords, tokens)
reaches logs, reprs, exception texts or standard output."""

from __future__ import annotations

import json
import logging
import os
import traceback
import warnings
import webbrowser
from typing import Any

import pytest

from authlayer import EntraAuth, TokenError, _browser, get_token, jwt
from authlayer._http import HttpResponse, Send
from authlayer.emulator import Emulator
from authlayer.emulator.authorize import authorize_controls
from authlayer.emulator.device import device_codes
from authlayer.emulator.users import (
    expire_refresh_token,
    issue_user_token,
    mint_refresh_token,
    refresh_tokens,
    require_mfa,
    revoke_refresh_tokens,
)
from authlayer.flows import FlowContext, device_code
from authlayer.flows import password as password_flow
from authlayer.flows import refresh_token as refresh_token_flow
from authlayer.flows.password import PasswordFlowWarning
from authlayer.provider import FORCED, PROVIDER

from .conftest import Client, Profiles, leaked
from .signin_helpers import Approver, TestBrowser, new_person, write_profile


@pytest.fixture
def person(emu: Emulator) -> str:
    return new_person(emu, "Corr3ct-Horse-Battery")


@pytest.fixture(autouse=True)
def _warn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(password_flow, "_warned", False)


def _refresh_requests(emu: Emulator) -> list[str]:
    return [r.form["refresh_token"] for r in emu.requests
            if r.form.get("grant_type") == "refresh_token"]


# --------------------------------------------------------------------------- refresh token


@pytest.fixture
def rt_profile(emu: Emulator, profiles: Profiles, public_app: Any, person: str,
               monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MY_RT", mint_refresh_token(emu, client_id=public_app.client_id,
                                                   username=person))
    return write_profile(profiles, emu, "rt", "refresh_token", client_id=public_app.client_id,
                         refresh_token='{ env = "MY_RT" }')


def test_refresh_token_profile_reaches_the_api(emu: Emulator, rt_profile: str, person: str,
                                               client: Client) -> None:
    answer = client.get(f"{emu.api_url}/me", EntraAuth(rt_profile))
    assert answer.status == 200
    assert answer.json()["claims"]["preferred_username"] == person
    assert emu.count("token", grant_type="refresh_token") == 1


def test_the_rotated_refresh_token_is_kept_and_used_next(emu: Emulator,
                                                        rt_profile: str) -> None:
    configured = os.environ["MY_RT"]
    get_token(rt_profile)
    get_token(rt_profile, force_refresh=True)
    get_token(rt_profile, force_refresh=True)
    used = _refresh_requests(emu)
    assert used[0] == configured
    assert len(set(used)) == 3  # each time the newest one


def _kept_refresh_token(profile: str) -> str:
    binding = PROVIDER.bind(profile)
    record = PROVIDER.store_for(binding.profile).load(binding.store_key,
                                                          binding.store_account_key)
    assert record is not None
    return str(record["refresh_token"])


def test_a_refused_cached_refresh_token_falls_back_to_the_configured_one_once(
        emu: Emulator, rt_profile: str) -> None:
    configured = os.environ["MY_RT"]
    get_token(rt_profile)
    cached = _kept_refresh_token(rt_profile)
    assert cached != configured
    revoke_refresh_tokens(emu, token=cached)
    before = len(_refresh_requests(emu))
    get_token(rt_profile, force_refresh=True)
    assert _refresh_requests(emu)[before:] == [cached, configured]


def _says_replace_the_configured_token(error: TokenError, profile: str) -> None:
    """For flow refresh_token nobody can sign in again: the hint names where the profile
    reads its refresh token from, and not `authlayer login`, which cannot help."""
    assert error.hint is not None
    assert "refresh_token" in error.hint
    assert "env MY_RT" in error.hint
    assert "authlayer login" not in error.hint
    assert f"[hint: {error.hint}]" in str(error)
    assert f"authlayer login {profile}" not in str(error)


def test_a_refused_refresh_token_is_a_token_error_with_a_hint(emu: Emulator,
                                                              rt_profile: str) -> None:
    expire_refresh_token(emu, os.environ["MY_RT"])
    with pytest.raises(TokenError) as info:
        get_token(rt_profile)
    assert info.value.error == "invalid_grant"
    assert info.value.error_codes == (700082,)
    assert info.value.status == 400
    assert info.value.correlation_id
    assert info.value.correlation_id in str(info.value)
    assert info.value.description is not None
    assert "AADSTS700082" in info.value.description
    _says_replace_the_configured_token(info.value, rt_profile)
    assert emu.count("token") == 1  # the cache had none, the configured one is tried once


def test_the_same_refused_token_is_not_tried_twice(emu: Emulator, rt_profile: str) -> None:
    get_token(rt_profile)
    revoke_refresh_tokens(emu, token=os.environ["MY_RT"])
    revoke_refresh_tokens(emu, token=_kept_refresh_token(rt_profile))
    with pytest.raises(TokenError) as info:
        get_token(rt_profile, force_refresh=True)
    assert info.value.error_codes == (50173,)
    _says_replace_the_configured_token(info.value, rt_profile)
    assert emu.count("token", grant_type="refresh_token") == 3


def test_other_refresh_token_errors_keep_their_own_hint(rt_profile: str) -> None:
    """Missing consent is not a refused refresh token: its own hint stays (sans I/O)."""
    flow = refresh_token_flow.acquire(FlowContext(PROVIDER.bind(rt_profile).profile))
    assert isinstance(next(flow), Send)
    body = {"error": "invalid_grant", "error_codes": [65001], "correlation_id": "c-1",
            "error_description": "AADSTS65001: The user or administrator has not consented."}
    with pytest.raises(TokenError) as info:
        flow.send(HttpResponse(400, {"content-type": "application/json"},
                               json.dumps(body).encode()))
    assert info.value.error_codes == (65001,)
    assert info.value.hint is not None
    assert "consent" in info.value.hint


# --------------------------------------------------------------------------- on-behalf-of


@pytest.fixture
def obo(emu: Emulator, profiles: Profiles, monkeypatch: pytest.MonkeyPatch) -> Any:
    app = emu.register_app(secret="middle-tier-secret-value")
    monkeypatch.setenv("MID_SECRET", "middle-tier-secret-value")
    write_profile(profiles, emu, "mid", "on_behalf_of", client_id=app.client_id,
                  client_secret='{ env = "MID_SECRET" }')
    return app


def test_on_behalf_of_calls_the_api_as_the_person(emu: Emulator, obo: Any, person: str,
                                                  client: Client) -> None:
    incoming = issue_user_token(emu, username=person, audience=f"api://{obo.client_id}")
    answer = client.get(f"{emu.api_url}/x", EntraAuth("mid", user_assertion=incoming))
    assert answer.status == 200
    claims = answer.json()["claims"]
    assert (claims["preferred_username"], claims["appid"]) == (person, obo.client_id)
    sent = emu.requests[0].form
    assert (sent["grant_type"], sent["requested_token_use"], sent["assertion"]) == (
        "urn:ietf:params:oauth:grant-type:jwt-bearer", "on_behalf_of", incoming)


def test_two_peoples_tokens_are_never_shared(emu: Emulator, obo: Any, client: Client) -> None:
    alice, bob = new_person(emu), new_person(emu)
    incoming = {who: issue_user_token(emu, username=who, audience=obo.client_id)
                for who in (alice, bob)}
    auths = {who: EntraAuth("mid", user_assertion=token) for who, token in incoming.items()}
    for _ in range(2):
        for who in (alice, bob, alice):
            answer = client.get(f"{emu.api_url}/x", auths[who])
            assert answer.json()["claims"]["preferred_username"] == who
    tokens = {who: get_token("mid", user_assertion=incoming[who]).token for who in incoming}
    assert tokens[alice] != tokens[bob]
    assert emu.count("token") == 2  # one per person, then the cache
    assert PROVIDER.bind("mid", user_assertion=incoming[alice]).key != PROVIDER.bind(
        "mid", user_assertion=incoming[bob]).key


def test_on_behalf_of_refuses_a_foreign_assertion(emu: Emulator, obo: Any,
                                                  person: str) -> None:
    foreign = issue_user_token(emu, username=person, audience="api://another-api")
    with pytest.raises(TokenError) as info:
        get_token("mid", user_assertion=foreign)
    assert info.value.error == "invalid_grant"
    assert info.value.error_codes == (500131,)
    assert "audience must be this app's client id" in str(info.value)
    assert foreign not in str(info.value)


# --------------------------------------------------------------------------- password


@pytest.fixture
def pw(emu: Emulator, profiles: Profiles, public_app: Any, person: str,
       monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MY_PASSWORD", "Corr3ct-Horse-Battery")
    return write_profile(profiles, emu, "pw", "password", client_id=public_app.client_id,
                         username=person, password='{ env = "MY_PASSWORD" }')


def test_password_flow_reaches_the_api_and_warns_once(emu: Emulator, pw: str, person: str,
                                                      client: Client,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with pytest.warns(PasswordFlowWarning, match="discourages"):
        answer = client.get(f"{emu.api_url}/x", EntraAuth(pw))
    assert answer.status == 200
    assert answer.json()["claims"]["preferred_username"] == person
    assert "flow 'password'" in caplog.text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_token(pw, force_refresh=True)  # no second warning in this process
    assert emu.count("token", grant_type="refresh_token") == 1  # the kept refresh token


def test_the_warning_points_at_the_callers_line(emu: Emulator, pw: str) -> None:
    with pytest.warns(PasswordFlowWarning) as record:
        get_token(pw)
    assert record[0].filename == __file__


def test_password_flow_with_mfa_required_says_what_to_use(emu: Emulator, pw: str,
                                                          person: str) -> None:
    require_mfa(emu, person)
    with pytest.warns(PasswordFlowWarning), pytest.raises(TokenError) as info:
        get_token(pw)
    assert info.value.error == "interaction_required"
    assert info.value.error_codes == (50076,)
    assert "device_code" in str(info.value)
    assert "authorization_code" in str(info.value)


def test_password_flow_with_a_wrong_password(emu: Emulator, pw: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_PASSWORD", "wrong-password-value")
    with pytest.warns(PasswordFlowWarning), pytest.raises(TokenError) as info:
        get_token(pw)
    assert info.value.error_codes == (50126,)
    assert "wrong-password-value" not in str(info.value)


# --------------------------------------------------------------------------- no leaks


def test_no_sign_in_secret_leaks(emu: Emulator, profiles: Profiles, public_app: Any,
                                 person: str, monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Corr3ct-Horse-Battery"
    mid = emu.register_app(secret="middle-tier-secret-value")
    rt = mint_refresh_token(emu, client_id=public_app.client_id, username=person)
    incoming = issue_user_token(emu, username=person, audience=mid.client_id)
    monkeypatch.setenv("MY_RT", rt)
    monkeypatch.setenv("MY_PASSWORD", password)
    monkeypatch.setenv("MID_SECRET", "middle-tier-secret-value")
    common = (f'authority = "{emu.url}"\ntenant = "{emu.tenant_id}"\n'
              f'scope = "{emu.api_scope}"\ncache = "memory"\n')
    profiles.write(f"""
[profiles.dc]
flow = "device_code"
client_id = "{public_app.client_id}"
{common}
[profiles.web]
flow = "authorization_code"
client_id = "{public_app.client_id}"
{common}
[profiles.rt]
flow = "refresh_token"
client_id = "{public_app.client_id}"
refresh_token = {{ env = "MY_RT" }}
{common}
[profiles.pw]
flow = "password"
client_id = "{public_app.client_id}"
username = "{person}"
password = {{ env = "MY_PASSWORD" }}
{common}
[profiles.mid]
flow = "on_behalf_of"
client_id = "{mid.client_id}"
client_secret = {{ env = "MID_SECRET" }}
{common}
""")
    device_codes(emu).interval = 0
    monkeypatch.setattr(device_code, "MIN_INTERVAL", 0.0)
    monkeypatch.setattr(_browser, "_console_browser_first", lambda: False)
    authorize_controls(emu).sign_in_as(person)
    browser = TestBrowser()
    monkeypatch.setattr(webbrowser, "open", browser)
    texts: list[str] = []
    results: list[Any] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PasswordFlowWarning)
        results.append(get_token("dc", prompt=Approver(emu, person)))
        results.append(get_token("dc", force_refresh=True))
        results.append(get_token("web", prompt=texts.append))
        results.append(get_token("web", force_refresh=True))
        results.append(get_token("rt"))
        results.append(get_token("pw"))
        results.append(get_token("mid", user_assertion=incoming))
        texts.append(repr(PROVIDER.bind("mid", user_assertion=incoming)))
        # and failures: refused refresh tokens, a wrong password, MFA, a foreign assertion
        revoke_refresh_tokens(emu, username=person)
        for attempt in (
            lambda: get_token("rt", force_refresh=True),
            lambda: PROVIDER.get(PROVIDER.bind("dc"), FORCED.but(interactive=False)),
            lambda: get_token("pw", force_refresh=True),
            lambda: get_token("mid", user_assertion=issue_user_token(
                emu, username=person, audience="api://x")),
        ):
            require_mfa(emu, person)
            with pytest.raises(TokenError) as info:
                attempt()
            texts += [str(info.value), repr(info.value),
                      "".join(traceback.format_exception(info.type, info.value, info.tb))]
    texts += [repr(r) for r in results]
    texts.append(repr(PROVIDER.entries))
    out, err = capsys.readouterr()
    # authlayer's own log records: the test browser's httpx logs see the code, as a browser's
    # history would.
    texts += [out, err, *(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records
                          if r.name.startswith("authlayer"))]
    assert any(r.name == "authlayer" and r.levelno == logging.DEBUG for r in caplog.records)
    haystack = "\n".join(texts)
    needles: list[Any] = [password, "middle-tier-secret-value", incoming,
                          *(r.token for r in results)]
    needles += [r.form.get(k) for r in emu.requests
                for k in ("refresh_token", "code", "code_verifier", "device_code", "assertion")]
    needles += [c.code for c in authorize_controls(emu).issued]
    assert refresh_tokens(emu).issued >= 5
    assert leaked(haystack, needles) == []
    assert jwt.decode(results[0].token)[1]["preferred_username"] == person
