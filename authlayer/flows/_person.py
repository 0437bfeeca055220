"""What the flows that sign a person in share: redeeming a refresh token, trying the cached one
silently before asking the person, the sign-in scopes, and the account from the id_token.

:func:`redeem` is the refresh-token grant as a sans-I/O step; :func:`silently_first` runs it
with the refresh token kept in the cache (``ctx.refresh_token``) and falls back to the flow's
interactive sign-in when the service refuses it (``invalid_grant``, ``interaction_required``),
or raises when no person may be asked. :func:`complete` fills ``TokenResult.account`` from the
id_token's claims and keeps the refresh token just used when the answer brought no new one, so
that the provider never forgets a sign-in. Interactive flows ask for ``openid profile
offline_access`` besides the profile's scopes (:func:`sign_in_scope`), so that a refresh token
and an id_token come back; the cache keys stay on the profile's own scopes. :func:`show` hands
sign-in instructions to ``ctx.prompt``, which must be a plain (synchronous) function.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Generator
from typing import Any, Callable, Optional

from .. import jwt
from .._actions import Action
from .._record import replace
from ..errors import TokenError
from ..oauth import refresh_grant
from ..profile import Secret
from ..token import TokenResult
from . import FlowContext, default_prompt

__all__ = [
    "SIGN_IN_SCOPES",
    "account_from_id_token",
    "complete",
    "redeem",
    "show",
    "sign_in_scope",
    "silently_first",
]

log = logging.getLogger("authlayer")

SIGN_IN_SCOPES = ("openid", "profile", "offline_access")

# Errors after which a refresh token is no good but a new sign-in may help.
_SIGN_IN_AGAIN = frozenset({"invalid_grant", "interaction_required"})


_warned_async_prompt = False  # the warning about an ``async def`` prompt, once per process


def show(ctx: FlowContext, message: str) -> None:
    """Show sign-in instructions through ``ctx.prompt``.

    The prompt is called, never awaited (flows are sans-I/O and run under sync and async
    drivers alike). When it returns an awaitable (an ``async def`` was passed), that is closed
    unrun, so that no "never awaited" warning follows, and the message goes to standard error
    instead, with a one-time :class:`RuntimeWarning` saying that ``prompt=`` must be a plain
    function.
    """
    global _warned_async_prompt
    # Typed to return None, but an ``async def`` passed by mistake returns a coroutine.
    prompt: Callable[[str], object] = ctx.prompt
    answer = prompt(message)
    if not inspect.isawaitable(answer):
        return
    close = getattr(answer, "close", None) or getattr(answer, "cancel", None)
    if callable(close):
        close()
    if not _warned_async_prompt:
        _warned_async_prompt = True
        warnings.warn(
            "prompt= must be a plain function (def, not async def): authlayer calls it and "
            "does not await it; the sign-in instructions were shown on standard error instead",
            RuntimeWarning,
            stacklevel=2,
        )
    default_prompt(message)


def sign_in_scope(ctx: FlowContext) -> str:
    """The profile's scopes plus ``openid profile offline_access`` (each once, in order)."""
    return " ".join(dict.fromkeys((*ctx.profile.scopes, *SIGN_IN_SCOPES)))


def account_from_id_token(id_token: Optional[str]) -> Optional[dict[str, Any]]:
    """``{"home_account_id": "<oid>.<tid>", "username", "tenant_id"}`` from an id_token's
    claims (decoded, not verified: it came straight from the token endpoint over TLS)."""
    if not id_token:
        return None
    try:
        _header, claims = jwt.decode(id_token)
    except jwt.JWTError:
        return None
    oid, tid = claims.get("oid") or claims.get("sub"), claims.get("tid")
    if not isinstance(oid, str) or not isinstance(tid, str):
        return None
    username = claims.get("preferred_username") or claims.get("upn") or claims.get("email")
    return {
        "home_account_id": f"{oid}.{tid}",
        "username": username if isinstance(username, str) else None,
        "tenant_id": tid,
    }


def complete(
    result: TokenResult,
    *,
    refresh_token: Optional[str] = None,
    account: Optional[dict[str, Any]] = None,
) -> TokenResult:
    """``result`` with its account (from the id_token, else ``account``) and a refresh token
    (the new one, else ``refresh_token``, the one just used)."""
    found = account_from_id_token(result.id_token) or account
    kept = result.refresh_token or refresh_token
    if found == result.account and kept == result.refresh_token:
        return result
    return replace(result, account=found, refresh_token=kept)


def redeem(
    ctx: FlowContext, refresh_token: Secret, *, scope: Optional[str] = None
) -> Generator[Action, Any, TokenResult]:
    """Redeem ``refresh_token`` for the profile's scopes (plus the sign-in scopes, so the
    answer brings the rotated refresh token and an id_token). Raises :class:`TokenError`."""
    result = yield from refresh_grant(
        ctx, refresh_token, scope=scope if scope is not None else sign_in_scope(ctx))
    return complete(result, refresh_token=refresh_token.reveal(), account=ctx.account)


def silently_first(
    ctx: FlowContext,
    sign_in: Callable[[FlowContext], Generator[Action, Any, TokenResult]],
    *,
    needs_person: bool = True,
) -> Generator[Action, Any, TokenResult]:
    """Redeem the cached refresh token when there is one; when the service refuses it, or
    there is none, run ``sign_in`` — unless it ``needs_person`` and ``ctx.interactive`` is
    false, which raises :class:`TokenError` saying to sign in again."""
    profile = ctx.profile
    if ctx.refresh_token:
        try:
            return (yield from redeem(ctx, Secret(ctx.refresh_token)))
        except TokenError as exc:
            if exc.error not in _SIGN_IN_AGAIN:
                raise
            if needs_person and not ctx.interactive:
                raise
            codes = ", ".join(f"AADSTS{c}" for c in exc.error_codes) or exc.error
            log.info("profile %r: the cached refresh token was refused (%s); signing in again",
                     profile.name, codes)
    elif needs_person and not ctx.interactive:
        raise TokenError(
            f"flow {profile.flow!r} needs a person to sign in, and none may be asked here",
            profile=profile.name,
            error="interaction_required",
            hint=f"sign in first: authlayer login {profile.name}",
        )
    return (yield from sign_in(ctx))
