"""The refresh token grant for a profile that holds a refresh token (flow ``refresh_token``).

The newest refresh token is the one the cache kept from the last answer (``ctx.refresh_token``:
Entra rotates them, and the provider stores each new one); the profile's ``refresh_token``
secret source is the first one, used when the cache has none. When the cached one is refused
with ``invalid_grant`` and the configured one differs (someone put a fresh one in the
profile), that one is tried once.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any, Optional

from .._http import Action
from ..errors import TokenError
from ..token import TokenResult
from . import FlowContext
from .client_auth import read_secret
from .refresh import redeem

__all__ = ["acquire"]

log = logging.getLogger("authlayer")


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Redeem the newest refresh token; return the new access token and the rotated refresh
    token (which the provider keeps for next time)."""
    profile = ctx.profile
    assert profile.refresh_token is not None
    configured: Optional[str] = None
    if ctx.refresh_token:
        try:
            return (yield from redeem(ctx, ctx.refresh_token))
        except TokenError as exc:
            if exc.error != "invalid_grant":
                raise
            configured = yield from read_secret(profile.refresh_token)
            if configured == ctx.refresh_token:
                raise
            log.info("profile %r: the cached refresh token was refused; trying the one in "
                     "the profile", profile.name)
    if configured is None:
        configured = yield from read_secret(profile.refresh_token)
    return (yield from redeem(ctx, configured))
