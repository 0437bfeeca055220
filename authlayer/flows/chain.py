"""Flow ``chain``: a profile that stands for other profiles, tried in order (CONTRACT §8).

A chain never asks for a token itself. When a script binds it, the provider picks the first
member that is available here (:mod:`authlayer.chains`) and binds that member instead: its
cache key, single flight, refresh ahead and 401 handling are the member's own. This module
only declares the flow.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .._http import Action
from ..errors import TokenError
from ..token import TokenResult
from . import FlowContext

__all__ = ["acquire"]


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Never runs, for ``chain`` and ``auto`` alike: the provider binds a member, never the
    flow that stands for it."""
    raise TokenError(f"flow {ctx.profile.flow!r} gets its tokens from a member; bind it with "
                     "the provider", profile=ctx.profile.name, error="chain_not_bound")
    yield  # pragma: no cover - makes this a generator


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import FlowSpec  # noqa: E402 - kept next to the entry it declares

FLOW = FlowSpec(
    name="chain",
    acquire=acquire,
    # What members inherit unless they set their own: scope, allowed_hosts, cae,
    # additionally_allowed_tenants (authlayer.config._build.INHERITED).
    keys=frozenset({"flow", "chain", "scope", "allowed_hosts", "cae",
                    "additionally_allowed_tenants"}),
    required=("chain",),
    summary="the first of several profiles that is available here",
    stands_for="chain",
)
