"""Browser sign-in: the authorization code grant with PKCE, through a loopback redirect.

The flow makes a PKCE pair (S256) and a random ``state``, listens on ``127.0.0.1`` only (port
``redirect_port``, or any free port; :mod:`authlayer._loopback`), prints the authorize URL
through ``ctx.prompt`` and opens it with :func:`webbrowser.open` (which honours ``$BROWSER``),
with the browser's standard output sent to standard error (:mod:`authlayer._browser`), so that
``$(authlayer token web)`` holds the token only and does not wait for the browser. The browser
comes back to ``http://localhost:{port}`` with ``code`` and ``state``; requests for another
host, and callbacks with a wrong or missing ``state``, are answered and ignored, an ``error``
callback ends the flow with a :class:`~authlayer.errors.TokenError`, and so does
:data:`SIGN_IN_TIMEOUT` without a callback.
The wait is blocking work, so it is yielded as a :class:`~authlayer._actions.Call` (a worker
thread under async). The listener is always closed, at once. Then the code is redeemed with its
verifier (and the client's credential for a confidential client). A refresh token in the cache
is tried first, silently, except for a fresh sign-in (``ctx.fresh_sign_in``, ``authlayer
login``), which also lets the person choose the account (``prompt=select_account``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Generator
from typing import Any, Optional
from urllib.parse import urlencode

from .._actions import Action, call
from .._browser import open_browser
from .._loopback import LoopbackListener
from .._record import replace
from ..errors import TokenError, redact
from ..oauth import claims_request, endpoint, exchange
from ..token import TokenResult
from . import FlowContext
from ._person import complete, show, sign_in_scope, silently_first

__all__ = ["SIGN_IN_TIMEOUT", "acquire", "pkce_pair"]

log = logging.getLogger("authlayer")

SIGN_IN_TIMEOUT = 300.0  # seconds to wait for the browser to come back
WAIT_STEP = 0.5  # seconds of one blocking wait for the browser (a Call)


def pkce_pair() -> tuple[str, str]:
    """``(code_verifier, code_challenge)``: 64 characters from ``secrets`` and their S256."""
    verifier = secrets.token_urlsafe(48)  # 48 random bytes -> 64 URL-safe characters
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """A token for a person: from the cached refresh token, else by browser sign-in.
    A fresh sign-in (``authlayer login``) ignores the kept refresh token and account."""
    if ctx.fresh_sign_in:
        ctx = replace(ctx, refresh_token=None, account=None)
    return (yield from silently_first(ctx, sign_in))


def authorize_url(ctx: FlowContext, *, redirect_uri: str, state: str, challenge: str) -> str:
    """The URL the browser opens."""
    profile = ctx.profile
    assert profile.client_id is not None
    params = {
        "client_id": profile.client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": sign_in_scope(ctx),
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "response_mode": "query",
    }
    for key in ("login_hint", "domain_hint", "prompt"):
        value = getattr(profile, key)
        if value:
            params[key] = value
    if ctx.fresh_sign_in and "prompt" not in params:
        params["prompt"] = "select_account"  # authlayer login: perhaps as someone else
    claims = claims_request(ctx.claims, profile.cae)
    if claims:
        params["claims"] = claims
    return f"{endpoint(profile, 'authorize')}?{urlencode(params)}"


def sign_in(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Send the person to the browser, wait for the redirect, redeem the code."""
    profile = ctx.profile
    name = profile.name
    assert profile.client_id is not None
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(24)
    try:
        listener = yield from call(lambda: LoopbackListener(state, profile.redirect_port))
    except OSError as exc:
        raise TokenError(
            f"browser sign-in: cannot listen on 127.0.0.1 port {profile.redirect_port or 0} "
            f"({exc.strerror or exc})", profile=name, error="listener_failed",
            hint="set redirect_port to a free port, or 0 for any free port",
        ) from None
    timeout = SIGN_IN_TIMEOUT
    try:
        redirect_uri = listener.redirect_uri
        url = authorize_url(ctx, redirect_uri=redirect_uri, state=state, challenge=challenge)
        show(ctx, "Opening your browser to sign in. If it does not open, visit this URL:\n"
             + url)
        opened = yield from call(lambda: open_browser(url))
        if not opened:
            log.info("profile %r: no browser could be opened; waiting for the URL to be "
                     "visited", name)
        # Waited for in short steps, so that a cancelled task or Ctrl+C ends the wait soon.
        deadline = time.monotonic() + timeout
        callback = None
        while callback is None and time.monotonic() < deadline:
            step = min(WAIT_STEP, max(0.0, deadline - time.monotonic()))
            callback = yield from call(functools.partial(listener.wait, step))
        yield from call(listener.close)
    finally:
        # At once when the flow fails or is closed (Ctrl+C, a cancelled task: then this runs
        # on the event loop's thread, so it does not wait for the listener's threads).
        listener.close(wait=0.0)
    if callback is None:
        raise TokenError(
            f"browser sign-in: no answer from the browser within {timeout:g} s",
            profile=name, error="timeout", hint="run it again and finish the sign-in sooner",
        )
    if callback.error is not None:
        codes = _codes(callback.error_description)
        text = f"browser sign-in failed: {callback.error}"
        first = (callback.error_description or "").strip().splitlines()
        if first:
            text += f" - {redact(first[0])}"
        raise TokenError(text, profile=name, error=callback.error, error_codes=codes,
                         description=callback.error_description)
    assert callback.code is not None
    return (yield from _redeem(ctx, callback.code, redirect_uri, verifier))


def _codes(description: Optional[str]) -> list[int]:
    found = re.match(r"\s*AADSTS(\d+)", description or "")
    return [int(found.group(1))] if found else []


def _redeem(
    ctx: FlowContext, code: str, redirect_uri: str, verifier: str
) -> Generator[Action, Any, TokenResult]:
    profile = ctx.profile
    assert profile.client_id is not None
    form = {
        "grant_type": "authorization_code",
        "client_id": profile.client_id,
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
        "scope": sign_in_scope(ctx),
    }
    result = yield from exchange(ctx, form, what="authorization code token request")
    return complete(result, account=ctx.account)


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import CLIENT, COMMON, FlowSpec  # noqa: E402 - kept next to the entry it declares

FLOW = FlowSpec(
    name="authorization_code",
    acquire=acquire,
    keys=COMMON | CLIENT | {"redirect_port", "login_hint", "domain_hint", "prompt"},
    required=("client_id",),
    credential="optional",
    default_tenant="organizations",
    file_cache=True,
    names_profile=True,
    may_prompt=True,
    summary="a person signs in with the browser",
)
