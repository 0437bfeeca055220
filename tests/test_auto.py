"""Flow ``auto`` end to end against the emulator (CONTRACT §8): the Azure tools' default chain —
environment variables (secret; certificate with password and chain), workload identity, managed
identity, the Azure CLI, azd, Azure PowerShell — in that order, narrowed by
``$AZURE_TOKEN_CREDENTIALS``; the profile's authority (else ``$AZURE_AUTHORITY_HOST``) for every
source that talks to Entra; each place in a fresh process, with the variables users have."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from authlayer import ConfigError, EntraAuth, TokenError, chains, get_token
from authlayer import jwt as jwtlib
from authlayer.chains import SOURCES, ChainUnavailable
from authlayer.config import load_profile
from authlayer.emulator import Emulator
from authlayer.emulator.federated import federated_issuers
from authlayer.emulator.managed_identity import managed_identities
from authlayer.provider import PROVIDER

from .chain_helpers import closed_port, nothing_here, run_fresh
from .conftest import Client, Profiles
from .test_azure_cli import CliFolder, _sign_in, subscription
from .test_identity_sources_tools import StandIn

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the stand-ins are POSIX scripts")


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return nothing_here(tmp_path, monkeypatch)


def _auto(emu: Emulator, profiles: Profiles, extra: str = "", authority: bool = True) -> Path:
    return profiles.write(f"""
        [profiles.auto]
        flow = "auto"
        {f'authority = "{emu.url}"' if authority else ""}
        scope = "{emu.api_scope}"
        timeout = 5
        {extra}
    """)


def _claims(token: str) -> dict[str, Any]:
    return jwtlib.decode(token)[1]


@pytest.fixture
def env_app(emu: Emulator, monkeypatch: pytest.MonkeyPatch, bare: dict[str, str]) -> Any:
    """An app named by the environment, with its secret (EnvironmentCredential's variables)."""
    app = emu.register_app(secret="env-secret-value")
    monkeypatch.setenv("AZURE_TENANT_ID", emu.tenant_id)
    monkeypatch.setenv("AZURE_CLIENT_ID", app.client_id)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "env-secret-value")
    return app


# ------------------------------------------------------------------ environment variables


def test_environment_secret_reaches_the_api(emu: Emulator, env_app: Any, profiles: Profiles,
                                            client: Client) -> None:
    _auto(emu, profiles)
    answer = client.get(f"{emu.api_url}/x", EntraAuth("auto"))
    assert answer.status == 200
    assert answer.json()["claims"]["appid"] == env_app.client_id
    via = PROVIDER.bind("auto").via
    assert via is not None
    assert (via.flow, via.member, via.skipped) == ("auto", "environment", ())
    assert emu.count("imds") == 0  # nothing after the first available source is looked at


def _certificate(tmp_path: Path, password: str) -> tuple[Path, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auto-test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    path = tmp_path / "app.pem"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()))
        + cert.public_bytes(serialization.Encoding.PEM))
    return path, cert


@pytest.mark.parametrize("send_chain", [None, "false"])
def test_environment_certificate_with_password_and_chain(
        emu: Emulator, profiles: Profiles, bare: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, client: Client, send_chain: Any) -> None:
    path, cert = _certificate(tmp_path, "pem-password")
    app = emu.register_app(certificate=cert)
    monkeypatch.setenv("AZURE_TENANT_ID", emu.tenant_id)
    monkeypatch.setenv("AZURE_CLIENT_ID", app.client_id)
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(path))
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", "pem-password")
    if send_chain is not None:  # any value sends the chain, as azure-identity reads it
        monkeypatch.setenv("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", send_chain)
    _auto(emu, profiles)
    answer = client.get(f"{emu.api_url}/x", EntraAuth("auto"))
    assert answer.status == 200
    assert answer.json()["claims"]["appid"] == app.client_id
    (request,) = [r for r in emu.requests if r.endpoint == "token"]
    header = jwtlib.decode(request.form["client_assertion"])[0]
    assert ("x5c" in header) == (send_chain is not None)


def test_environment_certificate_without_its_password_is_a_clear_error(
        emu: Emulator, profiles: Profiles, bare: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path, _cert = _certificate(tmp_path, "pem-password")
    monkeypatch.setenv("AZURE_TENANT_ID", emu.tenant_id)
    monkeypatch.setenv("AZURE_CLIENT_ID", str(uuid.uuid4()))
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(path))
    _auto(emu, profiles)
    with pytest.raises(ConfigError) as info:  # available, but wrong: not a skip
        get_token("auto")
    assert "encrypted" in str(info.value)
    assert info.value.profile == "auto[environment]"
    assert emu.count("token") == 0


def test_environment_with_a_wrong_secret_stops_auto(emu: Emulator, env_app: Any,
                                                    profiles: Profiles,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "wrong-secret-value")
    mi = managed_identities(emu)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", mi.imds_host)  # there, but unasked
    _auto(emu, profiles)
    with pytest.raises(TokenError) as info:
        get_token("auto")
    assert info.value.error == "invalid_client"
    assert info.value.profile == "auto[environment]"
    assert emu.count("imds") == 0


def test_bad_environment_value_is_a_config_error_naming_the_variable(
        emu: Emulator, env_app: Any, profiles: Profiles,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_TENANT_ID", "not a tenant")
    _auto(emu, profiles)
    with pytest.raises(ConfigError) as info:
        get_token("auto")
    assert "$AZURE_TENANT_ID" in str(info.value)
    assert (info.value.profile, info.value.key) == ("auto", "tenant")


def test_tenant_override_reaches_the_environment_source(
        emu: Emulator, profiles: Profiles, bare: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    other = emu.add_tenant()
    app = emu.register_app(secret="env-secret-value", tenants=[emu.tenant_id, other])
    monkeypatch.setenv("AZURE_TENANT_ID", emu.tenant_id)
    monkeypatch.setenv("AZURE_CLIENT_ID", app.client_id)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "env-secret-value")
    _auto(emu, profiles)
    assert _claims(get_token("auto").token)["tid"] == emu.tenant_id
    assert _claims(get_token("auto", tenant=other).token)["tid"] == other


# ------------------------------------------------------------------ authority


def test_authority_host_variable_applies_when_the_profile_sets_none(
        emu: Emulator, env_app: Any, profiles: Profiles,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", emu.url)
    _auto(emu, profiles, authority=False)
    assert _claims(get_token("auto").token)["appid"] == env_app.client_id


def test_profiles_authority_wins_over_the_variable(emu: Emulator, env_app: Any,
                                                   profiles: Profiles,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", f"http://127.0.0.1:{closed_port()}")
    _auto(emu, profiles)
    assert _claims(get_token("auto").token)["appid"] == env_app.client_id


def test_cloud_applies_to_every_source(profiles: Profiles, bare: dict[str, str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    profiles.write("""
        [profiles.auto]
        flow = "auto"
        cloud = "usgov"
        scope = "https://management.usgovcloudapi.net/.default"
    """)
    head = load_profile("auto")
    assert head.authority == "https://login.microsoftonline.us"
    monkeypatch.setenv("AZURE_TENANT_ID", str(uuid.uuid4()))
    monkeypatch.setenv("AZURE_CLIENT_ID", str(uuid.uuid4()))
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "s")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", "/nowhere")
    members = dict(chains._auto_members(head, None))
    for source in ("environment", "workload_identity", "azure_cli"):
        member = members[source]()
        assert not isinstance(member, str)
        assert member.authority == "https://login.microsoftonline.us"


# ------------------------------------------------------------------ the order, and skipping


def test_nothing_available_names_every_source(emu: Emulator, profiles: Profiles,
                                              bare: dict[str, str]) -> None:
    _auto(emu, profiles)
    with pytest.raises(ChainUnavailable) as info:
        get_token("auto")
    reasons = dict(info.value.skipped)
    assert tuple(reasons) == SOURCES
    assert "$AZURE_CLIENT_ID" in reasons["environment"]
    assert "$AZURE_FEDERATED_TOKEN_FILE" in reasons["workload_identity"]
    assert "no managed identity endpoint" in reasons["managed_identity"]
    assert "az is not on PATH" in reasons["azure_cli"]
    assert "azd" in reasons["azd"]
    assert "PowerShell" in reasons["azure_powershell"]
    assert "no source of flow 'auto' is available here" in str(info.value)
    assert info.value.profile == "auto"


def test_managed_identity_is_skipped_for_several_scopes(emu: Emulator, profiles: Profiles,
                                                        bare: dict[str, str]) -> None:
    profiles.write(f"""
        [profiles.auto]
        flow = "auto"
        scope = ["{emu.api_scope}", "https://vault.azure.net/.default"]
    """)
    with pytest.raises(ChainUnavailable) as info:
        get_token("auto")
    assert "one resource at a time" in dict(info.value.skipped)["managed_identity"]


def _azd_says(bin_dir: Path, emu: Emulator) -> StandIn:
    azd = StandIn(bin_dir, "azd")
    token = emu.issue_token(tenant=emu.tenant_id)
    expires = dt.datetime.fromtimestamp(int(_claims(token)["exp"]), dt.timezone.utc)
    azd.says(json.dumps({"token": token, "expiresOn": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}))
    return azd


def test_developer_tools_come_after_the_hosts_identities(
        emu: Emulator, profiles: Profiles, bare: dict[str, str], tmp_path: Path,
        client: Client) -> None:
    azd = _azd_says(tmp_path / "bin", emu)
    _auto(emu, profiles)
    answer = client.get(f"{emu.api_url}/x", EntraAuth("auto"))
    assert answer.status == 200
    assert azd.ran
    via = PROVIDER.bind("auto").via
    assert via is not None
    assert via.member == "azd"
    assert [name for name, _ in via.skipped] == list(SOURCES[:4])


# ------------------------------------------------------------------ AZURE_TOKEN_CREDENTIALS


@pytest.mark.parametrize(("value", "member"), [
    ("dev", "azd"), ("prod", "environment"), ("EnvironmentCredential", "environment"),
    (" AzureDeveloperCliCredential ", "azd"), ("azd", "azd"),
])
def test_token_credentials_narrows_the_sources(emu: Emulator, env_app: Any, profiles: Profiles,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               value: str, member: str) -> None:
    _azd_says(tmp_path / "bin", emu)
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", value)
    _auto(emu, profiles)
    assert get_token("auto").token
    via = PROVIDER.bind("auto").via
    assert via is not None
    assert via.member == member
    if value == "dev":  # the environment's app is there, but not a developer tool
        assert [name for name, _ in via.skipped] == ["azure_cli"]


def test_managed_identity_alone_is_asked_without_a_probe(
        emu: Emulator, profiles: Profiles, bare: dict[str, str],
        monkeypatch: pytest.MonkeyPatch, client: Client) -> None:
    mi = managed_identities(emu)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", mi.imds_host)
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")
    _auto(emu, profiles)
    answer = client.get(f"{emu.api_url}/x", EntraAuth("auto"))
    assert answer.status == 200
    assert mi.system is not None
    assert answer.json()["claims"]["oid"] == mi.system.object_id
    assert emu.count("imds") == 1  # the token request itself, no probe first


def test_narrowed_to_a_source_that_is_absent(emu: Emulator, profiles: Profiles,
                                             bare: dict[str, str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "prod")
    _auto(emu, profiles)
    with pytest.raises(ChainUnavailable) as info:
        get_token("auto")
    assert [name for name, _ in info.value.skipped] == ["environment", "workload_identity",
                                                        "managed_identity"]


@pytest.mark.parametrize(("value", "said"), [
    ("bogus", "is not a value it takes"),
    ("VisualStudioCodeCredential", "names a credential that flow 'auto' does not have"),
])
def test_unknown_token_credentials_is_a_clear_error(emu: Emulator, profiles: Profiles,
                                                    bare: dict[str, str],
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    value: str, said: str) -> None:
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", value)
    path = _auto(emu, profiles)
    with pytest.raises(ConfigError) as info:
        get_token("auto")
    message = str(info.value)
    assert "$AZURE_TOKEN_CREDENTIALS" in message
    assert said in message
    assert "'dev', 'prod'" in message
    assert (info.value.profile, info.value.path) == ("auto", str(path))


# ------------------------------------------------------------------ each place, fresh process

_SCRIPT = """
import asyncio, json, sys
import httpx, requests
from authlayer import EntraAuth
url = sys.argv[1]
with requests.Session() as s:
    s.auth = EntraAuth("auto")
    first = s.get(url, timeout=10).json()["claims"]
with httpx.Client(auth=EntraAuth("auto"), timeout=10) as c:
    second = c.get(url).json()["claims"]
async def third():
    async with httpx.AsyncClient(auth=EntraAuth("auto"), timeout=10) as c:
        return (await c.get(url)).json()["claims"]
print(json.dumps([first, second, asyncio.run(third())]))
"""


@pytest.mark.parametrize("place", ["environment", "workload_identity", "managed_identity",
                                   "azure_cli"])
def test_auto_in_each_place_in_a_fresh_process(emu: Emulator, profiles: Profiles,
                                               bare: dict[str, str], tmp_path: Path,
                                               place: str) -> None:
    path = _auto(emu, profiles)
    env = {**bare, "AUTHLAYER_CONFIG": str(path),
           "AUTHLAYER_CACHE_DIR": str(tmp_path / "fresh-cache")}
    if place == "environment":
        app = emu.register_app(secret="env-secret-value")
        env.update(AZURE_TENANT_ID=emu.tenant_id, AZURE_CLIENT_ID=app.client_id,
                   AZURE_CLIENT_SECRET="env-secret-value")
        claim, expected = "appid", app.client_id
    elif place == "workload_identity":
        issuer = federated_issuers(emu).add(f"https://oidc.example/{uuid.uuid4().hex[:8]}")
        app = emu.register_app(federated=[{"issuer": issuer.url, "subject": "pod",
                                           "audience": "api://AzureADTokenExchange"}])
        token_file = tmp_path / "token"
        token_file.write_text(issuer.mint("pod"))
        env.update(AZURE_TENANT_ID=emu.tenant_id, AZURE_CLIENT_ID=app.client_id,
                   AZURE_FEDERATED_TOKEN_FILE=str(token_file))
        claim, expected = "appid", app.client_id
    elif place == "managed_identity":
        mi = managed_identities(emu)
        assert mi.system is not None
        env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = mi.imds_host
        claim, expected = "oid", mi.system.object_id
    else:
        alice = _sign_in(emu, f"alice-{uuid.uuid4().hex[:6]}@contoso.onmicrosoft.com")
        cli = CliFolder(tmp_path / "azure", "127.0.0.1")
        cli.write([alice], [subscription(emu.tenant_id, alice.username, default=True)])
        env["AZURE_CONFIG_DIR"] = str(cli.path)
        claim, expected = "preferred_username", alice.username
    done = run_fresh(_SCRIPT, env, f"{emu.api_url}/x")
    assert done.returncode == 0, done.stderr
    assert [c[claim] for c in json.loads(done.stdout)] == [expected] * 3
    checked = run_fresh("import sys; from authlayer.cli import main; sys.exit(main())", env,
                        "check", "auto")
    assert checked.returncode == 0, checked.stderr
    assert f"chain member   '{place}'" in checked.stdout
