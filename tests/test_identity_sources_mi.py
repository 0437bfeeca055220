"""Managed identity on Azure Arc (the key-file challenge and every check on the key file),
Service Fabric (TLS pinned to IDENTITY_SERVER_THUMBPRINT) and Azure Machine Learning, end to end
against the emulator; the order in which the environment chooses a source; and "is a managed
identity available here?", IMDS decided absent by one short probe on loopback."""

from __future__ import annotations

import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from authlayer import ConfigError, EntraAuth, TokenError, get_token
from authlayer import config as configlib
from authlayer import jwt as jwtlib
from authlayer._http import HttpResponse
from authlayer.emulator import Emulator
from authlayer.emulator.managed_identity import ManagedIdentities, managed_identities
from authlayer.flows import managed_identity as flow
from authlayer.hosts import HostPolicy
from authlayer.profile import Profile

from .conftest import Client, Profiles


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(flow, "_answered", set())
    monkeypatch.setattr(flow, "HIMDS_PATHS", {})  # whatever this machine has installed


@pytest.fixture
def mi(emu: Emulator) -> ManagedIdentities:
    return managed_identities(emu)


def _profile(profiles: Profiles, scope: str, extra: str = "") -> str:
    profiles.write(f"""
        [profiles.mi]
        flow = "managed_identity"
        scope = "{scope}"
        timeout = 5
        {extra}
    """)
    return "mi"


def _claims(token: str) -> dict[str, object]:
    return jwtlib.decode(token)[1]


# ------------------------------------------------------------------ choosing the source


_E = "http://127.0.0.1:9/token"


@pytest.mark.parametrize(("env", "kind"), [
    ({"IDENTITY_ENDPOINT": "https://127.0.0.1:9/t", "IDENTITY_HEADER": "h",
      "IDENTITY_SERVER_THUMBPRINT": "a" * 40, "IMDS_ENDPOINT": _E, "MSI_ENDPOINT": _E,
      "MSI_SECRET": "s"}, "service_fabric"),
    ({"IDENTITY_ENDPOINT": _E, "IDENTITY_HEADER": "h", "IMDS_ENDPOINT": _E, "MSI_ENDPOINT": _E,
      "MSI_SECRET": "s"}, "app_service"),
    ({"MSI_ENDPOINT": _E, "MSI_SECRET": "s", "IDENTITY_ENDPOINT": _E, "IMDS_ENDPOINT": _E},
     "azure_ml"),
    ({"IDENTITY_ENDPOINT": _E, "IMDS_ENDPOINT": _E, "MSI_ENDPOINT": _E}, "azure_arc"),
    ({"MSI_ENDPOINT": _E}, "cloud_shell"),
    ({"IDENTITY_ENDPOINT": _E}, "imds"),
    ({"IDENTITY_SERVER_THUMBPRINT": "a" * 40, "IDENTITY_ENDPOINT": _E}, "imds"),
    ({}, "imds"),
])
def test_sources_are_chosen_in_the_azure_tools_order(env: dict[str, str], kind: str) -> None:
    assert flow.choose_source(env).kind == kind


def test_installed_arc_agent_is_chosen_without_variables(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    himds = tmp_path / "himds"
    himds.write_text("")
    monkeypatch.setattr(flow, "HIMDS_PATHS", {sys.platform: str(himds)})
    source = flow.choose_source({})
    assert (source.kind, source.url) == ("azure_arc", flow.ARC_DEFAULT_ENDPOINT)
    # An IMDS host named on purpose still wins.
    assert flow.choose_source({"AZURE_POD_IDENTITY_AUTHORITY_HOST": "127.0.0.1:9"}).kind == "imds"


# ------------------------------------------------------------------ Azure Arc


@pytest.fixture
def arc(mi: ManagedIdentities, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An Arc machine: the agent's variables, and its key folder (a stand-in for
    /var/opt/azcmagent/tokens)."""
    folder = tmp_path / "azcmagent" / "tokens"
    folder.mkdir(parents=True)
    mi.arc_key_folder = folder
    monkeypatch.setattr(flow, "arc_key_folder", lambda: str(folder))
    monkeypatch.setenv("IDENTITY_ENDPOINT", mi.arc_endpoint)
    monkeypatch.setenv("IMDS_ENDPOINT", mi.imds_host)
    return folder


def test_arc_token_reaches_the_protected_api(emu: Emulator, mi: ManagedIdentities, arc: Path,
                                             profiles: Profiles, client: Client) -> None:
    answer = client.get(f"{emu.api_url}/x", EntraAuth(_profile(profiles, emu.api_scope)))
    assert answer.status == 200
    assert mi.system is not None
    assert answer.json()["claims"]["oid"] == mi.system.object_id
    challenge, second = [r for r in emu.requests if r.endpoint == "azure_arc"]
    assert challenge.query == second.query == {"api-version": "2020-06-01",
                                               "resource": emu.api_resource}
    assert challenge.headers["metadata"] == second.headers["metadata"] == "true"
    assert "authorization" not in challenge.headers
    (key_file,) = arc.iterdir()
    assert second.headers["authorization"] == "Basic " + key_file.read_text()
    assert emu.count("imds") == 0


def _arc_refused(emu: Emulator, profiles: Profiles) -> TokenError:
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, emu.api_scope))
    assert info.value.error == "arc_key_file_invalid"
    assert emu.count("azure_arc") == 1  # the key was never sent
    return info.value


def test_arc_key_file_outside_the_agents_folder_is_refused(
        emu: Emulator, mi: ManagedIdentities, arc: Path, tmp_path: Path,
        profiles: Profiles) -> None:
    elsewhere = tmp_path / "elsewhere.key"
    elsewhere.write_text("planted")
    mi.arc_realm = str(elsewhere)
    assert "is not in the Arc agent's folder" in str(_arc_refused(emu, profiles))


def test_arc_key_file_reached_through_dot_dot_is_refused(
        emu: Emulator, mi: ManagedIdentities, arc: Path, profiles: Profiles) -> None:
    (arc.parent / "x.key").write_text("planted")
    mi.arc_realm = str(arc / ".." / "x.key")
    assert "is not in the Arc agent's folder" in str(_arc_refused(emu, profiles))


def test_arc_key_file_without_the_key_extension_is_refused(
        emu: Emulator, mi: ManagedIdentities, arc: Path, profiles: Profiles) -> None:
    (arc / "secret.txt").write_text("k")
    mi.arc_realm = str(arc / "secret.txt")
    assert "is not a .key file" in str(_arc_refused(emu, profiles))


def test_arc_key_file_larger_than_4_kb_is_refused(
        emu: Emulator, mi: ManagedIdentities, arc: Path, profiles: Profiles) -> None:
    (arc / "big.key").write_text("k" * 4097)
    mi.arc_realm = str(arc / "big.key")
    assert "larger than 4096 bytes" in str(_arc_refused(emu, profiles))


def test_arc_key_file_of_exactly_4_kb_is_used(
        emu: Emulator, mi: ManagedIdentities, arc: Path, profiles: Profiles) -> None:
    (arc / "edge.key").write_text("k" * 4096)
    mi.arc_realm = str(arc / "edge.key")
    assert get_token(_profile(profiles, emu.api_scope)).token
    assert emu.requests[-1].headers["authorization"] == "Basic " + "k" * 4096


def test_arc_key_file_that_does_not_exist_is_refused(
        emu: Emulator, mi: ManagedIdentities, arc: Path, profiles: Profiles) -> None:
    mi.arc_realm = str(arc / "gone.key")
    assert "does not exist" in str(_arc_refused(emu, profiles))


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
def test_arc_key_file_that_is_a_link_is_refused(
        emu: Emulator, mi: ManagedIdentities, arc: Path, tmp_path: Path,
        profiles: Profiles) -> None:
    target = tmp_path / "target"
    target.write_text("k")
    (arc / "link.key").symlink_to(target)
    mi.arc_realm = str(arc / "link.key")
    assert "is not a regular file" in str(_arc_refused(emu, profiles))


def test_arc_key_folder_that_is_a_file_is_refused(
        emu: Emulator, mi: ManagedIdentities, arc: Path, profiles: Profiles) -> None:
    (arc / "sub.key").mkdir()
    mi.arc_realm = str(arc / "sub.key")
    assert "is not a regular file" in str(_arc_refused(emu, profiles))


@pytest.mark.parametrize("header", ["", "Bearer realm=/x.key", "Basic", "Basic realm=",
                                    "Basic scope=/var/opt/azcmagent/tokens/a.key"])
def test_arc_401_without_a_key_file_challenge_is_a_clear_error(header: str) -> None:
    headers = {"www-authenticate": header} if header else {}
    with pytest.raises(TokenError) as info:
        flow._arc_realm(_bare(), HttpResponse(401, headers, b""))
    assert "key file challenge" in str(info.value)


def test_arc_realm_may_be_quoted() -> None:
    answer = HttpResponse(401, {"www-authenticate": 'Basic realm="/t/a.key"'}, b"")
    assert flow._arc_realm(_bare(), answer) == "/t/a.key"


def _bare() -> Profile:
    return Profile(name="mi", flow="managed_identity", scopes=("x",), hosts=HostPolicy(()))


def test_arc_has_no_user_assigned_identities(emu: Emulator, arc: Path,
                                             profiles: Profiles) -> None:
    with pytest.raises(ConfigError) as info:
        get_token(_profile(profiles, emu.api_scope, f'client_id = "{uuid.uuid4()}"'))
    assert info.value.key == "client_id"
    assert "Azure Arc" in str(info.value)
    assert emu.count("any") == 0


def test_arc_on_an_unsupported_platform_says_so(emu: Emulator, arc: Path, profiles: Profiles,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow, "arc_key_folder", lambda: None)
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, emu.api_scope))
    assert "Linux and Windows only" in str(info.value)


def test_arc_key_folder_is_the_agents() -> None:
    if sys.platform == "linux":
        assert flow.arc_key_folder() == "/var/opt/azcmagent/tokens"
    elif sys.platform == "win32":
        assert flow.arc_key_folder() == os.path.join(os.environ["PROGRAMDATA"],
                                                     "AzureConnectedMachineAgent", "Tokens")
    else:
        assert flow.arc_key_folder() is None


# ------------------------------------------------------------------ Service Fabric


@pytest.fixture(scope="module")
def tls_emulator() -> Iterator[Emulator]:
    with Emulator(tls=True) as emu:
        yield emu


@pytest.fixture
def sf(tls_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """A Service Fabric node: the endpoint over TLS with the cluster's own certificate (this
    process does not trust its CA), and its thumbprint pinned."""
    tls_emulator.reset()
    mi = managed_identities(tls_emulator)
    monkeypatch.setenv("IDENTITY_ENDPOINT", mi.service_fabric_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", mi.identity_header)
    monkeypatch.setenv("IDENTITY_SERVER_THUMBPRINT", mi.thumbprint)
    return tls_emulator


def test_service_fabric_token_reaches_the_protected_api(
        sf: Emulator, profiles: Profiles, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    mi = managed_identities(sf)
    name = _profile(profiles, sf.api_scope)
    # The script trusts the API's certificate; authlayer trusts the pinned one only.
    assert sf.ca_file is not None
    monkeypatch.setenv("SSL_CERT_FILE", sf.ca_file)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sf.ca_file)
    answer = client.get(f"{sf.api_url}/x", EntraAuth(name))
    assert answer.status == 200
    assert mi.system is not None
    assert answer.json()["claims"]["oid"] == mi.system.object_id
    (record,) = [r for r in sf.requests if r.endpoint == "service_fabric"]
    assert record.headers["secret"] == mi.identity_header
    assert record.query == {"api-version": "2019-07-01-preview", "resource": sf.api_resource}


def test_service_fabric_pinned_certificate_needs_no_trusted_ca(sf: Emulator,
                                                               profiles: Profiles) -> None:
    token = get_token(_profile(profiles, sf.api_scope))
    assert _claims(token.token)["aud"] == sf.api_resource


def test_service_fabric_certificate_that_does_not_match_is_refused(
        sf: Emulator, profiles: Profiles, monkeypatch: pytest.MonkeyPatch) -> None:
    with Emulator(tls=True) as other:
        monkeypatch.setenv("IDENTITY_SERVER_THUMBPRINT", managed_identities(other).thumbprint)
    # Even a certificate the CA bundle trusts is refused when it is not the pinned one.
    assert sf.ca_file is not None
    monkeypatch.setenv("SSL_CERT_FILE", sf.ca_file)
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, sf.api_scope))
    message = str(info.value)
    assert "does not have the certificate $IDENTITY_SERVER_THUMBPRINT pins" in message
    assert managed_identities(sf).thumbprint in message
    assert sf.count("service_fabric") == 0  # the secret header never left


def test_service_fabric_thumbprint_as_tools_print_it(sf: Emulator, profiles: Profiles,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    raw = managed_identities(sf).thumbprint.upper()
    monkeypatch.setenv("IDENTITY_SERVER_THUMBPRINT",
                       ":".join(raw[i:i + 2] for i in range(0, 40, 2)))
    assert get_token(_profile(profiles, sf.api_scope)).token


@pytest.mark.parametrize("value", ["abc", "z" * 40, "a" * 64])
def test_bad_thumbprint_is_a_config_error_naming_the_variable(
        sf: Emulator, profiles: Profiles, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("IDENTITY_SERVER_THUMBPRINT", value)
    with pytest.raises(ConfigError) as info:
        get_token(_profile(profiles, sf.api_scope))
    assert "$IDENTITY_SERVER_THUMBPRINT" in str(info.value)
    assert info.value.profile == "mi"


def test_service_fabric_over_plain_http_is_refused(sf: Emulator, profiles: Profiles,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/sf/token")
    with pytest.raises(ConfigError) as info:
        get_token(_profile(profiles, sf.api_scope))
    assert "https://" in str(info.value)


def test_service_fabric_wrong_secret_says_what_to_check(sf: Emulator, profiles: Profiles,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "wrong")
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, sf.api_scope))
    assert info.value.status == 401
    assert "Secret is not found" in str(info.value)
    assert "$IDENTITY_HEADER" in str(info.value)


def test_service_fabric_without_an_identity(sf: Emulator, profiles: Profiles) -> None:
    managed_identities(sf).enable_system(False)
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, sf.api_scope))
    assert "this application has no system-assigned identity" in str(info.value)


def test_service_fabric_user_assigned_is_a_config_error(sf: Emulator,
                                                        profiles: Profiles) -> None:
    with pytest.raises(ConfigError) as info:
        get_token(_profile(profiles, sf.api_scope, f'client_id = "{uuid.uuid4()}"'))
    assert "Service Fabric" in str(info.value)
    assert sf.count("any") == 0


# ------------------------------------------------------------------ Azure Machine Learning


@pytest.fixture
def azure_ml(mi: ManagedIdentities, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSI_ENDPOINT", mi.azure_ml_endpoint)
    monkeypatch.setenv("MSI_SECRET", mi.msi_secret)


def test_azure_ml_token_reaches_the_protected_api(emu: Emulator, mi: ManagedIdentities,
                                                  azure_ml: None, profiles: Profiles,
                                                  client: Client) -> None:
    answer = client.get(f"{emu.api_url}/x", EntraAuth(_profile(profiles, emu.api_scope)))
    assert answer.status == 200
    assert mi.system is not None
    assert answer.json()["claims"]["oid"] == mi.system.object_id
    (record,) = [r for r in emu.requests if r.endpoint == "azure_ml"]
    assert record.headers["secret"] == mi.msi_secret
    assert record.query == {"api-version": "2017-09-01", "resource": emu.api_resource}


def test_azure_ml_user_assigned_by_client_id(emu: Emulator, mi: ManagedIdentities,
                                             azure_ml: None, profiles: Profiles) -> None:
    identity = mi.add()
    token = get_token(_profile(profiles, emu.api_scope, f'client_id = "{identity.client_id}"'))
    assert _claims(token.token)["oid"] == identity.object_id
    assert emu.requests[-1].query["clientid"] == identity.client_id


def test_azure_ml_object_id_is_a_config_error(emu: Emulator, azure_ml: None,
                                              profiles: Profiles) -> None:
    with pytest.raises(ConfigError) as info:
        get_token(_profile(profiles, emu.api_scope, f'object_id = "{uuid.uuid4()}"'))
    assert info.value.key == "object_id"
    assert "client_id only" in str(info.value)


def test_azure_ml_expiry_given_as_a_date(emu: Emulator, mi: ManagedIdentities, azure_ml: None,
                                         profiles: Profiles) -> None:
    mi.dated_expiry = True
    token = get_token(_profile(profiles, emu.api_scope))
    assert token.expires_on == _claims(token.token)["exp"]


def test_azure_ml_wrong_secret_says_what_to_check(emu: Emulator, azure_ml: None,
                                                  profiles: Profiles,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSI_SECRET", "wrong")
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, emu.api_scope))
    assert "$MSI_SECRET" in str(info.value)


def test_azure_ml_endpoint_not_answering_names_the_variable(emu: Emulator, profiles: Profiles,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setenv("MSI_ENDPOINT", f"http://127.0.0.1:{_closed_port()}/ml/token")
    monkeypatch.setenv("MSI_SECRET", "s")
    with pytest.raises(TokenError) as info:
        get_token(_profile(profiles, emu.api_scope))
    assert "Azure Machine Learning" in str(info.value)
    assert "$MSI_ENDPOINT" in str(info.value)


# ------------------------------------------------------------------ available here?


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _loaded(profiles: Profiles, scope: str = "https://management.azure.com/.default") -> Profile:
    _profile(profiles, scope)
    return configlib.load_profile("mi")


def test_no_imds_is_unavailable(profiles: Profiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"127.0.0.1:{_closed_port()}")
    reason = flow.available(_loaded(profiles))
    assert reason is not None
    assert "no managed identity endpoint" in reason


def test_imds_that_never_answers_is_unavailable_after_one_short_attempt(
        profiles: Profiles, monkeypatch: pytest.MonkeyPatch) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    accepted: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                accepted.append(silent.accept()[0])
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setattr(flow, "AVAILABLE_PROBE_TIMEOUT", 0.2)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST",
                       f"127.0.0.1:{silent.getsockname()[1]}")
    try:
        reason = flow.available(_loaded(profiles))
    finally:
        silent.close()
        for conn in accepted:
            conn.close()
    assert reason is not None
    assert "did not answer" in reason
    assert len(accepted) == 1  # one attempt, no retries


def test_imds_that_answers_is_available_and_not_probed_again(
        emu: Emulator, mi: ManagedIdentities, profiles: Profiles,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", mi.imds_host)
    assert flow.available(_loaded(profiles, emu.api_scope)) is None
    assert emu.count("imds") == 1
    assert get_token("mi").token
    assert emu.count("imds") == 2  # no second probe before the token request


def test_imds_without_an_identity_is_unavailable(emu: Emulator, mi: ManagedIdentities,
                                                 profiles: Profiles,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    mi.enable_system(False)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", mi.imds_host)
    reason = flow.available(_loaded(profiles, emu.api_scope))
    assert reason is not None
    assert "has no identity" in reason


def test_another_clouds_metadata_service_is_unavailable(emu: Emulator, mi: ManagedIdentities,
                                                        profiles: Profiles,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    emu.inject("html", endpoint="imds", status=404)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", mi.imds_host)
    reason = flow.available(_loaded(profiles, emu.api_scope))
    assert reason is not None
    assert "which is not IMDS" in reason


@pytest.mark.parametrize("source", ["app_service", "azure_ml", "arc", "cloud_shell"])
def test_sources_the_host_announces_are_available_without_a_request(
        emu: Emulator, mi: ManagedIdentities, profiles: Profiles,
        monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    env = {"app_service": {"IDENTITY_ENDPOINT": _E, "IDENTITY_HEADER": "h"},
           "azure_ml": {"MSI_ENDPOINT": _E, "MSI_SECRET": "s"},
           "arc": {"IDENTITY_ENDPOINT": _E, "IMDS_ENDPOINT": _E},
           "cloud_shell": {"MSI_ENDPOINT": _E}}[source]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert flow.available(_loaded(profiles)) is None
    assert emu.count("any") == 0


def test_workload_identity_without_its_token_file_is_unavailable(
        profiles: Profiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_TENANT_ID", str(uuid.uuid4()))
    monkeypatch.setenv("AZURE_CLIENT_ID", str(uuid.uuid4()))
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(tmp_path / "token"))
    profile = _loaded(profiles)
    reason = flow.available(profile)
    assert reason is not None
    assert "token" in reason
    assert "does not exist" in reason
    (tmp_path / "token").write_text("eyJ")
    assert flow.available(profile) is None


def test_a_bad_imds_host_variable_is_a_config_error_not_unavailable(
        profiles: Profiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", "ftp://x")
    with pytest.raises(ConfigError):
        flow.available(_loaded(profiles))


def test_the_spec_declares_availability() -> None:
    from authlayer import registry

    assert registry.flow("managed_identity").available is flow.available


def test_imds_is_decided_absent_within_about_a_second() -> None:
    """The probe is one attempt whose whole exchange has this deadline (the driver's)."""
    assert flow.AVAILABLE_PROBE_TIMEOUT <= 1.0
