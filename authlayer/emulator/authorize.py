"""Browser sign-in: ``GET /{tenant}/oauth2/v2.0/authorize`` and the ``authorization_code``
grant, with PKCE.

The authorize endpoint plays the sign-in page and the person at once: it signs a test user in
without asking and answers ``302`` to the ``redirect_uri`` with ``code`` and ``state`` (or, when
told to, with ``error=access_denied`` and ``error_description``). A request the service could
not safely redirect (unknown client, a ``redirect_uri`` that is neither ``https`` nor loopback
``http``) gets an HTML error page instead, as Entra shows. The person signed in is the one set
with ``sign_in_as``, else the ``login_hint`` when that names a user, else the tenant's first
user.

A code is bound to the client id, the ``redirect_uri`` and the ``code_challenge``; it lives ten
minutes and is redeemed once. At the token endpoint a wrong ``code_verifier`` is
``invalid_grant`` AADSTS501481, a second redemption AADSTS54005, an expired code AADSTS70008.

Controls, on ``authorize_controls(emu)`` (an :class:`Authorizer`, per emulator):

``sign_in_as(username, *, tenant=None)``  who signs in (``None`` goes back to the default);
``deny(description=..., error="access_denied")``  redirect with an error instead of a code;
    ``allow()`` undoes it;
``expire_codes()``  every code issued so far is expired;
``issued``  the :class:`AuthCode` values issued so far, oldest first.

``interactive``  ``True``: show the sign-in page (below) instead of signing in at once;
    ``authlayer emulator`` turns it on unless ``--auto-approve``. ``deny()`` still wins.

The sign-in page (``interactive``): the app, its organisation and what it asks for; who signs
in (a known person, the ``login_hint`` or ``sign_in_as`` one first, or a typed name, which adds
that person); *Accept* sends the browser back with a code, *Cancel* with ``access_denied``.
The page's form posts to the same URL with a one-use page nonce that stands for the checked
request, so nothing the browser sends back can change where the code goes.

``emu.reset()`` forgets codes and switches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional
from urllib.parse import urlencode, urlsplit

from ..hosts import is_loopback
from . import pages
from .clientauth import authenticate_client, missing_parameter
from .grants import grant
from .routes import route
from .state import TenantRef, User
from .users import (
    ensure_known_client,
    parse_scopes,
    sign_in_person,
    user_for_sign_in,
    user_token_response,
)
from .wire import EntraError, Request, Response, text_response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["CODE_LIFETIME", "AuthCode", "Authorizer", "authorize_controls"]

CODE_LIFETIME = 600
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")


@dataclass(frozen=True)
class AuthCode:
    """An authorization code and what it is bound to."""

    code: str
    client_id: str
    redirect_uri: str
    code_challenge: Optional[str]
    code_challenge_method: str
    scope: str
    username: str
    tenant_id: str
    expires_at: float
    nonce: Optional[str] = None
    redeemed: bool = False


class Authorizer:
    """The authorization codes of one emulator and the controls tests use."""

    def __init__(self, emu: Emulator) -> None:
        self._emu = emu
        self._lock = threading.Lock()
        self._codes: dict[str, AuthCode] = {}
        self.user: Optional[tuple[str, Optional[str]]] = None
        self.denial: Optional[tuple[str, str]] = None
        self.interactive = False

    def reset(self) -> None:
        """Forget codes and switches."""
        with self._lock:
            self._codes.clear()
            self.user = None
            self.denial = None
            self.interactive = False

    def sign_in_as(self, username: Optional[str], *, tenant: Optional[str] = None) -> None:
        """The person the authorize endpoint signs in from now on (``None``: the default)."""
        self.user = None if username is None else (username, tenant)

    def deny(self, description: str = "AADSTS65004: User declined to consent to access the app.",
             error: str = "access_denied") -> None:
        """Redirect with ``error`` and ``error_description`` instead of a code."""
        self.denial = (error, description)

    def allow(self) -> None:
        """Undo :meth:`deny`."""
        self.denial = None

    def expire_codes(self) -> None:
        """Every code issued so far is expired."""
        with self._lock:
            for key, code in self._codes.items():
                self._codes[key] = replace(code, expires_at=0.0)

    @property
    def issued(self) -> list[AuthCode]:
        with self._lock:
            return list(self._codes.values())

    def create(self, **fields: object) -> AuthCode:
        code = AuthCode(code="1.AQ" + secrets.token_urlsafe(64),
                        expires_at=time.time() + CODE_LIFETIME, **fields)  # type: ignore[arg-type]
        with self._lock:
            self._codes[code.code] = code
        return code

    def redeem(self, value: str) -> Optional[AuthCode]:
        """The code as it was before this redemption (``None`` when unknown); marks it used."""
        with self._lock:
            code = self._codes.get(value)
            if code is not None:
                self._codes[value] = replace(code, redeemed=True)
            return code


def authorize_controls(emu: Emulator) -> Authorizer:
    """The browser sign-in controls of this emulator."""
    return emu.extension("authorize", Authorizer)


def _error_page(code: int, message: str) -> Response:
    return pages.error_page(code, message)


def _redirect(redirect_uri: str, params: dict[str, str]) -> Response:
    sep = "&" if urlsplit(redirect_uri).query else "?"
    location = redirect_uri + sep + urlencode(params)
    return text_response("", status=302, content_type="text/html; charset=utf-8",
                         headers=[("Location", location), ("Cache-Control", "no-store")])


def _redirect_allowed(uri: str) -> bool:
    try:
        split = urlsplit(uri)
    except ValueError:
        return False
    if split.scheme == "https" and split.hostname:
        return True
    return split.scheme == "http" and is_loopback(split.hostname or "")


def _person(emu: Emulator, controls: Authorizer, tenant_ref: TenantRef,
            login_hint: Optional[str]) -> Optional[User]:
    if controls.user is not None:
        username, tenant = controls.user
        ref = tenant_ref if tenant is None else TenantRef(tenant, emu.state.find_tenant(tenant))
        return user_for_sign_in(emu, ref, username)
    if login_hint:
        found = user_for_sign_in(emu, tenant_ref, login_hint)
        if found is not None:
            return found
    tid = tenant_ref.tenant.id if tenant_ref.tenant is not None else emu.tenant_id
    with emu.state.lock:
        for (user_tid, _name), user in emu.state.users.items():
            if user_tid == tid:
                return user
    return None


@route("GET", "/{tenant}/oauth2/v2.0/authorize", endpoint="authorize")
def authorize_endpoint(emu: Emulator, req: Request) -> Response:
    """Sign a test user in and send the browser back with a code."""
    q = req.query
    try:
        tenant_ref = emu.state.resolve_tenant(req.params["tenant"])
    except EntraError as exc:
        return _error_page(exc.code, exc.message)
    client_id = q.get("client_id", "").strip()
    app = ensure_known_client(emu, client_id) if client_id else None
    if app is None:
        return _error_page(700016, f"Application with identifier '{client_id}' was not found "
                                   "in the directory.")
    redirect_uri = q.get("redirect_uri", "")
    if not _redirect_allowed(redirect_uri):
        return _error_page(50011, f"The redirect URI '{redirect_uri}' specified in the request "
                                  "does not match the redirect URIs configured for the "
                                  f"application '{client_id}'.")
    state = q.get("state")
    back: dict[str, str] = {} if state is None else {"state": state}

    def fail(error: str, description: str) -> Response:
        return _redirect(redirect_uri, {"error": error, "error_description": description, **back})

    if q.get("response_type") != "code":
        return fail("unsupported_response_type",
                    "AADSTS700054: response_type 'code' is the only one supported here.")
    scope = q.get("scope", "").strip()
    if not scope:
        return fail("invalid_request",
                    "AADSTS900144: The request body must contain the following parameter: "
                    "'scope'.")
    try:
        parse_scopes(scope)
    except EntraError as exc:
        return fail(exc.error, f"AADSTS{exc.code}: {exc.message}")
    challenge = q.get("code_challenge")
    method = q.get("code_challenge_method", "plain" if challenge else "")
    if challenge and method not in ("S256", "plain"):
        return fail("invalid_request",
                    "AADSTS501491: code_challenge_method must be 'S256' or 'plain'.")
    controls = authorize_controls(emu)
    if controls.denial is not None:
        return fail(*controls.denial)
    user = _person(emu, controls, tenant_ref, q.get("login_hint"))
    asked = _Asked(app.client_id, redirect_uri, state, challenge, method, scope,
                   q.get("nonce"), tenant_ref.segment)
    if controls.interactive:
        return _sign_in_page(emu, asked, pages.page_nonces(emu).issue("authorize", asked),
                             account=user.username if user is not None else q.get("login_hint"))
    if user is None:
        return fail("login_required", "AADSTS50058: A silent sign-in request was sent but no "
                                      "user is signed in (add a user to the emulator).")
    return _issue(emu, asked, user)


@dataclass(frozen=True)
class _Asked:
    """An authorize request that passed the checks, kept while the person answers the page."""

    client_id: str
    redirect_uri: str
    state: Optional[str]
    code_challenge: Optional[str]
    code_challenge_method: str
    scope: str
    nonce: Optional[str]
    tenant_segment: str

    def back(self, params: dict[str, str]) -> Response:
        extra = {} if self.state is None else {"state": self.state}
        return _redirect(self.redirect_uri, {**params, **extra})


def _issue(emu: Emulator, asked: _Asked, user: User) -> Response:
    code = authorize_controls(emu).create(
        client_id=asked.client_id, redirect_uri=asked.redirect_uri,
        code_challenge=asked.code_challenge, code_challenge_method=asked.code_challenge_method,
        scope=asked.scope, username=user.username, tenant_id=user.tenant_id, nonce=asked.nonce)
    return asked.back({"code": code.code})


def _sign_in_page(emu: Emulator, asked: _Asked, nonce: str, *, account: Optional[str],
                  error: Optional[str] = None) -> Response:
    return pages.account_form(
        emu, tenant_segment=asked.tenant_segment, client_id=asked.client_id,
        scope=asked.scope, title="Sign in to {app}",
        intro="The app asks you to sign in. Accept only if you started this sign-in.",
        action=f"/{asked.tenant_segment}/oauth2/v2.0/authorize", nonce=nonce,
        account=account, yes="Accept", no="Cancel", error=error)


@route("POST", "/{tenant}/oauth2/v2.0/authorize", endpoint="authorize")
def authorize_form(emu: Emulator, req: Request) -> Response:
    """The person's answer on the sign-in page: back to the app with a code, or with
    ``access_denied``."""
    if not pages.same_origin(req):
        return pages.cross_site()
    nonces = pages.page_nonces(emu)
    ok, asked = nonces.take(req.form.get("nonce", ""), "authorize")
    if not ok or not isinstance(asked, _Asked):
        return _error_page(50058, "This sign-in page was open too long or was sent twice. "
                                  "Start the sign-in again from the app.")
    # Enter in the name field submits with the first button, Accept: no action means that.
    if req.form.get("action", "approve") == "decline":
        return asked.back({"error": "access_denied",
                           "error_description": "AADSTS65004: User declined to consent to "
                                                "access the app."})
    typed = req.form.get("username", "")
    try:
        user = sign_in_person(emu, emu.state.resolve_tenant(asked.tenant_segment), typed)
    except ValueError as exc:
        return _sign_in_page(emu, asked, nonces.issue("authorize", asked), account=typed[:256],
                             error=str(exc))
    return _issue(emu, asked, user)


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@grant("authorization_code")
def authorization_code_grant(emu: Emulator, req: Request, tenant_ref: TenantRef) -> Response:
    """Redeem an authorization code (with its PKCE verifier)."""
    value = req.form.get("code", "").strip()
    if not value:
        raise missing_parameter("code")
    redirect_uri = req.form.get("redirect_uri")
    if redirect_uri is None:
        raise missing_parameter("redirect_uri")
    ensure_known_client(emu, req.form.get("client_id", "").strip())
    client = authenticate_client(
        emu, req, tenant_ref.tenant or emu.state.tenants[emu.tenant_id], allow_public=True)
    code = authorize_controls(emu).redeem(value)
    if code is None or code.client_id.lower() != client.app.client_id.lower():
        raise EntraError("invalid_grant", 70000,
                         "The provided value for the 'code' parameter is not valid.")
    if code.redeemed:
        raise EntraError("invalid_grant", 54005,
                         "OAuth2 Authorization code was already redeemed, please retry with a "
                         "new valid code or use an existing refresh token.")
    if time.time() >= code.expires_at:
        raise EntraError("invalid_grant", 70008,
                         "The provided authorization code or refresh token has expired due to "
                         "inactivity. Send a new interactive authorization request for this "
                         "user and resource.")
    if redirect_uri != code.redirect_uri:
        raise EntraError("invalid_grant", 70000,
                         "The provided value for 'redirect_uri' is not the one of the "
                         "authorization request.")
    if code.code_challenge:
        verifier = req.form.get("code_verifier")
        if not verifier:
            raise missing_parameter("code_verifier")
        expected = _s256(verifier) if code.code_challenge_method == "S256" else verifier
        if not _VERIFIER.fullmatch(verifier) or not hmac.compare_digest(
            expected.encode(), code.code_challenge.encode()
        ):
            raise EntraError("invalid_grant", 501481,
                             "The Code_Verifier does not match the code_challenge supplied in "
                             "the authorization request.")
    user = emu.state.find_user(code.tenant_id, code.username)
    if user is None:
        raise EntraError("invalid_grant", 50020, "The person no longer exists.")
    return user_token_response(emu, req, client=client, user=user, scope=code.scope,
                               nonce=code.nonce)
