"""The one token-endpoint exchange (authlayer.oauth): every flow counts a token's lifetime from
the moment its request was sent, not from when the answer came.

Each flow runs under the scripted driver (tests/scripted.py, no sockets): every answer takes two
minutes of a fake clock. A flow that read the clock after the answer would believe its token
lives two minutes longer than it does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from authlayer import oauth
from authlayer._http import HttpRequest, HttpResponse, Send
from authlayer._loopback import Callback
from authlayer.config import load_profile
from authlayer.errors import TokenError
from authlayer.flows import (
    FlowContext,
    authorization_code,
    azure_cli,
    client_credentials,
    device_code,
    managed_identity,
    on_behalf_of,
    password,
    refresh_token,
    workload_identity,
)
from authlayer.token import TokenResult

from .conftest import Profiles
from .scripted import Script, json_answer
from .test_azure_cli import Account, CliFolder, subscription

LATENCY = 120.0  # seconds each answer takes to come
LIFETIME = 3600
TOKEN = {"access_token": "at", "expires_in": LIFETIME, "token_type": "Bearer",
         "refresh_token": "rt-new"}
DEVICE_CODE = {"device_code": "dc", "user_code": "ABC", "interval": 5, "expires_in": 900,
               "verification_uri": "https://example.test/devicelogin"}
AUTHORITY = "https://login.example.test"
CLIENT = "11111111-2222-3333-4444-555555555555"
TENANT = "contoso.example.test"


class Entra:
    """Answers like Entra: a device code, ``pending`` polls still pending, then a token."""

    def __init__(self, pending: int = 0) -> None:
        self.pending = pending

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.url.endswith("/devicecode"):
            return json_answer(200, DEVICE_CODE)
        form = request.form or {}
        if form.get("grant_type") == device_code.GRANT_TYPE and self.pending:
            self.pending -= 1
            return json_answer(400, {"error": "authorization_pending"})
        return json_answer(200, TOKEN)


@pytest.fixture
def script() -> Script:
    return Script(Entra(), latency=LATENCY)


def _toml(value: Any) -> str:
    if isinstance(value, dict):  # an inline table: { file = "..." }
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _profile(profiles: Profiles, flow: str, **keys: Any) -> Any:
    values = {"flow": flow, "scope": "https://api.example.test/.default", **keys}
    body = "\n".join(f"{k} = {_toml(v)}" for k, v in values.items())
    profiles.write(f"[profiles.p]\n{body}\n")
    return load_profile("p")


def _app(profiles: Profiles, flow: str, **keys: Any) -> Any:
    return _profile(profiles, flow, authority=AUTHORITY, tenant=TENANT, client_id=CLIENT, **keys)


def _ctx(script: Script, profile: Any, **kwargs: Any) -> FlowContext:
    return FlowContext(profile, clock=script.clock, prompt=lambda message: None, **kwargs)


def _counted_from_the_send(script: Script, result: TokenResult, *, refresh_at_half: bool = False
                           ) -> None:
    sent_at, _ = script.sent[-1]  # the request that brought the token
    assert result.expires_on == sent_at + LIFETIME
    margin = LIFETIME // 2 if refresh_at_half else oauth.REFRESH_MARGIN
    assert result.refresh_on == sent_at + LIFETIME - margin


# --------------------------------------------------------------------------- app flows


def test_client_credentials_counts_expiry_from_the_send(profiles: Profiles,
                                                        script: Script) -> None:
    profile = _app(profiles, "client_credentials", client_secret="s3cret")
    result = script.run(client_credentials.acquire(_ctx(script, profile)))
    _counted_from_the_send(script, result)
    assert [type(a) for a in script.actions] == [Send]  # an inline secret: nothing blocking


def test_on_behalf_of_counts_expiry_from_the_send(profiles: Profiles, script: Script) -> None:
    profile = _app(profiles, "on_behalf_of", client_secret="s3cret")
    ctx = _ctx(script, profile, user_assertion="incoming-token")
    _counted_from_the_send(script, script.run(on_behalf_of.acquire(ctx)))


def test_workload_identity_counts_expiry_from_the_send(profiles: Profiles, script: Script,
                                                       tmp_path: Path) -> None:
    token_file = tmp_path / "federated-token"
    token_file.write_text("federated.jwt.here\n")
    profile = _app(profiles, "workload_identity", client_assertion={"file": str(token_file)})
    result = script.run(workload_identity.acquire(_ctx(script, profile)))
    _counted_from_the_send(script, result)
    (_, request), = script.sent
    assert request.form is not None
    assert request.form["client_assertion"] == "federated.jwt.here"


# --------------------------------------------------------------------------- a person's flows


@pytest.mark.filterwarnings("ignore::authlayer.flows.password.PasswordFlowWarning")
def test_password_counts_expiry_from_the_send(profiles: Profiles, script: Script) -> None:
    profile = _app(profiles, "password", username="ann@example.test", password="pw")
    _counted_from_the_send(script, script.run(password.acquire(_ctx(script, profile))))


def test_refresh_token_counts_expiry_from_the_send(profiles: Profiles, script: Script) -> None:
    profile = _app(profiles, "refresh_token", refresh_token="rt-configured")
    result = script.run(refresh_token.acquire(_ctx(script, profile)))
    _counted_from_the_send(script, result)
    (_, request), = script.sent
    assert request.form is not None
    assert request.form["refresh_token"] == "rt-configured"


def test_a_kept_refresh_token_counts_expiry_from_the_send(profiles: Profiles,
                                                          script: Script) -> None:
    """The silent redeem every person's flow tries first (flows/_person.py)."""
    profile = _app(profiles, "device_code")
    result = script.run(device_code.acquire(_ctx(script, profile, refresh_token="rt-kept")))
    _counted_from_the_send(script, result)
    (_, request), = script.sent
    assert request.form is not None
    assert request.form["grant_type"] == "refresh_token"


def test_device_code_counts_expiry_from_the_last_poll(profiles: Profiles) -> None:
    script = Script(Entra(pending=2), latency=LATENCY)
    profile = _app(profiles, "device_code")
    result = script.run(device_code.acquire(_ctx(script, profile)))
    _counted_from_the_send(script, result)
    assert len(script.sent) == 4  # the device code, two pending polls, the token


class _FakeListener:
    """The browser came back at once with a code (no socket)."""

    redirect_uri = "http://localhost:1"

    def __init__(self, state: str, port: Optional[int] = None) -> None:
        self.state = state

    def wait(self, timeout: float) -> Callback:
        return Callback({"code": "the-code", "state": self.state})

    def close(self, wait: float = 0.0) -> None:
        pass


def test_authorization_code_counts_expiry_from_the_redeem(profiles: Profiles, script: Script,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setattr(authorization_code, "LoopbackListener", _FakeListener)
    monkeypatch.setattr(authorization_code, "open_browser", lambda url: False)
    profile = _app(profiles, "authorization_code")
    result = script.run(authorization_code.acquire(_ctx(script, profile)))
    _counted_from_the_send(script, result)
    (_, request), = script.sent
    assert request.form is not None
    assert request.form["code"] == "the-code"


# --------------------------------------------------------------------------- the Azure CLI


@pytest.fixture
def cli_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliFolder:
    folder = CliFolder(tmp_path / "azure", "login.example.test")
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(folder.path))
    monkeypatch.setenv("PATH", str(tmp_path / "no-az-here"))
    return folder


def test_azure_cli_counts_expiry_from_the_send(profiles: Profiles, script: Script,
                                               cli_folder: CliFolder) -> None:
    ann = Account("ann@example.test", "rt-of-the-cli", TENANT)
    cli_folder.write([ann], [subscription(TENANT, ann.username, default=True)])
    profile = _profile(profiles, "azure_cli", authority=AUTHORITY)
    result = script.run(azure_cli.acquire(_ctx(script, profile)))
    _counted_from_the_send(script, result)
    (_, request), = script.sent
    assert request.form is not None
    assert request.form["refresh_token"] == "rt-of-the-cli"
    assert request.url == f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token"
    assert result.refresh_token is None  # the CLI's cache stays the source of truth


def test_azure_cli_counts_refresh_from_when_az_was_asked(profiles: Profiles, script: Script,
                                                         cli_folder: CliFolder,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """When ``az`` is asked instead, its answer's ``expires_on`` is absolute; when to refresh a
    short-lived token (half-way) counts from when az was started."""
    asked: list[float] = []

    def run_az(*args: Any) -> dict[str, Any]:
        asked.append(script.now)
        script.now += LATENCY  # az takes its time
        return {"accessToken": "at", "expires_on": int(asked[0]) + 400, "tokenType": "Bearer"}

    monkeypatch.setattr(azure_cli, "run_az", run_az)
    profile = _profile(profiles, "azure_cli", authority=AUTHORITY)
    result = script.run(azure_cli.acquire(_ctx(script, profile)))  # no cache file: az
    assert result.expires_on == asked[0] + 400
    assert result.refresh_on == asked[0] + 200


# --------------------------------------------------------------------------- managed identity


@pytest.mark.parametrize("where", ["imds", "app_service"])
def test_managed_identity_counts_expiry_from_the_send(profiles: Profiles, script: Script,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      where: str) -> None:
    if where == "imds":
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9")
    else:
        monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", "header-secret")
    profile = _profile(profiles, "managed_identity")
    result = script.run(managed_identity.acquire(_ctx(script, profile)))
    # Managed identity tokens are refreshed at half their life.
    _counted_from_the_send(script, result, refresh_at_half=True)


def test_managed_identity_with_workload_identity_counts_expiry_from_the_send(
        profiles: Profiles, script: Script, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    token_file = tmp_path / "federated-token"
    token_file.write_text("federated.jwt.here")
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", AUTHORITY)
    profile = _profile(profiles, "managed_identity")
    result = script.run(managed_identity.acquire(_ctx(script, profile)))
    _counted_from_the_send(script, result)
    (_, request), = script.sent
    assert request.url == f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token"


# --------------------------------------------------------------------------- the exchange


def test_a_retried_request_counts_from_the_first_send(profiles: Profiles,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Never past the real expiry: with retries, from the first attempt (the earliest)."""
    answers = iter([json_answer(503, {}), json_answer(200, TOKEN)])
    script = Script(lambda request: next(answers), latency=LATENCY)
    monkeypatch.setattr("authlayer._http.backoff", lambda attempt: 1.0)
    profile = _app(profiles, "client_credentials", client_secret="s3cret")
    result = script.run(client_credentials.acquire(_ctx(script, profile)))
    first, _ = script.sent[0]
    assert result.expires_on == first + LIFETIME


def test_a_file_secret_is_read_off_the_loop_and_an_env_secret_is_not(
        profiles: Profiles, script: Script, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    profile = _app(profiles, "client_credentials", client_secret={"file": str(secret_file)})
    script.run(client_credentials.acquire(_ctx(script, profile)))
    assert [type(a).__name__ for a in script.actions] == ["Call", "Send"]

    monkeypatch.setenv("APP_SECRET", "from-the-environment")
    profile = _app(profiles, "client_credentials", client_secret={"env": "APP_SECRET"})
    again = Script(Entra())
    again.run(client_credentials.acquire(_ctx(again, profile)))
    assert [type(a).__name__ for a in again.actions] == ["Send"]
    (_, request), = again.sent
    assert request.form is not None
    assert request.form["client_secret"] == "from-the-environment"


def test_claims_are_sent_with_the_client_capabilities(profiles: Profiles,
                                                      script: Script) -> None:
    profile = _app(profiles, "client_credentials", client_secret="s3cret")
    claims = '{"access_token": {"acrs": {"essential": true, "value": "c1"}}}'
    script.run(client_credentials.acquire(_ctx(script, profile, claims=claims)))
    (_, request), = script.sent
    assert request.form is not None
    assert json.loads(request.form["claims"]) == {"access_token": {
        "acrs": {"essential": True, "value": "c1"}, "xms_cc": {"values": ["cp1"]}}}


def test_claims_already_merged_are_sent_as_they_are() -> None:
    merged = '{"access_token":{"nbf":{"essential":true,"value":"1"},"xms_cc":{"values":["cp1"]}}}'
    assert oauth.claims_request(merged) == merged
    assert oauth.claims_request("not json") == "not json"
    assert oauth.claims_request(None) is None


def test_an_entra_error_from_the_token_endpoint_is_a_token_error(profiles: Profiles) -> None:
    script = Script(lambda request: json_answer(400, {
        "error": "invalid_client", "error_codes": [7000215],
        "error_description": "AADSTS7000215: Invalid client secret provided."}))
    profile = _app(profiles, "client_credentials", client_secret="s3cret")
    with pytest.raises(TokenError) as info:
        script.run(client_credentials.acquire(_ctx(script, profile)))
    assert (info.value.error, info.value.error_codes) == ("invalid_client", (7000215,))
    assert info.value.profile == "p"


def test_a_device_code_error_sent_with_http_200_is_an_error(profiles: Profiles) -> None:
    script = Script(lambda request: json_answer(200, {"error": "invalid_client"}))
    profile = _app(profiles, "device_code")
    with pytest.raises(TokenError) as info:
        script.run(device_code.acquire(_ctx(script, profile)))
    assert info.value.error == "invalid_client"


@pytest.fixture(autouse=True)
def _fresh_imds_memo() -> Iterator[None]:
    # The probe of an IMDS host is remembered per process; each test starts without it.
    managed_identity._answered.clear()
    yield
    managed_identity._answered.clear()
