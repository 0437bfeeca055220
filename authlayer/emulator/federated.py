"""Federated credentials: client assertions that are tokens from another identity provider (a
Kubernetes cluster, GitHub Actions, ...), trusted through the app's federated credentials.

An app registered with ``federated=[{"issuer", "subject", "audience"}]`` accepts as
``client_assertion`` a JWT whose ``iss`` and ``sub`` match one entry, whose ``aud`` holds that
entry's audience (default ``api://AzureADTokenExchange``), which is within its lifetime and
whose signature verifies with the key of that issuer. The issuers are emulated too: a test
registers one and mints its tokens::

    issuer = federated_issuers(emu).add("https://oidc.example/cluster")
    subject = "system:serviceaccount:ns:sa"
    app = emu.register_app(federated=[{"issuer": issuer.url, "subject": subject}])
    token = issuer.mint(subject)

This module plugs into :data:`~authlayer.emulator.clientauth.FEDERATED_VERIFIERS`; refusals
are Entra's: AADSTS70021 (no federated credential for that issuer, or another audience),
AADSTS700213 (no credential for that subject), AADSTS700024 (expired), AADSTS700027 (bad
signature), AADSTS50166 (the emulator knows no keys for that issuer). A federated token may
be presented many times while it is valid, as with Entra.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from .. import jwt
from .clientauth import CLOCK_SKEW, FEDERATED_VERIFIERS
from .state import App
from .wire import EntraError, Request

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from .server import Emulator

__all__ = [
    "DEFAULT_AUDIENCE",
    "FederatedIssuers",
    "Issuer",
    "federated_issuers",
    "verify_federated_assertion",
]

DEFAULT_AUDIENCE = "api://AzureADTokenExchange"


@dataclass(frozen=True)
class Issuer:
    """An emulated external identity provider: its URL (``iss``) and signing key."""

    url: str
    key: RSAPrivateKey = field(repr=False)
    kid: str = field(default_factory=lambda: uuid.uuid4().hex)

    def mint(
        self,
        subject: str,
        audience: str = DEFAULT_AUDIENCE,
        *,
        lifetime: int = 3600,
        claims: Optional[Mapping[str, Any]] = None,
    ) -> str:
        """A token of this issuer for ``subject``; ``lifetime`` may be negative (expired).
        ``claims`` are added last."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.url,
            "sub": subject,
            "aud": [audience],
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
        }
        body.update(claims or {})
        return jwt.sign({"alg": "RS256", "typ": "JWT", "kid": self.kid}, body, self.key)


class FederatedIssuers:
    """The external issuers one emulator trusts the keys of (``federated_issuers(emu)``)."""

    def __init__(self, emu: Emulator) -> None:
        self._lock = threading.Lock()
        self._issuers: dict[str, Issuer] = {}

    def add(self, url: str, key: Optional[RSAPrivateKey] = None,
            kid: Optional[str] = None) -> Issuer:
        """Register an issuer (a new RSA key unless ``key`` is given; ``kid`` its key id) and
        return it. ``add(emu.state.issuer(tid), emu.state.signing_key, emu.state.kid)`` makes
        the emulator trust its own tokens as assertions (a managed identity as a federated
        credential)."""
        if key is None:
            from cryptography.hazmat.primitives.asymmetric import rsa

            key = rsa.generate_private_key(65537, 2048)
        issuer = Issuer(url, key) if kid is None else Issuer(url, key, kid)
        with self._lock:
            self._issuers[url] = issuer
        return issuer

    def get(self, url: str) -> Optional[Issuer]:
        with self._lock:
            return self._issuers.get(url)


def federated_issuers(emu: Emulator) -> FederatedIssuers:
    """The federated issuers of ``emu``."""
    return emu.extension("federated_issuers", FederatedIssuers)


def _no_match(code: int, message: str) -> EntraError:
    return EntraError("unauthorized_client", code, message)


def verify_federated_assertion(
    emu: Emulator, req: Request, app: App, header: Mapping[str, Any], claims: Mapping[str, Any]
) -> bool:
    """Check a federated client assertion (see the module docstring). ``False`` when neither
    the app nor the emulator knows federated credentials (the caller refuses it then)."""
    iss, sub, aud = claims.get("iss"), claims.get("sub"), claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else list(aud) if isinstance(aud, list) else []
    issuer = federated_issuers(emu).get(iss) if isinstance(iss, str) else None
    if issuer is None and not app.federated:
        return False
    described = f"Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: " \
                f"'{', '.join(str(a) for a in audiences)}'."
    same_issuer = [f for f in app.federated if f.get("issuer") == iss]
    if not same_issuer:
        raise _no_match(70021, "No matching federated identity record found for presented "
                               f"assertion. {described}")
    matching = [f for f in same_issuer if f.get("subject") == sub]
    if not matching:
        raise _no_match(700213, "No matching federated identity record found for presented "
                                f"assertion subject '{sub}'. Check your federated identity "
                                "credential Subject, Audience and Issuer against the presented "
                                "assertion.")
    if not any(f.get("audience", DEFAULT_AUDIENCE) in audiences for f in matching):
        raise _no_match(70021, "No matching federated identity record found for presented "
                               f"assertion audience. {described}")
    if issuer is None:
        raise EntraError("invalid_client", 50166,
                         f"Request to External OIDC endpoint failed: no signing keys are known "
                         f"for issuer '{iss}'.")
    assertion = req.form.get("client_assertion", "")
    if header.get("kid") not in (None, issuer.kid):
        raise EntraError("invalid_client", 700027,
                         f"Client assertion failed signature validation: the key "
                         f"'{header.get('kid')}' is not a key of issuer '{iss}'.")
    try:
        jwt.verify(assertion, issuer.key.public_key())
    except jwt.JWTError:
        raise EntraError("invalid_client", 700027,
                         "Client assertion failed signature validation: the signature does not "
                         f"verify with the keys of issuer '{iss}'.") from None
    now = time.time()
    try:
        exp = float(claims["exp"])
        nbf = float(claims.get("nbf", claims.get("iat", now)))
    except (KeyError, TypeError, ValueError):
        raise EntraError("invalid_client", 700024,
                         "Client assertion must carry a numeric 'exp' claim.") from None
    if exp <= now - CLOCK_SKEW or nbf > now + CLOCK_SKEW:
        raise EntraError("invalid_client", 700024,
                         "Client assertion is not within its valid time range: "
                         + ("it has expired." if exp <= now - CLOCK_SKEW else
                            "it is not valid yet."))
    return True


FEDERATED_VERIFIERS.append(verify_federated_assertion)
