"""The device code grant (RFC 8628): a person signs in on another device with a short code.

The flow asks ``{authority}/{tenant}/oauth2/v2.0/devicecode`` for a code, shows the service's
instructions through ``ctx.prompt`` (standard error by default), then polls the token endpoint
every ``interval`` seconds (never faster than :data:`MIN_INTERVAL`) by yielding
:class:`~authlayer._actions.Sleep` actions, so it never blocks an event loop:
``authorization_pending`` keeps polling, ``slow_down`` adds five seconds, anything else ends the
flow. The last poll is made at the code's deadline, so that an approval in the last interval is
not lost. When the cache holds a refresh token from an earlier sign-in, that is tried first,
silently (see :mod:`authlayer.flows._person`), except for a fresh sign-in
(``ctx.fresh_sign_in``, ``authlayer login``).
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any, Optional

from .._actions import Action, Sleep
from .._record import replace
from ..errors import TokenError
from ..oauth import endpoint, exchange, post
from ..token import TokenResult
from . import FlowContext
from ._person import complete, show, sign_in_scope, silently_first

__all__ = ["DEFAULT_EXPIRES_IN", "DEFAULT_INTERVAL", "GRANT_TYPE", "MIN_INTERVAL", "acquire"]

log = logging.getLogger("authlayer")

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5.0  # seconds between polls when the service does not say
MIN_INTERVAL = 1.0  # never poll faster, whatever the service says (``interval: 0``)
DEFAULT_EXPIRES_IN = 900.0  # seconds the code lives when the service does not say
SLOW_DOWN_STEP = 5.0

_FAILURES = {
    "authorization_declined": "the sign-in was declined",
    "expired_token": "the device code expired before the sign-in finished",
    "bad_verification_code": "the identity service does not know the device code",
}


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """A token for a person: from the cached refresh token, else by device code sign-in.
    A fresh sign-in (``authlayer login``) ignores the kept refresh token and account."""
    if ctx.fresh_sign_in:
        ctx = replace(ctx, refresh_token=None, account=None)
    return (yield from silently_first(ctx, sign_in))


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if number >= 0 else default


def _text(body: dict[str, Any], *names: str) -> Optional[str]:
    for name in names:
        value = body.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def instructions(body: dict[str, Any]) -> Optional[str]:
    """What to show the person: the service's ``message``, else one built from
    ``verification_uri`` (or ``verification_uri_complete``) and ``user_code``."""
    message = _text(body, "message")
    if message:
        return message
    user_code = _text(body, "user_code")
    uri = _text(body, "verification_uri", "verification_url")
    complete_uri = _text(body, "verification_uri_complete")
    if complete_uri and uri and user_code:
        return (f"To sign in, open {complete_uri} in a web browser (or open {uri} and enter "
                f"the code {user_code}).")
    if complete_uri:
        return f"To sign in, open {complete_uri} in a web browser."
    if uri and user_code:
        return f"To sign in, use a web browser to open {uri} and enter the code {user_code}."
    return None


def _failure(err: TokenError, profile: str) -> TokenError:
    """The polling error, with a message that says what happened."""
    what = _FAILURES.get(err.error or "")
    if what is None:
        return err
    return TokenError(
        f"device code sign-in failed: {what}",
        profile=profile,
        error=err.error,
        error_codes=err.error_codes,
        description=err.description,
        correlation_id=err.correlation_id,
        status=err.status,
    )


def sign_in(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Ask for a device code, show the instructions, poll until the person is done."""
    profile = ctx.profile
    name = profile.name
    assert profile.client_id is not None
    start = {"client_id": profile.client_id, "scope": sign_in_scope(ctx)}
    body = yield from post(ctx, endpoint(profile, "devicecode"), start,
                           what="device code request")
    device_code = _text(body, "device_code")
    message = instructions(body)
    if device_code is None or message is None:
        raise TokenError(
            "device code request answered without a device_code or sign-in instructions",
            profile=name, status=200, error="malformed_response",
        )
    interval = max(MIN_INTERVAL, _number(body.get("interval"), DEFAULT_INTERVAL))
    deadline = ctx.clock() + _number(body.get("expires_in"), DEFAULT_EXPIRES_IN)
    show(ctx, message)

    form = {"grant_type": GRANT_TYPE, "client_id": profile.client_id, "device_code": device_code}
    while True:
        remaining = deadline - ctx.clock()
        # The wait ends at the deadline at the latest, and the poll made there is the last
        # one; past the deadline (a slow answer), one more poll is made at once.
        last = remaining <= interval
        if remaining > 0:
            left = int(remaining)
            why = f"waiting for the sign-in (the code expires in {left // 60}:{left % 60:02d})"
            yield Sleep(min(interval, remaining), why)
        try:
            result = yield from exchange(ctx, form, what="device code token request",
                                         authenticate=False)
        except TokenError as exc:
            err = exc
        else:
            return complete(result, account=ctx.account)
        if err.error not in ("authorization_pending", "slow_down"):
            raise _failure(err, name)
        if last:
            raise TokenError(
                "device code sign-in failed: the device code expired before the sign-in "
                "finished", profile=name, error="expired_token",
            )
        if err.error == "slow_down":
            interval += SLOW_DOWN_STEP
            log.debug("profile %r: the service asked to poll more slowly (every %.0f s)",
                      name, interval)


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import COMMON, FlowSpec  # noqa: E402 - kept next to the entry it declares

FLOW = FlowSpec(
    name="device_code",
    acquire=acquire,
    keys=COMMON | {"tenant", "client_id"},
    required=("client_id",),
    default_tenant="organizations",
    file_cache=True,
    names_profile=True,
    may_prompt=True,
    summary="a person signs in on another device with a code",
)
