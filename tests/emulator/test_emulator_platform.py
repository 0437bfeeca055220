"""The emulator's platform identities: IMDS, App Service and Cloud Shell managed identity
endpoints (shape of requests and answers, identities, starting up, faults) and federated
credentials (issuer, subject, audience, signature, lifetime)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from authlayer import jwt
from authlayer.emulator import Emulator
from authlayer.emulator.federated import Issuer, federated_issuers
from authlayer.emulator.managed_identity import ManagedIdentities, managed_identities
from authlayer.emulator.users import mint_refresh_token

from .emulator_helpers import ASSERTION_TYPE, assert_entra_error, cc_form

RESOURCE = "https://management.azure.com"


@pytest.fixture
def mi(em: Emulator) -> ManagedIdentities:
    return managed_identities(em)


def _imds(http: httpx.Client, em: Emulator, headers: Any = None, **query: str) -> httpx.Response:
    params = {"api-version": "2018-02-01", "resource": RESOURCE, **query}
    return http.get(f"{em.url}/metadata/identity/oauth2/token", params=params,
                    headers={"Metadata": "true"} if headers is None else headers)


# ------------------------------------------------------------------ IMDS


def test_imds_answer_has_numbers_as_strings(em: Emulator, mi: ManagedIdentities,
                                            http: httpx.Client) -> None:
    r = _imds(http, em)
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"access_token", "expires_in", "expires_on", "not_before", "resource",
                         "token_type"}
    assert all(isinstance(body[k], str) for k in ("expires_in", "expires_on", "not_before"))
    assert (body["resource"], body["token_type"]) == (RESOURCE, "Bearer")
    claims = em.verify_token(body["access_token"], audience=RESOURCE)
    assert mi.system is not None
    assert (claims["oid"], claims["appid"], claims["tid"]) == (
        mi.system.object_id, mi.system.client_id, em.tenant_id)
    assert int(body["expires_on"]) == claims["exp"]


@pytest.mark.parametrize(("headers", "query", "text"), [
    ({}, {}, "Required metadata header not specified"),
    ({"Metadata": "false"}, {}, "Required metadata header not specified"),
    ({"Metadata": "true"}, {"api-version": ""}, "'api-version' is missing"),
    ({"Metadata": "true"}, {"api-version": "2017-09-01"}, "Invalid api-version"),
    ({"Metadata": "true"}, {"resource": ""}, "Required audience parameter not specified"),
    ({"Metadata": "true", "X-Forwarded-For": "10.0.0.1"}, {}, "X-Forwarded-For"),
])
def test_imds_refuses_bad_requests(em: Emulator, http: httpx.Client, headers: dict[str, str],
                                   query: dict[str, str], text: str) -> None:
    r = _imds(http, em, headers, **query)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"
    assert text in r.json()["error_description"]


@pytest.mark.parametrize(("attribute", "field"), [("client_id", "client_id"),
                                                  ("object_id", "object_id"),
                                                  ("resource_id", "msi_res_id")])
def test_imds_user_assigned_identities(em: Emulator, mi: ManagedIdentities, http: httpx.Client,
                                       attribute: str, field: str) -> None:
    identity = mi.add(name="worker", roles=["Writer"])
    assert identity.resource_id is not None
    assert identity.resource_id.endswith("/worker")
    r = _imds(http, em, **{field: getattr(identity, attribute).upper()})
    assert r.status_code == 200
    claims = em.verify_token(r.json()["access_token"], audience=RESOURCE)
    assert (claims["oid"], claims["roles"], claims["xms_mirid"]) == (
        identity.object_id, ["Writer"], identity.resource_id)


def test_imds_unknown_identity(em: Emulator, mi: ManagedIdentities, http: httpx.Client) -> None:
    r = _imds(http, em, client_id=str(uuid.uuid4()))
    assert (r.status_code, r.json()["error_description"]) == (400, "Identity not found")
    mi.enable_system(False)
    assert _imds(http, em).json()["error_description"] == "Identity not found"


def test_imds_two_selectors_are_refused(em: Emulator, mi: ManagedIdentities,
                                        http: httpx.Client) -> None:
    identity = mi.add()
    r = _imds(http, em, client_id=identity.client_id, object_id=identity.object_id)
    assert r.status_code == 400


def test_imds_starting_answers_410_then_tokens(em: Emulator, mi: ManagedIdentities,
                                               http: httpx.Client) -> None:
    mi.starting(2)
    assert [_imds(http, em).status_code for _ in range(3)] == [410, 410, 200]
    assert em.count("imds") == 3


def test_reset_ends_starting_and_restores_the_system_identity(
        em: Emulator, mi: ManagedIdentities, http: httpx.Client) -> None:
    user = mi.add()
    mi.starting(5)
    mi.enable_system(False)
    em.reset()
    assert mi.system is not None
    assert _imds(http, em).status_code == 200
    assert _imds(http, em, client_id=user.client_id).status_code == 200  # user-assigned stay


def test_faults_apply_to_imds(em: Emulator, http: httpx.Client) -> None:
    em.inject("status", endpoint="imds", status=503, retry_after=1)
    r = _imds(http, em)
    assert (r.status_code, r.headers["retry-after"]) == (503, "1")
    assert _imds(http, em).status_code == 200


def test_token_lifetime_can_be_set(em: Emulator, mi: ManagedIdentities,
                                   http: httpx.Client) -> None:
    mi.lifetime = 86400
    assert _imds(http, em).json()["expires_in"] == "86400"


# ------------------------------------------------------------------ App Service


def _app_service(http: httpx.Client, mi: ManagedIdentities, header: Any = None,
                 **query: str) -> httpx.Response:
    params = {"api-version": "2019-08-01", "resource": RESOURCE, **query}
    return http.get(mi.app_service_endpoint, params=params,
                    headers={"X-IDENTITY-HEADER": mi.identity_header if header is None
                             else header})


def test_app_service_answer_has_expires_on_only(em: Emulator, mi: ManagedIdentities,
                                                http: httpx.Client) -> None:
    r = _app_service(http, mi)
    assert r.status_code == 200
    body = r.json()
    assert "expires_in" not in body
    assert isinstance(body["expires_on"], str)
    assert body["resource"] == RESOURCE
    claims = em.verify_token(body["access_token"], audience=RESOURCE)
    assert int(body["expires_on"]) == claims["exp"]
    assert em.count("app_service") == 1


@pytest.mark.parametrize(("attribute", "field"), [("client_id", "client_id"),
                                                  ("object_id", "principal_id"),
                                                  ("resource_id", "mi_res_id")])
def test_app_service_user_assigned(em: Emulator, mi: ManagedIdentities, http: httpx.Client,
                                   attribute: str, field: str) -> None:
    identity = mi.add()
    r = _app_service(http, mi, **{field: getattr(identity, attribute)})
    assert em.verify_token(r.json()["access_token"])["oid"] == identity.object_id


@pytest.mark.parametrize(("header", "query", "status"), [
    ("", {}, 401),
    ("wrong", {}, 401),
    (None, {"api-version": "2018-02-01"}, 400),
    (None, {"resource": ""}, 400),
    (None, {"principal_id": str(uuid.uuid4())}, 400),
])
def test_app_service_refusals(em: Emulator, mi: ManagedIdentities, http: httpx.Client,
                              header: Any, query: dict[str, str], status: int) -> None:
    r = _app_service(http, mi, header, **query)
    assert r.status_code == status
    assert r.json()["statusCode"] == status
    assert r.json()["message"]


# ------------------------------------------------------------------ Cloud Shell


def test_cloud_shell_token(em: Emulator, mi: ManagedIdentities, http: httpx.Client) -> None:
    r = http.post(mi.cloud_shell_endpoint, data={"resource": RESOURCE},
                  headers={"Metadata": "true"})
    assert r.status_code == 200
    assert isinstance(r.json()["expires_in"], str)
    assert em.verify_token(r.json()["access_token"], audience=RESOURCE)
    assert em.count("cloud_shell") == 1


def test_cloud_shell_refusals(em: Emulator, mi: ManagedIdentities, http: httpx.Client) -> None:
    url = mi.cloud_shell_endpoint
    assert http.post(url, data={"resource": RESOURCE}).status_code == 400
    assert http.post(url, data={}, headers={"Metadata": "true"}).status_code == 400
    user = http.post(url, data={"resource": RESOURCE, "client_id": str(uuid.uuid4())},
                     headers={"Metadata": "true"})
    assert user.status_code == 400
    assert http.get(url, headers={"Metadata": "true"}).status_code == 405


# ------------------------------------------------------------------ federated credentials

SUBJECT = "repo:contoso/app:ref:refs/heads/main"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def issuer(em: Emulator, signing_key: rsa.RSAPrivateKey) -> Issuer:
    return federated_issuers(em).add("https://token.actions.example", key=signing_key)


@pytest.fixture
def fed_app(em: Emulator, issuer: Issuer) -> Any:
    return em.register_app(federated=[{"issuer": issuer.url, "subject": SUBJECT,
                                       "audience": "api://AzureADTokenExchange"}])


def _exchange(http: httpx.Client, em: Emulator, client_id: str, assertion: str
              ) -> httpx.Response:
    return http.post(em.token_url(), data=cc_form(
        client_id, em.api_scope, client_assertion_type=ASSERTION_TYPE,
        client_assertion=assertion))


def test_federated_token_is_accepted_again_and_again(em: Emulator, issuer: Issuer,
                                                     fed_app: Any, http: httpx.Client) -> None:
    assertion = issuer.mint(SUBJECT)
    for _ in range(2):  # a projected token is presented for every token request
        r = _exchange(http, em, fed_app.client_id, assertion)
        assert r.status_code == 200, r.text
        claims = em.verify_token(r.json()["access_token"])
        assert (claims["appid"], claims["azpacr"]) == (fed_app.client_id, "2")


def test_token_without_jti_is_accepted(em: Emulator, issuer: Issuer, fed_app: Any,
                                       http: httpx.Client) -> None:
    header, claims = jwt.decode(issuer.mint(SUBJECT))
    del claims["jti"]  # Kubernetes before 1.29 sends none
    assertion = jwt.sign(header, claims, issuer.key)
    assert _exchange(http, em, fed_app.client_id, assertion).status_code == 200


@pytest.mark.parametrize(("change", "code"), [
    ({"sub": "repo:contoso/other:ref:refs/heads/main"}, 700213),
    ({"iss": "https://other-issuer.example"}, 70021),
    ({"aud": ["api://SomethingElse"]}, 70021),
    ({"exp": 1_000_000_000, "nbf": 999_999_000, "iat": 999_999_000}, 700024),
])
def test_federated_mismatches_are_refused(em: Emulator, issuer: Issuer, fed_app: Any,
                                          http: httpx.Client, change: dict[str, Any],
                                          code: int) -> None:
    r = _exchange(http, em, fed_app.client_id, issuer.mint(SUBJECT, claims=change))
    status = 401 if code == 700024 else 400
    assert_entra_error(r, status, "invalid_client" if code == 700024 else "unauthorized_client",
                       code)


def test_federated_token_signed_by_another_key(em: Emulator, issuer: Issuer, fed_app: Any,
                                               http: httpx.Client) -> None:
    impostor = Issuer(issuer.url, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                      kid=issuer.kid)
    r = _exchange(http, em, fed_app.client_id, impostor.mint(SUBJECT))
    assert_entra_error(r, 401, "invalid_client", 700027)


def test_federated_issuer_without_known_keys(em: Emulator, http: httpx.Client,
                                             issuer: Issuer) -> None:
    app = em.register_app(federated=[{"issuer": "https://unknown.example", "subject": SUBJECT}])
    stranger = Issuer("https://unknown.example", issuer.key)
    r = _exchange(http, em, app.client_id, stranger.mint(SUBJECT))
    assert_entra_error(r, 401, "invalid_client", 50166)


def test_app_without_federated_credentials_still_refuses_plain_jwts(
        em: Emulator, issuer: Issuer, http: httpx.Client) -> None:
    app = em.register_app()
    r = _exchange(http, em, app.client_id, issuer.mint(SUBJECT))
    assert_entra_error(r, 400, "unauthorized_client", 70021)


# ------------------------------------------------------------------ refresh tokens across tenants


def test_plain_refresh_token_works_in_every_tenant_of_the_person(em: Emulator,
                                                                 http: httpx.Client) -> None:
    """Entra binds a refresh token to the person and the client, not to a tenant: a guest's
    app can redeem it in another tenant the person belongs to (MSAL does, across tenants)."""
    person = "alice@contoso.onmicrosoft.com"
    app = em.register_app(public=True)
    other_app = em.register_app(public=True)
    other = em.add_tenant()
    rt = mint_refresh_token(em, client_id=app.client_id, username=person)

    def redeem(tenant: str, client_id: str) -> httpx.Response:
        return http.post(em.token_url(tenant), data={
            "grant_type": "refresh_token", "client_id": client_id, "refresh_token": rt,
            "scope": "https://graph.microsoft.com/.default"})

    assert_entra_error(redeem(other, app.client_id), 400, "invalid_grant", 50020)  # not there
    em.add_user(person, tenant=other)
    r = redeem(other, app.client_id)
    assert r.status_code == 200, r.text
    claims = em.verify_token(r.json()["access_token"])
    assert (claims["tid"], claims["appid"]) == (other, app.client_id)
    assert "foci" not in r.json()
    assert_entra_error(redeem(other, other_app.client_id), 400, "invalid_grant", 70000)
