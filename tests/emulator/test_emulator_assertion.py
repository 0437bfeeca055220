"""Certificate client assertions at the emulator's token endpoint: the accepted forms (PS256
with x5t#S256, RS256 with x5t, with x5c) and every refusal, each with Entra's error."""

from __future__ import annotations

import time
from typing import Any, Callable

import httpx
import pytest

from authlayer import jwt
from authlayer.emulator import Emulator

from .emulator_helpers import ASSERTION_TYPE, Material, assert_entra_error, build_assertion

AssertionFactory = Callable[..., str]


@pytest.fixture
def make_assertion() -> AssertionFactory:
    return build_assertion


def _post(http: httpx.Client, em: Emulator, client_id: str, assertion: str,
          tenant: str | None = None) -> httpx.Response:
    return http.post(em.token_url(tenant), data={
        "grant_type": "client_credentials", "client_id": client_id, "scope": em.api_scope,
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion,
    })


@pytest.mark.parametrize(("alg", "x5c"), [("PS256", False), ("RS256", False), ("PS256", True),
                                          ("RS256", True)])
def test_assertion_is_accepted(em: Emulator, http: httpx.Client, cert: Material,
                               make_assertion: AssertionFactory, alg: str, x5c: bool) -> None:
    app = em.register_app(certificate=cert.pem)
    assert app.secret is None
    assertion = make_assertion(cert, app.client_id, em.token_url(), alg=alg, x5c=x5c)
    r = _post(http, em, app.client_id, assertion)
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["access_token"])[1]
    assert claims["azpacr"] == "2"
    assert claims["appid"] == app.client_id


def test_certificate_object_and_domain_audience(em: Emulator, http: httpx.Client, cert: Material,
                                                make_assertion: AssertionFactory) -> None:
    app = em.register_app(certificate=cert.cert)
    aud = em.token_url(em.tenant_domain)
    r = _post(http, em, app.client_id, make_assertion(cert, app.client_id, aud),
              tenant=em.tenant_domain)
    assert r.status_code == 200, r.text


def test_client_id_may_come_from_the_assertion(em: Emulator, http: httpx.Client, cert: Material,
                                               make_assertion: AssertionFactory) -> None:
    app = em.register_app(certificate=cert.pem)
    r = http.post(em.token_url(), data={
        "grant_type": "client_credentials", "scope": em.api_scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": make_assertion(cert, app.client_id, em.token_url()),
    })
    assert r.status_code == 200, r.text


def test_a_second_certificate_can_be_added(em: Emulator, http: httpx.Client, cert: Material,
                                           other_cert: Material,
                                           make_assertion: AssertionFactory) -> None:
    app = em.register_app(certificate=cert.pem)
    em.add_certificate(app.client_id, other_cert.pem)
    for material in (cert, other_cert):
        r = _post(http, em, app.client_id, make_assertion(material, app.client_id,
                                                          em.token_url()))
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("aud", [
    "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
    "{url}/{domain}/oauth2/v2.0/token",  # right service, but not the URL that was called
    "{url}/{tenant}/oauth2/v2.0/token/",
    "{url}/{tenant}/oauth2/token",
])
def test_wrong_audience_is_refused(em: Emulator, http: httpx.Client, cert: Material,
                                   make_assertion: AssertionFactory, aud: str) -> None:
    app = em.register_app(certificate=cert.pem)
    aud = aud.format(url=em.url, tenant=em.tenant_id, domain=em.tenant_domain)
    r = _post(http, em, app.client_id, make_assertion(cert, app.client_id, aud))
    body = assert_entra_error(r, 401, "invalid_client", 50012)
    assert "aud" in body["error_description"]


@pytest.mark.parametrize("claims", [
    {"exp": -120, "nbf": -720, "iat": -720},   # expired
    {"nbf": 300, "iat": 300, "exp": 900},      # not valid yet
    {"nbf": 0, "iat": 0, "exp": 3600},         # valid for an hour: too long
    {"exp": None},                             # no expiry at all
])
def test_assertion_outside_its_time_is_700024(em: Emulator, http: httpx.Client, cert: Material,
                                              make_assertion: AssertionFactory,
                                              claims: dict[str, Any]) -> None:
    app = em.register_app(certificate=cert.pem)
    now = int(time.time())
    shifted = {k: (None if v is None else now + v) for k, v in claims.items()}
    assertion = make_assertion(cert, app.client_id, em.token_url(), claims=shifted)
    assert_entra_error(_post(http, em, app.client_id, assertion), 401, "invalid_client", 700024)


def test_small_clock_skew_is_tolerated(em: Emulator, http: httpx.Client, cert: Material,
                                       make_assertion: AssertionFactory) -> None:
    app = em.register_app(certificate=cert.pem)
    now = int(time.time())
    claims = {"nbf": now + 30, "iat": now + 30, "exp": now + 630}
    r = _post(http, em, app.client_id,
              make_assertion(cert, app.client_id, em.token_url(), claims=claims))
    assert r.status_code == 200, r.text


def test_reused_jti_is_refused(em: Emulator, http: httpx.Client, cert: Material,
                               make_assertion: AssertionFactory) -> None:
    app = em.register_app(certificate=cert.pem)
    assertion = make_assertion(cert, app.client_id, em.token_url())
    assert _post(http, em, app.client_id, assertion).status_code == 200
    body = assert_entra_error(_post(http, em, app.client_id, assertion), 401, "invalid_client",
                              50012)
    assert "already used" in body["error_description"]
    assert "jti" in body["error_description"]


def test_missing_jti_is_refused(em: Emulator, http: httpx.Client, cert: Material,
                                make_assertion: AssertionFactory) -> None:
    app = em.register_app(certificate=cert.pem)
    assertion = make_assertion(cert, app.client_id, em.token_url(), claims={"jti": None})
    assert_entra_error(_post(http, em, app.client_id, assertion), 401, "invalid_client", 50012)


def test_refused_assertion_does_not_use_up_its_jti(em: Emulator, http: httpx.Client,
                                                   cert: Material,
                                                   make_assertion: AssertionFactory) -> None:
    app = em.register_app(certificate=cert.pem)
    assertion = make_assertion(cert, app.client_id, em.token_url())
    assert _post(http, em, app.client_id, assertion, tenant=em.tenant_domain).status_code == 401
    assert _post(http, em, app.client_id, assertion).status_code == 200


def test_signature_by_another_key_is_700027(em: Emulator, http: httpx.Client, cert: Material,
                                            other_cert: Material,
                                            make_assertion: AssertionFactory) -> None:
    app = em.register_app(certificate=cert.pem)
    for alg in ("PS256", "RS256"):
        assertion = make_assertion(cert, app.client_id, em.token_url(), alg=alg,
                                   key=other_cert.key)
        assert_entra_error(_post(http, em, app.client_id, assertion), 401, "invalid_client",
                           700027)


def test_unregistered_certificate_is_700027(em: Emulator, http: httpx.Client, cert: Material,
                                            other_cert: Material,
                                            make_assertion: AssertionFactory) -> None:
    app = em.register_app(certificate=cert.pem)
    assertion = make_assertion(other_cert, app.client_id, em.token_url())
    body = assert_entra_error(_post(http, em, app.client_id, assertion), 401, "invalid_client",
                              700027)
    assert other_cert.x5t256 in body["error_description"]
    secret_app = em.register_app()  # an app with only a secret has no certificate to match
    assertion = make_assertion(cert, secret_app.client_id, em.token_url())
    assert_entra_error(_post(http, em, secret_app.client_id, assertion), 401, "invalid_client",
                       700027)


@pytest.mark.parametrize("header", [
    {"x5t#S256": "AAAA"},
    {"x5t": "AAAA"},                           # both given: both must match
    {"x5c": ["bm90IGEgY2VydA=="]},             # x5c whose first certificate is another one
    {"x5t#S256": None},                        # no thumbprint at all
])
def test_wrong_thumbprint_or_chain_is_700027(em: Emulator, http: httpx.Client, cert: Material,
                                             make_assertion: AssertionFactory,
                                             header: dict[str, Any]) -> None:
    app = em.register_app(certificate=cert.pem)
    assertion = make_assertion(cert, app.client_id, em.token_url(), header=header)
    if header.get("x5t#S256", "") is None:
        head, claims = jwt.decode(assertion)
        del head["x5t#S256"]
        assertion = jwt.sign(head, claims, cert.key)
    assert_entra_error(_post(http, em, app.client_id, assertion), 401, "invalid_client", 700027)


def test_iss_and_sub_must_be_the_client(em: Emulator, http: httpx.Client, cert: Material,
                                        make_assertion: AssertionFactory) -> None:
    app = em.register_app(certificate=cert.pem)
    for claims in ({"iss": "someone-else"}, {"sub": "someone-else"}):
        assertion = make_assertion(cert, app.client_id, em.token_url(), claims=claims)
        assert_entra_error(_post(http, em, app.client_id, assertion), 401, "invalid_client",
                           700021)


def test_malformed_assertion_and_wrong_type(em: Emulator, http: httpx.Client, cert: Material,
                                            make_assertion: AssertionFactory) -> None:
    app = em.register_app(certificate=cert.pem)
    assert_entra_error(_post(http, em, app.client_id, "not-a-jwt"), 400, "invalid_request", 50027)
    r = http.post(em.token_url(), data={
        "grant_type": "client_credentials", "client_id": app.client_id, "scope": em.api_scope,
        "client_assertion_type": "password", "client_assertion":
            make_assertion(cert, app.client_id, em.token_url()),
    })
    assert_entra_error(r, 400, "invalid_request", 90023)


def test_the_full_assertion_is_kept_in_the_request_log(em: Emulator, http: httpx.Client,
                                                       cert: Material,
                                                       make_assertion: AssertionFactory) -> None:
    app = em.register_app(certificate=cert.pem)
    assertion = make_assertion(cert, app.client_id, em.token_url())
    _post(http, em, app.client_id, assertion)
    record = em.requests[-1]
    assert record.form["client_assertion"] == assertion
    by_name = record["form"]  # records can be read by field name too
    assert isinstance(by_name, dict)
    assert by_name["client_assertion_type"] == ASSERTION_TYPE
    assert em.count("token", client_assertion_type=ASSERTION_TYPE) == 1
