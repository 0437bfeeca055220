"""The developer tools' sign-ins: flow ``azd`` (``azd auth token``) and flow
``azure_powershell`` (``Get-AzAccessToken`` in ``pwsh``), played by stand-in scripts on PATH,
end to end with the emulator's protected API; the process rules (PATH only, no shell, a system
folder, a timeout that stops the tree); their errors; the ``azure_config_dir`` key of
``azure_cli``; and whether each tool is available here."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import pytest

from authlayer import ConfigError, EntraAuth, TokenError, get_token
from authlayer import config as configlib
from authlayer import jwt as jwtlib
from authlayer.emulator import Emulator
from authlayer.flows import azd, azure_cli, azure_powershell

from .conftest import Client, Profiles
from .process_helpers import alive
from .test_azure_cli import Account, CliFolder, _sign_in, subscription

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the stand-ins are POSIX scripts")

_STAND_IN = """\
#!{python}
import base64, json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
name = os.path.basename(__file__)
call = {{"argv": sys.argv[1:], "cwd": os.getcwd(),
         "env": {{k: os.environ.get(k) for k in ("NO_COLOR", "AZURE_CONFIG_DIR")}}}}
if "-EncodedCommand" in sys.argv:
    encoded = sys.argv[sys.argv.index("-EncodedCommand") + 1]
    call["script"] = base64.b64decode(encoded).decode("utf-16-le")
with open(os.path.join(here, name + ".call.json"), "w") as f:
    json.dump(call, f)
def part(suffix, default=""):
    path = os.path.join(here, name + suffix)
    return open(path).read() if os.path.exists(path) else default
sys.stdout.write(part(".stdout"))
sys.stderr.write(part(".stderr"))
sys.exit(int(part(".status", "0")))
"""


class StandIn:
    """A program on PATH that prints what the test says and records how it was run."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / name
        script.write_text(_STAND_IN.format(python=sys.executable))
        script.chmod(0o755)

    def says(self, stdout: str = "", stderr: str = "", status: int = 0) -> None:
        for suffix, text in ((".stdout", stdout), (".stderr", stderr), (".status", str(status))):
            (self.folder / (self.name + suffix)).write_text(text)

    @property
    def call(self) -> dict[str, Any]:
        return dict(json.loads((self.folder / f"{self.name}.call.json").read_text()))

    @property
    def ran(self) -> bool:
        return (self.folder / f"{self.name}.call.json").exists()


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def _profile(profiles: Profiles, flow: str, scope: str, extra: str = "") -> str:
    profiles.write(f"""
        [profiles.tool]
        flow = "{flow}"
        scope = "{scope}"
        timeout = 10
        {extra}
    """)
    return "tool"


def _rfc3339(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _claims(token: str) -> dict[str, Any]:
    return jwtlib.decode(token)[1]


# ------------------------------------------------------------------ azd


@pytest.fixture
def fake_azd(bin_dir: Path) -> StandIn:
    return StandIn(bin_dir, "azd")


def test_azd_token_reaches_the_protected_api(emu: Emulator, fake_azd: StandIn,
                                             profiles: Profiles, client: Client,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    token = emu.issue_token(tenant=emu.tenant_id)
    expires = int(_claims(token)["exp"])
    fake_azd.says(json.dumps({"token": token, "expiresOn": _rfc3339(expires)}))
    monkeypatch.chdir(tmp_path)
    name = _profile(profiles, "azd", emu.api_scope, f'tenant = "{emu.tenant_id}"')
    answer = client.get(f"{emu.api_url}/x", EntraAuth(name))
    assert answer.status == 200
    call = fake_azd.call
    assert call["argv"] == ["auth", "token", "--output", "json", "--no-prompt",
                            "--scope", emu.api_scope, "--tenant-id", emu.tenant_id]
    assert call["cwd"] == "/"  # a system folder, never the caller's
    assert call["env"]["NO_COLOR"] == "true"
    assert get_token(name).expires_on == expires
    assert emu.count("token") == 0


@pytest.mark.parametrize(("written", "offset"), [
    ("2026-01-09T06:39:00Z", 0), ("2026-01-09T06:39:00.123456789Z", 0),
    ("2026-01-09T08:39:00+02:00", 0), ("2026-01-09T01:39:00-05:00", 0)])
def test_azd_expiry_is_read_as_rfc_3339_never_local_time(written: str, offset: int) -> None:
    expected = int(dt.datetime(2026, 1, 9, 6, 39, tzinfo=dt.timezone.utc).timestamp())
    assert azd._expiry(written) == expected + offset


def test_azd_several_scopes_each_get_their_flag(emu: Emulator, fake_azd: StandIn,
                                                profiles: Profiles) -> None:
    fake_azd.says(json.dumps({"token": "eyJ0eXAi.eyJ4Ijox.c2ln",
                              "expiresOn": _rfc3339(int(time.time()) + 900)}))
    profiles.write("""
        [profiles.tool]
        flow = "azd"
        scope = ["https://graph.microsoft.com/User.Read", "offline_access"]
    """)
    assert get_token("tool").token == "eyJ0eXAi.eyJ4Ijox.c2ln"
    assert fake_azd.call["argv"][5:] == ["--scope", "https://graph.microsoft.com/User.Read",
                                         "--scope", "offline_access"]


def test_azd_not_signed_in_says_to_run_azd_auth_login(emu: Emulator, fake_azd: StandIn,
                                                      profiles: Profiles) -> None:
    fake_azd.says(stderr=json.dumps({"error": "ERROR: fetching token: not logged in, run "
                                              "`azd auth login` to login"}) + "\n", status=1)
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, "azd", emu.api_scope, f'tenant = "{emu.tenant_id}"'))
    assert info.value.error == "azd_not_signed_in"
    assert f"azd auth login --tenant-id {emu.tenant_id}" in str(info.value)


def test_azd_failure_shows_what_azd_said_without_tokens(emu: Emulator, fake_azd: StandIn,
                                                        profiles: Profiles) -> None:
    leaked = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"
    fake_azd.says(stderr=json.dumps({"type": "consoleMessage", "data": {
        "message": f'AADSTS50076: MFA required. "token": "{leaked}"'}}) + "\n", status=1)
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, "azd", emu.api_scope))
    message = str(info.value)
    assert "AADSTS50076: MFA required" in message
    assert "exit status 1" in message
    assert leaked not in message


def test_azd_too_old_for_claims_says_to_update(emu: Emulator, fake_azd: StandIn,
                                               profiles: Profiles) -> None:
    from authlayer._http import run_sync
    from authlayer.flows import FlowContext

    fake_azd.says(stderr="Error: unknown flag: --claims\n", status=1)
    profile = configlib.load_profile(_profile(profiles, "azd", emu.api_scope))
    claims = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'
    with pytest.raises(TokenError) as info:
        run_sync(azd.acquire(FlowContext(profile, claims=claims)))
    assert "1.18.1" in str(info.value)
    argv = fake_azd.call["argv"]
    assert base64.b64decode(argv[argv.index("--claims") + 1]).decode() == claims


def test_azd_printing_garbage_is_a_token_error(emu: Emulator, fake_azd: StandIn,
                                               profiles: Profiles) -> None:
    fake_azd.says("<html>")
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, "azd", emu.api_scope))
    assert info.value.error == "malformed_response"


def test_azd_answer_without_a_readable_expiry(emu: Emulator, fake_azd: StandIn,
                                              profiles: Profiles) -> None:
    fake_azd.says(json.dumps({"token": "eyJ0eXAi.eyJ4Ijox.c2ln", "expiresOn": "tomorrow"}))
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, "azd", emu.api_scope))
    assert info.value.error == "malformed_response"


def test_azd_not_on_path(emu: Emulator, bin_dir: Path, profiles: Profiles) -> None:
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, "azd", emu.api_scope))
    assert "azd (the Azure Developer CLI) is not on PATH" in str(info.value)
    assert "azd auth login" in str(info.value)


def test_azd_is_not_looked_for_in_the_current_folder(emu: Emulator, fake_azd: StandIn,
                                                     profiles: Profiles,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(fake_azd.folder)
    monkeypatch.setenv("PATH", os.pathsep.join([".", "", "bin"]))
    with pytest.raises(TokenError):
        get_token(_profile(profiles, "azd", emu.api_scope))
    assert not fake_azd.ran
    assert azd.available(configlib.load_profile("tool")) is not None


@pytest.mark.parametrize("scope", ["https://api.example.com/a&b/.default", "-x",
                                   'https://api.example.com/"x"'])
def test_azd_arguments_are_checked_before_running_it(emu: Emulator, fake_azd: StandIn,
                                                     profiles: Profiles, scope: str) -> None:
    profiles.write(f"""
        [profiles.tool]
        flow = "azd"
        scope = '{scope}'
    """)
    with pytest.raises(ConfigError) as info:
        get_token("tool")
    assert info.value.key == "scope"
    assert not fake_azd.ran


def test_azd_does_not_take_an_authority(profiles: Profiles) -> None:
    profiles.write("""
        [profiles.tool]
        flow = "azd"
        scope = "https://management.azure.com/.default"
        authority = "https://login.microsoftonline.us"
    """)
    with pytest.raises(ConfigError) as info:
        configlib.load_profile("tool")
    assert info.value.key == "authority"


def _slow(folder: Path, name: str, pid_file: Path) -> None:
    child = ("import os, sys, time; p = sys.argv[1]; open(p + '.tmp', 'w').write(str(os.getpid()));"
             " os.rename(p + '.tmp', p); time.sleep(600)")
    script = folder / name
    # Python under bash, not exec'ed: killing bash alone would leave it running.
    script.write_text(f"""#!/bin/bash
"{sys.executable}" -c "{child}" "{pid_file}" </dev/null >/dev/null 2>&1
echo '{{}}'
""")
    script.chmod(0o755)


@pytest.mark.parametrize(("flow", "program"), [("azd", "azd"), ("azure_powershell", "pwsh")])
def test_timeout_stops_the_tools_whole_process_tree(emu: Emulator, bin_dir: Path,
                                                    tmp_path: Path, profiles: Profiles,
                                                    flow: str, program: str) -> None:
    pid_file = tmp_path / "child.pid"
    _slow(bin_dir, program, pid_file)
    _profile(profiles, flow, emu.api_scope)
    profiles.write(profiles.path.read_text().replace("timeout = 10", "timeout = 1"))
    with pytest.raises(TokenError) as info:
        get_token("tool")
    assert "did not finish within timeout = 1 s" in str(info.value)
    pid = int(pid_file.read_text())
    try:
        deadline = time.monotonic() + 30  # the kill is sent; only its delivery is awaited
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), f"{program}'s child outlived the timeout"
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ Azure PowerShell


@pytest.fixture
def fake_pwsh(bin_dir: Path) -> StandIn:
    return StandIn(bin_dir, "pwsh")


def test_powershell_token_reaches_the_protected_api(emu: Emulator, fake_pwsh: StandIn,
                                                    profiles: Profiles, client: Client) -> None:
    token = emu.issue_token(tenant=emu.tenant_id)
    expires = int(_claims(token)["exp"])
    fake_pwsh.says(f"WARNING: something\n\nazsdk%{token}%{expires}\n\n")
    name = _profile(profiles, "azure_powershell", emu.api_scope, f'tenant = "{emu.tenant_id}"')
    answer = client.get(f"{emu.api_url}/x", EntraAuth(name))
    assert answer.status == 200
    call = fake_pwsh.call
    assert call["argv"][:3] == ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
    assert call["cwd"] == "/"
    script = call["script"]
    assert f"ResourceUrl = '{emu.api_resource}'" in script
    assert f"$params['TenantId'] = '{emu.tenant_id}'" in script
    assert "Import-Module Az.Accounts -MinimumVersion 2.2.0" in script
    assert get_token(name).expires_on == expires
    assert emu.count("token") == 0


def test_powershell_not_signed_in_says_to_run_connect_azaccount(
        emu: Emulator, fake_pwsh: StandIn, profiles: Profiles) -> None:
    fake_pwsh.says(stderr="Get-AzAccessToken: Run Connect-AzAccount to login.\n", status=1)
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, "azure_powershell", emu.api_scope,
                           f'tenant = "{emu.tenant_id}"'))
    assert info.value.error == "powershell_not_signed_in"
    assert f"Connect-AzAccount -Tenant {emu.tenant_id}" in str(info.value)


def test_powershell_without_az_accounts_says_to_install_it(emu: Emulator, fake_pwsh: StandIn,
                                                           profiles: Profiles) -> None:
    fake_pwsh.says("NO_AZ_ACCOUNT_MODULE\n")
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, "azure_powershell", emu.api_scope))
    assert "Install-Module Az.Accounts" in str(info.value)


def test_powershell_execution_policy_says_so(emu: Emulator, fake_pwsh: StandIn,
                                             profiles: Profiles) -> None:
    fake_pwsh.says(stderr="AuthorizationManager check failed.\n", status=1)
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, "azure_powershell", emu.api_scope))
    assert "Set-ExecutionPolicy" in str(info.value)


def test_powershell_other_failure_shows_its_first_line(emu: Emulator, fake_pwsh: StandIn,
                                                       profiles: Profiles) -> None:
    fake_pwsh.says(stderr="Get-AzAccessToken: something broke\nat line 3\n", status=1)
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, "azure_powershell", emu.api_scope))
    assert "exit status 1: Get-AzAccessToken: something broke" in str(info.value)


@pytest.mark.parametrize("stdout", ["", "azsdk%", "azsdk%abc", "azsdk%abc%soon", "{}"])
def test_powershell_output_without_a_token_is_a_token_error(
        emu: Emulator, fake_pwsh: StandIn, profiles: Profiles, stdout: str) -> None:
    fake_pwsh.says(stdout)
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, "azure_powershell", emu.api_scope))
    assert info.value.error == "malformed_response"


def test_powershell_one_resource_at_a_time(emu: Emulator, fake_pwsh: StandIn,
                                           profiles: Profiles) -> None:
    profiles.write("""
        [profiles.tool]
        flow = "azure_powershell"
        scope = ["https://graph.microsoft.com/.default", "https://vault.azure.net/.default"]
    """)
    with pytest.raises(ConfigError) as info:
        get_token("tool")
    assert info.value.key == "scope"
    assert not fake_pwsh.ran


def test_powershell_resource_cannot_break_out_of_the_script(emu: Emulator, fake_pwsh: StandIn,
                                                            profiles: Profiles) -> None:
    profiles.write("""
        [profiles.tool]
        flow = "azure_powershell"
        scope = "https://x.example/';Remove-Item~"
    """)
    with pytest.raises(ConfigError):
        get_token("tool")
    assert not fake_pwsh.ran


def test_powershell_claims_challenge_says_what_to_run(emu: Emulator, fake_pwsh: StandIn,
                                                      profiles: Profiles) -> None:
    from authlayer._http import run_sync
    from authlayer.flows import FlowContext

    profile = configlib.load_profile(_profile(profiles, "azure_powershell", emu.api_scope))
    with pytest.raises(TokenError) as info:
        run_sync(azure_powershell.acquire(FlowContext(profile, claims='{"a":1}')))
    assert "Connect-AzAccount -ClaimsChallenge" in str(info.value)
    assert not fake_pwsh.ran


def test_powershell_not_on_path(emu: Emulator, bin_dir: Path, profiles: Profiles) -> None:
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, "azure_powershell", emu.api_scope))
    assert "PowerShell (pwsh) is not on PATH" in str(info.value)


# ------------------------------------------------------------------ available here?


@pytest.mark.parametrize(("flow", "program"), [("azd", "azd"), ("azure_powershell", "pwsh")])
def test_tool_is_available_when_on_path(bin_dir: Path, profiles: Profiles, flow: str,
                                        program: str) -> None:
    from authlayer import registry

    profile = configlib.load_profile(_profile(profiles, flow,
                                              "https://management.azure.com/.default"))
    spec = registry.flow(flow)
    assert spec.available is not None
    reason = spec.available(profile)
    assert reason is not None
    assert "not on PATH" in reason
    StandIn(bin_dir, program)
    assert spec.available(profile) is None
    assert not (bin_dir / f"{program}.call.json").exists()  # deciding never runs it


# ------------------------------------------------------------------ azure_cli: azure_config_dir


def _cli_profile(emu: Emulator, profiles: Profiles, folder: Optional[str]) -> str:
    extra = f'azure_config_dir = "{folder}"' if folder is not None else ""
    profiles.write(f"""
        [profiles.cli]
        flow = "azure_cli"
        authority = "{emu.url}"
        scope = "{emu.api_scope}"
        timeout = 5
        {extra}
    """)
    return "cli"


def test_azure_config_dir_picks_the_clis_folder(emu: Emulator, tmp_path: Path, bin_dir: Path,
                                                profiles: Profiles, client: Client,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    alice = _sign_in(emu, f"alice-{uuid.uuid4().hex[:6]}@contoso.onmicrosoft.com")
    chosen = CliFolder(tmp_path / "work-azure", "127.0.0.1")
    chosen.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "empty"))  # the profile's key wins
    answer = client.get(f"{emu.api_url}/x", EntraAuth(_cli_profile(emu, profiles,
                                                                    str(chosen.path))))
    assert answer.status == 200
    assert answer.json()["claims"]["preferred_username"] == alice.username


def test_azure_config_dir_is_relative_to_the_profiles_file(emu: Emulator, profiles: Profiles,
                                                           tmp_path: Path) -> None:
    _cli_profile(emu, profiles, "~/x/../azure")
    assert configlib.load_profile("cli").azure_config_dir == os.path.normpath(
        os.path.expanduser("~/azure"))
    _cli_profile(emu, profiles, "azure-here")
    assert configlib.load_profile("cli").azure_config_dir == str(profiles.path.parent /
                                                                 "azure-here")


def test_azure_config_dir_reaches_az_too(emu: Emulator, tmp_path: Path, bin_dir: Path,
                                         profiles: Profiles) -> None:
    az = StandIn(bin_dir, "az")
    az.says(json.dumps({"accessToken": "eyJ0eXAi.eyJ4Ijox.c2ln",
                        "expires_on": int(time.time()) + 900}))
    folder = tmp_path / "ci-azure"
    folder.mkdir()
    assert get_token(_cli_profile(emu, profiles, str(folder))).token == "eyJ0eXAi.eyJ4Ijox.c2ln"
    assert az.call["env"]["AZURE_CONFIG_DIR"] == str(folder)


@pytest.mark.parametrize("value", ["", 3, ["a"]])
def test_bad_azure_config_dir_is_a_config_error(emu: Emulator, profiles: Profiles,
                                                value: Any) -> None:
    profiles.write(f"""
        [profiles.cli]
        flow = "azure_cli"
        scope = "{emu.api_scope}"
        azure_config_dir = {json.dumps(value)}
    """)
    with pytest.raises(ConfigError) as info:
        configlib.load_profile("cli")
    assert info.value.key == "azure_config_dir"


def test_azure_config_dir_applies_to_azure_cli_only(profiles: Profiles) -> None:
    profiles.write("""
        [profiles.x]
        flow = "client_credentials"
        tenant = "contoso.onmicrosoft.com"
        client_id = "x"
        client_secret = "s"
        scope = "https://graph.microsoft.com/.default"
        azure_config_dir = "/tmp"
    """)
    with pytest.raises(ConfigError) as info:
        configlib.load_profile("x")
    assert "azure_cli" in str(info.value)


def test_azure_cli_availability(emu: Emulator, tmp_path: Path, bin_dir: Path,
                                profiles: Profiles) -> None:
    folder = CliFolder(tmp_path / "az-folder", "127.0.0.1")
    profile = configlib.load_profile(_cli_profile(emu, profiles, str(folder.path)))
    reason = azure_cli.available(profile)
    assert reason is not None
    assert "does not exist" in reason
    assert "az is not on PATH" in reason
    StandIn(bin_dir, "az")
    reason = azure_cli.available(profile)
    assert reason is not None
    assert "run az login" in reason  # az is there, but nothing says it is signed in
    alice = _sign_in(emu, f"alice-{uuid.uuid4().hex[:6]}@contoso.onmicrosoft.com")
    folder.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    assert azure_cli.available(profile) is None
    (bin_dir / "az").unlink()
    assert azure_cli.available(profile) is None  # the files alone are enough
    assert not (bin_dir / "az.call.json").exists()


def test_azure_cli_with_an_encrypted_cache_is_available_when_az_is(
        emu: Emulator, tmp_path: Path, bin_dir: Path, profiles: Profiles) -> None:
    folder = CliFolder(tmp_path / "az-folder", "127.0.0.1")
    account = Account("sp", "", emu.tenant_id)
    folder.write([account], [subscription(emu.tenant_id, "sp", default=True)])
    (folder.path / "msal_token_cache.json").unlink()
    (folder.path / "msal_token_cache.bin").write_bytes(os.urandom(32))
    profile = configlib.load_profile(_cli_profile(emu, profiles, str(folder.path)))
    assert azure_cli.available(profile) is not None
    StandIn(bin_dir, "az")
    assert azure_cli.available(profile) is None
