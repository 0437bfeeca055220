"""The token endpoint, ``POST /{tenant}/oauth2/v2.0/token``, and its grant registry.

The endpoint resolves the tenant, reads ``grant_type`` and hands the request to the handler
registered for it in :data:`GRANTS`; this module registers ``client_credentials``. A new grant
lives in its own module and registers itself at import::

    from authlayer.emulator.grants import grant, token_response
    from authlayer.emulator.clientauth import authenticate_client

    @grant("urn:ietf:params:oauth:grant-type:device_code")
    def device_code(emu: Emulator, req: Request, tenant: TenantRef) -> Response:
        client = authenticate_client(emu, req, tenant.require_specific(), allow_public=True)
        ...
        return token_response(emu, issued, scope="...", refresh_token="...")

then ``authlayer/emulator/__init__.py`` imports that module. A handler refuses a request by
raising :class:`~authlayer.emulator.wire.EntraError`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Optional

from .clientauth import authenticate_client, missing_parameter
from .routes import route
from .state import IssuedToken, TenantRef, apply_requested_claims
from .wire import EntraError, Request, Response, json_response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = [
    "GRANTS",
    "GrantHandler",
    "grant",
    "requested_claims",
    "scope_resource",
    "token_endpoint",
    "token_response",
]

GrantHandler = Callable[["Emulator", Request, TenantRef], Response]

GRANTS: dict[str, GrantHandler] = {}
"""grant_type -> handler. Filled by :func:`grant` at import time."""


def grant(grant_type: str) -> Callable[[GrantHandler], GrantHandler]:
    """Decorator: answer token requests with this ``grant_type`` (the last one registered
    wins, so a test may replace a grant)."""

    def register(handler: GrantHandler) -> GrantHandler:
        GRANTS[grant_type] = handler
        return handler

    return register


@route("POST", "/{tenant}/oauth2/v2.0/token", endpoint="token")
def token_endpoint(emu: Emulator, req: Request) -> Response:
    """Dispatch a token request to its grant handler."""
    tenant = emu.state.resolve_tenant(req.params["tenant"])
    grant_type = req.form.get("grant_type", "").strip()
    if not grant_type:
        raise missing_parameter("grant_type")
    handler = GRANTS.get(grant_type)
    if handler is None:
        raise EntraError(
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'.",
        )
    return handler(emu, req, tenant)


def requested_claims(req: Request) -> dict[str, Any]:
    """The ``claims`` form field as a JSON object (empty when absent)."""
    raw = req.form.get("claims")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise EntraError(
            "invalid_request", 90023, "The 'claims' parameter is not a valid JSON object."
        )
    return value


def scope_resource(scope: str) -> Optional[str]:
    """The resource of a ``<resource>/.default`` scope, else ``None``."""
    if scope.endswith("/.default") and len(scope) > len("/.default"):
        return scope[: -len("/.default")]
    return None


def token_response(emu: Emulator, issued: IssuedToken, **extra: Any) -> Response:
    """Entra's success answer: ``token_type``, ``expires_in``, ``ext_expires_in``,
    ``access_token``, ``refresh_in`` when ``emu.refresh_in`` is set, then ``extra`` fields
    (``scope``, ``refresh_token``, ``id_token`` ...; ``None`` values are left out)."""
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "ext_expires_in": issued.expires_in,
        "access_token": issued.token,
    }
    if emu.refresh_in is not None:
        body["refresh_in"] = emu.refresh_in
    body.update({k: v for k, v in extra.items() if v is not None})
    return json_response(body, headers=[("Cache-Control", "no-store, no-cache"),
                                        ("Pragma", "no-cache")])


@grant("client_credentials")
def client_credentials(emu: Emulator, req: Request, tenant_ref: TenantRef) -> Response:
    """An app token for ``<resource>/.default``, with the app's roles."""
    tenant = tenant_ref.require_specific("the client credentials grant")
    client = authenticate_client(emu, req, tenant)
    scope = req.form.get("scope", "").strip()
    if not scope:
        raise missing_parameter("scope")
    scopes = scope.split()
    resource = scope_resource(scopes[0]) if len(scopes) == 1 else None
    if resource is None:
        raise EntraError(
            "invalid_scope",
            70011,
            f"The provided request must include a 'scope' input parameter. The provided value "
            f"for the input parameter 'scope' is not valid. The scope {scope} is not valid. "
            "The client credentials grant needs one scope of the form '<resource>/.default'.",
        )
    issued = emu.state.issue_access_token(
        tenant_id=tenant.id,
        audience=resource,
        app=client.app,
        auth_method=client.azpacr,
        extra_claims=apply_requested_claims(requested_claims(req)),
    )
    return token_response(emu, issued)
