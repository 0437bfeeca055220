"""Client authentication at the token endpoint (RFC 6749 §2.3, RFC 7523): who is asking, and
did they prove it.

Every grant that needs to know the client calls :func:`authenticate_client`. It accepts a
``client_secret`` in the form body or in HTTP Basic (both parts form-urlencoded, as RFC 6749
says), or a ``client_assertion`` JWT. A certificate assertion is checked in full: the
certificate named by ``x5t#S256``/``x5t`` (and ``x5c`` when present) must be registered on the
app, the RS256/PS256 signature must verify with its key, ``iss`` and ``sub`` must be the client
id, ``aud`` the exact token URL called, the lifetime at most ten minutes (plus clock skew) and
``jti`` never seen before. Refusals are Entra's errors (AADSTS7000215, 7000222, 7000218,
700027, 700024, 700016, ...).

Assertions that are not certificate assertions (no ``x5t``/``x5c`` header) are federated
credentials: a module that implements them appends a verifier to :data:`FEDERATED_VERIFIERS`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import unquote_plus

from .. import jwt
from .state import App, Tenant
from .wire import EntraError, Request

if TYPE_CHECKING:
    from cryptography import x509

    from .server import Emulator

__all__ = [
    "ASSERTION_TYPE",
    "CLOCK_SKEW",
    "FEDERATED_VERIFIERS",
    "MAX_ASSERTION_LIFETIME",
    "ClientAuth",
    "FederatedVerifier",
    "authenticate_client",
    "missing_parameter",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_SKEW = 60
MAX_ASSERTION_LIFETIME = 600


@dataclass(frozen=True)
class ClientAuth:
    """The authenticated client and how it proved itself: ``"secret"``, ``"certificate"``,
    ``"federated"`` or ``"none"`` (a public client)."""

    app: App
    method: str

    @property
    def azpacr(self) -> str:
        """The ``azpacr`` claim: 0 public client, 1 secret, 2 certificate or assertion."""
        return {"none": "0", "secret": "1"}.get(self.method, "2")


# A federated verifier gets (emulator, request, app, header, claims) of an assertion without
# certificate headers. It returns True when it accepted the assertion, False when it does not
# deal with it, and raises EntraError to refuse it.
FederatedVerifier = Callable[["Emulator", Request, App, Mapping[str, Any], Mapping[str, Any]], bool]
FEDERATED_VERIFIERS: list[FederatedVerifier] = []


def missing_parameter(name: str) -> EntraError:
    """Entra's error for a missing form field (AADSTS900144)."""
    return EntraError(
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )


def _invalid_request(message: str) -> EntraError:
    return EntraError("invalid_request", 90023, message)


def _basic_credentials(req: Request) -> Optional[tuple[str, str]]:
    value = req.headers.get("authorization")
    if not value or value[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _invalid_request("The Authorization header is not valid HTTP Basic.") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise _invalid_request("The Authorization header is not valid HTTP Basic.")
    return unquote_plus(user), unquote_plus(password)


def authenticate_client(
    emu: Emulator, req: Request, tenant: Tenant, *, allow_public: bool = False
) -> ClientAuth:
    """Find the client of a token request and check its credential.

    ``allow_public``: a public client may send no credential (device code, refresh token ...);
    otherwise a credential is required (client credentials, on-behalf-of ...).
    """
    basic = _basic_credentials(req)
    form_id = req.form.get("client_id", "").strip()
    assertion = req.form.get("client_assertion")
    body_secret = req.form.get("client_secret")
    if basic and form_id and basic[0].lower() != form_id.lower():
        raise _invalid_request("The client_id in the body and in the Authorization header differ.")
    client_id = form_id or (basic[0] if basic else "")
    if not client_id and assertion:
        try:
            client_id = str(jwt.decode(assertion)[1].get("sub") or "")
        except jwt.JWTError:
            client_id = ""
    if not client_id:
        raise missing_parameter("client_id")
    app = emu.state.app(client_id)
    if app is None or not app.consented_in(tenant.id):
        raise EntraError(
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{tenant.domains[0] if tenant.domains else tenant.id}'. This can happen if the "
            "application has not been installed by the administrator of the tenant or consented "
            "to by any user in the tenant. You may have sent your authentication request to the "
            "wrong tenant.",
        )
    if body_secret is not None and basic is not None:
        raise _invalid_request("Send the client secret either in the body or in the "
                               "Authorization header, not both.")
    secret = body_secret if body_secret is not None else (basic[1] if basic else None)
    if secret is not None and assertion is not None:
        raise _invalid_request("Send either client_secret or client_assertion, not both.")
    if app.public and (secret is not None or assertion is not None):
        raise EntraError(
            "invalid_client",
            700025,
            "Client is public so neither 'client_assertion' nor 'client_secret' should be "
            "presented.",
        )
    if secret is not None:
        _check_secret(app, secret)
        return ClientAuth(app, "secret")
    if assertion is not None:
        kind = req.form.get("client_assertion_type", "")
        if kind != ASSERTION_TYPE:
            raise _invalid_request(f"client_assertion_type must be '{ASSERTION_TYPE}'.")
        return ClientAuth(app, _check_assertion(emu, req, app, assertion))
    if allow_public and app.public:
        return ClientAuth(app, "none")
    raise EntraError(
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
    )


def _check_secret(app: App, secret: str) -> None:
    if app.secret is None or not hmac.compare_digest(secret.encode(), app.secret.encode()):
        raise EntraError(
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the "
            f"client secret value, not the client secret ID, for a secret added to app "
            f"'{app.client_id}'.",
        )
    if app.secret_expired:
        raise EntraError(
            "invalid_client",
            7000222,
            f"The provided client secret keys for app '{app.client_id}' are expired. Visit the "
            "Azure portal to create new keys for your app or consider using certificate "
            "credentials for added security.",
        )


def _bad_assertion(message: str, code: int = 700027) -> EntraError:
    return EntraError("invalid_client", code, message)


def _matching_certificate(app: App, header: Mapping[str, Any], emu: Emulator) -> x509.Certificate:
    x5t = header.get("x5t")
    x5t256 = header.get("x5t#S256")
    for cert in app.certificates:
        sha1, sha256 = emu.state.thumbprints(cert)
        if (x5t is None or x5t == sha1) and (x5t256 is None or x5t256 == sha256):
            return cert
    used = x5t256 if x5t256 is not None else x5t
    raise _bad_assertion(
        "Client assertion contains an invalid signature. [Reason - The key was not found., "
        f"Thumbprint of key used by client: '{used}', Please check the certificates registered "
        f"for app Id '{app.client_id}'.]"
    )


def _check_assertion(emu: Emulator, req: Request, app: App, assertion: str) -> str:
    """Check a client assertion; return ``"certificate"`` or ``"federated"``."""
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        header, claims = jwt.decode(assertion)
    except jwt.JWTError:
        raise EntraError("invalid_request", 50027, "JWT token is invalid or malformed.") from None
    # An issuer the app federates with makes it a federated assertion whatever its header
    # names: Entra's own tokens (a managed identity's) carry x5t too.
    federates = any(f.get("issuer") == claims.get("iss") for f in app.federated)
    if federates or ("x5t" not in header and "x5t#S256" not in header):
        for verifier in FEDERATED_VERIFIERS:
            if verifier(emu, req, app, header, claims):
                # No jti check: a federated token (a Kubernetes service account token, say) is
                # presented again for every token request while it is valid, as Entra allows.
                return "federated"
        if app.federated:
            raise EntraError(
                "unauthorized_client",
                700213,
                "No matching federated identity record found for presented assertion subject "
                f"'{claims.get('sub')}'. Check your federated identity credential Subject, "
                "Audience and Issuer against the presented assertion.",
            )
        raise _bad_assertion(
            "Client assertion contains an invalid signature. [Reason - The assertion header "
            "names no certificate: send 'x5t#S256' (or 'x5t').]"
        )
    if header.get("alg") not in jwt.SUPPORTED_ALGS:
        raise _bad_assertion(
            f"Client assertion uses the unsupported algorithm '{header.get('alg')}'; use PS256 "
            "or RS256."
        )
    cert = _matching_certificate(app, header, emu)
    if "x5c" in header:
        chain = header["x5c"]
        try:
            first = base64.b64decode(chain[0], validate=True) if isinstance(chain, list) else b""
        except (binascii.Error, ValueError, IndexError, TypeError):
            first = b""
        if first != cert.public_bytes(Encoding.DER):
            raise _bad_assertion(
                "Client assertion contains an invalid signature. [Reason - The first "
                "certificate of 'x5c' is not the certificate named by the thumbprint.]"
            )
    try:
        jwt.verify(assertion, cert.public_key())  # type: ignore[arg-type]
    except (jwt.JWTError, TypeError, AttributeError):
        raise _bad_assertion(
            "Client assertion contains an invalid signature. [Reason - The signature does not "
            f"verify with the key of the registered certificate of app '{app.client_id}'.]"
        ) from None
    if (
        str(claims.get("iss", "")).lower() != app.client_id.lower()
        or str(claims.get("sub", "")).lower() != app.client_id.lower()
    ):
        raise _bad_assertion(
            "Client assertion application identifier doesn't match 'client_id' parameter: "
            "'iss' and 'sub' must both be the client id.",
            700021,
        )
    if claims.get("aud") != req.url:
        raise _bad_assertion(
            "Client assertion audience claim does not match Realm issuer: 'aud' is "
            f"'{claims.get('aud')}' but must be the token endpoint called, '{req.url}'.",
            50012,
        )
    _check_times(claims)
    _check_jti(emu, app, claims)
    return "certificate"


def _fmt(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%m/%d/%Y %H:%M:%S")


def _check_times(claims: Mapping[str, Any]) -> None:
    now = time.time()
    try:
        exp = float(claims["exp"])
        start = float(claims["nbf"] if "nbf" in claims else claims["iat"])
        iat = float(claims.get("iat", start))
    except (KeyError, TypeError, ValueError):
        raise _bad_assertion(
            "Client assertion must carry numeric 'exp' and 'nbf' claims.", 700024
        ) from None
    problem = None
    if exp <= now - CLOCK_SKEW:
        problem = "it has expired"
    elif start > now + CLOCK_SKEW or iat > now + CLOCK_SKEW:
        problem = "it is not valid yet"
    elif exp - start > MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
        problem = f"it is valid for more than {MAX_ASSERTION_LIFETIME // 60} minutes"
    if problem:
        raise _bad_assertion(
            f"Client assertion is not within its valid time range ({problem}). Current time: "
            f"{_fmt(now)}, assertion valid from {_fmt(start)}, expiry time of assertion "
            f"{_fmt(exp)}. Review the documentation at "
            "https://learn.microsoft.com/entra/identity-platform/certificate-credentials.",
            700024,
        )


def _check_jti(emu: Emulator, app: App, claims: Mapping[str, Any]) -> None:
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise _bad_assertion(
            "Client assertion has no 'jti' claim: give each assertion a new unique id.", 50012
        )
    if not emu.state.use_jti(app.client_id, jti):
        raise _bad_assertion(
            f"Client assertion with jti '{jti}' was already used: an assertion is accepted only "
            "once. Build a new assertion, with a new 'jti', for each token request.",
            50012,
        )
