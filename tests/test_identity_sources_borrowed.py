"""Borrowed identities as the client assertion, end to end against the emulator: another
profile's token (a managed identity as a federated credential), GitHub Actions' OIDC token and
Azure Pipelines' (both endpoints played by the emulator on loopback); fetched when a new token
is needed, their errors naming the profile and what to check; whether each is available here;
and the availability of secret sources and workload identity."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from authlayer import ConfigError, EntraAuth, TokenError, get_token, registry
from authlayer import config as configlib
from authlayer import jwt as jwtlib
from authlayer.config._sources import exchange_audience
from authlayer.emulator import Emulator
from authlayer.emulator.ci import CiProviders, ci_providers
from authlayer.emulator.federated import federated_issuers
from authlayer.emulator.managed_identity import ManagedIdentities, managed_identities
from authlayer.flows import managed_identity, workload_identity
from authlayer.provider import PROVIDER

from .conftest import Client, Clock, Profiles

EXCHANGE = "api://AzureADTokenExchange"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(managed_identity, "_answered", set())
    monkeypatch.setattr(managed_identity, "HIMDS_PATHS", {})
    for name in ("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                 "SYSTEM_OIDCREQUESTURI", "SYSTEM_ACCESSTOKEN", "IMDS_ENDPOINT",
                 "IDENTITY_SERVER_THUMBPRINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def ci(emu: Emulator) -> CiProviders:
    return ci_providers(emu)


def _app_profile(emu: Emulator, profiles: Profiles, client_id: str, assertion: str,
                 extra: str = "") -> str:
    profiles.write(f"""
        [profiles.app]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{client_id}"
        client_assertion = {assertion}
        scope = "{emu.api_scope}"
        timeout = 5
        {extra}
    """)
    return "app"


def _claims(token: str) -> dict[str, Any]:
    return jwtlib.decode(token)[1]


# ------------------------------------------------------------------ { profile = "NAME" }


@pytest.fixture
def mi(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> ManagedIdentities:
    mi = managed_identities(emu)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", mi.imds_host)
    # Entra trusts its own tokens as assertions: the emulator, told so, too.
    federated_issuers(emu).add(emu.state.issuer(emu.tenant_id), emu.state.signing_key,
                               emu.state.kid)
    return mi


def _mi_as_fic(emu: Emulator, mi: ManagedIdentities, profiles: Profiles) -> tuple[Any, Any]:
    """An app that trusts a user-assigned managed identity, and the two profiles."""
    identity = mi.add()
    app = emu.register_app(federated=[{"issuer": emu.state.issuer(emu.tenant_id),
                                       "subject": identity.object_id, "audience": EXCHANGE}])
    profiles.write(f"""
        [profiles.mi]
        flow = "managed_identity"
        client_id = "{identity.client_id}"
        scope = "{EXCHANGE}/.default"
        timeout = 5

        [profiles.app]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{app.client_id}"
        client_assertion = {{ profile = "mi" }}
        scope = "{emu.api_scope}"
        timeout = 5
    """)
    return identity, app


def test_managed_identity_as_a_federated_credential(emu: Emulator, mi: ManagedIdentities,
                                                    profiles: Profiles, client: Client) -> None:
    identity, app = _mi_as_fic(emu, mi, profiles)
    answer = client.get(f"{emu.api_url}/x", EntraAuth("app"))
    assert answer.status == 200
    assert answer.json()["claims"]["appid"] == app.client_id
    (imds,) = [r for r in emu.requests if r.endpoint == "imds"]
    assert imds.query["resource"] == EXCHANGE
    assert imds.query["client_id"] == identity.client_id
    (token,) = [r for r in emu.requests if r.endpoint == "token"]
    assertion = token.form["client_assertion"]
    assert _claims(assertion)["oid"] == identity.object_id
    assert token.form["client_assertion_type"].endswith(":jwt-bearer")


def test_borrowed_token_is_reused_while_it_lives_and_renewed_after(
        emu: Emulator, mi: ManagedIdentities, profiles: Profiles,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(PROVIDER, "clock", clock)
    _mi_as_fic(emu, mi, profiles)
    get_token("app")
    get_token("app", force_refresh=True)  # a new token: the borrowed one still lives
    assert (emu.count("imds"), emu.count("token")) == (1, 2)
    clock.now += 3700  # both have expired: the borrowed token is never used past its life
    get_token("app")
    assert (emu.count("imds"), emu.count("token")) == (2, 3)
    get_token("app")  # the new token is cached: nothing is borrowed for it
    assert (emu.count("imds"), emu.count("token")) == (2, 3)


def test_borrowing_this_profile_itself_is_a_config_error(emu: Emulator,
                                                         profiles: Profiles) -> None:
    _app_profile(emu, profiles, str(uuid.uuid4()), '{ profile = "app" }')
    with pytest.raises(ConfigError) as info:
        configlib.load_profile("app")
    assert info.value.key == "client_assertion"
    assert "itself" in str(info.value)


def test_borrowing_in_a_cycle_is_a_config_error(emu: Emulator, profiles: Profiles) -> None:
    profiles.write(f"""
        [profiles.a]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{uuid.uuid4()}"
        client_assertion = {{ profile = "b" }}
        scope = "{emu.api_scope}"

        [profiles.b]
        extends = "a"
        client_assertion = {{ profile = "a" }}
    """)
    with pytest.raises(ConfigError) as info:
        get_token("a")
    assert "cycle: a -> b -> a" in str(info.value)
    assert emu.count("any") == 0


def test_borrowing_an_unknown_profile_is_a_config_error(emu: Emulator,
                                                        profiles: Profiles) -> None:
    _app_profile(emu, profiles, str(uuid.uuid4()), '{ profile = "nope" }')
    with pytest.raises(ConfigError) as info:
        get_token("app")
    assert "nope" in str(info.value)


def test_borrowed_profile_that_fails_is_named(emu: Emulator, mi: ManagedIdentities,
                                              profiles: Profiles) -> None:
    _mi_as_fic(emu, mi, profiles)
    profiles.write(profiles.path.read_text().replace('client_id = "', 'client_id = "0', 1))
    with pytest.raises(TokenError) as info:
        get_token("app")
    message = str(info.value)
    assert message.startswith("profile 'app': client_assertion borrows the token of profile "
                              "'mi', which failed")
    assert "is not assigned" in message
    assert emu.count("token") == 0


@pytest.mark.parametrize("key", ["client_secret", "password"])
def test_borrowed_identities_are_client_assertions_only(emu: Emulator, profiles: Profiles,
                                                        key: str) -> None:
    flow = "client_credentials" if key == "client_secret" else "password"
    profiles.write(f"""
        [profiles.x]
        flow = "{flow}"
        tenant = "{emu.tenant_id}"
        client_id = "{uuid.uuid4()}"
        username = "u@contoso.onmicrosoft.com"
        {key} = {{ github_actions = true }}
        scope = "{emu.api_scope}"
    """.replace('username = "u@contoso.onmicrosoft.com"\n', "" if key == "client_secret"
                else 'username = "u@contoso.onmicrosoft.com"\n'))
    with pytest.raises(ConfigError) as info:
        configlib.load_profile("x")
    assert "only be a client_assertion" in str(info.value)


def test_borrowed_profile_unavailable_makes_this_one_unavailable(
        emu: Emulator, mi: ManagedIdentities, profiles: Profiles,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _mi_as_fic(emu, mi, profiles)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", "127.0.0.1:9")
    reason = registry.unavailable(configlib.load_profile("app"))
    assert reason is not None
    assert reason.startswith("client_assertion: profile 'mi': no managed identity endpoint")


# ------------------------------------------------------------------ { github_actions = ... }


@pytest.fixture
def github(ci: CiProviders, monkeypatch: pytest.MonkeyPatch) -> CiProviders:
    """A GitHub Actions job with `permissions: id-token: write`."""
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", ci.github_request_url)
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", ci.github_request_token)
    return ci


def test_github_actions_token_is_the_assertion(emu: Emulator, github: CiProviders,
                                               profiles: Profiles, client: Client) -> None:
    app = emu.register_app(federated=[github.github_credential()])
    name = _app_profile(emu, profiles, app.client_id, "{ github_actions = true }")
    answer = client.get(f"{emu.api_url}/x", EntraAuth(name))
    assert answer.status == 200
    assert answer.json()["claims"]["appid"] == app.client_id
    (oidc,) = [r for r in emu.requests if r.endpoint == "github_oidc"]
    assert oidc.method == "GET"
    assert oidc.query == {"api-version": "2.0", "audience": EXCHANGE}
    assert oidc.headers["authorization"] == f"Bearer {github.github_request_token}"
    (token,) = [r for r in emu.requests if r.endpoint == "token"]
    assert _claims(token.form["client_assertion"])["sub"] == github.github_subject


def test_github_actions_audience_can_be_given(emu: Emulator, github: CiProviders,
                                              profiles: Profiles) -> None:
    app = emu.register_app(federated=[github.github_credential("api://contoso-ci")])
    get_token(_app_profile(emu, profiles, app.client_id,
                           '{ github_actions = "api://contoso-ci" }'))
    assert [r.query["audience"] for r in emu.requests if r.endpoint == "github_oidc"] == [
        "api://contoso-ci"]


@pytest.mark.parametrize(("cloud", "audience"), [("usgov", "api://AzureADTokenExchangeUSGov"),
                                                 ("china", "api://AzureADTokenExchangeChina"),
                                                 ("public", EXCHANGE)])
def test_github_actions_default_audience_follows_the_cloud(
        emu: Emulator, github: CiProviders, profiles: Profiles, cloud: str,
        audience: str) -> None:
    profiles.write(f"""
        [profiles.app]
        flow = "client_credentials"
        cloud = "{cloud}"
        tenant = "{emu.tenant_id}"
        client_id = "{uuid.uuid4()}"
        client_assertion = {{ github_actions = true }}
        scope = "https://management.azure.com/.default"
    """)
    source = configlib.load_profile("app").client_assertion
    assert source is not None
    assertion = source.read()  # only GitHub's endpoint (the emulator) is asked
    assert _claims(assertion)["aud"] == [audience]


def test_exchange_audiences_of_the_clouds() -> None:
    assert exchange_audience("https://login.microsoftonline.com") == EXCHANGE
    assert exchange_audience("https://login.microsoftonline.us") == EXCHANGE + "USGov"
    assert exchange_audience("https://login.chinacloudapi.cn") == EXCHANGE + "China"
    assert exchange_audience("http://127.0.0.1:1234") == EXCHANGE


def test_github_actions_token_is_fetched_for_each_new_token_only(
        emu: Emulator, github: CiProviders, profiles: Profiles) -> None:
    app = emu.register_app(federated=[github.github_credential()])
    name = _app_profile(emu, profiles, app.client_id, "{ github_actions = true }")
    get_token(name)
    get_token(name)
    assert emu.count("github_oidc") == 1
    get_token(name, force_refresh=True)
    assert emu.count("github_oidc") == 2


def test_github_actions_without_id_token_permission_says_so(emu: Emulator,
                                                           profiles: Profiles) -> None:
    name = _app_profile(emu, profiles, str(uuid.uuid4()), "{ github_actions = true }")
    with pytest.raises(ConfigError) as info:
        get_token(name)
    message = str(info.value)
    assert "ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set" in message
    assert "permissions: id-token: write" in message
    assert info.value.profile == "app"
    assert info.value.key == "client_assertion"
    assert emu.count("any") == 0


def test_github_actions_refusal_says_what_to_check(emu: Emulator, github: CiProviders,
                                                   profiles: Profiles,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "stale")
    name = _app_profile(emu, profiles, str(uuid.uuid4()), "{ github_actions = true }")
    with pytest.raises(TokenError) as info:
        get_token(name)
    message = str(info.value)
    assert message.startswith("profile 'app': GitHub Actions' OIDC endpoint gave no token "
                              "(HTTP 401: Bad credentials)")
    assert "id-token: write" in message
    assert emu.count("token") == 0


def test_github_actions_url_in_the_clear_is_refused(emu: Emulator, profiles: Profiles,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", "http://token.example/x?a=1")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "t")
    with pytest.raises(ConfigError) as info:
        get_token(_app_profile(emu, profiles, str(uuid.uuid4()), "{ github_actions = true }"))
    assert "https://" in str(info.value)


@pytest.mark.parametrize("value", ["false", "3", '""', '"two words"'])
def test_bad_github_actions_value_is_a_config_error(emu: Emulator, profiles: Profiles,
                                                    value: str) -> None:
    _app_profile(emu, profiles, str(uuid.uuid4()), f"{{ github_actions = {value} }}")
    with pytest.raises(ConfigError) as info:
        configlib.load_profile("app")
    assert "github_actions must be true" in str(info.value)


# ------------------------------------------------------------------ { azure_pipelines = "ID" }


@pytest.fixture
def pipelines(ci: CiProviders, monkeypatch: pytest.MonkeyPatch) -> CiProviders:
    """An Azure Pipelines job that maps SYSTEM_ACCESSTOKEN: $(System.AccessToken)."""
    monkeypatch.setenv("SYSTEM_OIDCREQUESTURI", ci.pipelines_request_uri)
    monkeypatch.setenv("SYSTEM_ACCESSTOKEN", ci.system_access_token)
    return ci


def test_azure_pipelines_token_is_the_assertion(emu: Emulator, pipelines: CiProviders,
                                                profiles: Profiles, client: Client) -> None:
    connection, credential = pipelines.add_service_connection()
    app = emu.register_app(federated=[credential])
    name = _app_profile(emu, profiles, app.client_id, f'{{ azure_pipelines = "{connection}" }}')
    answer = client.get(f"{emu.api_url}/x", EntraAuth(name))
    assert answer.status == 200
    assert answer.json()["claims"]["appid"] == app.client_id
    (oidc,) = [r for r in emu.requests if r.endpoint == "azure_pipelines_oidc"]
    assert oidc.method == "POST"
    assert oidc.query == {"api-version": "7.1", "serviceConnectionId": connection}
    assert oidc.headers["authorization"] == f"Bearer {pipelines.system_access_token}"
    assert oidc.headers["x-tfs-fedauthredirect"] == "Suppress"
    assert oidc.headers["content-type"] == "application/json"
    assert oidc.body == b""


def test_azure_pipelines_unknown_service_connection_says_what_to_check(
        emu: Emulator, pipelines: CiProviders, profiles: Profiles) -> None:
    wrong = str(uuid.uuid4())
    with pytest.raises(TokenError) as info:
        get_token(_app_profile(emu, profiles, str(uuid.uuid4()),
                               f'{{ azure_pipelines = "{wrong}" }}'))
    message = str(info.value)
    assert f"for service connection {wrong} (HTTP 404" in message
    assert "X-VSS-E2EID: " in message
    assert "X-MSEdge-Ref: " in message
    assert f"check the service connection id {wrong}" in message


def test_azure_pipelines_without_the_access_token_says_how_to_map_it(
        emu: Emulator, pipelines: CiProviders, profiles: Profiles,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYSTEM_ACCESSTOKEN")
    with pytest.raises(ConfigError) as info:
        get_token(_app_profile(emu, profiles, str(uuid.uuid4()),
                               '{ azure_pipelines = "abc" }'))
    assert "SYSTEM_ACCESSTOKEN is not set" in str(info.value)
    assert "$(System.AccessToken)" in str(info.value)
    assert emu.count("any") == 0


def test_azure_pipelines_refused_access_token(emu: Emulator, pipelines: CiProviders,
                                              profiles: Profiles,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    connection, _ = pipelines.add_service_connection()
    monkeypatch.setenv("SYSTEM_ACCESSTOKEN", "expired")
    with pytest.raises(TokenError) as info:
        get_token(_app_profile(emu, profiles, str(uuid.uuid4()),
                               f'{{ azure_pipelines = "{connection}" }}'))
    assert "HTTP 401: TF400813" in str(info.value)


@pytest.mark.parametrize("value", ['""', "true", '"a b"', '"x&y=1"'])
def test_bad_service_connection_id_is_a_config_error(emu: Emulator, profiles: Profiles,
                                                     value: str) -> None:
    _app_profile(emu, profiles, str(uuid.uuid4()), f"{{ azure_pipelines = {value} }}")
    with pytest.raises(ConfigError) as info:
        configlib.load_profile("app")
    assert "service connection" in str(info.value)


# ------------------------------------------------------------------ available here?


@pytest.mark.parametrize(("assertion", "variables"), [
    ("{ github_actions = true }", ("ACTIONS_ID_TOKEN_REQUEST_URL",
                                   "ACTIONS_ID_TOKEN_REQUEST_TOKEN")),
    ('{ azure_pipelines = "abc" }', ("SYSTEM_OIDCREQUESTURI", "SYSTEM_ACCESSTOKEN")),
])
def test_ci_sources_are_available_only_in_their_ci(emu: Emulator, profiles: Profiles,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   assertion: str,
                                                   variables: tuple[str, str]) -> None:
    profile = configlib.load_profile(_app_profile(emu, profiles, str(uuid.uuid4()), assertion))
    reason = registry.unavailable(profile)
    assert reason is not None
    assert reason.startswith(f"client_assertion: {variables[0]} and {variables[1]} are not set")
    monkeypatch.setenv(variables[0], "https://x.example/")
    reason = registry.unavailable(profile)
    assert reason is not None
    assert f"{variables[1]} is not set" in reason
    monkeypatch.setenv(variables[1], "t")
    assert registry.unavailable(profile) is None
    assert emu.count("any") == 0


def test_unset_environment_variable_makes_a_profile_unavailable(
        emu: Emulator, profiles: Profiles, monkeypatch: pytest.MonkeyPatch) -> None:
    profiles.write(f"""
        [profiles.app]
        flow = "client_credentials"
        tenant = "{emu.tenant_id}"
        client_id = "{uuid.uuid4()}"
        client_secret = {{ env = "APP_SECRET_FOR_AVAILABILITY" }}
        scope = "{emu.api_scope}"
    """)
    profile = configlib.load_profile("app")
    assert registry.unavailable(profile) == (
        "client_secret: environment variable APP_SECRET_FOR_AVAILABILITY is not set")
    monkeypatch.setenv("APP_SECRET_FOR_AVAILABILITY", "")
    assert registry.unavailable(profile) == (
        "client_secret: environment variable APP_SECRET_FOR_AVAILABILITY is empty")
    monkeypatch.setenv("APP_SECRET_FOR_AVAILABILITY", "s")
    assert registry.unavailable(profile) is None


def test_certificate_password_from_an_unset_variable_is_unavailable(
        emu: Emulator, profiles: Profiles, tmp_path: Path) -> None:
    pem = tmp_path / "c.pem"
    pem.write_text("x")
    profiles.write(f"""
        [profiles.app]
        flow = "client_credentials"
        tenant = "{emu.tenant_id}"
        client_id = "{uuid.uuid4()}"
        certificate = {{ path = "{pem}", password = {{ env = "NO_SUCH_CERT_PASSWORD" }} }}
        scope = "{emu.api_scope}"
    """)
    reason = registry.unavailable(configlib.load_profile("app"))
    assert reason == "certificate.password: environment variable NO_SUCH_CERT_PASSWORD is not set"


def test_workload_identity_availability(profiles: Profiles, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    profiles.write("""
        [profiles.wi]
        flow = "workload_identity"
        scope = "https://management.azure.com/.default"
    """)
    assert workload_identity.available(configlib.load_profile("wi")) == (
        "no tenant: $AZURE_TENANT_ID is not set")
    monkeypatch.setenv("AZURE_TENANT_ID", str(uuid.uuid4()))
    monkeypatch.setenv("AZURE_CLIENT_ID", str(uuid.uuid4()))
    assert workload_identity.available(configlib.load_profile("wi")) == (
        "no federated token: $AZURE_FEDERATED_TOKEN_FILE is not set")
    token_file = tmp_path / "token"
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    reason = workload_identity.available(configlib.load_profile("wi"))
    assert reason == (f"the federated token file {token_file} ($AZURE_FEDERATED_TOKEN_FILE) "
                      "does not exist")
    token_file.write_text("eyJ")
    assert registry.unavailable(configlib.load_profile("wi")) is None


def test_flows_that_need_nothing_of_the_environment_declare_no_availability() -> None:
    for name in ("client_credentials", "device_code", "authorization_code", "on_behalf_of",
                 "password", "refresh_token"):
        assert registry.flow(name).available is None, name
    for name in ("managed_identity", "workload_identity", "azure_cli", "azd",
                 "azure_powershell"):
        assert registry.flow(name).available is not None, name
