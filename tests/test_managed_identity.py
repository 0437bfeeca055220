"""Managed identity end to end against the emulator: choosing IMDS, App Service or Cloud Shell
from the environment, user-assigned identities, IMDS starting up and misbehaving, no endpoint at
all, and refreshing at half the token's life."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from authlayer import ConfigError, EntraAuth, TokenError, get_token
from authlayer import jwt as jwtlib
from authlayer.emulator import Emulator
from authlayer.emulator.managed_identity import ManagedIdentities, managed_identities
from authlayer.flows import managed_identity as flow
from authlayer.provider import PROVIDER

from .conftest import Client, Profiles
from .test_client_credentials import Clock


@pytest.fixture(autouse=True)
def _no_other_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def mi(emu: Emulator) -> ManagedIdentities:
    return managed_identities(emu)


def _profile(emu: Emulator, profiles: Profiles, extra: str = "", scope: str = "") -> str:
    profiles.write(f"""
        [profiles.mi]
        flow = "managed_identity"
        scope = "{scope or emu.api_scope}"
        timeout = 5
        {extra}
    """)
    return "mi"


@pytest.fixture
def imds(emu: Emulator, mi: ManagedIdentities, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", mi.imds_host)
    return mi.imds_host


def _claims(token: str) -> dict[str, object]:
    return jwtlib.decode(token)[1]


# ------------------------------------------------------------------ IMDS


def test_imds_token_reaches_the_protected_api(emu: Emulator, mi: ManagedIdentities, imds: str,
                                              profiles: Profiles, client: Client) -> None:
    answer = client.get(f"{emu.api_url}/hello", EntraAuth(_profile(emu, profiles)))
    assert answer.status == 200
    claims = answer.json()["claims"]
    assert mi.system is not None
    assert (claims["oid"], claims["appid"]) == (mi.system.object_id, mi.system.client_id)
    assert claims["aud"] == emu.api_resource
    (record,) = [r for r in emu.requests if r.endpoint == "imds"]
    assert record.method == "GET"
    assert record.path == "/metadata/identity/oauth2/token"
    assert record.headers["metadata"] == "true"
    assert record.query == {"api-version": "2018-02-01", "resource": emu.api_resource}


@pytest.mark.parametrize(("key", "field"), [("client_id", "client_id"),
                                            ("object_id", "object_id"),
                                            ("resource_id", "msi_res_id")])
def test_imds_user_assigned_by_each_selector(emu: Emulator, mi: ManagedIdentities, imds: str,
                                             profiles: Profiles, key: str, field: str) -> None:
    identity = mi.add(roles=["Reader"])
    value = getattr(identity, key)
    token = get_token(_profile(emu, profiles, f'{key} = "{value}"'))
    claims = _claims(token.token)
    assert claims["oid"] == identity.object_id
    assert claims["roles"] == ["Reader"]
    assert emu.requests[-1].query[field] == value


def test_scope_without_default_suffix_is_the_resource(emu: Emulator, imds: str,
                                                      profiles: Profiles) -> None:
    get_token(_profile(emu, profiles, scope=emu.api_resource))
    assert emu.requests[-1].query["resource"] == emu.api_resource


def test_two_scopes_are_a_config_error(emu: Emulator, imds: str, profiles: Profiles) -> None:
    profiles.write(f"""
        [profiles.mi]
        flow = "managed_identity"
        scope = ["{emu.api_scope}", "https://graph.microsoft.com/.default"]
    """)
    with pytest.raises(ConfigError) as info:
        get_token("mi")
    assert info.value.key == "scope"
    assert emu.count("any") == 0


def test_unknown_user_assigned_identity_says_it_is_not_assigned(
        emu: Emulator, imds: str, profiles: Profiles) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles, f'client_id = "{missing}"'))
    err = info.value
    assert err.status == 400
    assert err.error == "invalid_request"
    assert "Identity not found" in str(err)
    assert f"user-assigned identity {missing!r} is not assigned to this VM" in str(err)
    assert emu.count("imds") == 1  # a 400 is not retried


def test_no_system_assigned_identity(emu: Emulator, mi: ManagedIdentities, imds: str,
                                     profiles: Profiles) -> None:
    mi.enable_system(False)
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert "this VM or scale set has no system-assigned identity" in str(info.value)


def test_imds_answers_410_while_the_vm_starts(emu: Emulator, mi: ManagedIdentities, imds: str,
                                              profiles: Profiles) -> None:
    mi.starting(3)
    assert get_token(_profile(emu, profiles)).token
    assert emu.count("imds") == 4


def test_imds_still_starting_after_the_window_is_an_error(
        emu: Emulator, mi: ManagedIdentities, imds: str, profiles: Profiles,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow, "STARTING_WINDOW", 0.05)
    mi.starting(1000)
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert info.value.status == 410
    assert "still starting" in str(info.value)


@pytest.mark.parametrize("status", [404, 429, 500, 503])
def test_imds_retries_404_429_and_5xx(emu: Emulator, imds: str, profiles: Profiles,
                                      status: int) -> None:
    emu.inject("status", count=2, endpoint="imds", status=status, retry_after=0)
    assert get_token(_profile(emu, profiles)).token
    assert emu.count("imds") == 3


def test_imds_gives_up_after_bounded_retries(emu: Emulator, imds: str, profiles: Profiles,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow, "_answered", set())  # the first request is a probe
    emu.inject("status", count=50, endpoint="imds", status=503, retry_after=0)
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert info.value.status == 503
    assert emu.count("imds") == flow.IMDS_MAX_ATTEMPTS


@pytest.mark.parametrize("kind", ["truncated", "html"])
def test_malformed_answer_from_imds_is_a_token_error(emu: Emulator, imds: str,
                                                     profiles: Profiles, kind: str) -> None:
    emu.inject(kind, endpoint="imds")
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert info.value.status == 200
    assert info.value.error == "malformed_response"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_endpoint_is_a_clear_error_quickly(emu: Emulator, profiles: Profiles,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert time.monotonic() - started < 2
    message = str(info.value)
    assert "no managed identity endpoint was found" in message
    assert "on Azure" in message
    for variable in ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST"):
        assert variable in message


def test_slow_first_answer_is_not_taken_for_no_endpoint(
        emu: Emulator, imds: str, profiles: Profiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow, "_answered", set())
    monkeypatch.setattr(flow, "PROBE_TIMEOUT", 0.2)
    emu.inject("latency", endpoint="imds", seconds=0.6)
    assert get_token(_profile(emu, profiles)).token
    assert emu.count("imds") == 2


def test_refreshed_at_half_its_life(emu: Emulator, mi: ManagedIdentities, imds: str,
                                    profiles: Profiles, monkeypatch: pytest.MonkeyPatch) -> None:
    mi.lifetime = 86400  # managed identity tokens live 24 h
    clock = Clock()
    monkeypatch.setattr(PROVIDER, "clock", clock)
    name = _profile(emu, profiles)
    first = get_token(name)
    start = clock.now
    clock.now = start + 43200 - 5
    assert get_token(name) is first
    clock.now = start + 43200 + 5
    assert get_token(name).token != first.token
    assert emu.count("imds") == 2


# ------------------------------------------------------------------ App Service and Functions


@pytest.fixture
def app_service(mi: ManagedIdentities, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", mi.app_service_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", mi.identity_header)


def test_app_service_token_reaches_the_protected_api(emu: Emulator, mi: ManagedIdentities,
                                                     app_service: None, imds: str,
                                                     profiles: Profiles, client: Client) -> None:
    answer = client.get(f"{emu.api_url}/x", EntraAuth(_profile(emu, profiles)))
    assert answer.status == 200
    assert mi.system is not None
    assert answer.json()["claims"]["oid"] == mi.system.object_id
    assert emu.count("imds") == 0  # IDENTITY_ENDPOINT with IDENTITY_HEADER wins over IMDS
    (record,) = [r for r in emu.requests if r.endpoint == "app_service"]
    assert record.headers["x-identity-header"] == mi.identity_header
    assert record.query == {"api-version": "2019-08-01", "resource": emu.api_resource}


@pytest.mark.parametrize(("key", "field"), [("client_id", "client_id"),
                                            ("object_id", "principal_id"),
                                            ("resource_id", "mi_res_id")])
def test_app_service_user_assigned_by_each_selector(
        emu: Emulator, mi: ManagedIdentities, app_service: None, profiles: Profiles,
        key: str, field: str) -> None:
    identity = mi.add()
    value = getattr(identity, key)
    token = get_token(_profile(emu, profiles, f'{key} = "{value}"'))
    assert _claims(token.token)["oid"] == identity.object_id
    assert emu.requests[-1].query[field] == value


def test_app_service_expiry_comes_from_expires_on(emu: Emulator, mi: ManagedIdentities,
                                                  app_service: None, profiles: Profiles) -> None:
    token = get_token(_profile(emu, profiles))
    assert token.expires_on == _claims(token.token)["exp"]


def test_app_service_unknown_identity(emu: Emulator, app_service: None,
                                      profiles: Profiles) -> None:
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles, f'object_id = "{uuid.uuid4()}"'))
    assert info.value.status == 400
    assert "Unable to load the proper Managed Identity" in str(info.value)
    assert "is not assigned to this app" in str(info.value)


def test_app_service_wrong_header_is_refused(emu: Emulator, mi: ManagedIdentities,
                                             profiles: Profiles,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", mi.app_service_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert info.value.status == 401
    assert "not-the-header" not in str(info.value)


def test_identity_endpoint_without_header_is_not_app_service(
        emu: Emulator, mi: ManagedIdentities, imds: str, profiles: Profiles,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", mi.app_service_endpoint)
    get_token(_profile(emu, profiles))
    assert (emu.count("imds"), emu.count("app_service")) == (1, 0)


def test_app_service_endpoint_not_answering(emu: Emulator, profiles: Profiles,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{_closed_port()}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "h")
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert "IDENTITY_ENDPOINT" in str(info.value)


# ------------------------------------------------------------------ Cloud Shell


@pytest.fixture
def cloud_shell(mi: ManagedIdentities, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSI_ENDPOINT", mi.cloud_shell_endpoint)


def test_cloud_shell_token_reaches_the_protected_api(emu: Emulator, cloud_shell: None,
                                                     imds: str, profiles: Profiles,
                                                     client: Client) -> None:
    answer = client.get(f"{emu.api_url}/x", EntraAuth(_profile(emu, profiles)))
    assert answer.status == 200
    assert emu.count("imds") == 0
    (record,) = [r for r in emu.requests if r.endpoint == "cloud_shell"]
    assert record.method == "POST"
    assert record.form == {"resource": emu.api_resource}
    assert record.headers["metadata"] == "true"


def test_cloud_shell_has_no_user_assigned_identities(emu: Emulator, cloud_shell: None,
                                                     profiles: Profiles) -> None:
    with pytest.raises(ConfigError) as info:
        get_token(_profile(emu, profiles, f'client_id = "{uuid.uuid4()}"'))
    assert info.value.key == "client_id"
    assert "Cloud Shell" in str(info.value)
    assert emu.count("any") == 0


@pytest.mark.parametrize(("env", "what"), [
    ({"IDENTITY_ENDPOINT": "http://127.0.0.1:1/", "IMDS_ENDPOINT": "http://127.0.0.1:2/"},
     "Azure Arc"),
    ({"IDENTITY_ENDPOINT": "http://127.0.0.1:1/", "IDENTITY_HEADER": "h",
      "IDENTITY_SERVER_THUMBPRINT": "ab"}, "Service Fabric"),
    ({"MSI_ENDPOINT": "http://127.0.0.1:1/", "MSI_SECRET": "s"}, "MSI_SECRET"),
])
def test_unsupported_sources_say_so(emu: Emulator, profiles: Profiles,
                                    monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                    what: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert what in str(info.value)
    assert "not supported" in str(info.value)
