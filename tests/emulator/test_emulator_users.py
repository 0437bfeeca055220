"""The emulator's sign-in endpoints on the wire: device code, authorize + PKCE, refresh tokens
(rotation, family tokens, expiry, revocation), password (with MFA), on-behalf-of, and the
control functions tests use."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from authlayer import jwt
from authlayer.emulator import Emulator
from authlayer.emulator.authorize import authorize_controls
from authlayer.emulator.device import DEVICE_CODE_GRANT, device_codes
from authlayer.emulator.users import (
    AZURE_CLI_CLIENT_ID,
    AZURE_POWERSHELL_CLIENT_ID,
    expire_refresh_token,
    issue_user_token,
    mint_refresh_token,
    parse_scopes,
    refresh_tokens,
    require_mfa,
    revoke_refresh_tokens,
)
from authlayer.emulator.wire import EntraError

ALICE = "alice@contoso.onmicrosoft.com"
BOB = "bob@contoso.onmicrosoft.com"
GRAPH = "https://graph.microsoft.com/User.Read"


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token)[1]


def _error(r: httpx.Response, error: str, code: Optional[int] = None) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert body["error"] == error, body
    if code is not None:
        assert body["error_codes"] == [code], body
        assert body["error_description"].startswith(f"AADSTS{code}:")
    return body


def _token(em: Emulator, http: httpx.Client, tenant: Optional[str] = None,
           **form: str) -> httpx.Response:
    return http.post(em.token_url(tenant), data=form)


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# --------------------------------------------------------------------------- refresh tokens


def test_mint_refresh_token_for_the_azure_cli_without_registration(em: Emulator,
                                                                   http: httpx.Client) -> None:
    assert em.app(AZURE_CLI_CLIENT_ID) is None
    rt = mint_refresh_token(em, client_id=AZURE_CLI_CLIENT_ID, username=ALICE)
    r = _token(em, http, grant_type="refresh_token", client_id=AZURE_CLI_CLIENT_ID,
               refresh_token=rt, scope="https://management.azure.com/.default")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["foci"] == "1"
    assert body["refresh_token"] != rt
    claims = _claims(body["access_token"])
    assert claims["aud"] == "https://management.azure.com"
    assert claims["preferred_username"] == ALICE
    assert claims["tid"] == em.tenant_id
    assert claims["appid"] == AZURE_CLI_CLIENT_ID
    assert claims["scp"] == "user_impersonation"
    assert em.app(AZURE_CLI_CLIENT_ID) is not None


def test_family_token_works_in_every_tenant_of_the_person_and_for_family_clients(
        em: Emulator, http: httpx.Client) -> None:
    other = em.add_tenant("fabrikam.onmicrosoft.com")
    rt = mint_refresh_token(em, client_id=AZURE_CLI_CLIENT_ID, username=ALICE)
    r = _token(em, http, other, grant_type="refresh_token", client_id=AZURE_CLI_CLIENT_ID,
               refresh_token=rt, scope="https://management.azure.com/.default")
    _error(r, "invalid_grant", 50020)  # not a member there yet
    em.add_user(ALICE, tenant=other)
    for tenant, client_id in [(other, AZURE_CLI_CLIENT_ID),
                              ("fabrikam.onmicrosoft.com", AZURE_POWERSHELL_CLIENT_ID),
                              ("organizations", AZURE_CLI_CLIENT_ID)]:
        r = _token(em, http, tenant, grant_type="refresh_token", client_id=client_id,
                   refresh_token=rt, scope="https://vault.azure.net/.default")
        assert r.status_code == 200, r.text
        expected = em.tenant_id if tenant == "organizations" else other
        assert _claims(r.json()["access_token"])["tid"] == expected


def test_minted_token_in_a_named_tenant_adds_the_person_there(em: Emulator,
                                                             http: httpx.Client) -> None:
    other = em.add_tenant("northwind.onmicrosoft.com")
    rt = mint_refresh_token(em, client_id=AZURE_CLI_CLIENT_ID, username=BOB,
                            tenant="northwind.onmicrosoft.com")
    assert em.state.find_user(other, BOB) is not None
    r = _token(em, http, other, grant_type="refresh_token", client_id=AZURE_CLI_CLIENT_ID,
               refresh_token=rt, scope=GRAPH)
    assert _claims(r.json()["access_token"])["tid"] == other


def test_rotation_keeps_the_old_refresh_token_valid(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app(public=True)
    first = mint_refresh_token(em, client_id=app.client_id, username=ALICE)
    a = _token(em, http, grant_type="refresh_token", client_id=app.client_id,
               refresh_token=first, scope=GRAPH).json()
    b = _token(em, http, grant_type="refresh_token", client_id=app.client_id,
               refresh_token=a["refresh_token"], scope=GRAPH).json()
    again = _token(em, http, grant_type="refresh_token", client_id=app.client_id,
                   refresh_token=first, scope=GRAPH)
    assert len({first, a["refresh_token"], b["refresh_token"]}) == 3
    assert again.status_code == 200
    assert "foci" not in a


def test_plain_refresh_token_is_bound_to_its_client_not_its_tenant(em: Emulator,
                                                                  http: httpx.Client) -> None:
    """Entra binds a refresh token to the person and the client, not to a tenant: it works in
    any tenant the person belongs to, for its own client only."""
    app = em.register_app(public=True)
    other_app = em.register_app(public=True)
    other = em.add_tenant()
    em.add_user(ALICE, tenant=other)
    rt = mint_refresh_token(em, client_id=app.client_id, username=ALICE)
    r = _token(em, http, grant_type="refresh_token", client_id=other_app.client_id,
               refresh_token=rt, scope=GRAPH)
    _error(r, "invalid_grant", 70000)
    r = _token(em, http, other, grant_type="refresh_token", client_id=app.client_id,
               refresh_token=rt, scope=GRAPH)
    assert r.status_code == 200
    assert em.verify_token(r.json()["access_token"], audience="https://graph.microsoft.com"
                           )["tid"] == other
    r = _token(em, http, grant_type="refresh_token", client_id=app.client_id,
               refresh_token="1.AQ-not-issued", scope=GRAPH)
    _error(r, "invalid_grant", 9002313)


def test_expired_and_revoked_refresh_tokens(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app(public=True)
    old = mint_refresh_token(em, client_id=app.client_id, username=ALICE)
    expire_refresh_token(em, old)
    r = _token(em, http, grant_type="refresh_token", client_id=app.client_id,
               refresh_token=old, scope=GRAPH)
    _error(r, "invalid_grant", 700082)
    one = mint_refresh_token(em, client_id=app.client_id, username=ALICE)
    two = mint_refresh_token(em, client_id=app.client_id, username=ALICE)
    assert revoke_refresh_tokens(em, username=ALICE) >= 2
    for rt in (one, two):
        r = _token(em, http, grant_type="refresh_token", client_id=app.client_id,
                   refresh_token=rt, scope=GRAPH)
        _error(r, "invalid_grant", 50173)
    fresh = mint_refresh_token(em, client_id=app.client_id, username=ALICE)
    assert revoke_refresh_tokens(em, token=fresh) == 1
    with pytest.raises(KeyError):
        expire_refresh_token(em, "never-issued")


def test_confidential_client_must_authenticate_to_refresh(em: Emulator,
                                                         http: httpx.Client) -> None:
    app = em.register_app(secret="s3cret-value")
    rt = mint_refresh_token(em, client_id=app.client_id, username=ALICE)
    r = _token(em, http, grant_type="refresh_token", client_id=app.client_id,
               refresh_token=rt, scope=GRAPH)
    _error(r, "invalid_client", 7000218)
    r = _token(em, http, grant_type="refresh_token", client_id=app.client_id,
               refresh_token=rt, scope=GRAPH, client_secret="s3cret-value")
    assert r.status_code == 200
    assert _claims(r.json()["access_token"])["azpacr"] == "1"


def test_scopes_decide_audience_and_scp() -> None:
    assert parse_scopes("https://graph.microsoft.com/User.Read Mail.Read offline_access") == (
        "https://graph.microsoft.com", "User.Read Mail.Read", frozenset({"offline_access"}))
    assert parse_scopes("api://abc/access_as_user")[:2] == ("api://abc", "access_as_user")
    assert parse_scopes("499b84ac-1321-427f-aa17-267ca6975798/.default")[0] == (
        "499b84ac-1321-427f-aa17-267ca6975798")
    assert parse_scopes("openid profile")[:2] == ("https://graph.microsoft.com", "openid profile")
    with pytest.raises(EntraError) as info:
        parse_scopes("https://graph.microsoft.com/User.Read https://vault.azure.net/.default")
    assert info.value.code == 28000


# --------------------------------------------------------------------------- password


def test_password_grant_gives_user_tokens_and_id_token(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app(public=True)
    em.add_user(ALICE, "Pa55word!")
    r = _token(em, http, grant_type="password", client_id=app.client_id, username=ALICE,
               password="Pa55word!", scope=f"{GRAPH} openid profile")
    assert r.status_code == 200, r.text
    body = r.json()
    assert "refresh_token" not in body  # no offline_access asked
    access = _claims(body["access_token"])
    assert (access["preferred_username"], access["scp"], access["idtyp"]) == (
        ALICE, "User.Read", "user")
    assert access["name"] == ALICE
    ident = _claims(body["id_token"])
    assert ident["aud"] == app.client_id
    assert ident["oid"] == access["oid"]
    assert ident["tid"] == em.tenant_id


def test_password_grant_refusals(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app(public=True)
    em.add_user(ALICE, "Pa55word!")
    base = {"grant_type": "password", "client_id": app.client_id, "username": ALICE,
            "scope": GRAPH}
    _error(_token(em, http, **base, password="wrong"), "invalid_grant", 50126)
    _error(_token(em, http, **{**base, "username": "nobody@x"}, password="x"),
           "invalid_grant", 50126)
    _error(_token(em, http, "common", **base, password="Pa55word!"), "invalid_request", 90002)
    require_mfa(em, ALICE)
    body = _error(_token(em, http, **base, password="Pa55word!"), "interaction_required", 50076)
    assert "multi-factor" in body["error_description"]
    require_mfa(em, ALICE, code=50079)
    _error(_token(em, http, **base, password="Pa55word!"), "interaction_required", 50079)
    em.reset()  # lifts MFA demands
    assert _token(em, http, **base, password="Pa55word!").status_code == 200


# --------------------------------------------------------------------------- device code


def test_device_code_endpoint_answers_like_entra(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app(public=True)
    r = http.post(f"{em.url}/organizations/oauth2/v2.0/devicecode",
                  data={"client_id": app.client_id, "scope": f"{GRAPH} offline_access"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"user_code", "device_code", "verification_uri", "expires_in",
                         "interval", "message"}
    assert (body["interval"], body["expires_in"]) == (5, 900)
    assert body["user_code"] in body["message"]
    assert device_codes(em).latest() is not None
    controls = device_codes(em)
    controls.interval, controls.send_message, controls.send_complete_uri = 0, False, True
    body = http.post(em.url + f"/{em.tenant_id}/oauth2/v2.0/devicecode",
                     data={"client_id": app.client_id, "scope": GRAPH}).json()
    assert body["interval"] == 0
    assert "message" not in body
    assert body["verification_uri_complete"].endswith(body["user_code"])
    r = http.post(em.url + f"/{em.tenant_id}/oauth2/v2.0/devicecode",
                  data={"client_id": "00000000-0000-0000-0000-000000000001", "scope": GRAPH})
    _error(r, "unauthorized_client", 700016)


def _start(em: Emulator, http: httpx.Client, client_id: str, scope: str = GRAPH) -> str:
    r = http.post(em.url + f"/{em.tenant_id}/oauth2/v2.0/devicecode",
                  data={"client_id": client_id, "scope": scope})
    return str(r.json()["device_code"])


def _poll(em: Emulator, http: httpx.Client, client_id: str, device_code: str) -> httpx.Response:
    return _token(em, http, grant_type=DEVICE_CODE_GRANT, client_id=client_id,
                  device_code=device_code)


def test_device_code_polling_states(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app(public=True)
    em.add_user(ALICE)
    controls = device_codes(em)
    code = _start(em, http, app.client_id, f"{GRAPH} openid offline_access")
    _error(_poll(em, http, app.client_id, code), "authorization_pending", 70016)
    controls.slow_down(2)
    _error(_poll(em, http, app.client_id, code), "slow_down")
    _error(_poll(em, http, app.client_id, code), "slow_down")
    _error(_poll(em, http, app.client_id, code), "authorization_pending")
    _error(_poll(em, http, "00000000-0000-0000-0000-00000000000f", code), "unauthorized_client")
    with pytest.raises(LookupError):
        controls.approve(username="nobody@contoso.onmicrosoft.com")
    approved = controls.approve(username=ALICE)
    assert approved.status == "approved"
    r = _poll(em, http, app.client_id, code)
    assert r.status_code == 200, r.text
    body = r.json()
    assert _claims(body["access_token"])["preferred_username"] == ALICE
    assert {"refresh_token", "id_token"} <= set(body)
    _error(_poll(em, http, app.client_id, code), "invalid_grant", 54005)


@pytest.mark.parametrize(("action", "error", "code"), [
    ("decline", "authorization_declined", None),
    ("expire", "expired_token", 70019),
    ("forget", "bad_verification_code", 70018),
])
def test_device_code_endings(em: Emulator, http: httpx.Client, action: str, error: str,
                             code: Optional[int]) -> None:
    app = em.register_app(public=True)
    device_code = _start(em, http, app.client_id)
    user_code = device_codes(em).pending()[-1].user_code
    getattr(device_codes(em), action)(user_code)
    _error(_poll(em, http, app.client_id, device_code), error, code)


def test_device_code_expires_by_itself(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app(public=True)
    device_codes(em).expires_in = 0
    code = _start(em, http, app.client_id)
    _error(_poll(em, http, app.client_id, code), "expired_token", 70019)
    assert device_codes(em).pending() == []
    with pytest.raises(TimeoutError):
        device_codes(em).wait_for_pending(0.05)


def test_reset_forgets_device_codes_and_defaults(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app(public=True)
    device_codes(em).interval = 0
    _start(em, http, app.client_id)
    em.reset()
    assert device_codes(em).pending() == []
    assert device_codes(em).interval == 5


# --------------------------------------------------------------------------- authorize + PKCE


def _authorize(em: Emulator, http: httpx.Client, client_id: str, *,
               redirect_uri: str = "http://localhost:8400", challenge: Optional[str] = None,
               tenant: Optional[str] = None, **extra: str) -> httpx.Response:
    params = {"client_id": client_id, "response_type": "code", "redirect_uri": redirect_uri,
              "scope": f"{GRAPH} openid offline_access", "state": "st-123", **extra}
    if challenge:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    return http.get(f"{em.url}/{tenant or em.tenant_id}/oauth2/v2.0/authorize", params=params)


def _location(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    assert location.startswith("http://localhost:8400?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def test_authorize_redirects_with_code_and_state(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app(public=True)
    em.add_user(ALICE)
    em.add_user(BOB)
    verifier, challenge = _pkce()
    back = _location(_authorize(em, http, app.client_id, challenge=challenge, login_hint=BOB))
    assert back["state"] == "st-123"
    form = {"grant_type": "authorization_code", "client_id": app.client_id,
            "code": back["code"], "redirect_uri": "http://localhost:8400",
            "code_verifier": verifier, "scope": GRAPH}
    r = _token(em, http, **form)
    assert r.status_code == 200, r.text
    body = r.json()
    assert _claims(body["access_token"])["preferred_username"] == BOB
    assert {"refresh_token", "id_token"} <= set(body)
    _error(_token(em, http, **form), "invalid_grant", 54005)  # a code is redeemed once


def test_authorization_code_is_bound_to_verifier_redirect_and_client(em: Emulator,
                                                                      http: httpx.Client) -> None:
    app = em.register_app(public=True)
    other = em.register_app(public=True)
    em.add_user(ALICE)
    authorize_controls(em).sign_in_as(ALICE)
    verifier, challenge = _pkce()

    def fresh() -> dict[str, str]:
        back = _location(_authorize(em, http, app.client_id, challenge=challenge))
        return {"grant_type": "authorization_code", "client_id": app.client_id,
                "code": back["code"], "redirect_uri": "http://localhost:8400",
                "code_verifier": verifier}

    _error(_token(em, http, **{**fresh(), "code_verifier": _pkce()[0]}), "invalid_grant", 501481)
    _error(_token(em, http, **{**fresh(), "redirect_uri": "http://localhost:9"}),
           "invalid_grant", 70000)
    _error(_token(em, http, **{**fresh(), "client_id": other.client_id}), "invalid_grant", 70000)
    form = fresh()
    del form["code_verifier"]
    _error(_token(em, http, **form), "invalid_request", 900144)
    form = fresh()
    authorize_controls(em).expire_codes()
    _error(_token(em, http, **form), "invalid_grant", 70008)


def test_authorize_can_deny_and_refuses_what_it_cannot_redirect(em: Emulator,
                                                                http: httpx.Client) -> None:
    app = em.register_app(public=True)
    em.add_user(ALICE)
    authorize_controls(em).deny("AADSTS65004: User declined to consent.")
    back = _location(_authorize(em, http, app.client_id))
    assert back == {"error": "access_denied", "state": "st-123",
                    "error_description": "AADSTS65004: User declined to consent."}
    authorize_controls(em).allow()
    assert "code" in _location(_authorize(em, http, app.client_id))
    r = _authorize(em, http, "00000000-0000-0000-0000-0000000000aa")
    assert r.status_code == 400
    assert "700016" in r.text
    r = _authorize(em, http, app.client_id, redirect_uri="http://evil.example/cb")
    assert r.status_code == 400
    assert "50011" in r.text
    assert "error=unsupported_response_type" in _authorize(
        em, http, app.client_id, response_type="token").headers["location"]


def test_authorize_works_for_well_known_clients_and_records_hints(em: Emulator,
                                                                  http: httpx.Client) -> None:
    em.add_user(ALICE)
    r = _authorize(em, http, AZURE_CLI_CLIENT_ID, domain_hint="contoso.com", prompt="login")
    assert "code" in _location(r)
    query = em.requests[-1].query
    assert (query["domain_hint"], query["prompt"]) == ("contoso.com", "login")


# --------------------------------------------------------------------------- on-behalf-of


def test_on_behalf_of_exchanges_a_persons_token(em: Emulator, http: httpx.Client) -> None:
    mid = em.register_app(secret="mid-secret")
    for audience in (f"api://{mid.client_id}", mid.client_id):
        incoming = issue_user_token(em, username=ALICE, audience=audience)
        r = _token(em, http, grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer",
                   requested_token_use="on_behalf_of", assertion=incoming,
                   client_id=mid.client_id, client_secret="mid-secret", scope=GRAPH)
        assert r.status_code == 200, r.text
        claims = _claims(r.json()["access_token"])
        assert (claims["preferred_username"], claims["appid"], claims["aud"]) == (
            ALICE, mid.client_id, "https://graph.microsoft.com")


def test_on_behalf_of_refuses_foreign_and_app_tokens(em: Emulator, http: httpx.Client) -> None:
    mid = em.register_app(secret="mid-secret")
    public = em.register_app(public=True)
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "requested_token_use": "on_behalf_of", "client_id": mid.client_id,
            "client_secret": "mid-secret", "scope": GRAPH}
    foreign = issue_user_token(em, username=ALICE, audience="api://someone-else")
    _error(_token(em, http, **form, assertion=foreign), "invalid_grant", 500131)
    app_only = em.issue_token(mid.client_id, resource=f"api://{mid.client_id}")
    _error(_token(em, http, **form, assertion=app_only), "invalid_grant", 50058)
    expired = issue_user_token(em, username=ALICE, audience=mid.client_id, lifetime=-10)
    _error(_token(em, http, **form, assertion=expired), "invalid_grant", 50013)
    _error(_token(em, http, **form, assertion="not-a-jwt"), "invalid_grant", 50013)
    incoming = issue_user_token(em, username=ALICE, audience=public.client_id)
    r = _token(em, http, **{**form, "client_id": public.client_id, "client_secret": ""},
               assertion=incoming)
    assert r.status_code == 401


def test_refresh_token_store_counts(em: Emulator) -> None:
    before = refresh_tokens(em).issued
    mint_refresh_token(em, client_id=AZURE_CLI_CLIENT_ID, username=ALICE)
    assert refresh_tokens(em).issued == before + 1
    found = refresh_tokens(em).find(
        mint_refresh_token(em, client_id=AZURE_CLI_CLIENT_ID, username=ALICE, family=False))
    assert found is not None
    assert not found.family
