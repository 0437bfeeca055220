"""A local Entra ID emulator: a real HTTP server on loopback that speaks Entra's wire format.

It serves the token endpoint (client credentials with a secret, HTTP Basic or a certificate
assertion), OpenID discovery and signing keys, and a protected API under ``/api`` that checks
bearer tokens, revokes them and answers claims challenges; it can be told to misbehave
(latency, 429/5xx, dropped connections, malformed bodies, answers held until released) and
counts what it was asked. It is used by authlayer's tests, by ``authlayer demo`` and by anyone
testing scripts offline::

    from authlayer.emulator import Emulator

    with Emulator() as emu:
        app = emu.register_app()
        ...  # a profile with authority=emu.url, tenant=emu.tenant_id, scope=emu.api_scope

Extending it: new endpoints register with :func:`route` and new grant types with :func:`grant`
in their own module, which this file imports (see ``routes.py`` and ``grants.py``).
"""

from __future__ import annotations

# The modules below register their routes and grants when imported. The API comes first so
# that /api/... is never taken for a tenant name.
from . import (  # noqa: F401
    api,
    authorize,
    ci,
    device,
    discovery,
    federated,
    grants,
    managed_identity,
    obo,
    users,
)
from .clientauth import ClientAuth, authenticate_client
from .faults import FAULT_KINDS, Fault, Hold
from .grants import GRANTS, grant, token_response
from .routes import ROUTES, route
from .server import ENDPOINTS, Emulator
from .state import App, InvalidToken, IssuedToken, State, TenantRef, User
from .wire import (
    EntraError,
    Request,
    RequestRecord,
    Response,
    entra_error_body,
    entra_error_response,
    json_response,
    text_response,
)

__all__ = [
    "ENDPOINTS",
    "FAULT_KINDS",
    "GRANTS",
    "ROUTES",
    "App",
    "ClientAuth",
    "Emulator",
    "EntraError",
    "Fault",
    "Hold",
    "InvalidToken",
    "IssuedToken",
    "Request",
    "RequestRecord",
    "Response",
    "State",
    "TenantRef",
    "User",
    "authenticate_client",
    "entra_error_body",
    "entra_error_response",
    "grant",
    "json_response",
    "route",
    "text_response",
    "token_response",
]
