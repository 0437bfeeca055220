"""The emulator's directory and token service: tenants, apps, users, the signing key, issued
and revoked tokens, used assertion ids and the pending claims challenge.

Everything here is plain in-memory state behind one lock, with no HTTP: handlers in
``grants.py``, ``api.py`` and later modules read and change it through the methods below. The
signing key is shared by the emulators of a process unless one is given (see
:func:`shared_signing_key`); each emulator still has its own key id and issuer, so tokens from
one emulator are refused by another.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Optional, Union

from .. import jwt
from .wire import EntraError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

__all__ = [
    "DEFAULT_CHALLENGE",
    "SPECIAL_TENANTS",
    "App",
    "ClaimsChallenge",
    "InvalidToken",
    "IssuedToken",
    "State",
    "Tenant",
    "TenantRef",
    "User",
    "apply_requested_claims",
    "load_certificate",
    "satisfies_claims",
    "shared_signing_key",
]

SPECIAL_TENANTS = ("organizations", "common", "consumers")

# The claims asked for by Emulator.claims_challenge() unless told otherwise: a Conditional
# Access authentication context, which a token only has when it was asked for with `claims`.
DEFAULT_CHALLENGE: dict[str, Any] = {"access_token": {"acrs": {"essential": True, "value": "c1"}}}

# Claims the token service sets itself; a `claims` request cannot replace them.
_RESERVED_CLAIMS = frozenset(
    {"aud", "iss", "iat", "nbf", "exp", "tid", "oid", "sub", "appid", "azp", "ver", "uti",
     "roles", "scp", "idtyp", "azpacr", "appidacr"}
)

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


_shared_key: Optional[RSAPrivateKey] = None
_shared_key_lock = threading.Lock()


def shared_signing_key() -> RSAPrivateKey:
    """One RSA key per process for emulators not given their own: making a 2048-bit key costs
    tens of milliseconds, and test suites start many emulators. Tokens still do not pass from
    one emulator to another: each has its own key id and issuer URL."""
    global _shared_key
    with _shared_key_lock:
        if _shared_key is None:
            from cryptography.hazmat.primitives.asymmetric import rsa

            _shared_key = rsa.generate_private_key(65537, 2048)
        return _shared_key


class InvalidToken(ValueError):
    """An access token the emulator did not issue, or one that is expired, revoked or for
    another audience. The message says which."""


@dataclass(frozen=True)
class Tenant:
    """A directory: its GUID and the domains that name it."""

    id: str
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class TenantRef:
    """The tenant path segment of a request, resolved: ``tenant`` is ``None`` for
    ``organizations``, ``common`` and ``consumers``."""

    segment: str
    tenant: Optional[Tenant]

    @property
    def special(self) -> bool:
        return self.tenant is None

    def require_specific(self, flow: str = "this flow") -> Tenant:
        """The tenant, or an Entra error when the segment is organizations/common/consumers."""
        if self.tenant is None:
            raise EntraError(
                "invalid_request",
                90002,
                f"Tenant '{self.segment}' cannot be used for {flow}: use the tenant's GUID or "
                "one of its domains.",
            )
        return self.tenant


@dataclass(frozen=True)
class App:
    """An application registration (and its service principals).

    ``tenants`` lists the tenant GUIDs where the app is consented, ``None`` meaning all.
    ``object_id`` is the base of the service principal object ids put in app tokens.
    """

    client_id: str
    secret: Optional[str] = field(default=None, repr=False)
    certificates: tuple[x509.Certificate, ...] = field(default=(), repr=False)
    public: bool = False
    roles: tuple[str, ...] = ("Data.Read",)
    tenants: Optional[frozenset[str]] = None
    federated: tuple[Mapping[str, Any], ...] = ()
    secret_expired: bool = False
    display_name: str = "authlayer emulator app"
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def certificate(self) -> Optional[x509.Certificate]:
        """The first registered certificate, if any."""
        return self.certificates[0] if self.certificates else None

    def consented_in(self, tenant_id: str) -> bool:
        return self.tenants is None or tenant_id in self.tenants

    def principal_id(self, tenant_id: str) -> str:
        """The service principal's object id in a tenant (stable per app and tenant)."""
        return str(uuid.uuid5(uuid.UUID(self.object_id), tenant_id))


@dataclass(frozen=True)
class User:
    """A person in a tenant, for the grants that sign someone in."""

    username: str
    password: Optional[str] = field(default=None, repr=False)
    tenant_id: str = ""
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    display_name: str = ""


@dataclass(frozen=True)
class IssuedToken:
    """An access token just issued, with its claims and lifetime in seconds."""

    token: str = field(repr=False)
    claims: dict[str, Any]
    expires_in: int


@dataclass
class ClaimsChallenge:
    """A pending claims challenge of the protected API."""

    claims: dict[str, Any]
    remaining: int
    style: str = "insufficient_claims"

    @property
    def encoded(self) -> str:
        """The ``claims`` value of the ``WWW-Authenticate`` header: base64url of the JSON."""
        raw = json.dumps(self.claims, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode("ascii")


def load_certificate(cert: Union[bytes, str, x509.Certificate]) -> x509.Certificate:
    """A certificate from an object, PEM (the first CERTIFICATE block; other blocks such as a
    private key are skipped) or DER."""
    from cryptography import x509 as _x509

    if isinstance(cert, _x509.Certificate):
        return cert
    data = cert.encode() if isinstance(cert, str) else bytes(cert)
    m = _PEM_CERT.search(data)
    if m:
        return _x509.load_pem_x509_certificate(m.group(0))
    return _x509.load_der_x509_certificate(data)


def apply_requested_claims(requested: Mapping[str, Any]) -> dict[str, Any]:
    """The claims to add to an access token for a ``claims`` request parameter.

    ``{"access_token": {"acrs": {"essential": true, "value": "c1"}}}`` gives ``{"acrs": ["c1"]}``;
    ``"values": [...]`` gives the list; a claim with neither gives ``true``. Claims the service
    sets itself (``aud``, ``exp``, ``nbf``, ...) are left alone.
    """
    out: dict[str, Any] = {}
    wanted = requested.get("access_token")
    if not isinstance(wanted, Mapping):
        return out
    for name, spec in wanted.items():
        if name in _RESERVED_CLAIMS:
            continue
        spec = spec if isinstance(spec, Mapping) else {}
        if isinstance(spec.get("values"), list):
            out[name] = list(spec["values"])
        elif "value" in spec:
            out[name] = [spec["value"]] if name == "acrs" else spec["value"]
        else:
            out[name] = True
    return out


def satisfies_claims(token_claims: Mapping[str, Any], challenge: Mapping[str, Any]) -> bool:
    """Does a token carry what a claims challenge asks for?

    ``nbf`` with a value means "issued at or after"; any other claim must be present, and hold
    (or, when a list, contain) the ``value`` or one of the ``values`` asked for.
    """
    wanted = challenge.get("access_token")
    if not isinstance(wanted, Mapping):
        return True
    for name, spec in wanted.items():
        spec = spec if isinstance(spec, Mapping) else {}
        have = token_claims.get(name)
        if name == "nbf" and "value" in spec:
            try:
                if int(have or 0) < int(spec["value"]):
                    return False
            except (TypeError, ValueError):
                return False
            continue
        if have is None:
            return False
        expected = [spec["value"]] if "value" in spec else list(spec.get("values") or [])
        if expected:
            haves = {str(v) for v in (have if isinstance(have, list) else [have])}
            if not any(str(v) in haves for v in expected):
                return False
    return True


def _new_secret() -> str:
    """A random secret shaped like Entra's (three characters, ``8Q~``, then 34 more)."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
    body = "".join(secrets.choice(alphabet) for _ in range(37))
    return f"{body[:3]}8Q~{body[3:]}"


def _thumbprint(cert: x509.Certificate, algorithm: str) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    der = cert.public_bytes(Encoding.DER)
    return jwt.b64url_encode(hashlib.new(algorithm, der).digest())


class State:
    """Tenants, apps, users, the signing key and token bookkeeping of one emulator."""

    def __init__(
        self,
        *,
        tenant_id: Optional[str] = None,
        tenant_domain: str = "contoso.onmicrosoft.com",
        signing_key: Optional[RSAPrivateKey] = None,
    ) -> None:
        self.lock = threading.RLock()
        self.base_url = ""  # set by the server when it starts
        self.token_lifetime = 3600
        self.refresh_in: Optional[int] = None
        self.tenants: dict[str, Tenant] = {}
        self._domains: dict[str, str] = {}
        self.apps: dict[str, App] = {}
        self.users: dict[tuple[str, str], User] = {}
        self._used_jtis: set[tuple[str, str]] = set()
        self._issued: set[str] = set()
        self._revoked: set[str] = set()
        self.challenge: Optional[ClaimsChallenge] = None
        self.default_tenant_id = self.add_tenant(tenant_domain, tenant_id=tenant_id)
        self.default_domain = tenant_domain
        self._make_signing_key(signing_key or shared_signing_key())

    # --- signing key ---------------------------------------------------------------------

    def _make_signing_key(self, key: RSAPrivateKey) -> None:
        from cryptography import x509 as _x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        self.signing_key = key
        name = _x509.Name([_x509.NameAttribute(NameOID.COMMON_NAME, "authlayer emulator signing")])
        now = dt.datetime.now(dt.timezone.utc)
        self.signing_cert = (
            _x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.signing_key.public_key())
            .serial_number(_x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .sign(self.signing_key, hashes.SHA256())
        )
        self.kid = _thumbprint(self.signing_cert, "sha1")

    @property
    def public_key(self) -> RSAPublicKey:
        return self.signing_key.public_key()

    def jwk(self) -> dict[str, Any]:
        """The signing key as a JSON Web Key (``kty``, ``use``, ``kid``, ``x5t``, ``n``, ``e``,
        ``x5c``)."""
        from cryptography.hazmat.primitives.serialization import Encoding

        numbers = self.public_key.public_numbers()

        def _int(value: int) -> str:
            return jwt.b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))

        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _int(numbers.n),
            "e": _int(numbers.e),
            "x5c": [base64.b64encode(self.signing_cert.public_bytes(Encoding.DER)).decode()],
        }

    # --- tenants ---------------------------------------------------------------------------

    def add_tenant(self, domain: Optional[str] = None, *, tenant_id: Optional[str] = None) -> str:
        """Create a tenant; return its GUID. ``domain`` also names it in URLs."""
        tid = str(uuid.UUID(tenant_id)) if tenant_id else str(uuid.uuid4())
        with self.lock:
            domains = (domain.lower(),) if domain else ()
            for d in domains:
                if d in self._domains or d in SPECIAL_TENANTS:
                    raise ValueError(f"the domain {d!r} is already taken")
            if tid in self.tenants:
                raise ValueError(f"the tenant {tid} already exists")
            self.tenants[tid] = Tenant(tid, domains)
            for d in domains:
                self._domains[d] = tid
        return tid

    def find_tenant(self, name: str) -> Optional[Tenant]:
        """The tenant a GUID or domain names, or ``None``."""
        key = name.strip().lower()
        with self.lock:
            tid = self._domains.get(key, key)
            return self.tenants.get(tid)

    def resolve_tenant(self, segment: str) -> TenantRef:
        """The tenant of a URL path segment; unknown names are refused with AADSTS90002."""
        if segment.lower() in SPECIAL_TENANTS:
            return TenantRef(segment, None)
        tenant = self.find_tenant(segment)
        if tenant is None:
            raise EntraError(
                "invalid_request",
                90002,
                f"Tenant '{segment}' not found. Check to make sure you have the correct tenant "
                "ID and are signing into the correct cloud.",
            )
        return TenantRef(segment, tenant)

    def tenant_id_of(self, name: str) -> str:
        tenant = self.find_tenant(name)
        if tenant is None:
            raise ValueError(f"unknown tenant {name!r}")
        return tenant.id

    # --- apps and users --------------------------------------------------------------------

    def register_app(
        self,
        client_id: Optional[str] = None,
        *,
        secret: Optional[str] = None,
        certificate: Union[bytes, str, x509.Certificate, None] = None,
        public: bool = False,
        roles: Sequence[str] = ("Data.Read",),
        tenants: Optional[Sequence[str]] = None,
        federated: Sequence[Mapping[str, Any]] = (),
        display_name: str = "authlayer emulator app",
    ) -> App:
        """Register an application (see ``Emulator.register_app``)."""
        cid = client_id or str(uuid.uuid4())
        certs = (load_certificate(certificate),) if certificate is not None else ()
        if secret is None and not public and not certs and not federated:
            secret = _new_secret()
        tenant_ids = None if tenants is None else frozenset(self.tenant_id_of(t) for t in tenants)
        for entry in federated:
            missing = {"issuer", "subject"} - set(entry)
            if missing:
                raise ValueError(f"a federated credential needs {sorted(missing)}")
        app = App(
            client_id=cid,
            secret=secret,
            certificates=certs,
            public=public,
            roles=tuple(roles),
            tenants=tenant_ids,
            federated=tuple(dict(f) for f in federated),
            display_name=display_name,
        )
        with self.lock:
            self.apps[cid.lower()] = app
        return app

    def app(self, client_id: str) -> Optional[App]:
        with self.lock:
            return self.apps.get(client_id.strip().lower())

    def update_app(self, client_id: str, **changes: Any) -> App:
        """Replace some fields of a registered app; return the new value."""
        with self.lock:
            current = self.app(client_id)
            if current is None:
                raise KeyError(f"no app {client_id!r} is registered")
            new = replace(current, **changes)
            self.apps[client_id.strip().lower()] = new
            return new

    def add_user(
        self,
        username: str,
        password: Optional[str] = None,
        *,
        tenant: Optional[str] = None,
        display_name: str = "",
    ) -> User:
        """Add a person to a tenant (the default one unless told)."""
        tid = self.tenant_id_of(tenant) if tenant else self.default_tenant_id
        user = User(username, password, tid, display_name=display_name or username)
        with self.lock:
            self.users[(tid, username.lower())] = user
        return user

    def find_user(self, tenant_id: str, username: str) -> Optional[User]:
        with self.lock:
            return self.users.get((tenant_id, username.lower()))

    # --- assertions ------------------------------------------------------------------------

    def use_jti(self, client_id: str, jti: str) -> bool:
        """Remember an assertion id; ``False`` when it was seen before."""
        key = (client_id.lower(), jti)
        with self.lock:
            if key in self._used_jtis:
                return False
            self._used_jtis.add(key)
            return True

    # --- tokens ----------------------------------------------------------------------------

    def issuer(self, tenant_id: str) -> str:
        return f"{self.base_url}/{tenant_id}/v2.0"

    def issue_access_token(
        self,
        *,
        tenant_id: str,
        audience: str,
        app: Optional[App] = None,
        user: Optional[User] = None,
        roles: Optional[Sequence[str]] = None,
        scp: Optional[str] = None,
        auth_method: str = "1",
        lifetime: Optional[int] = None,
        extra_claims: Optional[Mapping[str, Any]] = None,
    ) -> IssuedToken:
        """Sign an RS256 access token.

        For an app token (no ``user``) the claims carry the app's ``roles``, ``idtyp: app`` and
        the service principal as ``oid``/``sub``; with a ``user`` they carry the person and
        ``scp``. ``auth_method`` is ``azpacr``: "0" public client, "1" secret, "2" certificate.
        ``extra_claims`` (from a ``claims`` request, say) are added last.
        """
        life = self.token_lifetime if lifetime is None else int(lifetime)
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": self.issuer(tenant_id),
            "iat": now,
            "nbf": now,
            "exp": now + life,
            "idp": f"{self.base_url}/{tenant_id}/",
            "tid": tenant_id,
            "ver": "2.0",
            "uti": jwt.b64url_encode(secrets.token_bytes(16)),
        }
        if app is not None:
            claims.update(appid=app.client_id, azp=app.client_id, azpacr=auth_method,
                          appidacr=auth_method)
        if user is None:
            if app is not None:
                claims.update(oid=app.principal_id(tenant_id), sub=app.principal_id(tenant_id),
                              idtyp="app")
            chosen = list(app.roles if roles is None and app is not None else roles or [])
            if chosen:
                claims["roles"] = chosen
        else:
            claims.update(oid=user.object_id, sub=user.object_id, name=user.display_name,
                          preferred_username=user.username, idtyp="user")
            if scp:
                claims["scp"] = scp
            if roles:
                claims["roles"] = list(roles)
        if extra_claims:
            claims.update(extra_claims)
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid, "x5t": self.kid}
        token = jwt.sign(header, claims, self.signing_key)
        with self.lock:
            self._issued.add(claims["uti"])
        return IssuedToken(token, claims, life)

    def verify_token(self, token: str, *, audience: Optional[str] = None) -> dict[str, Any]:
        """The claims of a token this emulator issued, still valid and not revoked.

        Raises :class:`InvalidToken` saying what is wrong.
        """
        try:
            header, claims = jwt.verify(token, self.public_key)
        except jwt.JWTError as exc:
            raise InvalidToken(f"the token is not valid: {exc}") from None
        if header.get("alg") != "RS256" or header.get("kid") != self.kid:
            raise InvalidToken("the token was not signed by this emulator's key")
        now = time.time()
        try:
            exp = float(claims["exp"])
            nbf = float(claims.get("nbf", 0))
        except (KeyError, TypeError, ValueError):
            raise InvalidToken("the token has no valid 'exp' claim") from None
        if now >= exp:
            raise InvalidToken("the token is expired")
        if nbf > now + 300:
            raise InvalidToken("the token is not valid yet")
        tid = str(claims.get("tid", ""))
        if tid not in self.tenants or claims.get("iss") != self.issuer(tid):
            raise InvalidToken("the token's issuer is not this emulator")
        if audience is not None and claims.get("aud") != audience:
            raise InvalidToken(f"the token's audience is not {audience}")
        with self.lock:
            if claims.get("uti") in self._revoked:
                raise InvalidToken("the token has been revoked")
        return claims

    def revoke_all(self) -> None:
        """Refuse every token issued so far."""
        with self.lock:
            self._revoked |= self._issued

    def revoke(self, token: str) -> None:
        """Refuse one token from now on."""
        _, claims = jwt.decode(token)
        with self.lock:
            self._revoked.add(str(claims.get("uti")))

    # --- claims challenges -----------------------------------------------------------------

    def set_challenge(
        self, count: int, style: str, claims: Optional[Mapping[str, Any]] = None
    ) -> ClaimsChallenge:
        if style not in ("insufficient_claims", "invalid_token"):
            raise ValueError("style is 'insufficient_claims' or 'invalid_token'")
        chosen = json.loads(json.dumps(claims if claims is not None else DEFAULT_CHALLENGE))
        challenge = ClaimsChallenge(chosen, int(count), style)
        with self.lock:
            self.challenge = challenge if count > 0 else None
        return challenge

    def take_challenge(self, token_claims: Mapping[str, Any]) -> Optional[ClaimsChallenge]:
        """The challenge to answer a call with, when one is pending and the token lacks its
        claims; each answered challenge uses up one of its ``count``."""
        with self.lock:
            challenge = self.challenge
            if challenge is None or satisfies_claims(token_claims, challenge.claims):
                return None
            challenge.remaining -= 1
            if challenge.remaining <= 0:
                self.challenge = None
            return ClaimsChallenge(challenge.claims, challenge.remaining, challenge.style)

    def thumbprints(self, cert: x509.Certificate) -> tuple[str, str]:
        """``(x5t, x5t#S256)`` of a certificate."""
        return _thumbprint(cert, "sha1"), _thumbprint(cert, "sha256")
