"""Workload identity end to end against the emulator: the federated token file and the
AZURE_* variables a Kubernetes workload gets, the profile's keys over them, a rotating token
file, and the errors for what is missing."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from authlayer import ConfigError, EntraAuth, TokenError, get_token
from authlayer import config as configlib
from authlayer import jwt as jwtlib
from authlayer.emulator import Emulator
from authlayer.emulator.federated import Issuer, federated_issuers
from authlayer.provider import Binding

from .conftest import Client, Profiles

SUBJECT = "system:serviceaccount:payments:api"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def issuer(emu: Emulator) -> Issuer:
    return federated_issuers(emu).add(f"https://oidc.example/{uuid.uuid4().hex[:8]}")


@pytest.fixture
def fed_app(emu: Emulator, issuer: Issuer) -> Any:
    return emu.register_app(federated=[{"issuer": issuer.url, "subject": SUBJECT,
                                        "audience": "api://AzureADTokenExchange"}])


@pytest.fixture
def token_file(tmp_path: Path, issuer: Issuer) -> Path:
    path = tmp_path / "azure-identity-token"
    path.write_text(issuer.mint(SUBJECT))
    return path


@pytest.fixture
def pod_env(emu: Emulator, fed_app: Any, token_file: Path,
            monkeypatch: pytest.MonkeyPatch) -> None:
    """What the workload identity webhook puts in a pod."""
    monkeypatch.setenv("AZURE_TENANT_ID", emu.tenant_id)
    monkeypatch.setenv("AZURE_CLIENT_ID", fed_app.client_id)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", emu.url)


def _profile(emu: Emulator, profiles: Profiles, extra: str = "") -> str:
    profiles.write(f"""
        [profiles.wi]
        flow = "workload_identity"
        scope = "{emu.api_scope}"
        timeout = 5
        {extra}
    """)
    return "wi"


def test_token_from_the_pod_environment_reaches_the_api(
        emu: Emulator, fed_app: Any, token_file: Path, pod_env: None, profiles: Profiles,
        client: Client) -> None:
    answer = client.get(f"{emu.api_url}/x", EntraAuth(_profile(emu, profiles)))
    assert answer.status == 200
    claims = answer.json()["claims"]
    assert claims["appid"] == fed_app.client_id
    assert claims["azpacr"] == "2"
    (record,) = [r for r in emu.requests if r.endpoint == "token"]
    assert record.path == f"/{emu.tenant_id}/oauth2/v2.0/token"
    assert record.form["grant_type"] == "client_credentials"
    assert record.form["client_assertion_type"] == ASSERTION_TYPE
    assert record.form["client_assertion"] == token_file.read_text()
    assert "client_secret" not in record.form


def test_token_file_is_read_again_for_every_request(
        emu: Emulator, issuer: Issuer, token_file: Path, pod_env: None,
        profiles: Profiles) -> None:
    name = _profile(emu, profiles)
    written = []
    for _ in range(2):
        token_file.write_text(issuer.mint(SUBJECT) + "\n")  # the kubelet rotates it
        written.append(token_file.read_text().strip())
        get_token(name, force_refresh=True)
    assert written[0] != written[1]
    assert [r.form["client_assertion"] for r in emu.requests] == written


def test_one_federated_token_serves_several_requests(emu: Emulator, pod_env: None,
                                                     profiles: Profiles) -> None:
    name = _profile(emu, profiles)
    api = get_token(name)
    graph = get_token(name, scope="https://graph.microsoft.com/.default")
    assert jwtlib.decode(graph.token)[1]["aud"] == "https://graph.microsoft.com"
    assert api.token != graph.token
    assert len({r.form["client_assertion"] for r in emu.requests}) == 1


def test_missing_token_file_names_the_variable(emu: Emulator, pod_env: None, token_file: Path,
                                               profiles: Profiles) -> None:
    token_file.unlink()
    with pytest.raises(ConfigError) as info:
        get_token(_profile(emu, profiles))
    message = str(info.value)
    assert "AZURE_FEDERATED_TOKEN_FILE" in message
    assert str(token_file) in message
    assert "does not exist" in message
    assert emu.count("any") == 0


def test_empty_token_file_names_the_variable(emu: Emulator, pod_env: None, token_file: Path,
                                             profiles: Profiles) -> None:
    token_file.write_text("\n")
    with pytest.raises(ConfigError) as info:
        get_token(_profile(emu, profiles))
    assert "is empty" in str(info.value)
    assert "AZURE_FEDERATED_TOKEN_FILE" in str(info.value)


@pytest.mark.parametrize(("variable", "key"), [("AZURE_TENANT_ID", "tenant"),
                                               ("AZURE_CLIENT_ID", "client_id")])
def test_missing_tenant_or_client_id_names_key_and_variable(
        emu: Emulator, pod_env: None, profiles: Profiles, monkeypatch: pytest.MonkeyPatch,
        variable: str, key: str) -> None:
    monkeypatch.delenv(variable)
    with pytest.raises(ConfigError) as info:
        get_token(_profile(emu, profiles))
    assert info.value.key == key
    assert f"${variable}" in str(info.value)
    assert emu.count("any") == 0


def test_no_token_file_at_all(emu: Emulator, pod_env: None, profiles: Profiles,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE")
    with pytest.raises(ConfigError) as info:
        get_token(_profile(emu, profiles))
    assert info.value.key == "client_assertion"
    assert "AZURE_FEDERATED_TOKEN_FILE" in str(info.value)


def test_profile_keys_override_the_environment(
        emu: Emulator, issuer: Issuer, pod_env: None, profiles: Profiles, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    domain = f"fabrikam{uuid.uuid4().hex[:8]}.onmicrosoft.com"
    other_tenant = emu.add_tenant(domain)
    other_app = emu.register_app(federated=[{"issuer": issuer.url, "subject": "other"}])
    (tmp_path / "other.jwt").write_text(issuer.mint("other"))
    # The environment names an identity service the token must never be asked of.
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://login.example.invalid")
    name = _profile(emu, profiles, f"""
        authority = "{emu.url}"
        tenant = "{domain}"
        client_id = "{other_app.client_id}"
        client_assertion = {{ file = "other.jwt" }}
    """)
    claims = jwtlib.decode(get_token(name).token)[1]
    assert (claims["appid"], claims["tid"]) == (other_app.client_id, other_tenant)
    assert emu.requests[-1].path == f"/{domain}/oauth2/v2.0/token"


def test_authority_host_may_be_a_bare_host_name(emu: Emulator, pod_env: None,
                                                profiles: Profiles,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "login.microsoftonline.us/")
    profile = configlib.load_profile(_profile(emu, profiles))
    assert profile.authority == "https://login.microsoftonline.us"
    monkeypatch.delenv("AZURE_AUTHORITY_HOST")
    assert configlib.load_profile("wi").authority == "https://login.microsoftonline.com"


def test_bad_value_in_the_environment_names_it(emu: Emulator, pod_env: None,
                                               profiles: Profiles,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_TENANT_ID", "not a tenant!")
    with pytest.raises(ConfigError) as info:
        get_token(_profile(emu, profiles))
    assert info.value.key == "tenant"
    assert "$AZURE_TENANT_ID" in str(info.value)


def test_cache_keys_follow_the_environment(emu: Emulator, pod_env: None, profiles: Profiles,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables are read when the profile is loaded, so two apps never share tokens."""
    name = _profile(emu, profiles)
    first = configlib.load_profile(name)
    monkeypatch.setenv("AZURE_CLIENT_ID", str(uuid.uuid4()))
    second = configlib.load_profile(name)
    assert first.client_id != second.client_id
    assert Binding.make(first).key != Binding.make(second).key


def test_subject_not_federated_is_refused_with_hint(emu: Emulator, issuer: Issuer,
                                                    token_file: Path, pod_env: None,
                                                    profiles: Profiles) -> None:
    token_file.write_text(issuer.mint("system:serviceaccount:other:sa"))
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert info.value.error_codes == (700213,)
    assert "federated credential" in str(info.value)


def test_expired_federated_token_is_refused(emu: Emulator, issuer: Issuer, token_file: Path,
                                            pod_env: None, profiles: Profiles) -> None:
    token_file.write_text(issuer.mint(SUBJECT, lifetime=-600))
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert info.value.error_codes == (700024,)


def test_defaults_do_not_override_the_webhooks_variables(
        emu: Emulator, fed_app: Any, issuer: Issuer, pod_env: None, profiles: Profiles,
        tmp_path: Path) -> None:
    """[defaults] is about the file's other apps: the webhook's variables describe this pod."""
    other_app = emu.register_app(federated=[{"issuer": issuer.url, "subject": "other"}])
    (tmp_path / "other.jwt").write_text(issuer.mint("other"))
    profiles.write(f"""
        [defaults]
        tenant = "fabrikam{uuid.uuid4().hex[:8]}.onmicrosoft.com"
        client_id = "{other_app.client_id}"
        client_assertion = {{ file = "other.jwt" }}
        authority = "https://login.example.invalid"

        [profiles.wi]
        flow = "workload_identity"
        scope = "{emu.api_scope}"
        timeout = 5
    """)
    profile = configlib.load_profile("wi")
    assert (profile.tenant, profile.client_id, profile.authority) == (
        emu.tenant_id, fed_app.client_id, emu.url)
    assert profile.client_assertion is not None
    assert profile.client_assertion.key == "AZURE_FEDERATED_TOKEN_FILE"
    claims = jwtlib.decode(get_token("wi").token)[1]
    assert claims["appid"] == fed_app.client_id


def test_defaults_fill_what_the_environment_leaves_out(
        emu: Emulator, pod_env: None, profiles: Profiles,
        monkeypatch: pytest.MonkeyPatch) -> None:
    domain = f"fabrikam{uuid.uuid4().hex[:8]}.onmicrosoft.com"
    profiles.write(f"""
        [defaults]
        tenant = "{domain}"
        cloud = "usgov"

        [profiles.wi]
        flow = "workload_identity"
        scope = "{emu.api_scope}"
    """)
    monkeypatch.delenv("AZURE_TENANT_ID")
    monkeypatch.delenv("AZURE_AUTHORITY_HOST")
    profile = configlib.load_profile("wi")
    assert (profile.tenant, profile.authority) == (domain, "https://login.microsoftonline.us")


def test_keys_inherited_through_extends_win_over_the_environment(
        emu: Emulator, pod_env: None, profiles: Profiles) -> None:
    domain = f"fabrikam{uuid.uuid4().hex[:8]}.onmicrosoft.com"
    client_id = str(uuid.uuid4())
    profiles.write(f"""
        [profiles.base]
        flow = "workload_identity"
        scope = "{emu.api_scope}"
        tenant = "{domain}"
        client_id = "{client_id}"
        cloud = "china"

        [profiles.wi]
        extends = "base"
    """)
    profile = configlib.load_profile("wi")
    assert (profile.tenant, profile.client_id, profile.authority) == (
        domain, client_id, "https://login.partner.microsoftonline.cn")
