"""The refresh token grant for a profile that holds a refresh token (flow ``refresh_token``).

The newest refresh token is the one the cache kept from the last answer (``ctx.refresh_token``:
Entra rotates them, and the provider stores each new one); the profile's ``refresh_token``
secret source is the first one, used when the cache has none. When the cached one is refused
with ``invalid_grant`` and the configured one differs (someone put a fresh one in the
profile), that one is tried once.

Nobody can sign in again for this flow, so when the refresh token is refused for good (expired,
revoked, unknown) the :class:`~authlayer.errors.TokenError`'s hint says to replace the profile's
``refresh_token`` (naming where it is read from), not to run ``authlayer login``.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any, Optional

from .._actions import Action
from ..errors import TokenError
from ..oauth import secret_of
from ..profile import Profile, Secret
from ..token import TokenResult
from . import FlowContext
from ._person import redeem

__all__ = ["REFUSED_TOKEN_CODES", "acquire"]

log = logging.getLogger("authlayer")

# AADSTS codes of an ``invalid_grant`` that mean the refresh token itself is no good: malformed
# or unknown (70000, 9002313), expired (70008, 700081, 700082, 700084, 70043: sign-in
# frequency), revoked (50173, 50132: password changed or reset).
REFUSED_TOKEN_CODES = frozenset({70000, 70008, 70043, 700081, 700082, 700084, 50132, 50173,
                                 9002313})


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Redeem the newest refresh token; return the new access token and the rotated refresh
    token (which the provider keeps for next time)."""
    try:
        return (yield from _redeem_newest(ctx))
    except TokenError as exc:
        if not _refused(exc):
            raise
        raise _with_replace_hint(exc, ctx.profile) from None


def _refused(exc: TokenError) -> bool:
    """Whether the service refused the refresh token itself (not, say, missing consent)."""
    if exc.error != "invalid_grant":
        return False
    return not exc.error_codes or any(c in REFUSED_TOKEN_CODES for c in exc.error_codes)


def _with_replace_hint(exc: TokenError, profile: Profile) -> TokenError:
    """``exc`` again (error, codes, description, correlation id) with a hint that fits this
    flow: ``authlayer login`` cannot renew a configured refresh token."""
    source = profile.refresh_token
    assert source is not None
    where = f"the profile's refresh_token ({source.describe()})"
    return TokenError(
        profile=exc.profile,
        error=exc.error,
        error_codes=exc.error_codes,
        description=exc.description,
        correlation_id=exc.correlation_id,
        status=exc.status,
        suberror=exc.suberror,
        claims=exc.claims,
        hint=f"the refresh token was refused: put a new one in {where} (flow "
        "'refresh_token' cannot sign anyone in again by itself)",
    )


def _redeem_newest(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    profile = ctx.profile
    assert profile.refresh_token is not None
    # Refresh tokens stay wrapped in Secret: hidden from captured locals.
    configured: Optional[Secret] = None
    if ctx.refresh_token:
        try:
            return (yield from redeem(ctx, Secret(ctx.refresh_token)))
        except TokenError as exc:
            if exc.error != "invalid_grant":
                raise
            configured = yield from secret_of(profile.refresh_token)
            if configured.reveal() == ctx.refresh_token:
                raise
            log.info("profile %r: the cached refresh token was refused; trying the one in "
                     "the profile", profile.name)
    if configured is None:
        configured = yield from secret_of(profile.refresh_token)
    return (yield from redeem(ctx, configured))


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import CLIENT, COMMON, FlowSpec  # noqa: E402 - kept next to the entry it declares

FLOW = FlowSpec(
    name="refresh_token",
    acquire=acquire,
    keys=COMMON | CLIENT | {"refresh_token"},
    required=("client_id", "tenant", "refresh_token"),
    credential="optional",
    file_cache=True,
    names_profile=True,
    summary="a refresh token from the profile, rotated in the cache",
)
