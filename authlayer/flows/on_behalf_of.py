"""The on-behalf-of grant: a web API that received a person's token trades it for a token to
call another API as that person.

The incoming token is ``ctx.user_assertion`` (``EntraAuth(..., user_assertion=...)``); the
provider keys the cache by a hash of it, so two people's tokens are never mixed. The app
authenticates with its secret, certificate or assertion, as for client credentials.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .._actions import Action
from ..oauth import exchange
from ..token import TokenResult
from . import FlowContext
from ._person import complete

__all__ = ["GRANT_TYPE", "acquire"]

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Exchange the incoming token for one for the profile's scope."""
    profile = ctx.profile
    assert profile.client_id is not None
    assert ctx.user_assertion, "the provider refuses on_behalf_of without a user assertion"
    form = {
        "grant_type": GRANT_TYPE,
        "client_id": profile.client_id,
        "assertion": ctx.user_assertion,
        "requested_token_use": "on_behalf_of",
        "scope": profile.scope,
    }
    result = yield from exchange(ctx, form, what="on-behalf-of token request")
    return complete(result)


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import CLIENT, COMMON, FlowSpec  # noqa: E402 - kept next to the entry it declares

FLOW = FlowSpec(
    name="on_behalf_of",
    acquire=acquire,
    keys=COMMON | CLIENT,
    required=("client_id", "tenant"),
    credential="one",
    needs_user_assertion=True,
    summary="a web API trades a person's incoming token for one to call another API",
)
