"""The on-behalf-of grant: a middle-tier API trades the token it received for a token to call
another API as the same person.

``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` with
``requested_token_use=on_behalf_of``, ``assertion``, ``scope`` and the client's credential (a
public client cannot use it). The assertion must be a person's access token this emulator
issued, still valid and not revoked, whose ``aud`` is the calling app's client id or
``api://<client id>``; anything else is ``invalid_grant`` (AADSTS50013 for a token that does not
verify, AADSTS500131 for another audience, AADSTS50058-like for an app-only token). The answer
is the person's token for the new scope (plus a refresh token when ``offline_access`` is
asked), issued to the calling app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .clientauth import authenticate_client, missing_parameter
from .grants import grant
from .state import InvalidToken, TenantRef
from .users import user_token_response
from .wire import EntraError, Request, Response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["JWT_BEARER_GRANT", "on_behalf_of_grant"]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@grant(JWT_BEARER_GRANT)
def on_behalf_of_grant(emu: Emulator, req: Request, tenant_ref: TenantRef) -> Response:
    """Exchange a person's incoming token for one to a downstream API."""
    tenant = tenant_ref.require_specific("the on-behalf-of grant")
    if req.form.get("requested_token_use") != "on_behalf_of":
        raise EntraError("invalid_request", 90023,
                         "The jwt-bearer grant needs requested_token_use=on_behalf_of.")
    assertion = req.form.get("assertion", "").strip()
    if not assertion:
        raise missing_parameter("assertion")
    scope = req.form.get("scope", "").strip()
    if not scope:
        raise missing_parameter("scope")
    client = authenticate_client(emu, req, tenant)
    try:
        claims = emu.state.verify_token(assertion)
    except InvalidToken as exc:
        raise EntraError("invalid_grant", 50013,
                         f"Assertion failed signature validation: {exc}.") from None
    cid = client.app.client_id
    if str(claims.get("aud", "")).lower() not in (cid.lower(), f"api://{cid}".lower()):
        raise EntraError("invalid_grant", 500131,
                         "Assertion audience does not match the Client app presenting the "
                         "assertion. The audience in the assertion was "
                         f"'{claims.get('aud')}' and the expected audience is '{cid}' or one "
                         "of the Application Id URIs of this web API.")
    if claims.get("idtyp") != "user" or not claims.get("preferred_username"):
        raise EntraError("invalid_grant", 50058,
                         "The assertion is an app-only token: on-behalf-of needs a token that "
                         "was issued to a person.")
    user = emu.state.find_user(str(claims["tid"]), str(claims["preferred_username"]))
    if user is None or user.object_id != claims.get("oid"):
        raise EntraError("invalid_grant", 50020, "The person of the assertion does not exist.")
    return user_token_response(emu, req, client=client, user=user, scope=scope)
