"""Browser sign-in (authorization code + PKCE) end to end: a test browser (a ``$BROWSER``
command, or ``webbrowser.open`` replaced) follows the authorize URL to the emulator and its 302
back to the loopback listener. Covers state checking, error callbacks, the timeout, Ctrl+C, the
listener's address and closing, hints on the authorize URL, confidential clients, a wrong PKCE
verifier and silent reuse of the refresh token."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import webbrowser
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import pytest

from authlayer import EntraAuth, TokenError, _browser, _loopback, get_token, jwt
from authlayer._http import run_sync
from authlayer._loopback import Callback, LoopbackListener
from authlayer.emulator import Emulator
from authlayer.emulator.authorize import authorize_controls
from authlayer.flows import FlowContext, authorization_code
from authlayer.provider import PROVIDER

from .conftest import Client, Profiles
from .signin_helpers import TestBrowser, new_person, with_query, write_profile

REPO = Path(__file__).resolve().parent.parent


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
def real_console_check() -> None:
    """Asked for by the tests of the console-browser check itself."""


@pytest.fixture(autouse=True)
def _no_console_browser_check(request: pytest.FixtureRequest,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that replace ``webbrowser.open`` must reach it also on a machine whose first
    browser is a console one (lynx, w3m): tests do not run on a terminal."""
    if "real_console_check" not in request.fixturenames:
        monkeypatch.setattr(_browser, "_console_browser_first", lambda: False)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> TestBrowser:
    fake = TestBrowser()
    monkeypatch.setattr(webbrowser, "open", fake)
    return fake


class Listeners:
    """Records the loopback listeners the flow makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[LoopbackListener] = []
        self.left_running: list[int] = []  # the listener's threads still alive after close()
        self.wait_steps: list[float] = []  # the timeout of each wait() for the browser
        outer = self

        class Recorded(LoopbackListener):
            def __init__(self, state: str, port: Optional[int] = None) -> None:
                super().__init__(state, port)
                outer.made.append(self)

            def close(self, *args: Any, **kwargs: Any) -> None:
                super().close(*args, **kwargs)
                threads = [self._thread, *self._workers]
                outer.left_running.append(sum(t.is_alive() for t in threads))

            def wait(self, timeout: float) -> Optional[Callback]:
                outer.wait_steps.append(timeout)
                return super().wait(timeout)

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


def test_a_fixed_redirect_port_can_be_used_again_at_once(emu: Emulator, person: str,
                                                        profiles: Profiles, public_app: Any,
                                                        browser: TestBrowser) -> None:
    """The listener closes its connections first, which leaves them in TIME_WAIT for a minute;
    SO_REUSEADDR lets the next sign-in listen on the same port all the same."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_profile(profiles, emu, "web", "authorization_code", client_id=public_app.client_id,
                  redirect_port=port)
    for _ in range(2):
        PROVIDER.reset()  # nothing kept: each run signs in through the browser
        get_token("web", prompt=lambda message: None)
    assert [_query(url)["redirect_uri"] for url in browser.urls] == [
        f"http://localhost:{port}"] * 2
    assert [status for status, _page in browser.pages] == [200, 200]


class _RecordingSocket:
    def __init__(self) -> None:
        self.options: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options.append((level, option, value))


def test_the_listener_port_is_exclusive_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows SO_REUSEADDR would let another program take the port: the listener asks for
    SO_EXCLUSIVEADDRUSE there instead (checked here by recording the calls)."""
    monkeypatch.setattr(_loopback.os, "name", "nt")
    monkeypatch.setattr(socket, "SO_EXCLUSIVEADDRUSE", 0x7FFF_FFFB, raising=False)
    sock = _RecordingSocket()
    _loopback._allow_quick_reuse(sock)  # type: ignore[arg-type]
    assert sock.options == [(socket.SOL_SOCKET, 0x7FFF_FFFB, 1)]
    monkeypatch.setattr(_loopback.os, "name", "posix")
    sock = _RecordingSocket()
    _loopback._allow_quick_reuse(sock)  # type: ignore[arg-type]
    assert sock.options == [(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)]


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


def test_idle_browser_connections_do_not_delay_the_end_of_sign_in(
        emu: Emulator, person: str, web: str, listeners: Listeners,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Browsers open spare connections (preconnects) and leave them idle; closing the listener
    shuts them down at once instead of waiting for each."""
    idle: list[socket.socket] = []

    def during(location: str) -> None:
        for _ in range(3):
            idle.append(socket.create_connection(("127.0.0.1", listeners.made[0].port),
                                                 timeout=5))

    monkeypatch.setattr(webbrowser, "open", TestBrowser(during=during))
    try:
        token = get_token(web, prompt=lambda message: None)
        assert jwt.decode(token.token)[1]["preferred_username"] == person
        assert len(idle) == 3
        for conn in idle:  # closed by the server, not left waiting for a request
            conn.settimeout(2)
            with contextlib.suppress(ConnectionResetError):
                assert conn.recv(1) == b""
        # close() ended the threads serving them (it waits only briefly for that): it did
        # not leave them waiting for a request until their read timeout.
        assert listeners.left_running
        assert max(listeners.left_running) == 0
    finally:
        for conn in idle:
            conn.close()


def _raw_get(port: int, target: str, host: Optional[str]) -> int:
    """Send one request with a chosen Host header (or none); return the answer's status."""
    head = f"GET {target} HTTP/1.1\r\n"
    if host is not None:
        head += f"Host: {host}\r\n"
    head += "Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(head.encode("latin-1"))
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_a_callback_for_another_host_is_ignored(emu: Emulator, person: str, web: str,
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A page on another site that resolves its name to 127.0.0.1 (DNS rebinding) sends its
    own Host header: that request is answered and ignored."""
    statuses: list[int] = []

    def during(location: str) -> None:
        split = urlsplit(with_query(location, code="forged-code"))
        assert split.port is not None
        for host in (f"evil.example:{split.port}", f"localhost:{split.port + 1}", None):
            statuses.append(_raw_get(split.port, f"/?{split.query}", host))

    monkeypatch.setattr(webbrowser, "open", TestBrowser(during=during))
    token = get_token(web, prompt=lambda message: None)
    assert statuses == [400, 400, 400]
    assert jwt.decode(token.token)[1]["preferred_username"] == person
    assert "another host" in caplog.text


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST", "127.0.0.1", "[::1]"])
def test_loopback_host_names_are_accepted(name: str) -> None:
    listener = LoopbackListener("the-state")
    try:
        status = _raw_get(listener.port, "/?state=the-state&code=c",
                          f"{name}:{listener.port}")
        assert status == 200
        callback = listener.wait(2)
        assert callback is not None
        assert callback.code == "c"
    finally:
        listener.close()


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

    from authlayer import get_token_async

    monkeypatch.setattr(webbrowser, "open", TestBrowser(visit=False))
    monkeypatch.setattr(authorization_code, "WAIT_STEP", 0.05)

    async def run() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(get_token_async(web, prompt=lambda message: None), 0.3)

    asyncio.run(run())
    # The browser was waited for in short steps (a cancelled task ends after the current one),
    # not in one wait of SIGN_IN_TIMEOUT, and the cancelled flow closed the listener.
    assert listeners.wait_steps
    assert max(listeners.wait_steps) <= 0.05
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


# --------------------------------------------------------------------------- the browser command


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _use_browser_variable(monkeypatch: pytest.MonkeyPatch, command: Path) -> None:
    monkeypatch.setenv("BROWSER", str(command))
    monkeypatch.setattr(webbrowser, "_tryorder", None)  # let webbrowser read $BROWSER again
    monkeypatch.setattr(webbrowser, "_browsers", {})


@pytest.mark.skipif(os.name != "posix", reason="the stand-in browser forks")
def test_the_browser_neither_writes_to_nor_holds_standard_output(
        emu: Emulator, person: str, web: str, tmp_path: Path) -> None:
    """``$(authlayer token web)``: the browser command says something on its standard output and
    leaves a process behind (as xdg-open and browsers do). Neither may reach the token on
    standard output, nor keep the command substitution waiting."""
    marker = tmp_path / "browser-exited"
    pidfile = tmp_path / "browser.pid"
    leave = tmp_path / "browser-may-exit"  # the browser lives on until the test is done
    script = tmp_path / "browser.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        print("Opening in existing browser session.", flush=True)
        if os.fork() == 0:  # the browser proper lives on, with the same standard output
            try:
                with open({str(pidfile)!r}, "w") as out:
                    out.write(str(os.getpid()))
                import httpx
                with httpx.Client(timeout=5, follow_redirects=True, trust_env=False) as c:
                    page = c.get(sys.argv[1])
                print("Signed in" in page.text, "page loaded", flush=True)
                give_up = time.monotonic() + 60  # (only if the test never says so)
                while not os.path.exists({str(leave)!r}) and time.monotonic() < give_up:
                    time.sleep(0.01)
            finally:
                with open({str(marker)!r}, "w") as out:
                    out.write("exited")
                os._exit(0)
    """))
    launcher = _executable(tmp_path / "test-browser",
                           f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    errors = tmp_path / "stderr.txt"
    env = {**os.environ, "BROWSER": str(launcher)}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    try:
        with errors.open("wb") as err:
            done = subprocess.run([sys.executable, "-m", "authlayer", "token", web],
                                  stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO,
                                  timeout=30, check=False)
        exited_already = marker.exists()
        said = errors.read_text()
        assert done.returncode == 0, said
        out = done.stdout.decode()
        token = out.strip()
        assert out == token + "\n"
        assert jwt.decode(token)[1]["preferred_username"] == person
        assert "Opening" not in out
        assert not exited_already, "authlayer waited for the browser's process to end"
        assert "Opening in existing browser session." in said
    finally:
        leave.touch()
        if pidfile.exists() and not marker.exists():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_standard_output_is_itself_again_after_the_browser_started(
        emu: Emulator, person: str, web: str, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def browser_says_something(url: str, *args: Any, **kwargs: Any) -> bool:
        os.write(1, b"from the browser\n")
        TestBrowser()(url)
        return True

    monkeypatch.setattr(webbrowser, "open", browser_says_something)
    get_token(web, prompt=lambda message: None)
    os.write(1, b"after\n")
    out, err = capfd.readouterr()
    assert out == "after\n"
    assert "from the browser" in err


@pytest.mark.skipif(os.name != "posix", reason="POSIX file descriptors")
def test_no_redirection_when_standard_error_is_closed(tmp_path: Path) -> None:
    """With descriptor 2 closed (``2>&-``) the browser is started with standard output as it
    is, and nothing fails; a file that got descriptor 2 since is not written to."""
    other = tmp_path / "opened-later.txt"
    code = ("import os\n"
            "from authlayer._browser import _stdout_to_stderr\n"
            f"later = open({str(other)!r}, 'w')\n"
            "assert later.fileno() == 2\n"
            "with _stdout_to_stderr():\n"
            "    os.write(1, b'inside ')\n"
            "os.write(1, b'after')\n")
    done = subprocess.run(["/bin/sh", "-c", f'exec "{sys.executable}" -c "$0" 2>&-', code],
                          stdout=subprocess.PIPE, cwd=REPO, timeout=30, check=False)
    assert done.returncode == 0
    assert done.stdout == b"inside after"
    assert other.read_text() == ""


@pytest.mark.skipif(os.name != "posix", reason="a shell script stands in for lynx")
@pytest.mark.parametrize("on_a_terminal", [False, True])
def test_a_console_browser_is_started_only_on_a_terminal(
        emu: Emulator, person: str, web: str, tmp_path: Path, real_console_check: None,
        monkeypatch: pytest.MonkeyPatch, on_a_terminal: bool) -> None:
    """lynx, w3m and links take over the terminal until the person quits them: without one
    (output captured, a script) the URL is printed for the person and no browser is started."""
    import threading

    import httpx

    started = tmp_path / "lynx-started"
    lynx = _executable(tmp_path / "lynx", f'#!/bin/sh\necho "$1" > "{started}"\n')
    _use_browser_variable(monkeypatch, lynx)
    monkeypatch.setattr(_browser, "_on_a_terminal", lambda: on_a_terminal)
    shown: list[str] = []

    def visit(message: str) -> None:  # the person opens the printed URL themselves
        shown.append(message)
        url = message.splitlines()[-1]

        def go() -> None:
            with httpx.Client(timeout=5, follow_redirects=True, trust_env=False) as c:
                c.get(url)

        threading.Thread(target=go, daemon=True).start()

    token = get_token(web, prompt=visit)
    assert jwt.decode(token.token)[1]["preferred_username"] == person
    assert started.exists() is on_a_terminal
    assert "visit this URL" in shown[0]


# --------------------------------------------------------------------------- fresh sign-in


def _kept(profile: str) -> dict[str, Any]:
    binding = PROVIDER.bind(profile)
    record = PROVIDER.store_for(binding.profile).load(binding.store_key,
                                                          binding.store_account_key)
    assert record is not None
    assert record["refresh_token"]
    return record


def test_a_fresh_sign_in_asks_the_browser_and_lets_the_person_choose(
        emu: Emulator, person: str, web: str, browser: TestBrowser) -> None:
    get_token(web, prompt=lambda message: None)
    record = _kept(web)
    ctx = FlowContext(PROVIDER.bind(web).profile, refresh_token=record["refresh_token"],
                      account=record["account"], fresh_sign_in=True,
                      prompt=lambda message: None)
    result = run_sync(authorization_code.acquire(ctx))
    assert result.access_token
    assert len(browser.urls) == 2
    assert "prompt" not in _query(browser.urls[0])
    assert _query(browser.urls[1])["prompt"] == "select_account"
    assert emu.count("token", grant_type="refresh_token") == 0


def test_a_fresh_sign_in_keeps_the_profiles_own_prompt(emu: Emulator, profiles: Profiles,
                                                       public_app: Any) -> None:
    write_profile(profiles, emu, "web", "authorization_code", client_id=public_app.client_id,
                  prompt="login")
    ctx = FlowContext(PROVIDER.bind("web").profile, fresh_sign_in=True)
    url = authorization_code.authorize_url(ctx, redirect_uri="http://localhost:1",
                                           state="s", challenge="c")
    assert _query(url)["prompt"] == "login"


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
