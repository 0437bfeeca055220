"""The client credentials grant: an application signs in as itself with a secret, a
certificate assertion or a federated assertion."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .._actions import Action
from ..oauth import exchange
from ..token import TokenResult
from . import FlowContext

__all__ = ["acquire"]


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Ask the token endpoint for an app token for the profile's scope."""
    profile = ctx.profile
    assert profile.client_id is not None
    form = {"grant_type": "client_credentials", "client_id": profile.client_id,
            "scope": profile.scope}
    return (yield from exchange(ctx, form))


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import CLIENT, COMMON, FlowSpec  # noqa: E402 - kept next to the entry it declares

FLOW = FlowSpec(
    name="client_credentials",
    acquire=acquire,
    keys=COMMON | CLIENT,
    required=("client_id", "tenant"),
    credential="one",
    refused_tenants=("organizations", "common", "consumers"),
    summary="an application signs in as itself (secret, certificate or assertion)",
)
