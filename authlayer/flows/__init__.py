"""The grants, one module per flow, named as on the wire.

Each module exposes ``acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]``: a
generator that yields :mod:`authlayer._http` actions and never does I/O itself, so one driver can
run it with blocking calls and another with ``await``. Modules are imported only when a profile
uses them.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, cast

from .._http import Action
from ..profile import Profile
from ..token import TokenResult

__all__ = ["FlowContext", "FlowModule", "default_prompt", "load_flow"]


def default_prompt(message: str) -> None:
    """Show sign-in instructions on standard error, never standard output."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class FlowContext:
    """What one token acquisition needs beyond the profile.

    ``claims`` is a claims request (JSON text) to send with the token request; ``user_assertion``
    the incoming token for on-behalf-of; ``refresh_token`` one found in the cache, for flows that
    can use it; ``interactive`` is false when no person may be asked (then a flow that would
    need a person raises :class:`~authlayer.errors.TokenError`); ``prompt`` shows sign-in
    instructions; ``fresh_sign_in`` is true for ``authlayer login``: sign the person in anew
    (ignore any kept refresh token, and let them choose the account).
    """

    profile: Profile
    claims: Optional[str] = None
    user_assertion: Optional[str] = field(default=None, repr=False)
    refresh_token: Optional[str] = field(default=None, repr=False)
    account: Optional[dict[str, Any]] = None
    interactive: bool = True
    fresh_sign_in: bool = False
    prompt: Callable[[str], None] = default_prompt
    clock: Callable[[], float] = time.time

    def token_url(self, tenant: Optional[str] = None) -> str:
        """``{authority}/{tenant}/oauth2/v2.0/token``."""
        return endpoint(self.profile, "token", tenant)


def endpoint(profile: Profile, name: str, tenant: Optional[str] = None) -> str:
    """``{authority}/{tenant}/oauth2/v2.0/{name}``."""
    return f"{profile.authority}/{tenant or profile.tenant}/oauth2/v2.0/{name}"


class FlowModule(Protocol):
    def acquire(self, ctx: FlowContext) -> Generator[Action, Any, TokenResult]: ...


def load_flow(name: str) -> FlowModule:
    """The module for flow ``name`` (validated by the config loader)."""
    return cast(FlowModule, importlib.import_module(f"{__name__}.{name}"))
