"""The emulator's discovery documents and its protected API: bearer tokens accepted and refused,
revocation, and claims challenges in both the Graph/CAE and the ARM style."""

from __future__ import annotations

import base64
import json
import time
import types
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from authlayer import jwt
from authlayer.emulator import Emulator, InvalidToken
from authlayer.emulator import state as emulator_state

from .emulator_helpers import assert_entra_error, cc_form


def _token(em: Emulator, http: httpx.Client, claims: str | None = None) -> str:
    app = em.app("api-client") or em.register_app("api-client")
    data = cc_form(app.client_id, em.api_scope, client_secret=str(app.secret))
    if claims is not None:
        data["claims"] = claims
    r = http.post(em.token_url(), data=data)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _get(http: httpx.Client, url: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.get(url, headers=headers)


# --- discovery ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["{tid}", "contoso.onmicrosoft.com"])
def test_openid_configuration(em: Emulator, http: httpx.Client, tenant: str) -> None:
    tenant = tenant.format(tid=em.tenant_id)
    r = http.get(f"{em.url}/{tenant}/v2.0/.well-known/openid-configuration")
    assert r.status_code == 200
    doc = r.json()
    assert doc["issuer"] == f"{em.url}/{em.tenant_id}/v2.0"
    assert doc["token_endpoint"] == em.token_url()
    assert doc["authorization_endpoint"] == f"{em.url}/{em.tenant_id}/oauth2/v2.0/authorize"
    assert doc["device_authorization_endpoint"] == f"{em.url}/{em.tenant_id}/oauth2/v2.0/devicecode"
    assert http.get(doc["jwks_uri"]).status_code == 200


def test_openid_configuration_of_common_and_unknown_tenants(em: Emulator,
                                                            http: httpx.Client) -> None:
    doc = http.get(f"{em.url}/common/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{em.url}/{{tenantid}}/v2.0"
    assert doc["token_endpoint"] == f"{em.url}/common/oauth2/v2.0/token"
    r = http.get(f"{em.url}/nowhere.example/v2.0/.well-known/openid-configuration")
    assert_entra_error(r, 400, "invalid_request", 90002)


def test_jwks_verifies_the_issued_tokens(em: Emulator, http: httpx.Client) -> None:
    keys = http.get(f"{em.url}/{em.tenant_id}/discovery/v2.0/keys").json()["keys"]
    assert len(keys) == 1
    jwk = keys[0]
    assert jwk["kty"] == "RSA"
    assert jwk["use"] == "sig"
    assert base64.b64decode(jwk["x5c"][0])  # standard base64 DER
    n = int.from_bytes(jwt.b64url_decode(jwk["n"]), "big")
    e = int.from_bytes(jwt.b64url_decode(jwk["e"]), "big")
    public = rsa.RSAPublicNumbers(e, n).public_key()
    token = _token(em, http)
    header, _ = jwt.verify(token, public)
    assert header["kid"] == jwk["kid"]


# --- the protected API -------------------------------------------------------------------------


def test_api_accepts_a_token_and_describes_the_call(em: Emulator, http: httpx.Client) -> None:
    token = _token(em, http)
    r = http.post(f"{em.api_url}/items/7?x=1", headers={"Authorization": f"Bearer {token}"},
                  content=b"0123456789")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True
    assert body["path"] == "/api/items/7"
    assert body["method"] == "POST"
    assert body["query"] == {"x": "1"}
    assert body["body_bytes"] == 10
    assert body["claims"]["aud"] == em.api_resource
    assert body["claims"]["roles"] == ["Data.Read"]
    assert _get(http, em.api_url, token).status_code == 200  # /api itself
    assert em.count("api") == 2


def test_api_reads_a_chunked_body(em: Emulator, http: httpx.Client) -> None:
    token = _token(em, http)

    def chunks() -> Iterator[bytes]:
        yield b"a" * 1000
        yield b"b" * 70000
        yield b"c"

    r = http.put(f"{em.api_url}/upload", headers={"Authorization": f"Bearer {token}"},
                 content=chunks())
    assert r.status_code == 200
    assert r.json()["body_bytes"] == 71001
    assert em.requests[-1].headers["Transfer-Encoding"] == "chunked"


def test_no_token_is_a_bare_bearer_challenge(em: Emulator, http: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"}):
        r = http.get(f"{em.api_url}/x", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm=""'


def _assert_invalid_token(r: httpx.Response, words: str) -> None:
    assert r.status_code == 401
    value = r.headers["www-authenticate"]
    assert value.startswith('Bearer realm="", error="invalid_token", error_description="')
    assert words in value


def test_expired_token_is_refused(em: Emulator, http: httpx.Client,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _assert_invalid_token(_get(http, em.api_url, em.issue_token(lifetime=-5)), "expired")
    em.token_lifetime = 2
    token = _token(em, http)
    assert _get(http, em.api_url, token).status_code == 200
    # The emulator's clock moves past the token's expiry (instead of the test sleeping there).
    later = jwt.decode(token)[1]["exp"] - time.time()
    monkeypatch.setattr(emulator_state, "time", types.SimpleNamespace(
        time=lambda: time.time() + later))
    _assert_invalid_token(_get(http, em.api_url, token), "expired")


def test_revoked_tokens_are_refused_and_new_ones_accepted(em: Emulator,
                                                          http: httpx.Client) -> None:
    first, second = _token(em, http), _token(em, http)
    em.revoke_all()
    _assert_invalid_token(_get(http, em.api_url, first), "revoked")
    _assert_invalid_token(_get(http, em.api_url, second), "revoked")
    fresh = _token(em, http)
    assert _get(http, em.api_url, fresh).status_code == 200
    em.revoke(fresh)
    _assert_invalid_token(_get(http, em.api_url, fresh), "revoked")
    with pytest.raises(InvalidToken, match="revoked"):
        em.verify_token(fresh)


def test_token_for_another_audience_is_refused(em: Emulator, http: httpx.Client) -> None:
    app = em.register_app()
    r = http.post(em.token_url(), data=cc_form(app.client_id, "https://graph.microsoft.com/.default",
                                                client_secret=str(app.secret)))
    _assert_invalid_token(_get(http, em.api_url, r.json()["access_token"]), "audience")


def test_tokens_of_another_emulator_or_forged_are_refused(em: Emulator,
                                                          http: httpx.Client) -> None:
    with Emulator() as other:
        foreign = other.issue_token(resource=em.api_resource)
    _assert_invalid_token(_get(http, em.api_url, foreign), "")
    header, claims = jwt.decode(_token(em, http))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _assert_invalid_token(_get(http, em.api_url, jwt.sign(header, claims, key)), "")
    _assert_invalid_token(_get(http, em.api_url, "not.a.jwt"), "")


def _challenge(r: httpx.Response) -> dict[str, str]:
    value = r.headers["www-authenticate"]
    assert value.startswith("Bearer ")
    params = {}
    for part in value[len("Bearer "):].split(", "):
        name, _, quoted = part.partition("=")
        params[name] = quoted.strip('"')
    return params


@pytest.mark.parametrize("style", ["insufficient_claims", "invalid_token"])
def test_claims_challenge_and_a_token_that_satisfies_it(em: Emulator, http: httpx.Client,
                                                        style: str) -> None:
    plain = _token(em, http)
    em.claims_challenge(2, style=style)
    r = _get(http, em.api_url, plain)
    assert r.status_code == 401
    params = _challenge(r)
    assert params["realm"] == ""
    assert params["error"] == style
    assert params["authorization_uri"] == f"{em.url}/common/oauth2/authorize"
    claims = json.loads(base64.urlsafe_b64decode(params["claims"]))
    assert "access_token" in claims
    # a token asked for with those claims (merged with client capabilities) gets through ...
    asked = {"access_token": {**claims["access_token"], "xms_cc": {"values": ["cp1"]}}}
    good = _token(em, http, claims=json.dumps(asked))
    assert _get(http, em.api_url, good).status_code == 200
    # ... and does not use up the challenge: the plain token is challenged once more, then not
    assert _get(http, em.api_url, plain).status_code == 401
    assert _get(http, em.api_url, plain).status_code == 200


def test_custom_claims_challenge_with_nbf(em: Emulator, http: httpx.Client) -> None:
    old = em.issue_token(claims={"nbf": int(time.time()) - 100, "iat": int(time.time()) - 100})
    em.claims_challenge(1, claims={"access_token": {"nbf": {"essential": True,
                                                            "value": str(int(time.time()) - 10)}}})
    assert _get(http, em.api_url, _token(em, http)).status_code == 200  # issued after: fine
    assert _get(http, em.api_url, old).status_code == 401


def test_reset_drops_a_pending_challenge(em: Emulator, http: httpx.Client) -> None:
    token = _token(em, http)
    em.claims_challenge(5)
    em.reset()
    assert _get(http, em.api_url, token).status_code == 200
    assert em.count("any") == 1
    with pytest.raises(ValueError, match="style"):
        em.claims_challenge(1, style="nope")
