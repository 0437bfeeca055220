"""People signing in: user tokens, refresh tokens, and the refresh-token and password grants.

This module is the emulator's core for every grant that signs a person in (device code, browser
sign-in, refresh token, password, on-behalf-of): :func:`user_token_response` turns a person, an
app and the requested scopes into Entra's answer: an access token carrying ``scp``, ``oid``,
``preferred_username``, ``name`` and ``tid``; an ``id_token`` when ``openid`` was asked; a
refresh token when ``offline_access`` was asked (always on a refresh). Refresh tokens are opaque
strings kept per emulator; each redemption returns a new one and the old one stays valid, as
Entra does. A refresh token is bound to the person and the client, not to a tenant: it can be
redeemed in any tenant the person belongs to. Family refresh tokens (``foci``) are issued to the
well-known public clients and can be redeemed by any of them.

Well-known public client ids (Azure CLI, Azure PowerShell, Microsoft Graph PowerShell,
:data:`WELL_KNOWN_PUBLIC_CLIENTS`) work without registration: they are registered as public
apps on first use.

Control functions for tests (all take the emulator first):

``mint_refresh_token(emu, *, client_id, username, tenant=None, scope=..., family=None) -> str``
    a refresh token for a person (added to the tenant when missing), without any sign-in;
``expire_refresh_token(emu, token)``
    the token is answered with AADSTS700082 (unused for too long) from now on;
``revoke_refresh_tokens(emu, *, token=None, username=None, tenant=None) -> int``
    AADSTS50173 (grant revoked, as after a password change) for one token or all of a person's;
``require_mfa(emu, username, *, tenant=None, code=50076)``
    the password grant answers ``interaction_required`` AADSTS50076 (or 50079, enrolment) for
    that person; ``code=None`` lifts the demand;
``issue_user_token(emu, *, username, audience, scp="access_as_user", tenant=None,
client_id=None, lifetime=None) -> str``
    a person's access token, minted directly (the incoming token of an on-behalf-of test);
``refresh_tokens(emu)``
    the per-emulator :class:`RefreshTokens` (``find(token)``, ``issued`` ...).

``emu.reset()`` lifts MFA demands; refresh tokens already issued stay valid, like access tokens.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Optional

from .. import jwt
from .clientauth import ClientAuth, authenticate_client, missing_parameter
from .grants import grant, requested_claims, token_response
from .state import App, Tenant, TenantRef, User, apply_requested_claims
from .wire import EntraError, Request, Response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = [
    "AZURE_CLI_CLIENT_ID",
    "AZURE_POWERSHELL_CLIENT_ID",
    "DEFAULT_SCOPE",
    "GRAPH_POWERSHELL_CLIENT_ID",
    "GRAPH_RESOURCE",
    "OIDC_SCOPES",
    "WELL_KNOWN_PUBLIC_CLIENTS",
    "RefreshGrant",
    "RefreshTokens",
    "ensure_known_client",
    "expire_refresh_token",
    "id_token",
    "issue_user_token",
    "mint_refresh_token",
    "parse_scopes",
    "refresh_tokens",
    "require_mfa",
    "revoke_refresh_tokens",
    "sign_in_person",
    "user_for_sign_in",
    "user_token_response",
]

AZURE_CLI_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
AZURE_POWERSHELL_CLIENT_ID = "1950a258-227b-4e31-a9cf-717495945fc2"
GRAPH_POWERSHELL_CLIENT_ID = "14d82eec-204b-4c2f-b7e8-296a70dab67e"

WELL_KNOWN_PUBLIC_CLIENTS: dict[str, str] = {
    AZURE_CLI_CLIENT_ID: "Microsoft Azure CLI",
    AZURE_POWERSHELL_CLIENT_ID: "Microsoft Azure PowerShell",
    GRAPH_POWERSHELL_CLIENT_ID: "Microsoft Graph Command Line Tools",
}
"""Public client ids that work without registration."""

# The clients of the emulated "family of client ids": their refresh tokens are family tokens.
FAMILY_CLIENTS = frozenset({AZURE_CLI_CLIENT_ID, AZURE_POWERSHELL_CLIENT_ID})

OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
GRAPH_RESOURCE = "https://graph.microsoft.com"
DEFAULT_SCOPE = "openid profile offline_access"
ID_TOKEN_LIFETIME = 3600


# --------------------------------------------------------------------------- clients


def ensure_known_client(emu: Emulator, client_id: str) -> Optional[App]:
    """The registered app ``client_id``; a well-known public client is registered on first use.
    ``None`` when the id is neither registered nor well known."""
    app = emu.state.app(client_id) if client_id else None
    if app is not None:
        return app
    name = WELL_KNOWN_PUBLIC_CLIENTS.get(client_id.strip().lower())
    if name is None:
        return None
    with emu.state.lock:
        app = emu.state.app(client_id)
        if app is None:
            app = emu.state.register_app(client_id.strip().lower(), public=True, roles=(),
                                         display_name=name)
    return app


def _client(emu: Emulator, req: Request, tenant: Tenant, *, allow_public: bool = True
            ) -> ClientAuth:
    ensure_known_client(emu, req.form.get("client_id", "").strip())
    return authenticate_client(emu, req, tenant, allow_public=allow_public)


# --------------------------------------------------------------------------- scopes


def _invalid_scope(message: str, code: int = 70011) -> EntraError:
    return EntraError("invalid_scope", code, message)


def parse_scopes(scope: str) -> tuple[str, str, frozenset[str]]:
    """``(audience, scp, oidc)`` of a space-separated scope list.

    ``https://graph.microsoft.com/User.Read`` gives audience ``https://graph.microsoft.com`` and
    scp ``User.Read``; ``<resource>/.default`` gives ``<resource>`` and ``user_impersonation``;
    a bare name (``User.Read``) is a Microsoft Graph permission. Only OpenID scopes give a Graph
    token whose scp lists them. Scopes of two resources at once are AADSTS28000.
    """
    words = scope.split()
    oidc = frozenset(w for w in words if w in OIDC_SCOPES)
    audience: Optional[str] = None
    permissions: list[str] = []
    for word in words:
        if word in OIDC_SCOPES:
            continue
        resource, sep, permission = word.rpartition("/")
        if not sep or not resource or resource.endswith(":/"):
            resource, permission = GRAPH_RESOURCE, word
        if not permission:
            raise _invalid_scope(f"The scope '{word}' is not valid.")
        if audience is not None and resource.lower() != audience.lower():
            raise _invalid_scope(
                "Provided value for the input parameter scope is not valid because it contains "
                "more than one resource. Scope " + scope + " is not valid.", 28000)
        audience = resource
        permissions.append("user_impersonation" if permission == ".default" else permission)
    if audience is None:
        return GRAPH_RESOURCE, " ".join(sorted(oidc - {"offline_access"})) or "openid", oidc
    return audience, " ".join(dict.fromkeys(permissions)), oidc


# --------------------------------------------------------------------------- refresh tokens


@dataclass(frozen=True)
class RefreshGrant:
    """What a refresh token stands for: a person's sign-in to a client.

    ``status`` is ``"active"``, ``"expired"`` (AADSTS700082) or ``"revoked"`` (AADSTS50173).
    """

    client_id: str
    tenant_id: str
    username: str
    scope: str
    family: bool
    created: float
    status: str = "active"


class RefreshTokens:
    """The refresh tokens one emulator issued (``refresh_tokens(emu)``), and the MFA demands of
    the password grant."""

    def __init__(self, emu: Emulator) -> None:
        self._emu = emu
        self._lock = threading.Lock()
        self._grants: dict[str, RefreshGrant] = {}
        self._mfa: dict[tuple[str, str], int] = {}

    def issue(self, client_id: str, user: User, scope: str, *, family: bool) -> str:
        """A new refresh token for ``user`` signed in to ``client_id``."""
        token = "1.AQ" + secrets.token_urlsafe(48)
        grant = RefreshGrant(client_id.lower(), user.tenant_id, user.username, scope, family,
                             time.time())
        with self._lock:
            self._grants[token] = grant
        return token

    def find(self, token: str) -> Optional[RefreshGrant]:
        """The grant behind a refresh token, or ``None`` when the emulator never issued it."""
        with self._lock:
            return self._grants.get(token)

    @property
    def issued(self) -> int:
        """How many refresh tokens were issued."""
        with self._lock:
            return len(self._grants)

    def set_status(self, status: str, tokens: Iterable[str]) -> int:
        count = 0
        with self._lock:
            for token in tokens:
                current = self._grants.get(token)
                if current is not None:
                    self._grants[token] = replace(current, status=status)
                    count += 1
        return count

    def tokens_of(self, username: str, tenant_id: Optional[str] = None) -> list[str]:
        with self._lock:
            return [t for t, g in self._grants.items()
                    if g.username.lower() == username.lower()
                    and (tenant_id is None or g.tenant_id == tenant_id)]

    def mfa_code(self, user: User) -> Optional[int]:
        with self._lock:
            return self._mfa.get((user.tenant_id, user.username.lower()))

    def set_mfa(self, tenant_id: str, username: str, code: Optional[int]) -> None:
        with self._lock:
            if code is None:
                self._mfa.pop((tenant_id, username.lower()), None)
            else:
                self._mfa[(tenant_id, username.lower())] = int(code)

    def reset(self) -> None:
        """Lift MFA demands (``emu.reset()``); issued refresh tokens stay valid."""
        with self._lock:
            self._mfa.clear()


def refresh_tokens(emu: Emulator) -> RefreshTokens:
    """The refresh tokens (and MFA demands) of this emulator."""
    return emu.extension("users", RefreshTokens)


def _tenant_id(emu: Emulator, tenant: Optional[str]) -> str:
    return emu.state.tenant_id_of(tenant) if tenant else emu.tenant_id


def mint_refresh_token(
    emu: Emulator,
    *,
    client_id: str,
    username: str,
    tenant: Optional[str] = None,
    scope: str = DEFAULT_SCOPE,
    family: Optional[bool] = None,
) -> str:
    """A refresh token for ``username`` signed in to ``client_id`` in ``tenant`` (GUID or
    domain; the default tenant when ``None``), as if the person had signed in.

    The person is added to the tenant when not there yet (with no password). The client is a
    registered app or a well-known public client id (the Azure CLI's
    ``04b07795-8ddb-461a-bbee-02f9e1bf7b46``, ...). ``family`` defaults to true for the family
    clients (Azure CLI, Azure PowerShell): a family token can be redeemed by those clients for
    any scope; any other refresh token only by its client. Either works in every tenant the
    person was added to (``emu.add_user(username, tenant=...)``), as in Entra, which binds
    refresh tokens to the person and the client, not to a tenant.
    """
    app = ensure_known_client(emu, client_id)
    if app is None:
        raise KeyError(f"no app {client_id!r} is registered and it is not a well-known client")
    tid = _tenant_id(emu, tenant)
    user = emu.state.find_user(tid, username) or emu.state.add_user(username, tenant=tid)
    is_family = app.client_id.lower() in FAMILY_CLIENTS if family is None else family
    return refresh_tokens(emu).issue(app.client_id, user, scope, family=is_family)


def issue_user_token(
    emu: Emulator,
    *,
    username: str,
    audience: str,
    scp: str = "access_as_user",
    tenant: Optional[str] = None,
    client_id: Optional[str] = None,
    lifetime: Optional[int] = None,
) -> str:
    """A person's access token for ``audience`` (``api://<client id>`` or a client id for a
    middle-tier API), as a client app would have got it for them. The person is added to the
    tenant when missing; ``client_id`` names that client app (a throwaway one by default)."""
    tid = _tenant_id(emu, tenant)
    user = emu.state.find_user(tid, username) or emu.state.add_user(username, tenant=tid)
    app = ensure_known_client(emu, client_id) if client_id else None
    if client_id and app is None:
        raise KeyError(f"no app {client_id!r} is registered")
    issued = emu.state.issue_access_token(
        tenant_id=tid, audience=audience, app=app or App(str(uuid.uuid4()), public=True),
        user=user, scp=scp, auth_method="0", lifetime=lifetime)
    return issued.token


def expire_refresh_token(emu: Emulator, token: str) -> None:
    """From now on ``token`` is refused with AADSTS700082 (expired after 90 days unused)."""
    if not refresh_tokens(emu).set_status("expired", [token]):
        raise KeyError("the emulator did not issue that refresh token")


def revoke_refresh_tokens(
    emu: Emulator,
    *,
    token: Optional[str] = None,
    username: Optional[str] = None,
    tenant: Optional[str] = None,
) -> int:
    """Refuse refresh tokens with AADSTS50173 (grant revoked): ``token`` alone, or every one
    issued so far to ``username`` (in ``tenant`` when given). Returns how many."""
    store = refresh_tokens(emu)
    if token is not None:
        return store.set_status("revoked", [token])
    if username is None:
        raise ValueError("give token= or username=")
    tid = _tenant_id(emu, tenant) if tenant else None
    return store.set_status("revoked", store.tokens_of(username, tid))


def require_mfa(
    emu: Emulator, username: str, *, tenant: Optional[str] = None, code: Optional[int] = 50076
) -> None:
    """Make the password grant answer ``interaction_required`` with AADSTS``code`` for this
    person (50076: MFA required; 50079: MFA enrolment required). ``code=None`` lifts it."""
    refresh_tokens(emu).set_mfa(_tenant_id(emu, tenant), username, code)


# --------------------------------------------------------------------------- answers


def id_token(emu: Emulator, app: App, user: User, *, nonce: Optional[str] = None) -> str:
    """A signed OpenID Connect id_token for ``user`` signed in to ``app``."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": app.client_id,
        "iss": emu.state.issuer(user.tenant_id),
        "iat": now,
        "nbf": now,
        "exp": now + ID_TOKEN_LIFETIME,
        "sub": user.object_id,
        "oid": user.object_id,
        "tid": user.tenant_id,
        "preferred_username": user.username,
        "name": user.display_name or user.username,
        "ver": "2.0",
    }
    if nonce:
        claims["nonce"] = nonce
    header = {"alg": "RS256", "typ": "JWT", "kid": emu.state.kid}
    return jwt.sign(header, claims, emu.state.signing_key)


def user_token_response(
    emu: Emulator,
    req: Request,
    *,
    client: ClientAuth,
    user: User,
    scope: str,
    refresh: bool = False,
    family: Optional[bool] = None,
    nonce: Optional[str] = None,
) -> Response:
    """Entra's answer for a person's token: access token for the scopes' resource, plus a
    refresh token when ``offline_access`` was asked or ``refresh`` is true, and an id_token
    when ``openid`` was asked. A ``claims`` form field adds the asked claims."""
    audience, scp, oidc = parse_scopes(scope)
    issued = emu.state.issue_access_token(
        tenant_id=user.tenant_id,
        audience=audience,
        app=client.app,
        user=user,
        scp=scp,
        auth_method=client.azpacr,
        extra_claims=apply_requested_claims(requested_claims(req)),
    )
    is_family = client.app.client_id.lower() in FAMILY_CLIENTS if family is None else family
    refresh_token = None
    if refresh or "offline_access" in oidc:
        refresh_token = refresh_tokens(emu).issue(client.app.client_id, user, scope,
                                                  family=is_family)
    return token_response(
        emu,
        issued,
        scope=" ".join(dict.fromkeys(scope.split())),
        refresh_token=refresh_token,
        id_token=id_token(emu, client.app, user, nonce=nonce) if "openid" in oidc else None,
        foci="1" if refresh_token and is_family else None,
    )


def user_for_sign_in(emu: Emulator, tenant_ref: TenantRef, username: str) -> Optional[User]:
    """The person ``username`` in the request's tenant; for ``organizations``/``common``, in
    any tenant (the default one first)."""
    if tenant_ref.tenant is not None:
        return emu.state.find_user(tenant_ref.tenant.id, username)
    found = emu.state.find_user(emu.tenant_id, username)
    if found is not None:
        return found
    with emu.state.lock:
        for (_tid, name), user in emu.state.users.items():
            if name == username.lower():
                return user
    return None


def invalid_grant(code: int, message: str, **kwargs: Any) -> EntraError:
    """An ``invalid_grant`` refusal."""
    return EntraError("invalid_grant", code, message, **kwargs)


# --------------------------------------------------------------------------- grants


@grant("refresh_token")
def refresh_token_grant(emu: Emulator, req: Request, tenant_ref: TenantRef) -> Response:
    """Redeem a refresh token: a new access token and a new refresh token (the old one stays
    valid)."""
    token = req.form.get("refresh_token", "").strip()
    if not token:
        raise missing_parameter("refresh_token")
    found = refresh_tokens(emu).find(token)
    if found is None:
        raise invalid_grant(9002313, "Invalid request. Request is malformed or invalid: the "
                                     "refresh token was not issued by this service.")
    tenant = tenant_ref.tenant
    if tenant is None:
        tenant = emu.state.find_tenant(found.tenant_id)
        assert tenant is not None
    client = _client(emu, req, tenant)
    cid = client.app.client_id.lower()
    if cid != found.client_id and not (found.family and cid in FAMILY_CLIENTS):
        raise invalid_grant(70000, "Provided grant is invalid or malformed: the refresh token "
                                   "was issued to another client.")
    if found.status == "expired":
        raise invalid_grant(700082, "The refresh token has expired due to inactivity. The "
                                    "token was issued on a date and was inactive for 90 days.")
    if found.status == "revoked":
        raise invalid_grant(50173, "The provided grant has expired due to it being revoked, a "
                                   "fresh auth token is needed. The user might have changed or "
                                   "reset their password.")
    user = emu.state.find_user(tenant.id, found.username)
    if user is None:
        raise invalid_grant(50020, f"User account '{found.username}' does not exist in tenant "
                                   f"'{tenant.id}' and cannot access the application.")
    scope = req.form.get("scope", "").strip() or found.scope
    return user_token_response(emu, req, client=client, user=user, scope=scope, refresh=True,
                               family=found.family)


@grant("password")
def password_grant(emu: Emulator, req: Request, tenant_ref: TenantRef) -> Response:
    """Resource owner password credentials: a person's name and password, no interaction."""
    if tenant_ref.segment.lower() in ("common", "consumers"):
        raise EntraError("invalid_request", 90002,
                         f"Tenant '{tenant_ref.segment}' cannot be used with the password grant: "
                         "use 'organizations', the tenant's GUID or one of its domains.")
    username = req.form.get("username", "").strip()
    password = req.form.get("password")
    if not username:
        raise missing_parameter("username")
    if password is None:
        raise missing_parameter("password")
    scope = req.form.get("scope", "").strip()
    if not scope:
        raise missing_parameter("scope")
    user = user_for_sign_in(emu, tenant_ref, username)
    tenant = emu.state.find_tenant(user.tenant_id) if user is not None else tenant_ref.tenant
    client = _client(emu, req, tenant or emu.state.tenants[emu.tenant_id])
    if user is None or user.password is None or not secrets.compare_digest(
        user.password.encode(), password.encode()
    ):
        raise invalid_grant(50126, "Error validating credentials due to invalid username or "
                                   "password.")
    code = refresh_tokens(emu).mfa_code(user)
    if code is not None:
        message = ("Due to a configuration change made by your administrator, or because you "
                   "moved to a new location, you must use multi-factor authentication to access "
                   "the resource." if code == 50076 else
                   "The user is required to use multi-factor authentication: enrol first.")
        raise EntraError("interaction_required", code, message, suberror="basic_action")
    return user_token_response(emu, req, client=client, user=user, scope=scope)


def sign_in_person(emu: Emulator, tenant_ref: TenantRef, name: str) -> User:
    """The person a sign-in page was given: a known one (see :func:`user_for_sign_in`), else a
    new person added to the request's tenant (the default one for ``organizations`` and
    ``common``). A name without ``@`` gets the tenant's domain. ``ValueError`` (with a message
    for the person) for a name that cannot be a user name."""
    name = name.strip()
    if not name or len(name) > 256 or any(c.isspace() or not c.isprintable() for c in name):
        raise ValueError("Type a user name, like alice@contoso.onmicrosoft.com.")
    tenant = tenant_ref.tenant or emu.state.find_tenant(emu.tenant_id)
    assert tenant is not None
    if "@" not in name:
        domain = tenant.domains[0] if tenant.domains else f"{tenant.id}.onmicrosoft.com"
        name = f"{name}@{domain}"
    found = user_for_sign_in(emu, tenant_ref, name)
    return found if found is not None else emu.state.add_user(name, tenant=tenant.id)
