"""The emulator's token endpoint over real loopback HTTP: client credentials with a secret in the
body or in HTTP Basic, the access tokens it issues, and each Entra-shaped refusal."""

from __future__ import annotations

import base64
from urllib.parse import quote

import httpx
import pytest
import requests

from authlayer import jwt
from authlayer.emulator import Emulator

from .emulator_helpers import assert_entra_error
from .emulator_helpers import cc_form as form


def test_client_secret_in_the_body(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app()
    r = http.post(em.token_url(), data=form(app.client_id, em.api_scope, client_secret=app.secret))
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == body["ext_expires_in"] == 3600
    assert "refresh_in" not in body
    assert r.headers["cache-control"].startswith("no-store")
    claims = em.verify_token(body["access_token"], audience=em.api_resource)
    assert claims["appid"] == claims["azp"] == app.client_id
    assert claims["azpacr"] == "1"


def test_client_secret_in_http_basic_is_form_urlencoded(em: Emulator) -> None:
    app = em.register_app(secret="a b+c:d%e/f~")
    user = quote(app.client_id, safe="")
    password = quote(str(app.secret), safe="")  # RFC 6749 §2.3.1: encode, then Basic
    data = {"grant_type": "client_credentials", "scope": em.api_scope}
    r = requests.post(em.token_url(), data=data, auth=(user, password), timeout=10)
    assert r.status_code == 200, r.text
    raw = base64.b64encode(f"{app.client_id}:wrong".encode()).decode()
    r2 = requests.post(em.token_url(), data=data, headers={"Authorization": f"Basic {raw}"},
                       timeout=10)
    assert r2.status_code == 401
    assert r2.json()["error_codes"] == [7000215]


def test_access_token_claims(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app(roles=("Data.Read", "Data.Write"))
    data = form(app.client_id, "https://graph.microsoft.com/.default", client_secret=app.secret)
    first = http.post(em.token_url(em.tenant_domain), data=data).json()["access_token"]
    second = http.post(em.token_url(), data=data).json()["access_token"]
    header, claims = jwt.verify(first, em.public_key)
    assert header["alg"] == "RS256"
    assert header["kid"]
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["iss"] == f"{em.url}/{em.tenant_id}/v2.0"
    assert claims["tid"] == em.tenant_id
    assert claims["roles"] == ["Data.Read", "Data.Write"]
    assert claims["ver"] == "2.0"
    assert claims["oid"] == claims["sub"]
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.decode(second)[1]["uti"] != claims["uti"]


def test_lifetime_and_refresh_in_are_configurable(em: Emulator, http: httpx.Client,) -> None:
    app = em.register_app()
    em.token_lifetime = 120
    em.refresh_in = 60
    body = http.post(em.token_url(),
                     data=form(app.client_id, em.api_scope, client_secret=app.secret)).json()
    assert body["expires_in"] == 120
    assert body["refresh_in"] == 60
    claims = jwt.decode(body["access_token"])[1]
    assert claims["exp"] - claims["iat"] == 120


def test_other_tenants_by_guid_and_domain(em: Emulator, http: httpx.Client) -> None:
    fabrikam = em.add_tenant("fabrikam.onmicrosoft.com")
    app = em.register_app()
    data = form(app.client_id, em.api_scope, client_secret=app.secret)
    for name in (fabrikam, "fabrikam.onmicrosoft.com", "FABRIKAM.onmicrosoft.com"):
        r = http.post(em.token_url(name), data=data)
        assert r.status_code == 200
        assert jwt.decode(r.json()["access_token"])[1]["tid"] == fabrikam


def test_correlation_id_echoes_client_request_id(em: Emulator, http: httpx.Client) -> None:
    cid = "0f0e0d0c-0b0a-0908-0706-050403020100"
    r = http.post(em.token_url(), data=form("nobody", em.api_scope, client_secret="x"),
                  headers={"client-request-id": cid})
    assert r.json()["correlation_id"] == cid


def test_wrong_secret_is_7000215(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app()
    r = http.post(em.token_url(), data=form(app.client_id, em.api_scope, client_secret="nope"))
    body = assert_entra_error(r, 401, "invalid_client", 7000215)
    assert "nope" not in r.text  # the refused secret is not echoed
    assert "client secret value" in body["error_description"]


def test_expired_secret_is_7000222(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app()
    em.expire_secret(app.client_id)
    r = http.post(em.token_url(), data=form(app.client_id, em.api_scope, client_secret=app.secret))
    assert_entra_error(r, 401, "invalid_client", 7000222)


def test_no_credential_is_7000218(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app()
    r = http.post(em.token_url(), data=form(app.client_id, em.api_scope))
    assert_entra_error(r, 401, "invalid_client", 7000218)


def test_unknown_client_is_700016(em: Emulator, http: httpx.Client) -> None:
    r = http.post(em.token_url(),
                  data=form("11111111-2222-3333-4444-555555555555", em.api_scope,
                            client_secret="x"))
    body = assert_entra_error(r, 400, "unauthorized_client", 700016)
    assert "11111111-2222-3333-4444-555555555555" in body["error_description"]


def test_app_not_consented_in_tenant_is_700016(em: Emulator, http: httpx.Client) -> None:
    other = em.add_tenant("fabrikam.onmicrosoft.com")
    app = em.register_app(tenants=[em.tenant_domain])
    data = form(app.client_id, em.api_scope, client_secret=app.secret)
    assert http.post(em.token_url(), data=data).status_code == 200
    assert_entra_error(http.post(em.token_url(other), data=data), 400, "unauthorized_client",
                       700016)


@pytest.mark.parametrize(
    "scope",
    ["{api}/Data.Read", "{api}/.default offline_access", "openid", "/.default"],
)
def test_client_credentials_scope_must_be_one_dot_default(em: Emulator, http: httpx.Client,
                                                          scope: str) -> None:
    app = em.register_app()
    data = form(app.client_id, scope.format(api=em.api_resource), client_secret=app.secret)
    assert_entra_error(http.post(em.token_url(), data=data), 400, "invalid_scope", 70011)


def test_missing_scope_and_client_id_are_900144(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app()
    r = http.post(em.token_url(), data={"grant_type": "client_credentials",
                                        "client_id": app.client_id, "client_secret": app.secret})
    assert_entra_error(r, 400, "invalid_request", 900144)
    r = http.post(em.token_url(), data={"grant_type": "client_credentials",
                                        "scope": em.api_scope})
    assert_entra_error(r, 400, "invalid_request", 900144)
    r = http.post(em.token_url(), data={"client_id": app.client_id})
    body = assert_entra_error(r, 400, "invalid_request", 900144)
    assert "grant_type" in body["error_description"]


@pytest.mark.parametrize("tenant", ["organizations", "common", "consumers"])
def test_client_credentials_need_a_specific_tenant(em: Emulator, http: httpx.Client,
                                                   tenant: str) -> None:
    app = em.register_app()
    data = form(app.client_id, em.api_scope, client_secret=app.secret)
    assert_entra_error(http.post(em.token_url(tenant), data=data), 400, "invalid_request", 90002)


def test_unknown_tenant_is_90002(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app()
    data = form(app.client_id, em.api_scope, client_secret=app.secret)
    r = http.post(em.token_url("nowhere.onmicrosoft.com"), data=data)
    body = assert_entra_error(r, 400, "invalid_request", 90002)
    assert "nowhere.onmicrosoft.com" in body["error_description"]


def test_unsupported_grant_type(em: Emulator, http: httpx.Client) -> None:
    r = http.post(em.token_url(), data={"grant_type": "magic", "client_id": "x"})
    assert_entra_error(r, 400, "unsupported_grant_type", 70003)


def test_get_on_the_token_endpoint_is_refused(em: Emulator, http: httpx.Client) -> None:
    r = http.get(em.token_url())
    assert_entra_error(r, 405, "invalid_request", 900561)
    assert r.headers["allow"] == "POST"


def test_public_client_cannot_send_a_secret(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app(public=True)
    assert app.secret is None
    r = http.post(em.token_url(), data=form(app.client_id, em.api_scope, client_secret="x"))
    assert_entra_error(r, 401, "invalid_client", 700025)
    r = http.post(em.token_url(), data=form(app.client_id, em.api_scope))
    assert_entra_error(r, 401, "invalid_client", 7000218)


def test_claims_request_puts_the_claims_in_the_token(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app()
    claims = ('{"access_token":{"acrs":{"essential":true,"value":"c1"},'
              '"xms_cc":{"values":["cp1"]},"aud":{"value":"evil"}}}')
    data = form(app.client_id, em.api_scope, client_secret=app.secret, claims=claims)
    token = http.post(em.token_url(), data=data).json()["access_token"]
    got = jwt.decode(token)[1]
    assert got["acrs"] == ["c1"]
    assert got["xms_cc"] == ["cp1"]
    assert got["aud"] == em.api_resource  # reserved claims are not taken from the request
    bad = form(app.client_id, em.api_scope, client_secret=app.secret, claims="{not json")
    assert_entra_error(http.post(em.token_url(), data=bad), 400, "invalid_request", 90023)
