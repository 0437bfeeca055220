"""Browser sign-in (authorization code + PKCE) end to end: a test browser (a ``$BROWSER``
command, or ``webbrowser.open`` replaced) follows the authorize URL to the emulator and its 302
back to the loopback listener. Covers state checking, error callbacks, the timeout, Ctrl+C, the
listener's address and closing, hints on the authorize URL, confidential clients, a wrong PKCE
verifier and silent reuse of the refresh token."""

from __future__ import annotations

import socket
import stat
import sys
import textwrap
import webbrowser
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import pytest

from authlayer import EntraAuth, TokenError, get_token, jwt
from authlayer.emulator import Emulator
from authlayer.emulator.authorize import authorize_controls
from authlayer.flows import authorization_code
from authlayer.flows.authorization_code import LoopbackListener
from authlayer.provider import PROVIDER

from .conftest import Client, Profiles
from .signin_helpers import TestBrowser, new_person, write_profile


@pytest.fixture
def person(emu: Emulator) -> str:
    username = new_person(emu)
    authorize_controls(emu).sign_in_as(username)  # emu.reset() forgets it
    return username


@pytest.fixture
def public_app(emu: Emulator) -> Any:
    return emu.register_app(public=True)


@pytest.fixture
def web(emu: Emulator, profiles: Profiles, public_app: Any) -> str:
    return write_profile(profiles, emu, "web", "authorization_code",
                         client_id=public_app.client_id)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> TestBrowser:
    fake = TestBrowser()
    monkeypatch.setattr(webbrowser, "open", fake)
    return fake


class Listeners:
    """Records the loopback listeners the flow makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[LoopbackListener] = []
        outer = self

        class Recorded(LoopbackListener):
            def __init__(self, state: str, port: Optional[int] = None) -> None:
                super().__init__(state, port)
                outer.made.append(self)

        monkeypatch.setattr(authorization_code, "LoopbackListener", Recorded)


@pytest.fixture
def listeners(monkeypatch: pytest.MonkeyPatch) -> Listeners:
    return Listeners(monkeypatch)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# --------------------------------------------------------------------------- end to end


def test_browser_sign_in_reaches_the_api(emu: Emulator, person: str, web: str,
                                         browser: TestBrowser, client: Client) -> None:
    shown: list[str] = []
    answer = client.get(f"{emu.api_url}/me", EntraAuth(web, prompt=shown.append))
    assert answer.status == 200
    assert answer.json()["claims"]["preferred_username"] == person
    (url,) = browser.urls
    assert url in shown[0]
    assert shown[0].startswith("Opening your browser")
    assert browser.pages[0][0] == 200
    assert "Signed in" in browser.pages[0][1]
    sent = _query(url)
    assert sent["code_challenge_method"] == "S256"
    assert sent["redirect_uri"].startswith("http://localhost:")
    assert sent["scope"].split() == [emu.api_scope, "openid", "profile", "offline_access"]
    redeem = next(r for r in emu.requests if r.form.get("grant_type") == "authorization_code")
    verifier = redeem.form["code_verifier"]
    assert 43 <= len(verifier) <= 128
    assert redeem.form["redirect_uri"] == sent["redirect_uri"]
    assert redeem.form["code"] == _query(browser.redirects[0])["code"]


def test_the_browser_command_in_the_browser_variable_is_used(emu: Emulator, person: str,
                                                             web: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    log = tmp_path / "browser.log"
    script = tmp_path / "browser.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        import httpx
        with httpx.Client(timeout=5, follow_redirects=True, trust_env=False) as client:
            page = client.get(sys.argv[1])
        with open({str(log)!r}, "w") as out:
            out.write(f"{{page.status_code}} {{page.url.host}} {{'Signed in' in page.text}}")
    """))
    launcher = tmp_path / "test-browser"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("BROWSER", str(launcher))
    monkeypatch.setattr(webbrowser, "_tryorder", None)  # let webbrowser read $BROWSER again
    monkeypatch.setattr(webbrowser, "_browsers", {})
    token = get_token(web, prompt=lambda message: None)
    assert jwt.decode(token.token)[1]["preferred_username"] == person
    assert log.read_text() == "200 localhost True"


def test_listener_is_on_127_0_0_1_only_and_closed_afterwards(
        emu: Emulator, person: str, web: str, listeners: Listeners,
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def during(location: str) -> None:
        listener = listeners.made[0]
        seen["address"] = listener._sock.getsockname()
        seen["open"] = not _refused(listener.port)

    monkeypatch.setattr(webbrowser, "open", TestBrowser(during=during))
    get_token(web, prompt=lambda message: None)
    (listener,) = listeners.made
    assert seen == {"address": ("127.0.0.1", listener.port), "open": True}
    assert _refused(listener.port)


def test_a_fixed_redirect_port_is_used(emu: Emulator, person: str, profiles: Profiles,
                                       public_app: Any, browser: TestBrowser) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_profile(profiles, emu, "web", "authorization_code", client_id=public_app.client_id,
                  redirect_port=port)
    get_token("web", prompt=lambda message: None)
    assert _query(browser.urls[0])["redirect_uri"] == f"http://localhost:{port}"


def test_a_busy_redirect_port_is_a_token_error(emu: Emulator, profiles: Profiles,
                                               public_app: Any, browser: TestBrowser) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        write_profile(profiles, emu, "web", "authorization_code",
                      client_id=public_app.client_id, redirect_port=busy.getsockname()[1])
        with pytest.raises(TokenError) as info:
            get_token("web", prompt=lambda message: None)
    assert "cannot listen on 127.0.0.1" in str(info.value)
    assert browser.urls == []


def test_hints_are_passed_on_the_authorize_url(emu: Emulator, profiles: Profiles,
                                               public_app: Any, browser: TestBrowser) -> None:
    hinted = new_person(emu)
    new_person(emu)
    write_profile(profiles, emu, "web", "authorization_code", client_id=public_app.client_id,
                  login_hint=hinted, domain_hint="contoso.com", prompt="select_account")
    token = get_token("web", prompt=lambda message: None)
    sent = _query(browser.urls[0])
    assert (sent["login_hint"], sent["domain_hint"], sent["prompt"]) == (
        hinted, "contoso.com", "select_account")
    assert jwt.decode(token.token)[1]["preferred_username"] == hinted


def test_a_confidential_client_sends_its_secret_with_the_code(
        emu: Emulator, person: str, profiles: Profiles, browser: TestBrowser,
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = emu.register_app(secret="web-app-secret-value")
    monkeypatch.setenv("WEB_SECRET", "web-app-secret-value")
    write_profile(profiles, emu, "web", "authorization_code", client_id=app.client_id,
                  client_secret='{ env = "WEB_SECRET" }')
    token = get_token("web", prompt=lambda message: None)
    assert jwt.decode(token.token)[1]["azpacr"] == "1"
    redeem = emu.requests[-1]
    assert redeem.form["client_secret"] == "web-app-secret-value"
    assert redeem.form["code_verifier"]


# --------------------------------------------------------------------------- what can go wrong


def test_callbacks_with_a_wrong_or_missing_state_are_ignored(
        emu: Emulator, person: str, web: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    fake = TestBrowser(detours=({"state": "forged"}, {"state": None},
                                {"state": "forged", "code": None,
                                 "error": "access_denied"}))
    monkeypatch.setattr(webbrowser, "open", fake)
    token = get_token(web, prompt=lambda message: None)
    assert fake.detour_statuses == [400, 400, 400]
    assert fake.pages[0][0] == 200
    assert jwt.decode(token.token)[1]["preferred_username"] == person
    assert "ignored a redirect with a wrong state" in caplog.text


def test_an_error_callback_is_a_token_error(emu: Emulator, person: str, web: str,
                                            browser: TestBrowser,
                                            listeners: Listeners) -> None:
    authorize_controls(emu).deny("AADSTS65004: User declined to consent to access the app.")
    with pytest.raises(TokenError) as info:
        get_token(web, prompt=lambda message: None)
    assert info.value.error == "access_denied"
    assert info.value.error_codes == (65004,)
    assert "User declined to consent" in str(info.value)
    assert "Sign-in failed" in browser.pages[0][1]
    assert emu.count("token") == 0
    assert _refused(listeners.made[0].port)


def test_no_answer_within_the_timeout(emu: Emulator, person: str, web: str,
                                      listeners: Listeners,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authorization_code, "SIGN_IN_TIMEOUT", 0.3)
    monkeypatch.setattr(webbrowser, "open", TestBrowser(visit=False))
    with pytest.raises(TokenError) as info:
        get_token(web, prompt=lambda message: None)
    assert info.value.error == "timeout"
    assert "no answer from the browser within 0.3 s" in str(info.value)
    assert _refused(listeners.made[0].port)


def test_no_browser_still_prints_the_url(emu: Emulator, person: str, web: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """When no browser opens, the person can still visit the printed URL."""
    import threading

    import httpx

    def visit(message: str) -> None:
        url = message.splitlines()[-1]

        def go() -> None:
            with httpx.Client(timeout=5, follow_redirects=True, trust_env=False) as c:
                c.get(url)

        threading.Thread(target=go, daemon=True).start()

    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: False)
    token = get_token(web, prompt=visit)
    assert jwt.decode(token.token)[1]["preferred_username"] == person


def test_ctrl_c_while_waiting_closes_the_listener(emu: Emulator, person: str, web: str,
                                                  listeners: Listeners,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webbrowser, "open", TestBrowser(visit=False))

    def interrupted(self: LoopbackListener, timeout: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(LoopbackListener, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        get_token(web, prompt=lambda message: None)
    assert _refused(listeners.made[0].port)


def test_a_cancelled_async_sign_in_stops_waiting_and_closes_the_listener(
        emu: Emulator, person: str, web: str, listeners: Listeners,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import time

    from authlayer import get_token_async

    monkeypatch.setattr(webbrowser, "open", TestBrowser(visit=False))
    monkeypatch.setattr(authorization_code, "WAIT_STEP", 0.05)

    async def run() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(get_token_async(web, prompt=lambda message: None), 0.3)

    started = time.monotonic()
    asyncio.run(run())
    assert time.monotonic() - started < 2
    assert _refused(listeners.made[0].port)


def test_a_wrong_pkce_verifier_is_refused_by_the_service(
        emu: Emulator, person: str, web: str, browser: TestBrowser,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = authorization_code.pkce_pair
    monkeypatch.setattr(authorization_code, "pkce_pair",
                        lambda: (real()[0], real()[1]))  # a verifier from another pair
    with pytest.raises(TokenError) as info:
        get_token(web, prompt=lambda message: None)
    assert info.value.error == "invalid_grant"
    assert info.value.error_codes == (501481,)
    assert "code_verifier" in str(info.value)


def test_pkce_pairs_are_random_and_s256() -> None:
    import base64
    import hashlib

    pairs = {authorization_code.pkce_pair() for _ in range(20)}
    assert len(pairs) == 20
    for verifier, challenge in pairs:
        assert 43 <= len(verifier) <= 128
        digest = hashlib.sha256(verifier.encode()).digest()
        assert challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# --------------------------------------------------------------------------- silent reuse


def test_second_run_is_silent_with_the_file_cache(emu: Emulator, person: str,
                                                  profiles: Profiles, public_app: Any,
                                                  browser: TestBrowser) -> None:
    write_profile(profiles, emu, "web", "authorization_code", client_id=public_app.client_id,
                  cache="file")
    first = get_token("web", prompt=lambda message: None)
    PROVIDER.reset()  # a new process
    assert get_token("web") == first
    PROVIDER.reset()
    renewed = get_token("web", force_refresh=True)
    assert renewed.token != first.token
    assert len(browser.urls) == 1
    assert emu.count("token", grant_type="refresh_token") == 1
    assert jwt.decode(renewed.token)[1]["preferred_username"] == person
