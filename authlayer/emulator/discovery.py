"""OpenID Connect discovery: ``/{tenant}/v2.0/.well-known/openid-configuration`` and the signing
keys at ``/{tenant}/discovery/v2.0/keys``.

As with Entra, a known tenant's document names its GUID in every URL; for ``organizations``,
``common`` and ``consumers`` the issuer holds the literal ``{tenantid}`` placeholder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .routes import route
from .wire import Request, Response, json_response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["jwks", "openid_configuration"]


@route("GET", "/{tenant}/v2.0/.well-known/openid-configuration", endpoint="openid")
def openid_configuration(emu: Emulator, req: Request) -> Response:
    ref = emu.state.resolve_tenant(req.params["tenant"])
    segment = ref.tenant.id if ref.tenant else ref.segment
    issuer_tid = ref.tenant.id if ref.tenant else "{tenantid}"
    base = emu.url
    doc = {
        "issuer": f"{base}/{issuer_tid}/v2.0",
        "token_endpoint": f"{base}/{segment}/oauth2/v2.0/token",
        "authorization_endpoint": f"{base}/{segment}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/{segment}/oauth2/v2.0/devicecode",
        "end_session_endpoint": f"{base}/{segment}/oauth2/v2.0/logout",
        "jwks_uri": f"{base}/{segment}/discovery/v2.0/keys",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post", "private_key_jwt", "client_secret_basic",
        ],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "nbf", "name", "preferred_username", "oid", "tid",
        ],
        "request_uri_parameter_supported": False,
        "tenant_region_scope": "WW",
        "cloud_instance_name": "authlayer.emulator",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
    }
    return json_response(doc)


@route("GET", "/{tenant}/discovery/v2.0/keys", endpoint="keys")
def jwks(emu: Emulator, req: Request) -> Response:
    ref = emu.state.resolve_tenant(req.params["tenant"])
    key = emu.state.jwk()
    key["issuer"] = f"{emu.url}/{ref.tenant.id if ref.tenant else '{tenantid}'}/v2.0"
    return json_response({"keys": [key]})
