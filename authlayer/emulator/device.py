"""The device code flow (RFC 8628): ``POST /{tenant}/oauth2/v2.0/devicecode`` and its polling
grant, with controls that play the person at the other device.

The endpoint answers ``device_code``, ``user_code``, ``verification_uri``, ``expires_in``,
``interval`` and ``message`` like Entra. Polling the token endpoint with
``grant_type=urn:ietf:params:oauth:grant-type:device_code`` answers ``authorization_pending``
(AADSTS70016) until a test approves or declines the code; then the person's tokens (see
``users.py``), ``authorization_declined``, ``expired_token`` (AADSTS70019, also once
``expires_in`` has passed) or ``bad_verification_code`` (AADSTS70018, a code the emulator does
not know) follow.

Controls, on ``device_codes(emu)`` (a :class:`DeviceCodes`, per emulator):

``approve(user_code=None, *, username, tenant=None)``  sign the person in (``None``: the
    newest pending code); the next poll gets tokens;
``decline(user_code=None)``, ``expire(user_code=None)``, ``forget(user_code=None)``  the next
    poll gets ``authorization_declined``, ``expired_token``, ``bad_verification_code``;
``slow_down(count=1)``  the next ``count`` polls get ``slow_down``;
``pending()``, ``latest()``, ``wait_for_pending(timeout=5.0)``  what a test thread approves;
``interval``, ``expires_in``  what the endpoint advertises (tests set ``interval = 0``);
``send_message``, ``send_interval``, ``send_complete_uri``  leave out ``message`` or
    ``interval``, or add ``verification_uri_complete``, to mimic other servers.

``auto_approve``  a user name: every new code is approved at once as that person (scripted
    runs: ``authlayer emulator --user NAME --auto-approve``); ``None`` (default) waits.

The person's side is a page, ``GET /devicelogin`` (the ``verification_uri``; ``?otc=CODE``
fills the code in): type the code, then choose or type who signs in (a new name adds that
person to the code's tenant) and approve or decline. Pages are rendered in ``pages.py``.

``emu.reset()`` forgets every code and restores the defaults.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional

from . import pages
from .clientauth import authenticate_client, missing_parameter
from .grants import grant
from .routes import route
from .state import TenantRef
from .users import (
    ensure_known_client,
    parse_scopes,
    sign_in_person,
    user_for_sign_in,
    user_token_response,
)
from .wire import EntraError, Request, Response, json_response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["DEVICE_CODE_GRANT", "DeviceCode", "DeviceCodes", "device_codes"]

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@dataclass(frozen=True)
class DeviceCode:
    """One device code sign-in. ``status``: ``pending``, ``approved``, ``declined``,
    ``expired``, ``redeemed``. ``username``/``tenant_id`` are set on approval."""

    device_code: str
    user_code: str
    client_id: str
    tenant_segment: str
    scope: str
    expires_at: float
    status: str = "pending"
    username: Optional[str] = None
    tenant_id: Optional[str] = None


class DeviceCodes:
    """The device codes of one emulator and the controls tests use (see the module doc)."""

    DEFAULT_INTERVAL: float = 5
    DEFAULT_EXPIRES_IN: int = 900

    def __init__(self, emu: Emulator) -> None:
        self._emu = emu
        self._cond = threading.Condition()
        self._codes: dict[str, DeviceCode] = {}  # by device_code, oldest first
        self._slow_down = 0
        self._defaults()

    def _defaults(self) -> None:
        self.interval: float = self.DEFAULT_INTERVAL
        self.expires_in: int = self.DEFAULT_EXPIRES_IN
        self.send_message = True
        self.send_interval = True
        self.send_complete_uri = False
        self.auto_approve: Optional[str] = None

    def reset(self) -> None:
        """Forget every code and restore the defaults."""
        with self._cond:
            self._codes.clear()
            self._slow_down = 0
            self._defaults()
            self._cond.notify_all()

    # --- the endpoint's side ---------------------------------------------------------------

    def create(self, client_id: str, tenant_segment: str, scope: str) -> DeviceCode:
        user_code = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9))
        code = DeviceCode(
            device_code="DAQABAAEAAAD" + secrets.token_urlsafe(48),
            user_code=user_code,
            client_id=client_id,
            tenant_segment=tenant_segment,
            scope=scope,
            expires_at=time.time() + self.expires_in,
        )
        with self._cond:
            self._codes[code.device_code] = code
            self._cond.notify_all()
        return code

    def poll(self, device_code: str, client_id: str) -> tuple[Optional[DeviceCode], bool]:
        """The code (``None`` when unknown, or issued to another client) and whether this poll
        is to be told slow_down. An approved code is marked redeemed: it gives tokens once."""
        with self._cond:
            code = self._codes.get(device_code)
            if code is None or code.client_id.lower() != client_id.lower():
                return None, False
            if code.status == "pending" and time.time() >= code.expires_at:
                code = self._codes[device_code] = replace(code, status="expired")
            if code.status == "pending" and self._slow_down > 0:
                self._slow_down -= 1
                return code, True
            if code.status == "approved":
                self._codes[device_code] = replace(code, status="redeemed")
            return code, False

    # --- controls --------------------------------------------------------------------------

    def pending(self) -> list[DeviceCode]:
        """Codes waiting for the person, oldest first."""
        now = time.time()
        with self._cond:
            return [c for c in self._codes.values() if c.status == "pending" and now < c.expires_at]

    def latest(self) -> Optional[DeviceCode]:
        """The newest pending code, or ``None``."""
        waiting = self.pending()
        return waiting[-1] if waiting else None

    def find_pending(self, user_code: str) -> Optional[DeviceCode]:
        """The pending code a person typed (any case, dashes and spaces ignored), or ``None``."""
        wanted = "".join(user_code.split()).replace("-", "").upper()
        for code in self.pending():
            if code.user_code == wanted:
                return code
        return None

    def wait_for_pending(self, timeout: float = 5.0) -> DeviceCode:
        """Block until a code is pending (for a test thread that plays the person); return the
        newest. Raises ``TimeoutError``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                code = self.latest()
                if code is not None:
                    return code
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no device code became pending")
                self._cond.wait(min(left, 0.05))

    def _find(self, user_code: Optional[str]) -> DeviceCode:
        with self._cond:
            if user_code is None:
                code = self.latest()
                if code is None:
                    raise LookupError("no device code is pending")
                return code
            wanted = user_code.replace("-", "").strip().upper()
            for code in self._codes.values():
                if code.user_code == wanted:
                    return code
        raise LookupError(f"no device code with user code {user_code!r}")

    def _set(self, user_code: Optional[str], **changes: object) -> DeviceCode:
        with self._cond:
            code = self._find(user_code)
            new = replace(code, **changes)  # type: ignore[arg-type]
            self._codes[code.device_code] = new
            self._cond.notify_all()
            return new

    def approve(self, user_code: Optional[str] = None, *, username: str,
                tenant: Optional[str] = None) -> DeviceCode:
        """The person ``username`` signs in and approves (``user_code=None``: the newest
        pending code). The person must exist in the code's tenant (or ``tenant``)."""
        code = self._find(user_code)
        state = self._emu.state
        if tenant is not None:
            ref = TenantRef(tenant, state.find_tenant(tenant))
        else:
            ref = state.resolve_tenant(code.tenant_segment)
        user = user_for_sign_in(self._emu, ref, username)
        if user is None:
            raise LookupError(f"no person {username!r} in tenant {ref.segment!r}: add_user first")
        return self._set(code.user_code, status="approved", username=user.username,
                         tenant_id=user.tenant_id)

    def decline(self, user_code: Optional[str] = None) -> DeviceCode:
        """The person declines: the next poll gets ``authorization_declined``."""
        return self._set(user_code, status="declined")

    def expire(self, user_code: Optional[str] = None) -> DeviceCode:
        """The code expires now: the next poll gets ``expired_token``."""
        return self._set(user_code, status="expired")

    def forget(self, user_code: Optional[str] = None) -> DeviceCode:
        """The emulator forgets the code: the next poll gets ``bad_verification_code``."""
        with self._cond:
            code = self._find(user_code)
            del self._codes[code.device_code]
            return code

    def slow_down(self, count: int = 1) -> None:
        """The next ``count`` polls of a pending code get ``slow_down``."""
        with self._cond:
            self._slow_down = int(count)


def device_codes(emu: Emulator) -> DeviceCodes:
    """The device codes and controls of this emulator."""
    return emu.extension("device_codes", DeviceCodes)


@route("POST", "/{tenant}/oauth2/v2.0/devicecode", endpoint="devicecode")
def devicecode_endpoint(emu: Emulator, req: Request) -> Response:
    """Start a device code sign-in."""
    tenant_ref = emu.state.resolve_tenant(req.params["tenant"])
    client_id = req.form.get("client_id", "").strip()
    if not client_id:
        raise missing_parameter("client_id")
    scope = req.form.get("scope", "").strip()
    if not scope:
        raise missing_parameter("scope")
    parse_scopes(scope)  # refuse bad scopes now, as Entra does
    app = ensure_known_client(emu, client_id)
    where = tenant_ref.tenant
    if app is None or (where is not None and not app.consented_in(where.id)):
        raise EntraError(
            "unauthorized_client", 700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{tenant_ref.segment}'.")
    controls = device_codes(emu)
    code = controls.create(app.client_id, tenant_ref.segment, scope)
    if controls.auto_approve:
        person = sign_in_person(emu, tenant_ref, controls.auto_approve)
        controls.approve(code.user_code, username=person.username, tenant=person.tenant_id)
    verification_uri = f"{emu.url}/devicelogin"
    body: dict[str, object] = {
        "user_code": code.user_code,
        "device_code": code.device_code,
        "verification_uri": verification_uri,
        "expires_in": controls.expires_in,
    }
    if controls.send_interval:
        body["interval"] = controls.interval
    if controls.send_message:
        body["message"] = (
            f"To sign in, use a web browser to open the page {verification_uri} and enter the "
            f"code {code.user_code} to authenticate.")
    if controls.send_complete_uri:
        body["verification_uri_complete"] = f"{verification_uri}?otc={code.user_code}"
    return json_response(body)


@grant(DEVICE_CODE_GRANT)
def device_code_grant(emu: Emulator, req: Request, tenant_ref: TenantRef) -> Response:
    """Poll for the outcome of a device code sign-in."""
    device_code = req.form.get("device_code", "").strip()
    if not device_code:
        raise missing_parameter("device_code")
    ensure_known_client(emu, req.form.get("client_id", "").strip())
    client = authenticate_client(
        emu, req, tenant_ref.tenant or emu.state.tenants[emu.tenant_id], allow_public=True)
    controls = device_codes(emu)
    code, slow = controls.poll(device_code, client.app.client_id)
    if code is None:
        raise EntraError("bad_verification_code", 70018,
                         "Verification code is invalid or has expired.")
    if slow:
        raise EntraError("slow_down", 70016, "Poll less often: add 5 seconds to the interval.")
    if code.status == "pending":
        raise EntraError("authorization_pending", 70016,
                         "OAuth 2.0 device flow error. Authorization is pending. Continue "
                         "polling.")
    if code.status == "declined":
        raise EntraError("authorization_declined", 70000,
                         "The user declined the sign-in request.")
    if code.status == "expired":
        raise EntraError("expired_token", 70019,
                         "Verification code expired. Start the device code flow again.")
    if code.status == "redeemed":
        raise EntraError("invalid_grant", 54005,
                         "OAuth2 Authorization code was already redeemed, please retry with a "
                         "new valid code or use an existing refresh token.")
    assert code.username is not None
    assert code.tenant_id is not None
    user = emu.state.find_user(code.tenant_id, code.username)
    if user is None:
        raise EntraError("invalid_grant", 50020, "The person no longer exists.")
    return user_token_response(emu, req, client=client, user=user, scope=code.scope)


# --------------------------------------------------------------------------- the person's page

_PAGE = "/devicelogin"


@route("GET", _PAGE, endpoint="devicelogin")
def devicelogin_page(emu: Emulator, req: Request) -> Response:
    """Step one: the person types the code (``?otc=`` fills it in)."""
    return pages.code_form(_PAGE, pages.page_nonces(emu).issue("device-code"),
                           code=req.query.get("otc", "")[:32])


@route("POST", _PAGE, endpoint="devicelogin")
def devicelogin_form(emu: Emulator, req: Request) -> Response:
    """The two forms of the page: the code typed (step one), then who signs in and the
    person's answer (step two)."""
    nonces = pages.page_nonces(emu)
    nonce = req.form.get("nonce", "")
    if not pages.same_origin(req):
        return pages.cross_site()
    ok, user_code = nonces.take(nonce, "device-consent")
    if ok:
        return _answer(emu, req, str(user_code))
    ok, _ = nonces.take(nonce, "device-code")
    if not ok:
        return pages.code_form(_PAGE, nonces.issue("device-code"), status=400,
                               error="This page was open too long or was sent twice. "
                                     "Type the code again.")
    typed = req.form.get("user_code", "")
    code = device_codes(emu).find_pending(typed)
    if code is None:
        return pages.code_form(_PAGE, nonces.issue("device-code"), code=typed[:32], status=400,
                               error="That code is not right, or it has expired. Check the "
                                     "code and try again, or start the sign-in again.")
    return _consent(emu, code, nonces.issue("device-consent", code.user_code))


def _consent(emu: Emulator, code: DeviceCode, nonce: str, *, account: Optional[str] = None,
             error: Optional[str] = None) -> Response:
    return pages.account_form(
        emu, tenant_segment=code.tenant_segment, client_id=code.client_id, scope=code.scope,
        title="Sign in on another device",
        intro="An app on another device is signing you in. Approve only if you started "
              "this sign-in.",
        action=_PAGE, nonce=nonce, account=account, yes="Approve", no="Decline", error=error)


def _answer(emu: Emulator, req: Request, user_code: str) -> Response:
    controls = device_codes(emu)
    code = controls.find_pending(user_code)
    if code is None:
        return pages.message_page("This code has expired", [
            "The sign-in took too long, or it was answered already. Start it again on your "
            "device."], status=400, kind="stop")
    # Enter in the name field submits with the first button, Approve: no action means that.
    if req.form.get("action", "approve") == "decline":
        controls.decline(code.user_code)
        return pages.message_page("Sign-in declined", [
            "You declined the sign-in. The app on the other device was told so.",
            "You can close this window."], kind="stop")
    typed = req.form.get("username", "")
    ref = emu.state.resolve_tenant(code.tenant_segment)
    try:
        person = sign_in_person(emu, ref, typed)
    except ValueError as exc:
        return _consent(emu, code, pages.page_nonces(emu).issue("device-consent", code.user_code),
                        account=typed[:256], error=str(exc))
    controls.approve(code.user_code, username=person.username, tenant=person.tenant_id)
    app = emu.state.app(code.client_id)
    return pages.message_page("You're signed in", [
        f"You signed in to {app.display_name if app else code.client_id} as "
        f"{person.username}.",
        "Go back to your device: it carries on by itself. You can close this window."])
