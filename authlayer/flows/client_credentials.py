"""The client credentials grant: an application signs in as itself with a secret, a
certificate assertion or a federated assertion."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .._http import Action, HttpRequest, send, token_response
from ..token import TokenResult
from . import FlowContext
from .client_auth import client_auth_fields

__all__ = ["acquire"]


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Ask the token endpoint for an app token for the profile's scope."""
    profile = ctx.profile
    url = ctx.token_url()
    assert profile.client_id is not None
    form = {"grant_type": "client_credentials", "client_id": profile.client_id,
            "scope": profile.scope}
    form.update((yield from client_auth_fields(profile, url)))
    if ctx.claims:
        form["claims"] = ctx.claims
    request = HttpRequest("POST", url, form=form, timeout=profile.timeout)
    response = yield from send(request, profile=profile.name)
    return token_response(response, profile=profile.name, now=ctx.clock())
