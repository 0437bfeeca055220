"""The protected API at ``{emu.url}/api/...``: a resource server that accepts the emulator's
access tokens, the way Microsoft Graph or Azure Resource Manager would.

Any method on ``/api`` or below needs ``Authorization: Bearer <token>``: signed by this
emulator, not expired, for audience ``emu.api_resource``, not revoked. A call without a token
gets ``401`` with ``WWW-Authenticate: Bearer realm=""``; a bad token adds
``error="invalid_token"`` and a description. While a claims challenge is pending
(``Emulator.claims_challenge``), a token without the challenged claims gets the challenge:
``error="insufficient_claims"`` (Graph's and CAE's form) or ``error="invalid_token"`` with
``claims=`` (Azure Resource Manager's). A good call gets ``200`` with
``{"ok": true, "path", "method", "query", "body_bytes", "claims"}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .routes import route
from .state import InvalidToken
from .wire import Request, Response, json_response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["protected_api"]


def _quoted(text: str) -> str:
    return text.replace("\\", "/").replace('"', "'")


def _unauthorized(www_authenticate: str, error: str, description: str) -> Response:
    body = {"error": error, "error_description": description}
    return json_response(body, status=401, headers=[("WWW-Authenticate", www_authenticate)])


def protected_api(emu: Emulator, req: Request) -> Response:
    """Check the bearer token and describe the call."""
    value = req.headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized('Bearer realm=""', "invalid_token", "No bearer token was sent.")
    try:
        claims = emu.state.verify_token(token.strip(), audience=emu.api_resource)
    except InvalidToken as exc:
        header = f'Bearer realm="", error="invalid_token", error_description="{_quoted(str(exc))}"'
        return _unauthorized(header, "invalid_token", str(exc))
    challenge = emu.state.take_challenge(claims)
    if challenge is not None:
        authorize = f"{emu.url}/common/oauth2/authorize"
        if challenge.style == "invalid_token":
            header = (
                f'Bearer realm="", authorization_uri="{authorize}", error="invalid_token", '
                f'error_description="User session has been revoked", claims="{challenge.encoded}"'
            )
            return _unauthorized(header, "invalid_token", "User session has been revoked")
        header = (
            f'Bearer realm="", authorization_uri="{authorize}", error="insufficient_claims", '
            f'claims="{challenge.encoded}"'
        )
        return _unauthorized(header, "insufficient_claims", "The token lacks required claims.")
    return json_response(
        {
            "ok": True,
            "path": req.path,
            "method": req.method,
            "query": req.query,
            "body_bytes": len(req.body),
            "claims": claims,
        }
    )


route("*", "/api", endpoint="api")(protected_api)
route("*", "/api/{rest:path}", endpoint="api")(protected_api)
