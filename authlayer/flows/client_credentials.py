"""The client credentials grant: an application signs in as itself with a secret, a
certificate assertion or a federated assertion."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .._http import Action
from ..token import TokenResult
from . import FlowContext
from .client_auth import token_request

__all__ = ["acquire"]


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Ask the token endpoint for an app token for the profile's scope."""
    profile = ctx.profile
    assert profile.client_id is not None
    form = {"grant_type": "client_credentials", "client_id": profile.client_id,
            "scope": profile.scope}
    return (yield from token_request(ctx, form))
