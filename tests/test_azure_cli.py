"""The Azure CLI's sign-in end to end against the emulator: the CLI's files in the layout it
writes, choosing the account and tenant, redeeming its family refresh token across tenants, the
errors that say to run ``az login``, leaving the CLI's files alone, and falling back to running
``az`` (a stand-in script on PATH)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from authlayer import ConfigError, EntraAuth, TokenError, get_token
from authlayer import config as configlib
from authlayer import jwt as jwtlib
from authlayer.emulator import Emulator
from authlayer.emulator.users import expire_refresh_token, mint_refresh_token
from authlayer.flows import azure_cli
from authlayer.provider import PROVIDER

from .conftest import Client, Profiles
from .process_helpers import alive as _alive

CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
# What `az login` asks for, as MSAL keeps it: sorted scopes, space-separated.
ARM_TARGET = ("https://management.core.windows.net//.default "
              "https://management.core.windows.net//user_impersonation")


@dataclass
class Account:
    username: str
    refresh_token: str = field(repr=False)
    home_tenant: str
    oid: str = field(default_factory=lambda: str(uuid.uuid4()))
    realms: tuple[str, ...] = ()

    @property
    def home_account_id(self) -> str:
        return f"{self.oid}.{self.home_tenant}"


def _fake_jwt(claims: dict[str, Any]) -> str:
    head = jwtlib.b64url_encode(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = jwtlib.b64url_encode(json.dumps(claims).encode())
    return f"{head}.{body}.c2ln"


def msal_cache(accounts: list[Account], environment: str) -> dict[str, dict[str, Any]]:
    """A token cache as MSAL Python (and so the Azure CLI) serialises it."""
    now = int(time.time())
    cache: dict[str, dict[str, Any]] = {
        "AccessToken": {}, "RefreshToken": {}, "IdToken": {}, "Account": {}, "AppMetadata": {},
    }
    for acct in accounts:
        hid = acct.home_account_id
        rt_key = f"{hid}-{environment}-refreshtoken-{CLI}--{ARM_TARGET}".lower()
        cache["RefreshToken"][rt_key] = {
            "credential_type": "RefreshToken", "secret": acct.refresh_token,
            "home_account_id": hid, "environment": environment, "client_id": CLI,
            "target": ARM_TARGET, "last_modification_time": str(now), "family_id": "1",
        }
        for realm in acct.realms or (acct.home_tenant,):
            cache["Account"][f"{hid}-{environment}-{realm}".lower()] = {
                "home_account_id": hid, "environment": environment, "realm": realm,
                "local_account_id": acct.oid, "username": acct.username,
                "authority_type": "MSSTS",
            }
            cache["IdToken"][f"{hid}-{environment}-idtoken-{CLI}-{realm}-".lower()] = {
                "credential_type": "IdToken", "home_account_id": hid,
                "environment": environment, "realm": realm, "client_id": CLI,
                "secret": _fake_jwt({"oid": acct.oid, "tid": realm,
                                     "preferred_username": acct.username}),
            }
            at_key = f"{hid}-{environment}-accesstoken-{CLI}-{realm}-{ARM_TARGET}".lower()
            cache["AccessToken"][at_key] = {
                "credential_type": "AccessToken", "secret": _fake_jwt({"aud": "arm"}),
                "home_account_id": hid, "environment": environment, "client_id": CLI,
                "target": ARM_TARGET, "realm": realm, "token_type": "Bearer",
                "cached_at": str(now), "expires_on": str(now + 3600),
                "extended_expires_on": str(now + 3600),
            }
    cache["AppMetadata"][f"appmetadata-{environment}-{CLI}"] = {
        "client_id": CLI, "environment": environment, "family_id": "1",
    }
    return cache


def subscription(tenant: str, username: str, *, default: bool = False,
                 user_type: str = "user") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()), "name": f"sub of {username}", "state": "Enabled",
        "user": {"name": username, "type": user_type}, "isDefault": default,
        "tenantId": tenant, "environmentName": "AzureCloud", "homeTenantId": tenant,
        "tenantDefaultDomain": "contoso.onmicrosoft.com", "tenantDisplayName": "Contoso",
        "managedByTenants": [],
    }


class CliFolder:
    """An ``~/.azure`` folder written the way the Azure CLI writes it."""

    def __init__(self, path: Path, environment: str) -> None:
        self.path = path
        self.environment = environment
        path.mkdir(parents=True, exist_ok=True)

    def write(self, accounts: list[Account], subscriptions: list[dict[str, Any]]) -> None:
        cache = msal_cache(accounts, self.environment)
        (self.path / "msal_token_cache.json").write_text(json.dumps(cache, indent=4))
        profile = {"installationId": str(uuid.uuid4()), "subscriptions": subscriptions}
        # The CLI writes azureProfile.json with a byte order mark.
        (self.path / "azureProfile.json").write_text(json.dumps(profile), encoding="utf-8-sig")

    def snapshot(self) -> dict[str, tuple[bytes, int]]:
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in self.path.iterdir()}


@pytest.fixture
def cli_dir(emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliFolder:
    folder = CliFolder(tmp_path / "azure", "127.0.0.1")  # MSAL keeps the host, not the port
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(folder.path))
    monkeypatch.setenv("PATH", str(tmp_path / "no-az-here"))  # `az` is never run by accident
    return folder


def _sign_in(emu: Emulator, username: str, tenant: Optional[str] = None) -> Account:
    home = tenant or emu.tenant_id
    rt = mint_refresh_token(emu, client_id=CLI, username=username, tenant=home)
    user = emu.state.find_user(home, username)
    assert user is not None
    return Account(username, rt, home, oid=user.object_id)


@pytest.fixture
def alice(emu: Emulator) -> Account:
    return _sign_in(emu, f"alice-{uuid.uuid4().hex[:6]}@contoso.onmicrosoft.com")


def _profile(emu: Emulator, profiles: Profiles, extra: str = "") -> str:
    profiles.write(f"""
        [profiles.cli]
        flow = "azure_cli"
        authority = "{emu.url}"
        scope = "{emu.api_scope}"
        timeout = 5
        {extra}
    """)
    return "cli"


def _claims(token: str) -> dict[str, Any]:
    return jwtlib.decode(token)[1]


# ------------------------------------------------------------------ the CLI's token cache


def test_default_subscription_user_reaches_the_api(emu: Emulator, cli_dir: CliFolder,
                                                   alice: Account, profiles: Profiles,
                                                   client: Client) -> None:
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    answer = client.get(f"{emu.api_url}/x", EntraAuth(_profile(emu, profiles)))
    assert answer.status == 200
    claims = answer.json()["claims"]
    assert claims["preferred_username"] == alice.username
    assert claims["tid"] == emu.tenant_id
    (record,) = [r for r in emu.requests if r.endpoint == "token"]
    assert record.path == f"/{emu.tenant_id}/oauth2/v2.0/token"
    assert record.form == {"grant_type": "refresh_token", "client_id": CLI,
                           "refresh_token": alice.refresh_token, "scope": emu.api_scope}


def test_username_picks_the_account(emu: Emulator, cli_dir: CliFolder, alice: Account,
                                    profiles: Profiles) -> None:
    bob = _sign_in(emu, f"bob-{uuid.uuid4().hex[:6]}@contoso.onmicrosoft.com")
    cli_dir.write([alice, bob], [subscription(emu.tenant_id, alice.username, default=True),
                                 subscription(emu.tenant_id, bob.username)])
    token = get_token(_profile(emu, profiles, f'username = "{bob.username.upper()}"'))
    assert _claims(token.token)["preferred_username"] == bob.username
    assert emu.requests[-1].form["refresh_token"] == bob.refresh_token


def test_default_subscription_chooses_the_tenant(emu: Emulator, cli_dir: CliFolder,
                                                 alice: Account, profiles: Profiles) -> None:
    other = emu.add_tenant(f"tailspin{uuid.uuid4().hex[:6]}.onmicrosoft.com")
    emu.add_user(alice.username, tenant=other)  # a guest there
    alice.realms = (emu.tenant_id, other)
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username),
                            subscription(other, alice.username, default=True)])
    token = get_token(_profile(emu, profiles))
    assert _claims(token.token)["tid"] == other


def test_profile_tenant_redeems_the_family_token_across_tenants(
        emu: Emulator, cli_dir: CliFolder, alice: Account, profiles: Profiles,
        client: Client) -> None:
    domain = f"fabrikam{uuid.uuid4().hex[:6]}.onmicrosoft.com"
    other = emu.add_tenant(domain)
    emu.add_user(alice.username, tenant=other)
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    answer = client.get(f"{emu.api_url}/x", EntraAuth(_profile(emu, profiles),
                                                       tenant=domain))
    assert answer.status == 200
    assert answer.json()["claims"]["tid"] == other
    assert emu.requests[0].path == f"/{domain}/oauth2/v2.0/token"


def test_tenant_the_account_is_not_in(emu: Emulator, cli_dir: CliFolder, alice: Account,
                                      profiles: Profiles) -> None:
    domain = f"northwind{uuid.uuid4().hex[:6]}.onmicrosoft.com"
    emu.add_tenant(domain)
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles, f'tenant = "{domain}"'))
    assert info.value.error == "invalid_grant"
    assert f"az login --tenant {domain}" in str(info.value)


def test_expired_refresh_token_says_to_sign_in_again(emu: Emulator, cli_dir: CliFolder,
                                                     alice: Account, profiles: Profiles) -> None:
    expire_refresh_token(emu, alice.refresh_token)
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    err = info.value
    assert err.error_codes == (700082,)
    assert "unused for 90 days" in str(err)
    assert f"az login --tenant {emu.tenant_id}" in str(err)
    assert alice.refresh_token not in str(err)


def test_no_account_says_to_run_az_login(emu: Emulator, cli_dir: CliFolder,
                                         profiles: Profiles) -> None:
    cli_dir.write([], [])
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert "az login" in str(info.value)
    assert emu.count("any") == 0


def test_unknown_username_says_to_run_az_login(emu: Emulator, cli_dir: CliFolder,
                                               alice: Account, profiles: Profiles) -> None:
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles, 'username = "carol@contoso.onmicrosoft.com"'))
    assert "not signed in as 'carol@contoso.onmicrosoft.com'" in str(info.value)
    assert "az login" in str(info.value)


def test_sign_in_at_another_cloud_is_not_used(emu: Emulator, tmp_path: Path, alice: Account,
                                              profiles: Profiles,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    folder = CliFolder(tmp_path / "azure", "login.microsoftonline.com")
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(folder.path))
    folder.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert emu.url.split("://", 1)[1] in str(info.value)


def test_the_clis_files_are_left_untouched(emu: Emulator, cli_dir: CliFolder, alice: Account,
                                           profiles: Profiles) -> None:
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    before = cli_dir.snapshot()
    time.sleep(0.01)
    name = _profile(emu, profiles)
    get_token(name)
    get_token(name, force_refresh=True)
    get_token(name, scope="https://graph.microsoft.com/.default")
    assert cli_dir.snapshot() == before


def test_the_refresh_token_is_not_copied_into_our_cache(emu: Emulator, cli_dir: CliFolder,
                                                        alice: Account, profiles: Profiles,
                                                        tmp_path: Path) -> None:
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    get_token(_profile(emu, profiles))
    kept = b"".join(p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert kept  # cache = "file" by default: the access token is kept
    assert alice.refresh_token.encode() not in kept
    assert b'"refresh_token": "' not in kept
    assert b'"refresh_token":"' not in kept


# ------------------------------------------------------------------ falling back to `az`

_AZ = """\
#!{python}
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "argv.json"), "w") as f:
    json.dump(sys.argv[1:], f)
with open(os.path.join(here, "cwd.txt"), "w") as f:
    f.write(os.getcwd())
answer = os.path.join(here, "answer.json")
if not os.path.exists(answer):
    sys.stderr.write("WARNING: something\\nERROR: Please run 'az login' to setup account.\\n")
    sys.exit(1)
with open(answer) as f:
    sys.stdout.write(f.read())
"""


class FakeAz:
    """A stand-in ``az`` on PATH that prints ``answer.json`` and records its arguments."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / "az"
        script.write_text(_AZ.format(python=sys.executable))
        script.chmod(0o755)

    def answer(self, body: dict[str, Any]) -> None:
        (self.folder / "answer.json").write_text(json.dumps(body))

    @property
    def argv(self) -> list[str]:
        return list(json.loads((self.folder / "argv.json").read_text()))


@pytest.fixture
def fake_az(tmp_path: Path, cli_dir: CliFolder, monkeypatch: pytest.MonkeyPatch) -> FakeAz:
    az = FakeAz(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(az.folder))
    return az


@pytest.mark.skipif(os.name == "nt", reason="the stand-in az is a POSIX script")
def test_encrypted_cache_falls_back_to_az(emu: Emulator, cli_dir: CliFolder, fake_az: FakeAz,
                                          profiles: Profiles, client: Client) -> None:
    (cli_dir.path / "msal_token_cache.bin").write_bytes(os.urandom(64))
    token = emu.issue_token(tenant=emu.tenant_id)
    expires = _claims(token)["exp"]
    fake_az.answer({"accessToken": token, "expiresOn": time.strftime(
        "%Y-%m-%d %H:%M:%S.000000", time.localtime(expires)), "expires_on": expires,
        "subscription": str(uuid.uuid4()), "tenant": emu.tenant_id, "tokenType": "Bearer"})
    answer = client.get(f"{emu.api_url}/x", EntraAuth(_profile(emu, profiles,
                                                               f'tenant = "{emu.tenant_id}"')))
    assert answer.status == 200
    assert fake_az.argv == ["account", "get-access-token", "--output", "json",
                            "--resource", emu.api_resource, "--tenant", emu.tenant_id]
    assert emu.count("token") == 0


@pytest.mark.skipif(os.name == "nt", reason="the stand-in az is a POSIX script")
def test_older_az_gives_local_time_only(emu: Emulator, cli_dir: CliFolder, fake_az: FakeAz,
                                        profiles: Profiles) -> None:
    (cli_dir.path / "msal_token_cache.json").write_text("not json: encrypted bytes")
    expires = int(time.time()) + 1800
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expires)) + ".123456"
    fake_az.answer({"accessToken": "eyJ0eXAi.eyJ4Ijox.c2ln", "tokenType": "Bearer",
                    "expiresOn": local})
    token = get_token(_profile(emu, profiles))
    assert token.expires_on == expires
    assert "--tenant" not in fake_az.argv


@pytest.mark.skipif(os.name == "nt", reason="the stand-in az is a POSIX script")
def test_service_principal_sign_in_falls_back_to_az(emu: Emulator, cli_dir: CliFolder,
                                                    fake_az: FakeAz, alice: Account,
                                                    profiles: Profiles) -> None:
    cli_dir.write([alice], [subscription(emu.tenant_id, str(uuid.uuid4()), default=True,
                                         user_type="servicePrincipal")])
    fake_az.answer({"accessToken": "eyJ0eXAi.eyJ4Ijox.c2ln", "expires_on": int(time.time()) + 900})
    assert get_token(_profile(emu, profiles)).token == "eyJ0eXAi.eyJ4Ijox.c2ln"
    assert emu.count("any") == 0


@pytest.mark.skipif(os.name == "nt", reason="the stand-in az is a POSIX script")
def test_failing_az_is_a_clear_error(emu: Emulator, cli_dir: CliFolder, fake_az: FakeAz,
                                     profiles: Profiles) -> None:
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles, f'tenant = "{emu.tenant_id}"'))
    message = str(info.value)
    assert "exit status 1" in message
    assert "Please run 'az login'" in message
    assert f"az login --tenant {emu.tenant_id}" in message


@pytest.mark.skipif(os.name == "nt", reason="the stand-in az is a POSIX script")
def test_az_printing_garbage_is_a_token_error(emu: Emulator, cli_dir: CliFolder,
                                              fake_az: FakeAz, profiles: Profiles) -> None:
    (fake_az.folder / "answer.json").write_text("<html>")
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert info.value.error == "malformed_response"


def test_no_cache_and_no_az_says_what_to_do(emu: Emulator, cli_dir: CliFolder,
                                            profiles: Profiles) -> None:
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles, f'tenant = "{emu.tenant_id}"'))
    message = str(info.value)
    assert "msal_token_cache.json does not exist" in message
    assert "az command is not on PATH" in message
    assert f"az login --tenant {emu.tenant_id}" in message


@pytest.mark.skipif(os.name == "nt", reason="the stand-in az is a POSIX script")
def test_az_runs_from_a_system_folder(emu: Emulator, cli_dir: CliFolder, fake_az: FakeAz,
                                      profiles: Profiles, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    fake_az.answer({"accessToken": "eyJ0eXAi.eyJ4Ijox.c2ln", "expires_on": int(time.time()) + 900})
    get_token(_profile(emu, profiles))
    assert (fake_az.folder / "cwd.txt").read_text() == "/"


@pytest.mark.skipif(os.name == "nt", reason="the stand-in az is a POSIX script")
def test_az_is_not_looked_for_in_the_current_folder(emu: Emulator, cli_dir: CliFolder,
                                                    fake_az: FakeAz, profiles: Profiles,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fake_az.answer({"accessToken": "eyJ0eXAi.eyJ4Ijox.c2ln", "expires_on": int(time.time()) + 900})
    monkeypatch.chdir(fake_az.folder)
    monkeypatch.setenv("PATH", os.pathsep.join([".", "", "bin"]))
    assert azure_cli.find_az() is None
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert "az command is not on PATH" in str(info.value)
    assert not (fake_az.folder / "argv.json").exists()


@pytest.mark.parametrize("scope", ["https://api.example.com/a&b/.default",
                                   "https://api.example.com/100%/.default",
                                   'https://api.example.com/"x"/.default',
                                   "https://api.example.com/a^b"])
def test_az_arguments_are_checked(emu: Emulator, cli_dir: CliFolder, fake_az: FakeAz,
                                  profiles: Profiles, scope: str) -> None:
    profiles.write(f"""
        [profiles.cli]
        flow = "azure_cli"
        authority = "{emu.url}"
        scope = '{scope}'
    """)
    with pytest.raises(ConfigError) as info:
        get_token("cli")
    assert info.value.key == "scope"
    assert "cannot be passed to az" in str(info.value)
    assert not (fake_az.folder / "argv.json").exists()


def test_az_tenant_argument_is_checked(profiles: Profiles) -> None:
    profiles.write("""
        [profiles.cli]
        flow = "azure_cli"
        scope = "https://management.azure.com/.default"
    """)
    profile = configlib.load_profile("cli")
    from dataclasses import replace

    for tenant in ("-contoso.com", "contoso.com&calc"):
        with pytest.raises(ConfigError) as info:
            azure_cli._az_arguments(replace(profile, tenant=tenant))
        assert info.value.key == "tenant"
    assert azure_cli._az_arguments(replace(profile, tenant="contoso.com"))[-2:] == [
        "--tenant", "contoso.com"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_az_timeout_stops_its_whole_process_tree(emu: Emulator, cli_dir: CliFolder,
                                                 tmp_path: Path, profiles: Profiles,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "slow-bin"
    folder.mkdir()
    pid_file = tmp_path / "child.pid"
    child = ("import os, sys, time; p = sys.argv[1]; open(p + '.tmp', 'w').write(str(os.getpid()));"
             " os.rename(p + '.tmp', p); time.sleep(600)")
    script = folder / "az"
    # Python under bash, not exec'ed: killing bash alone would leave it running.
    script.write_text(f"""#!/bin/bash
"{sys.executable}" -c "{child}" "{pid_file}" </dev/null >/dev/null 2>&1
echo '{{}}'
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setattr(azure_cli, "AZ_TIMEOUT", 1.0)
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert "did not finish within 1 s" in str(info.value)
    assert pid_file.exists()
    pid = int(pid_file.read_text())
    try:
        deadline = time.monotonic() + 30  # the kill is sent; only its delivery is awaited
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "az's child outlived the timeout"
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ a sign-in az may know better


@pytest.mark.skipif(os.name == "nt", reason="the stand-in az is a POSIX script")
def test_cache_without_the_account_asks_az(emu: Emulator, cli_dir: CliFolder, fake_az: FakeAz,
                                           profiles: Profiles) -> None:
    cli_dir.write([], [])
    fake_az.answer({"accessToken": "eyJ0eXAi.eyJ4Ijox.c2ln", "expires_on": int(time.time()) + 900})
    assert get_token(_profile(emu, profiles)).token == "eyJ0eXAi.eyJ4Ijox.c2ln"
    assert emu.count("any") == 0


@pytest.mark.skipif(os.name == "nt", reason="the stand-in az is a POSIX script")
def test_cache_without_the_account_and_failing_az_says_both(
        emu: Emulator, cli_dir: CliFolder, fake_az: FakeAz, alice: Account,
        profiles: Profiles) -> None:
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles, 'username = "carol@contoso.onmicrosoft.com"'))
    message = str(info.value)
    assert "not signed in as 'carol@contoso.onmicrosoft.com'" in message
    assert "exit status 1" in message
    assert "Please run 'az login'" in message


@pytest.mark.skipif(os.name == "nt", reason="the stand-in az is a POSIX script")
@pytest.mark.parametrize("how", ["bin", "config", "variable"])
def test_encrypted_cache_beside_a_stale_json_asks_az(
        emu: Emulator, cli_dir: CliFolder, fake_az: FakeAz, alice: Account, profiles: Profiles,
        monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    if how == "bin":
        (cli_dir.path / "msal_token_cache.bin").write_bytes(os.urandom(64))
    elif how == "config":
        (cli_dir.path / "config").write_text("[core]\nencrypt_token_cache = true\n")
    else:
        monkeypatch.setenv("AZURE_CORE_ENCRYPT_TOKEN_CACHE", "yes")
    fake_az.answer({"accessToken": "eyJ0eXAi.eyJ4Ijox.c2ln", "expires_on": int(time.time()) + 900})
    assert get_token(_profile(emu, profiles)).token == "eyJ0eXAi.eyJ4Ijox.c2ln"
    assert emu.count("any") == 0


def test_encryption_turned_off_uses_the_json_cache(emu: Emulator, cli_dir: CliFolder,
                                                   alice: Account, profiles: Profiles) -> None:
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    (cli_dir.path / "msal_token_cache.bin").write_bytes(os.urandom(64))  # left from before
    (cli_dir.path / "config").write_text("[core]\nencrypt_token_cache = false\n")
    assert get_token(_profile(emu, profiles)).token
    assert emu.count("token") == 1


def test_a_cache_caught_half_written_is_read_again(emu: Emulator, cli_dir: CliFolder,
                                                   alice: Account, profiles: Profiles,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    path = cli_dir.path / "msal_token_cache.json"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    pauses: list[None] = []

    def writer_finishes() -> None:  # the CLI completes its write while we wait
        pauses.append(None)
        path.write_bytes(whole)

    monkeypatch.setattr(azure_cli, "_pause", writer_finishes)
    assert get_token(_profile(emu, profiles)).token
    assert pauses
    assert emu.count("token") == 1


# ------------------------------------------------------------------ another client id


def test_non_family_client_id_is_told_it_cannot_use_the_cli_sign_in(
        emu: Emulator, cli_dir: CliFolder, alice: Account, profiles: Profiles) -> None:
    app = emu.register_app(public=True)
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles, f'client_id = "{app.client_id}"'))
    message = str(info.value)
    assert "only the Azure CLI's own client id (04b07795-8ddb-461a-bbee-02f9e1bf7b46)" in message
    assert "family" in message
    assert "az login" not in message
    assert info.value.error_codes == (70000,)


def test_non_family_client_without_a_family_token_is_told_the_same(
        emu: Emulator, tmp_path: Path, profiles: Profiles) -> None:
    acct = Account("alice@contoso.com", "rt", emu.tenant_id)
    cache = msal_cache([acct], "127.0.0.1")
    for entry in cache["RefreshToken"].values():
        entry.pop("family_id")
    state = azure_cli.CliState(str(tmp_path), cache, None,
                               (subscription(emu.tenant_id, acct.username, default=True),))
    profile = configlib.load_profile(_profile(emu, profiles, f'client_id = "{uuid.uuid4()}"'))
    with pytest.raises(TokenError) as info:
        azure_cli._choose(profile, state)
    assert "only the Azure CLI's own client id" in str(info.value)
    assert "az login" not in str(info.value)


# ------------------------------------------------------------------ national clouds


@pytest.mark.parametrize(("cloud", "environment"), [
    ("china", "login.chinacloudapi.cn"),
    ("china", "login.partner.microsoftonline.cn"),
    ("usgov", "login.usgovcloudapi.net"),
    ("usgov", "login.microsoftonline.us"),
    ("public", "login.windows.net"),
    ("public", "login.microsoft.com"),
    ("public", "sts.windows.net"),
])
def test_each_clouds_host_names_are_one_environment(tmp_path: Path, profiles: Profiles,
                                                    cloud: str, environment: str) -> None:
    tenant = str(uuid.uuid4())
    acct = Account("alice@contoso.com", "rt-of-alice", tenant)
    state = azure_cli.CliState(str(tmp_path), msal_cache([acct], environment), None,
                               (subscription(tenant, acct.username, default=True),))
    profiles.write(f"""
        [profiles.cli]
        flow = "azure_cli"
        cloud = "{cloud}"
        scope = "https://management.azure.com/.default"
    """)
    choice = azure_cli._choose(configlib.load_profile("cli"), state)
    assert choice is not None
    assert (choice.refresh_token, choice.tenant) == ("rt-of-alice", tenant)


def test_another_clouds_sign_in_is_not_used(tmp_path: Path, profiles: Profiles) -> None:
    tenant = str(uuid.uuid4())
    acct = Account("alice@contoso.com", "rt-of-alice", tenant)
    state = azure_cli.CliState(str(tmp_path), msal_cache([acct], "login.microsoftonline.com"),
                               None, (subscription(tenant, acct.username, default=True),))
    profiles.write("""
        [profiles.cli]
        flow = "azure_cli"
        cloud = "china"
        scope = "https://management.azure.com/.default"
    """)
    with pytest.raises(TokenError) as info:
        azure_cli._choose(configlib.load_profile("cli"), state)
    assert "login.partner.microsoftonline.cn" in str(info.value)


# ------------------------------------------------------------------ a new process, a new sign-in


def test_new_process_after_az_login_as_someone_else(emu: Emulator, cli_dir: CliFolder,
                                                    alice: Account, profiles: Profiles) -> None:
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    name = _profile(emu, profiles)
    assert _claims(get_token(name).token)["preferred_username"] == alice.username
    PROVIDER.reset()  # a new process: only the file cache is left
    bob = _sign_in(emu, f"bob-{uuid.uuid4().hex[:6]}@contoso.onmicrosoft.com")
    cli_dir.write([bob], [subscription(emu.tenant_id, bob.username, default=True)])
    assert _claims(get_token(name).token)["preferred_username"] == bob.username
    assert emu.count("token") == 2


def test_new_process_after_az_logout(emu: Emulator, cli_dir: CliFolder, alice: Account,
                                     profiles: Profiles) -> None:
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    name = _profile(emu, profiles)
    get_token(name)
    PROVIDER.reset()
    cli_dir.write([], [])
    with pytest.raises(TokenError) as info:
        get_token(name)
    assert "az login" in str(info.value)


def test_new_process_after_az_account_set_to_another_tenant(
        emu: Emulator, cli_dir: CliFolder, alice: Account, profiles: Profiles) -> None:
    other = emu.add_tenant(f"tailspin{uuid.uuid4().hex[:6]}.onmicrosoft.com")
    emu.add_user(alice.username, tenant=other)
    alice.realms = (emu.tenant_id, other)
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True),
                            subscription(other, alice.username)])
    name = _profile(emu, profiles)
    assert _claims(get_token(name).token)["tid"] == emu.tenant_id
    PROVIDER.reset()
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username),
                            subscription(other, alice.username, default=True)])
    assert _claims(get_token(name).token)["tid"] == other


def test_cache_identity_names_account_and_tenant_and_never_raises(
        emu: Emulator, cli_dir: CliFolder, alice: Account, profiles: Profiles,
        monkeypatch: pytest.MonkeyPatch) -> None:
    profile = configlib.load_profile(_profile(emu, profiles))
    cli_dir.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
    assert azure_cli.cache_identity(profile) == f"{alice.home_account_id}|{emu.tenant_id}"
    cli_dir.write([], [])
    assert azure_cli.cache_identity(profile) == ""

    def broken(folder: Path) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(azure_cli, "read_state", broken)
    assert azure_cli.cache_identity(profile) == ""


# ------------------------------------------------------------------ a cache MSAL itself wrote


@pytest.fixture(scope="module")
def tls_emu() -> Iterator[Emulator]:
    """MSAL wants an https authority: an emulator of its own, over TLS."""
    with Emulator(tls=True) as emu:
        yield emu


def _az_login_with_msal(emu: Emulator, folder: Path, username: str) -> None:
    """Sign in as `az login --use-device-code` does — MSAL's PublicClientApplication with the
    CLI's client id at `organizations` — and leave MSAL's own serialization of its token cache,
    with the CLI's azureProfile.json, in `folder`."""
    import msal  # the `test` extra
    import requests

    from authlayer.emulator.device import device_codes

    http = requests.Session()
    http.verify = emu.ca_file
    cache = msal.SerializableTokenCache()
    app = msal.PublicClientApplication(CLI, authority=f"{emu.url}/organizations",
                                       instance_discovery=False, http_client=http,
                                       token_cache=cache)
    flow = app.initiate_device_flow(scopes=["https://management.core.windows.net//.default"])
    device_codes(emu).approve(username=username)  # the person, at the other device
    result = app.acquire_token_by_device_flow(flow)
    http.close()
    assert "access_token" in result, result.get("error_description")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "msal_token_cache.json").write_text(cache.serialize())
    profile = {"installationId": str(uuid.uuid4()),
               "subscriptions": [subscription(emu.tenant_id, username, default=True)]}
    (folder / "azureProfile.json").write_text(json.dumps(profile), encoding="utf-8-sig")


def test_a_cache_written_by_msal_for_an_authority_with_a_port_is_used(
        tls_emu: Emulator, tmp_path: Path, profiles: Profiles,
        monkeypatch: pytest.MonkeyPatch) -> None:
    emu = tls_emu
    username = f"ann-{uuid.uuid4().hex[:6]}@contoso.onmicrosoft.com"
    emu.add_user(username)
    folder = tmp_path / "azure"
    _az_login_with_msal(emu, folder, username)
    assert "127.0.0.1:" not in (folder / "msal_token_cache.json").read_text()  # MSAL's way
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(folder))
    monkeypatch.setenv("PATH", str(tmp_path / "no-az-here"))
    monkeypatch.setenv("SSL_CERT_FILE", emu.ca_file)
    before = emu.count("token")
    token = get_token(_profile(emu, profiles))
    assert emu.count("token") == before + 1  # one refresh-token redemption, no az
    claims = _claims(token.token)
    assert claims["preferred_username"] == username
    assert claims["tid"] == emu.tenant_id
