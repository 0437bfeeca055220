"""Managed identity end to end against the emulator: choosing IMDS, App Service or Cloud Shell
from the environment, user-assigned identities, IMDS starting up and misbehaving, no endpoint at
all, and refreshing at half the token's life."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from authlayer import ConfigError, EntraAuth, TokenError, get_token
from authlayer import config as configlib
from authlayer import jwt as jwtlib
from authlayer._http import ConnectionFailed, HttpResponse, Send, Sleep
from authlayer.emulator import Emulator
from authlayer.emulator.federated import Issuer, federated_issuers
from authlayer.emulator.managed_identity import ManagedIdentities, managed_identities
from authlayer.flows import managed_identity as flow
from authlayer.provider import PROVIDER, Binding

from .conftest import Client, Clock, Profiles
from .test_transport import _Proxy, _ProxyHandler


@pytest.fixture(autouse=True)
def _no_other_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a new process, no IMDS host has answered yet: the first request is a probe,
    whatever ran before."""
    monkeypatch.setattr(flow, "_answered", set())


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
                                              profiles: Profiles,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow, "MIN_STARTING_WAIT", 0.01)  # the emulator says Retry-After 0
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


@pytest.mark.parametrize("status", [404, 429, 500, 501, 503, 505, 520, 599])
def test_imds_retries_404_429_and_5xx(emu: Emulator, imds: str, profiles: Profiles,
                                      status: int) -> None:
    emu.inject("status", count=2, endpoint="imds", status=status, retry_after=0)
    assert get_token(_profile(emu, profiles)).token
    assert emu.count("imds") == 3


def test_imds_gives_up_after_bounded_retries(emu: Emulator, imds: str,
                                             profiles: Profiles) -> None:
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
    port = _closed_port()
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{port}")
    connects: list[Optional[float]] = []  # the connect timeout of each attempt on that port
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and address[1] == port:
            connects.append(sock.gettimeout())
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    # Quickly: one probe, with the probe's short timeout, and no retry of a refused connection.
    assert connects == [flow.PROBE_TIMEOUT]
    message = str(info.value)
    assert "no managed identity endpoint was found" in message
    assert "on Azure" in message
    for variable in ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST"):
        assert variable in message


def test_slow_first_answer_is_not_taken_for_no_endpoint(
        emu: Emulator, imds: str, profiles: Profiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow, "PROBE_TIMEOUT", 0.2)
    emu.hold(endpoint="imds", count=1)  # the probe is not answered within its timeout
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
    get_token(name)  # starts the refresh in the background
    PROVIDER.join_background()
    assert get_token(name).token != first.token
    assert emu.count("imds") == 2


# ------------------------------------------------------------------ the IMDS probe, step by step


def _imds_flow(profiles: Profiles, host: str = "http://169.254.169.254"
               ) -> Generator[Any, Any, HttpResponse]:
    profiles.write("""
        [profiles.mi]
        flow = "managed_identity"
        scope = "https://management.azure.com/.default"
        timeout = 5
    """)
    profile = configlib.load_profile("mi")
    source = flow.Source("imds", host + flow.IMDS_PATH)
    return flow._imds(profile, flow._request(profile, source, "https://management.azure.com",
                                             profile.timeout))


def _drive(gen: Generator[Any, Any, HttpResponse], answers: list[Any], seen: list[Any]
           ) -> HttpResponse:
    """Run a flow with canned answers to its Send actions, recording every action."""
    try:
        action = next(gen)
        while True:
            seen.append(action)
            action = gen.send(answers.pop(0) if isinstance(action, Send) else None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _answer(status: int, body: bytes = b"", **headers: str) -> HttpResponse:
    kind = "application/json" if body.startswith(b"{") else "text/html"
    return HttpResponse(status, {"content-type": kind, **headers}, body)


_TOKEN = b'{"access_token": "x", "expires_in": "3600"}'
_ERROR = b'{"error": "busy", "error_description": "try again"}'


def _sends(seen: list[Any]) -> list[Any]:
    return [a for a in seen if isinstance(a, Send)]


def test_probe_refused_connection_is_no_endpoint_whatever_the_reason_says(
        profiles: Profiles) -> None:
    seen: list[Any] = []
    with pytest.raises(TokenError) as info:
        _drive(_imds_flow(profiles), [ConnectionFailed("[Errno 111] refused", kind="connect")],
               seen)
    assert "no managed identity endpoint was found" in str(info.value)
    assert len(_sends(seen)) == 1
    assert _sends(seen)[0].request.timeout == flow.PROBE_TIMEOUT


def test_probe_timeout_gets_one_more_attempt_then_a_clear_error(profiles: Profiles) -> None:
    seen: list[Any] = []
    timeouts = [ConnectionFailed("ReadTimeout", kind="timeout") for _ in range(9)]
    with pytest.raises(TokenError) as info:
        _drive(_imds_flow(profiles), timeouts, seen)
    assert len(_sends(seen)) == 2  # the probe, and one attempt with the profile's timeout
    assert [a.request.timeout for a in _sends(seen)] == [flow.PROBE_TIMEOUT, 5.0]
    assert not [a for a in seen if isinstance(a, Sleep)]
    assert "did not answer" in str(info.value)
    assert info.value.error == "managed_identity_unavailable"


def test_probe_timeout_then_an_answer_is_used(profiles: Profiles) -> None:
    seen: list[Any] = []
    answers = [ConnectionFailed("ReadTimeout", kind="timeout"), _answer(200, _TOKEN)]
    assert _drive(_imds_flow(profiles), answers, seen).status == 200
    assert len(_sends(seen)) == 2


def test_probe_invalid_url_is_not_retried(profiles: Profiles) -> None:
    seen: list[Any] = []
    with pytest.raises(TokenError):
        _drive(_imds_flow(profiles), [ConnectionFailed("InvalidURL", retry=False, kind="invalid"),
                                      _answer(200, _TOKEN)], seen)
    assert len(_sends(seen)) == 1


@pytest.mark.parametrize("status", [410, 429, 503])
def test_probe_retryable_answer_honours_retry_after(profiles: Profiles, status: int) -> None:
    seen: list[Any] = []
    answers = [_answer(status, _ERROR, **{"retry-after": "7"}), _answer(200, _TOKEN)]
    assert _drive(_imds_flow(profiles), answers, seen).status == 200
    assert [a.seconds for a in seen if isinstance(a, Sleep)] == [7.0]
    assert len(_sends(seen)) == 2


def test_probe_retry_after_beyond_the_limit_is_not_waited_for(profiles: Profiles) -> None:
    seen: list[Any] = []
    response = _drive(_imds_flow(profiles), [_answer(429, _ERROR, **{"retry-after": "3600"})],
                      seen)
    assert response.status == 429
    assert not [a for a in seen if isinstance(a, Sleep)]


@pytest.mark.parametrize(("status", "body"), [
    (404, b"<?xml version='1.0'?><html><title>404 - Not Found</title></html>"),  # AWS
    (403, b"Missing Metadata-Flavor:Google header."),  # GCP
    (404, b'{"code": "NotFound", "message": "no such path"}'),  # JSON, but not IMDS's
])
def test_probe_answer_not_shaped_like_imds_is_no_endpoint(profiles: Profiles, status: int,
                                                          body: bytes) -> None:
    seen: list[Any] = []
    with pytest.raises(TokenError) as info:
        _drive(_imds_flow(profiles), [_answer(status, body) for _ in range(9)], seen)
    assert "no managed identity endpoint was found" in str(info.value)
    assert "on Azure" in str(info.value)
    assert f"HTTP {status}" in str(info.value)
    assert len(_sends(seen)) == 1
    assert not flow._answered


def test_imds_answer_after_the_probe_is_not_probed_again(profiles: Profiles) -> None:
    seen: list[Any] = []
    _drive(_imds_flow(profiles), [_answer(200, _TOKEN)], seen)
    seen.clear()
    _drive(_imds_flow(profiles), [_answer(200, _TOKEN)], seen)
    assert _sends(seen)[0].request.timeout == 5.0


def test_probe_410_with_the_emulator(emu: Emulator, mi: ManagedIdentities, imds: str,
                                     profiles: Profiles,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow, "MIN_STARTING_WAIT", 0.01)
    mi.starting(1)  # the probe itself gets 410
    assert get_token(_profile(emu, profiles)).token
    assert emu.count("imds") == 2


def test_probe_429_waits_for_retry_after(emu: Emulator, imds: str, profiles: Profiles) -> None:
    emu.inject("status", endpoint="imds", status=429, retry_after=0.4)
    started = time.monotonic()
    assert get_token(_profile(emu, profiles)).token
    assert time.monotonic() - started >= 0.4
    assert emu.count("imds") == 2


@pytest.mark.parametrize("status", [403, 404])
def test_another_clouds_metadata_service_is_no_endpoint(emu: Emulator, imds: str,
                                                        profiles: Profiles, status: int) -> None:
    emu.inject("html", count=10, endpoint="imds", status=status)
    with pytest.raises(TokenError) as info:
        get_token(_profile(emu, profiles))
    assert "Is this running on Azure" in str(info.value)
    assert emu.count("imds") == 1


# ------------------------------------------------------- AZURE_POD_IDENTITY_AUTHORITY_HOST


def test_pod_identity_host_without_a_scheme_gets_http(emu: Emulator, mi: ManagedIdentities,
                                                      profiles: Profiles,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", mi.imds_host.split("://", 1)[1] + "/")
    assert get_token(_profile(emu, profiles)).token
    assert emu.count("imds") == 1


@pytest.mark.parametrize("value", ["ftp://imds.example", "http://", "http://host:99999",
                                   "http://imds.example/?x=1", "exa mple.local"])
def test_bad_pod_identity_host_is_a_config_error_naming_it(
        emu: Emulator, profiles: Profiles, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", value)
    with pytest.raises(ConfigError) as info:
        get_token(_profile(emu, profiles))
    assert "$AZURE_POD_IDENTITY_AUTHORITY_HOST" in str(info.value)
    assert info.value.profile == "mi"
    assert emu.count("any") == 0


# ------------------------------------------------------------------ never through a proxy


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Proxy]:
    server = _Proxy(("127.0.0.1", 0), _ProxyHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{server.server_address[1]}")
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("source", ["imds", "app_service", "cloud_shell"])
def test_managed_identity_requests_never_go_through_a_proxy(
        emu: Emulator, mi: ManagedIdentities, imds: str, profiles: Profiles, proxy: _Proxy,
        monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    if source == "app_service":
        monkeypatch.setenv("IDENTITY_ENDPOINT", mi.app_service_endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", mi.identity_header)
    elif source == "cloud_shell":
        monkeypatch.setenv("MSI_ENDPOINT", mi.cloud_shell_endpoint)
    assert get_token(_profile(emu, profiles)).token
    assert emu.count(source) == 1
    assert proxy.seen == []


# ------------------------------------------------------------------ AKS with workload identity

SUBJECT = "system:serviceaccount:payments:api"


@pytest.fixture
def issuer(emu: Emulator) -> Issuer:
    return federated_issuers(emu).add(f"https://oidc.example/{uuid.uuid4().hex[:8]}")


def _federated_app(emu: Emulator, issuer: Issuer) -> Any:
    return emu.register_app(federated=[{"issuer": issuer.url, "subject": SUBJECT,
                                        "audience": "api://AzureADTokenExchange"}])


@pytest.fixture
def aks(emu: Emulator, issuer: Issuer, imds: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Any:
    """What the workload identity webhook puts in a pod (and IMDS, the node's, answers too)."""
    app = _federated_app(emu, issuer)
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(issuer.mint(SUBJECT))
    monkeypatch.setenv("AZURE_TENANT_ID", emu.tenant_id)
    monkeypatch.setenv("AZURE_CLIENT_ID", app.client_id)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", emu.url)
    return app


def test_workload_identity_is_used_instead_of_the_nodes_identity(
        emu: Emulator, aks: Any, profiles: Profiles, tmp_path: Path) -> None:
    token = get_token(_profile(emu, profiles))
    assert _claims(token.token)["appid"] == aks.client_id
    assert emu.count("imds") == 0
    (record,) = [r for r in emu.requests if r.endpoint == "token"]
    assert record.path == f"/{emu.tenant_id}/oauth2/v2.0/token"
    assert record.form["grant_type"] == "client_credentials"
    assert record.form["client_id"] == aks.client_id
    assert record.form["scope"] == emu.api_scope
    assert record.form["client_assertion"] == (tmp_path / "azure-identity-token").read_text()


def test_workload_identity_scope_without_default_suffix(emu: Emulator, aks: Any,
                                                        profiles: Profiles) -> None:
    get_token(_profile(emu, profiles, scope=emu.api_resource))
    assert emu.requests[-1].form["scope"] == emu.api_resource + "/.default"


def test_workload_identity_profile_client_id_wins(emu: Emulator, aks: Any, issuer: Issuer,
                                                  profiles: Profiles) -> None:
    other = _federated_app(emu, issuer)
    token = get_token(_profile(emu, profiles, f'client_id = "{other.client_id}"'))
    assert _claims(token.token)["appid"] == other.client_id
    assert emu.count("imds") == 0


@pytest.mark.parametrize("key", ["object_id", "resource_id"])
def test_workload_identity_cannot_pick_by_object_or_resource_id(
        emu: Emulator, aks: Any, profiles: Profiles, key: str) -> None:
    value = str(uuid.uuid4()) if key == "object_id" else "/subscriptions/x/rg/identity"
    with pytest.raises(ConfigError) as info:
        get_token(_profile(emu, profiles, f'{key} = "{value}"'))
    assert info.value.key == key
    assert "client_id" in str(info.value)
    assert emu.count("any") == 0


def test_workload_identity_needs_all_three_variables(
        emu: Emulator, aks: Any, profiles: Profiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE")
    get_token(_profile(emu, profiles))
    assert (emu.count("imds"), emu.count("token")) == (1, 0)


def test_app_service_wins_over_workload_identity(emu: Emulator, aks: Any, mi: ManagedIdentities,
                                                 app_service: None, profiles: Profiles) -> None:
    get_token(_profile(emu, profiles))
    assert (emu.count("app_service"), emu.count("token")) == (1, 0)


def test_workload_identity_tokens_are_cached_apart(emu: Emulator, aks: Any, profiles: Profiles,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    profile = configlib.load_profile(_profile(emu, profiles))
    pod = Binding.make(profile).key
    monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE")
    assert Binding.make(profile).key != pod


def test_workload_identity_bad_variable_names_it(emu: Emulator, aks: Any, profiles: Profiles,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_TENANT_ID", "not a tenant!")
    with pytest.raises(ConfigError) as info:
        get_token(_profile(emu, profiles))
    assert "$AZURE_TENANT_ID" in str(info.value)


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


def test_azure_sdk_tenant_id_is_ignored_for_managed_identity(emu: Emulator, profiles: Profiles,
                                                             imds: str) -> None:
    """Key Vault's and Storage's challenge policies pass tenant_id; a managed identity has no
    tenant to choose, so (as azure-identity does) it is ignored rather than refused."""
    from authlayer import credential

    name = _profile(emu, profiles)
    cred = credential(name)
    token = cred.get_token(emu.api_scope, tenant_id=emu.add_tenant())
    assert _claims(token.token)["aud"] == emu.api_resource
    info = cred.get_token_info(emu.api_scope, options={"tenant_id": "other.example"})
    assert info.token == token.token


@pytest.mark.parametrize("retry_after", ["0", "Wed, 21 Oct 2015 07:28:00 GMT", "0.001"])
def test_imds_starting_window_always_ends(retry_after: str) -> None:
    """IMDS answering 410 with a zero (or past) Retry-After must not make the wait spin: each
    wait is at least MIN_STARTING_WAIT and the window ends after a bounded number of tries."""
    import types

    from authlayer._http import HttpRequest, HttpResponse, Send
    from authlayer.flows import managed_identity as flow

    request = HttpRequest("GET", flow.IMDS_HOST + flow.IMDS_PATH, timeout=5,
                          retry_statuses=flow.IMDS_RETRY_STATUSES, max_attempts=5)
    flow._answered.add(request.host)  # answered before: no probe
    gen = flow._imds(types.SimpleNamespace(name="mi"), request)  # type: ignore[arg-type]
    sends, sleeps = 0, []
    answer = HttpResponse(410, {"retry-after": retry_after}, b'{"error":"starting"}')

    def drive() -> None:
        nonlocal sends
        action = next(gen)
        while sends < 1000:
            if isinstance(action, Send):
                sends += 1
                action = gen.send(answer)
            else:
                sleeps.append(action.seconds)
                action = gen.send(None)

    with pytest.raises(StopIteration) as done:  # the flow ends by itself
        drive()
    assert done.value.value.status == 410
    assert sends <= flow.STARTING_WINDOW / flow.MIN_STARTING_WAIT + 2
    assert all(s >= flow.MIN_STARTING_WAIT for s in sleeps[:-1])
