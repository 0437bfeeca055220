"""The resource owner password grant: a person's name and password, sent to the token endpoint.

Discouraged: it cannot do multi-factor authentication, Conditional Access often blocks it, and
the password sits in configuration. Using it warns once per process
(:class:`PasswordFlowWarning` and a log line). When the account needs MFA (AADSTS50076, 50079)
the error's hint says to use flow ``device_code`` or ``authorization_code``. A refresh token
kept in the cache from an earlier answer is tried first.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Generator
from typing import Any

from .._actions import Action
from ..oauth import Form, exchange, secret_of
from ..profile import Profile
from ..token import TokenResult
from . import FlowContext
from ._person import complete, sign_in_scope, silently_first

__all__ = ["PasswordFlowWarning", "acquire", "cache_identity"]

log = logging.getLogger("authlayer")

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_warned = False
_warn_lock = threading.Lock()


class PasswordFlowWarning(UserWarning):
    """A profile uses flow ``password``, which Microsoft discourages and MFA breaks."""


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points at the first frame outside authlayer (the user's code
    that asked for the token), so the warning names a line the user can find."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_back is not None and (
        os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR)
        or "site-packages" in frame.f_code.co_filename
    ):
        frame = frame.f_back
        level += 1
    return level


def _warn_once(profile: str) -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    message = (f"profile {profile!r} uses flow 'password', which Microsoft discourages: it "
               "cannot do multi-factor authentication and Conditional Access may block it; "
               "prefer flow 'device_code' or 'authorization_code'")
    log.warning("%s", message)
    warnings.warn(message, PasswordFlowWarning, stacklevel=_caller_stacklevel())


def cache_identity(profile: Profile) -> str:
    """What the cache key needs beyond the profile: which password. Two profiles for the same
    person and app with different passwords must not share a sign-in, or the one with the
    wrong password would be served the other's refresh token. The password source's identity
    is a keyed hash for an inline password and says where it is read from otherwise."""
    assert profile.password is not None
    return "password:" + profile.password.identity


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """A token for the profile's person: from the cached refresh token, else by password."""
    _warn_once(ctx.profile.name)
    return (yield from silently_first(ctx, sign_in, needs_person=False))


def sign_in(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Send the name and password to the token endpoint."""
    profile = ctx.profile
    assert profile.client_id is not None
    assert profile.username is not None
    assert profile.password is not None
    form: Form = {
        "grant_type": "password",
        "client_id": profile.client_id,
        "username": profile.username,
        "password": (yield from secret_of(profile.password)),
        "scope": sign_in_scope(ctx),
    }
    result = yield from exchange(ctx, form, what="password token request")
    return complete(result, account=ctx.account)


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import CLIENT, COMMON, FlowSpec  # noqa: E402 - kept next to the entry it declares

FLOW = FlowSpec(
    name="password",
    acquire=acquire,
    keys=COMMON | CLIENT | {"username", "password"},
    required=("client_id", "tenant", "username", "password"),
    credential="optional",
    refused_tenants=("common", "consumers"),
    file_cache=True,
    identity=cache_identity,
    summary="a person's user name and password (discouraged; MFA breaks it)",
)
