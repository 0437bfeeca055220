"""The emulator's sign-in pages, used by a person in a real browser: headless Chromium driven by
Playwright types the device code and approves `authlayer login`, and signs in through the
authorize page that `$BROWSER` was handed. Also what the pages promise without a browser:
one-use page nonces, forms from other sites refused, no external assets, and the scripted
`--auto-approve` mode.

The browser tests skip when Chromium or Playwright is missing (`apt-get install chromium`,
`pip install 'authlayer[browser]'`), unless `AUTHLAYER_REQUIRE_BROWSER=1` (CI), where that
fails. With `AUTHLAYER_SCREENSHOTS=DIR` the pages are also saved there as PNG, to look at.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest

from authlayer import jwt
from authlayer.emulator import Emulator
from authlayer.emulator.authorize import authorize_controls
from authlayer.emulator.device import device_codes

from .conftest import Profiles
from .signin_helpers import new_person, write_profile

REPO = Path(__file__).resolve().parent.parent
REQUIRED = os.environ.get("AUTHLAYER_REQUIRE_BROWSER") == "1"


# --------------------------------------------------------------------------- the browser


def _chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("Playwright (pip install 'authlayer[browser]')")
    executable = _chromium()
    if executable is None:
        missing.append("Chromium (apt-get install chromium)")
    if missing:
        reason = f"a real browser is needed: {' and '.join(missing)} not installed"
        if REQUIRED:
            pytest.fail(f"{reason}, and AUTHLAYER_REQUIRE_BROWSER=1", pytrace=False)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable,
            # Loopback only: no name but localhost resolves, no proxy is used.
            args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
                  "--no-proxy-server"])
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """One browser tab; remembers every URL it asked for."""

    def __init__(self, tab: Any, folder: Path) -> None:
        self.tab = tab
        self.folder = folder
        self.asked: list[str] = []
        tab.on("request", lambda request: self.asked.append(request.url))
        tab.set_default_timeout(30_000)

    def shot(self, name: str) -> None:
        """A screenshot, kept with the test's files (and in $AUTHLAYER_SCREENSHOTS)."""
        self.tab.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)
        wanted = os.environ.get("AUTHLAYER_SCREENSHOTS")
        if wanted:
            Path(wanted).mkdir(parents=True, exist_ok=True)
            shutil.copy(self.folder / f"{name}.png", Path(wanted) / f"{name}.png")

    def submit_with_enter(self) -> None:
        with self.tab.expect_navigation():
            self.tab.keyboard.press("Enter")

    def focused(self) -> str:
        return str(self.tab.evaluate(
            "document.activeElement.id || document.activeElement.textContent"))

    def autofocused(self, field: str) -> str:
        """The focused element once the page's autofocus has been applied to ``field`` (which
        the browser may do after the load event when it is busy): what a person sees when they
        start typing. Fails if it never is."""
        self.tab.wait_for_function(f"document.activeElement && document.activeElement.id === "
                                   f"{field!r}")
        return self.focused()

    def text(self) -> str:
        return str(self.tab.inner_text("main"))


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 900, "height": 900})
    try:
        yield Page(context.new_page(), tmp_path)
    finally:
        context.close()


# --------------------------------------------------------------------------- programs


class Program:
    """A program run in the background whose standard error (or output) is read line by line."""

    def __init__(self, argv: list[str], env: dict[str, str], *, read: str = "stderr") -> None:
        self.proc = subprocess.Popen(argv, env=env, cwd=REPO, text=True, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self._new = threading.Condition()
        stream = self.proc.stderr if read == "stderr" else self.proc.stdout
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._new:
                self.lines.append(line)
                self._new.notify_all()
        with self._new:
            self.lines.append("")  # the end
            self._new.notify_all()

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first line matching ``pattern``; fails if the program ends first."""
        regex = re.compile(pattern)
        seen = 0
        with self._new:
            while True:
                for line in self.lines[seen:]:
                    if line == "":
                        raise AssertionError(f"ended without {pattern!r}: {''.join(self.lines)}")
                    found = regex.search(line)
                    if found:
                        return found
                seen = len(self.lines)
                self._new.wait(1)

    def finish(self) -> tuple[int, str, str]:
        """Exit status, standard output and standard error, once it ended by itself."""
        status = self.proc.wait(timeout=60)
        self._reader.join(10)
        out = self.proc.stdout.read() if self.proc.stdout and not self.proc.stdout.closed else ""
        return status, out or "", "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def authlayer(*args: str) -> list[str]:
    return [sys.executable, "-m", "authlayer", *args]


def run_authlayer(*args: str, env: Optional[dict[str, str]] = None
                  ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(authlayer(*args), env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)


def username_in(token: str) -> str:
    return str(jwt.decode(token)[1]["preferred_username"])


@contextlib.contextmanager
def cli_emulator(*options: str) -> Iterator[str]:
    """``authlayer emulator --port 0 ...`` running; yields the profile it printed for a
    person."""
    program = Program(authlayer("emulator", "--port", "0", *options), dict(os.environ),
                      read="stdout")
    try:
        program.wait_for(r"^Press Ctrl-C to stop")
        text = "".join(program.lines)
        person = text.split("[profiles.emulator-me]", 1)[1].split("\n\n", 1)[0]
        yield "[profiles.emulator-me]" + person + "\n"
    finally:
        program.stop()


# --------------------------------------------------------------------------- device code


def test_authlayer_login_with_a_device_code_is_completed_in_the_browser(
        page: Page, tmp_path: Path) -> None:
    with cli_emulator("--user", "alice") as profile:
        config = tmp_path / "profiles.toml"
        config.write_text(profile)
        env = {**os.environ, "AUTHLAYER_CONFIG": str(config)}
        login = Program(authlayer("login", "emulator-me"), env)
        try:
            told = login.wait_for(r"open the page (\S+) and enter the code (\S+) ")
            url, code = told.group(1), told.group(2)
            page.tab.goto(url)
            page.shot("device-1-enter-code")
            assert page.autofocused("code") == "code"  # the person can type at once
            assert page.tab.get_by_label("Code").is_visible()
            page.tab.keyboard.type(code.lower())  # any case will do
            page.submit_with_enter()

            page.shot("device-2-sign-in")
            assert "alice@contoso.onmicrosoft.com" in page.text()
            assert page.tab.get_by_label("Sign in as").input_value() == \
                "alice@contoso.onmicrosoft.com"
            assert page.autofocused("account") == "account"
            page.tab.keyboard.press("Tab")
            assert page.focused() == "Approve"
            page.tab.keyboard.press("Tab")
            assert page.focused() == "Decline"
            page.tab.keyboard.press("Shift+Tab")
            assert page.focused() == "Approve"
            page.submit_with_enter()

            page.shot("device-3-signed-in")
            assert "You're signed in" in page.text()
            status, _, said = login.finish()
        finally:
            login.stop()
        assert status == 0, said
        assert all(u.startswith(url.rsplit("/", 1)[0]) for u in page.asked), page.asked
        token = run_authlayer("token", "emulator-me", env=env)
        assert token.returncode == 0, token.stderr
        assert username_in(token.stdout.strip()) == "alice@contoso.onmicrosoft.com"


@pytest.fixture
def device_profile(emu: Emulator, profiles: Profiles) -> str:
    app = emu.register_app(public=True, roles=())
    device_codes(emu).interval = 0
    return write_profile(profiles, emu, "me", "device_code", client_id=app.client_id,
                         cache="file")


def test_a_person_typed_on_the_page_is_the_one_signed_in(page: Page, emu: Emulator,
                                                        device_profile: str) -> None:
    new_person(emu)
    login = Program(authlayer("login", device_profile), dict(os.environ))
    try:
        url = login.wait_for(r"open the page (\S+) ").group(1)
        code = device_codes(emu).wait_for_pending(30).user_code
        page.tab.goto(f"{url}?otc={code}")  # verification_uri_complete fills the code in
        assert page.tab.get_by_label("Code").input_value() == code
        page.submit_with_enter()
        page.tab.get_by_label("Sign in as").fill("carol")  # a new person, in the tenant's domain
        page.submit_with_enter()
        assert "as carol@contoso.onmicrosoft.com" in page.text()
        status, _, said = login.finish()
    finally:
        login.stop()
    assert status == 0, said
    token = run_authlayer("token", device_profile)
    assert username_in(token.stdout.strip()) == "carol@contoso.onmicrosoft.com"


def test_declining_on_the_page_fails_the_login(page: Page, emu: Emulator,
                                               device_profile: str) -> None:
    new_person(emu)
    login = Program(authlayer("login", device_profile), dict(os.environ))
    try:
        told = login.wait_for(r"open the page (\S+) and enter the code (\S+) ")
        page.tab.goto(told.group(1))
        page.autofocused("code")
        page.tab.keyboard.type(told.group(2))
        page.submit_with_enter()
        with page.tab.expect_navigation():
            page.tab.get_by_role("button", name="Decline").click()
        page.shot("device-4-declined")
        assert "Sign-in declined" in page.text()
        status, out, said = login.finish()
    finally:
        login.stop()
    assert status == 1
    assert "declined" in said
    assert out == ""


def test_a_wrong_code_is_shown_again_with_what_is_wrong(page: Page, emu: Emulator) -> None:
    page.tab.goto(f"{emu.url}/devicelogin")
    page.autofocused("code")
    page.tab.keyboard.type("WRONG2345")
    page.submit_with_enter()
    page.shot("device-5-wrong-code")
    assert "That code is not right" in page.text()
    assert page.tab.get_by_label("Code").input_value() == "WRONG2345"
    assert page.autofocused("code") == "code"


# --------------------------------------------------------------------------- browser sign-in


@pytest.fixture
def url_catcher(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A `$BROWSER` that hands the sign-in URL over (through a file) to the test's browser."""
    handed = tmp_path / "handed-url.txt"
    launcher = tmp_path / "hand-over"
    launcher.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        printf '%s' "$1" > "{handed}.part" && mv "{handed}.part" "{handed}"
    """))
    launcher.chmod(0o755)
    env = {**os.environ, "BROWSER": str(launcher)}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return handed, env


def wait_for_file(path: Path, program: Program) -> str:
    while not path.exists():
        assert program.proc.poll() is None, "".join(program.lines)
        time.sleep(0.05)
    return path.read_text()


@pytest.fixture
def web_profile(emu: Emulator, profiles: Profiles) -> str:
    app = emu.register_app(public=True, roles=())
    authorize_controls(emu).interactive = True
    return write_profile(profiles, emu, "web", "authorization_code", client_id=app.client_id,
                         cache="file")


def test_a_browser_sign_in_goes_through_the_authorize_page(
        page: Page, emu: Emulator, web_profile: str,
        url_catcher: tuple[Path, dict[str, str]]) -> None:
    handed, env = url_catcher
    someone = new_person(emu)
    login = Program(authlayer("login", web_profile), env)
    try:
        page.tab.goto(wait_for_file(handed, login))
        page.shot("authorize-1-sign-in")
        text = page.text()
        assert "Sign in to" in text
        assert emu.api_url in text  # what the app asks for
        assert page.tab.locator(f'#people option[value="{someone}"]').count() == 1
        assert page.autofocused("account") == "account"
        page.tab.keyboard.press("Control+A")
        page.tab.keyboard.type("bob@contoso.onmicrosoft.com")
        page.submit_with_enter()  # back to authlayer's own page on localhost
        page.shot("authorize-2-back-at-the-app")
        status, _, said = login.finish()
    finally:
        login.stop()
    assert status == 0, said
    token = run_authlayer("token", web_profile, env=env)
    assert username_in(token.stdout.strip()) == "bob@contoso.onmicrosoft.com"


def test_cancel_on_the_authorize_page_fails_the_login(
        page: Page, emu: Emulator, web_profile: str,
        url_catcher: tuple[Path, dict[str, str]]) -> None:
    handed, env = url_catcher
    new_person(emu)
    login = Program(authlayer("login", web_profile), env)
    try:
        page.tab.goto(wait_for_file(handed, login))
        with page.tab.expect_navigation():
            page.tab.get_by_role("button", name="Cancel").click()
        status, out, said = login.finish()
    finally:
        login.stop()
    assert status == 1
    assert "access_denied" in said or "declined" in said, said
    assert out == ""


def test_an_authorize_request_the_emulator_cannot_answer_shows_an_error_page(
        page: Page, emu: Emulator) -> None:
    page.tab.goto(f"{emu.url}/{emu.tenant_id}/oauth2/v2.0/authorize?client_id=nobody"
                  "&response_type=code&redirect_uri=http://localhost:1/&scope=openid")
    page.shot("authorize-3-error")
    assert "AADSTS700016" in page.text()


# --------------------------------------------------------------------------- without a browser


def _form_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'name="(\w+)" value="([^"]*)"', html))


def test_a_page_nonce_works_once(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.url, trust_env=False) as client:
        first = client.get("/devicelogin")
        nonce = _form_fields(first.text)["nonce"]
        sent = client.post("/devicelogin", data={"nonce": nonce, "user_code": "NOPE23456"})
        assert "That code is not right" in sent.text
        again = client.post("/devicelogin", data={"nonce": nonce, "user_code": "NOPE23456"})
        assert again.status_code == 400
        assert "open too long or was sent twice" in again.text


def test_a_form_posted_from_another_site_is_refused(emu: Emulator) -> None:
    person = new_person(emu)
    app = emu.register_app(public=True)
    with httpx.Client(base_url=emu.url, trust_env=False) as client:
        client.post(f"/{emu.tenant_id}/oauth2/v2.0/devicecode",
                    data={"client_id": app.client_id, "scope": emu.api_scope})
        code = device_codes(emu).latest()
        assert code is not None
        step = client.post("/devicelogin", data={
            "nonce": _form_fields(client.get("/devicelogin").text)["nonce"],
            "user_code": code.user_code})
        nonce = _form_fields(step.text)["nonce"]
        forged = client.post("/devicelogin", headers={"Origin": "http://evil.example"},
                             data={"nonce": nonce, "username": person, "action": "approve"})
    assert forged.status_code == 403
    assert device_codes(emu).latest() == code  # still waiting for the person


def test_pages_load_nothing_from_elsewhere_and_cannot_be_framed(emu: Emulator) -> None:
    authorize_controls(emu).interactive = True
    app = emu.register_app(public=True)
    with httpx.Client(base_url=emu.url, trust_env=False) as client:
        pages = [client.get("/devicelogin"),
                 client.get(f"/{emu.tenant_id}/oauth2/v2.0/authorize", params={
                     "client_id": app.client_id, "response_type": "code", "scope": "openid",
                     "redirect_uri": "http://localhost:1/"})]
    for answer in pages:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert re.findall(r'\b(?:src|href)=', answer.text) == []
        assert "<script" not in answer.text


def test_auto_approve_signs_the_user_in_without_a_page(tmp_path: Path) -> None:
    with cli_emulator("--user", "dave", "--auto-approve") as profile:
        config = tmp_path / "profiles.toml"
        config.write_text(profile)
        env = {**os.environ, "AUTHLAYER_CONFIG": str(config)}
        login = run_authlayer("login", "emulator-me", env=env)
        assert login.returncode == 0, login.stderr
        token = run_authlayer("token", "emulator-me", env=env)
    assert username_in(token.stdout.strip()) == "dave@contoso.onmicrosoft.com"


def test_auto_approve_needs_a_user() -> None:
    done = run_authlayer("emulator", "--auto-approve")
    assert done.returncode == 2
    assert done.stderr == ("authlayer emulator: --auto-approve needs --user NAME: the person who "
                           "signs in\n")


def test_a_user_name_with_spaces_is_refused() -> None:
    done = run_authlayer("emulator", "--user", "alice smith")
    assert done.returncode == 2
    assert done.stderr == ("authlayer emulator: --user needs a user name like "
                           "alice@contoso.onmicrosoft.com, not 'alice smith'\n")
