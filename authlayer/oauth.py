"""The one token-endpoint exchange: every flow that asks Entra for a token goes through here.

:func:`exchange` posts a grant's form to ``{authority}/{tenant}/oauth2/v2.0/token``: it adds the
client's authentication (:func:`client_auth`: a secret, a certificate assertion made anew for
every attempt, or a ready-made assertion) and the claims request (merged with the client
capabilities), reads the clock *before* sending (a token's lifetime counts from the request,
so a slow answer never makes us believe in a token that has already expired), sends through
:func:`authlayer._http.send` (the retry policy) and parses the answer (:func:`parse_token`) or
Entra's error (:func:`parse_error`). :func:`refresh_grant` is the refresh-token grant built on
it, :func:`post` a request to another Entra endpoint that answers JSON (the device code
endpoint). Managed identity endpoints are not OAuth token endpoints, but their answers are
parsed here too.

Sans-I/O like the flows: reading a secret source that does I/O, or a certificate, is yielded as
a :class:`~authlayer._http.Call`; nothing is yielded when there is no blocking work. This
module knows nothing of flows' names; :mod:`authlayer._http` knows nothing of OAuth.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, Union

from ._actions import Flow, call
from .errors import TokenError
from .profile import Profile, Secret, SecretSource
from .schema import FlowContext, endpoint
from .token import TokenResult

# The HTTP boundary is imported where a request is made or an answer read: a flow module imports
# this one, and a token served from a cache needs neither.
if TYPE_CHECKING:
    from ._http import HttpRequest, HttpResponse

__all__ = [
    "ASSERTION_TYPE",
    "CLIENT_CAPABILITIES",
    "REFRESH_MARGIN",
    "Form",
    "claims_request",
    "client_auth",
    "endpoint",
    "exchange",
    "parse_error",
    "parse_token",
    "post",
    "read_secret",
    "refresh_grant",
    "refresh_time",
    "secret_of",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Declares that this client handles claims challenges (Continuous Access Evaluation).
CLIENT_CAPABILITIES = {"access_token": {"xms_cc": {"values": ["cp1"]}}}
REFRESH_MARGIN = 300  # refresh five minutes before expiry
MAX_NUMBER = 10**11  # larger expiries or codes are not real (the year 5138): malformed

# A grant's form: secrets stay wrapped (hidden from reprs and captured locals) until the
# request is built.
Form = Mapping[str, Union[str, Secret]]


# --------------------------------------------------------------------------- the request


def secret_of(source: SecretSource) -> Flow[Secret]:
    """Read a secret source, wrapped; one that does I/O (a file, a command) off the event
    loop."""
    if not source.blocking:
        return source.secret()
    return (yield from call(source.secret))


def read_secret(source: SecretSource) -> Flow[str]:
    """Read a secret source as plain text; one that does I/O off the event loop."""
    return (yield from secret_of(source)).reveal()


def _certificate_assertion(profile: Profile, audience: str) -> Secret:
    from .certificate import build_assertion, check_validity, load_certificate

    assert profile.certificate is not None
    cert = load_certificate(profile.certificate, profile=profile.name,
                            config_path=profile.config_path)
    check_validity(cert, profile=profile.name, config_path=profile.config_path)
    assert profile.client_id is not None
    return Secret(build_assertion(
        cert,
        client_id=profile.client_id,
        audience=audience,
        alg=profile.assertion_alg,
        send_x5c=profile.certificate.send_x5c,
    ))


def client_auth(profile: Profile, audience: str) -> Flow[Form]:
    """The form fields that authenticate the client to the token endpoint ``audience`` (empty
    for a public client). A certificate assertion is built anew, with a fresh ``jti``, for
    every request."""
    if profile.client_secret is not None:
        return {"client_secret": (yield from secret_of(profile.client_secret))}
    if profile.certificate is not None:
        assertion = yield from call(lambda: _certificate_assertion(profile, audience))
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    if profile.client_assertion is not None:
        return {"client_assertion_type": ASSERTION_TYPE,
                "client_assertion": (yield from secret_of(profile.client_assertion))}
    return {}


def claims_request(claims: Optional[str], cae: bool = False) -> Optional[str]:
    """``claims`` (JSON text) with our client capabilities merged into its ``access_token``
    part; text that is not a JSON object is sent as it came. Without claims: the client
    capabilities alone when ``cae`` (the profile's ``cae = true``: Entra then issues CAE
    tokens), else nothing."""
    if not claims:
        return json.dumps(CLIENT_CAPABILITIES, separators=(",", ":")) if cae else None
    try:
        parsed = json.loads(claims)
    except (ValueError, RecursionError):
        return claims
    if not isinstance(parsed, dict):
        return claims
    access = parsed.get("access_token")
    parsed["access_token"] = {**(access if isinstance(access, dict) else {}),
                              **CLIENT_CAPABILITIES["access_token"]}
    return json.dumps(parsed, separators=(",", ":"))


def _revealed(form: Form) -> dict[str, str]:
    """The form as it is sent: secrets unwrapped, at the last moment."""
    return {k: v.reveal() if isinstance(v, Secret) else v for k, v in form.items()}


def exchange(
    ctx: FlowContext,
    form: Form,
    *,
    what: str = "token request",
    tenant: Optional[str] = None,
    authenticate: bool = True,
) -> Flow[TokenResult]:
    """POST a grant's ``form`` to the profile's token endpoint (of ``tenant``, default the
    profile's) — with the client's credential (unless ``authenticate`` is false: the form
    carries its own, or the client is public) and the context's claims request — and return the
    parsed answer. The token's lifetime counts from the moment the request was sent. Raises
    :class:`~authlayer.errors.TokenError`."""
    from ._http import HttpRequest, send

    profile = ctx.profile
    url = ctx.token_url(tenant)
    claims = claims_request(ctx.claims, ctx.profile.cae)

    def build() -> Flow[HttpRequest]:
        # Called for every attempt: a retried request gets a new assertion (a fresh jti).
        fields = dict(form)
        if authenticate:
            fields.update((yield from client_auth(profile, url)))
        if claims:
            fields["claims"] = claims
        return HttpRequest("POST", url, form=_revealed(fields), timeout=profile.timeout,
                           what=what)

    sent = ctx.clock()  # before sending: never past the token's real expiry
    response = yield from send(build, profile=profile.name)
    return parse_token(response, profile=profile.name, now=sent, what=what)


def refresh_grant(
    ctx: FlowContext,
    refresh_token: Secret,
    *,
    scope: str,
    tenant: Optional[str] = None,
    client_id: Optional[str] = None,
    what: str = "refresh token request",
    authenticate: bool = True,
) -> Flow[TokenResult]:
    """Redeem ``refresh_token`` for ``scope`` (the refresh-token grant) at the profile's token
    endpoint, or ``tenant``'s, as ``client_id`` (default the profile's)."""
    client = ctx.profile.client_id if client_id is None else client_id
    assert client is not None
    form: Form = {
        "grant_type": "refresh_token",
        "client_id": client,
        "refresh_token": refresh_token,
        "scope": scope,
    }
    return (yield from exchange(ctx, form, what=what, tenant=tenant,
                                authenticate=authenticate))


def post(ctx: FlowContext, url: str, form: Mapping[str, str], *, what: str
         ) -> Flow[dict[str, Any]]:
    """POST ``form`` (with the context's claims request) to an Entra endpoint that answers a
    JSON object (the device code endpoint): that object, or the :class:`TokenError` of
    Entra's error."""
    from ._http import HttpRequest, send

    profile = ctx.profile
    fields = dict(form)
    claims = claims_request(ctx.claims, ctx.profile.cae)
    if claims:
        fields["claims"] = claims
    request = HttpRequest("POST", url, form=fields, timeout=profile.timeout, what=what)
    response = yield from send(request, profile=profile.name)
    return _answer(response, profile=profile.name, what=what)


# --------------------------------------------------------------------------- the answer

# Compiled by re at their first use: a token served from a cache reads no error.
_AADSTS = r"AADSTS(\d+)"
_CORRELATION = r"Correlation ID:\s*([0-9a-fA-F-]{36})"


def _number(value: Any) -> Optional[int]:
    """Entra sends numbers, or numbers as strings; anything else is ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = int(value)
    if isinstance(value, int) and abs(value) <= MAX_NUMBER:
        return value
    return None


def parse_error(
    response: HttpResponse, *, profile: Optional[str], what: str = "token request"
) -> TokenError:
    """The :class:`TokenError` for an answer that is not a success: Entra's ``error``,
    ``error_codes``, description and correlation id, or what can be told of an answer that is
    not Entra's."""
    body = response.json_object()
    if body is None or not isinstance(body.get("error"), str):
        kind = response.content_type or "no content type"
        message = f"{what} failed: HTTP {response.status}"
        if response.status == 429:
            from ._http import retry_after

            message += " (throttled)"
            wait = retry_after(response)
            hint = f"throttled by the service: try again in {wait:.0f} s" if wait else None
            return TokenError(message, profile=profile, status=response.status,
                              error="throttled", hint=hint)
        if body is None:
            message += f" with an unreadable answer ({kind}, {len(response.content)} bytes)"
        return TokenError(message, profile=profile, status=response.status)
    description = body.get("error_description")
    description = description if isinstance(description, str) else ""
    first_line = description.split("\r\n", 1)[0].split("\n", 1)[0].strip()
    codes_raw = body.get("error_codes")
    codes: list[int] = []
    if isinstance(codes_raw, list):
        codes = [c for c in (_number(x) for x in codes_raw) if c is not None]
    if not codes:
        codes = [int(m) for m in re.findall(_AADSTS, first_line)[:1]]
    correlation = body.get("correlation_id")
    if not isinstance(correlation, str):
        found = re.search(_CORRELATION, description)
        correlation = found.group(1) if found else None
    suberror = body.get("suberror")
    claims = body.get("claims")
    return TokenError(
        profile=profile,
        error=str(body["error"]),
        error_codes=codes,
        description=first_line or None,
        correlation_id=correlation,
        status=response.status,
        suberror=suberror if isinstance(suberror, str) else None,
        claims=claims if isinstance(claims, str) else None,
    )


def _answer(response: HttpResponse, *, profile: Optional[str], what: str) -> dict[str, Any]:
    """A successful answer's JSON object; else the :class:`TokenError` it means (an error
    object sent with HTTP 200 is an error all the same)."""
    if response.status != 200:
        raise parse_error(response, profile=profile, what=what)
    body = response.json_object()
    if body is None:
        raise TokenError(
            f"{what} answered HTTP 200 with something that is not a JSON object "
            f"({response.content_type or 'no content type'}, {len(response.content)} bytes)",
            profile=profile,
            status=200,
            error="malformed_response",
        )
    if "error" in body:
        from ._http import HttpResponse

        raise parse_error(HttpResponse(400, response.headers, response.content),
                          profile=profile, what=what)
    return body


def refresh_time(now: float, expires_on: int, refresh_in: Optional[int] = None) -> int:
    """When to refresh: at ``refresh_in`` when the service says, else five minutes before
    expiry, and never later than half-way for tokens that live under ten minutes."""
    lifetime = expires_on - now
    if refresh_in is not None and 0 < refresh_in < lifetime:
        return int(now + refresh_in)
    if lifetime <= 2 * REFRESH_MARGIN:
        return int(now + lifetime / 2)
    return int(expires_on - REFRESH_MARGIN)


def parse_token(
    response: HttpResponse,
    *,
    profile: Optional[str],
    now: Optional[float] = None,
    what: str = "token request",
) -> TokenResult:
    """Turn an answer from a token endpoint into a :class:`TokenResult` or a :class:`TokenError`.

    ``now`` is when the request was sent (default: now). Accepts ``expires_in`` or
    ``expires_on`` (numbers or numeric strings) and ``refresh_in``.
    """
    body = _answer(response, profile=profile, what=what)
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise TokenError(
            f"{what} answered without an access_token", profile=profile, status=200,
            error="malformed_response",
        )
    now = time.time() if now is None else now
    expires_in = _number(body.get("expires_in"))
    expires_on = _number(body.get("expires_on"))
    if expires_in is not None:
        expires_on = int(now + expires_in)
    if expires_on is None:
        raise TokenError(
            f"{what} answered without expires_in or expires_on", profile=profile, status=200,
            error="malformed_response",
        )
    if expires_on <= now:
        raise TokenError(
            f"{what} answered with a token that has already expired (expires_on "
            f"{expires_on}, now {int(now)}): check this machine's clock",
            profile=profile, status=200, error="malformed_response",
        )
    token_type = body.get("token_type")
    refresh_token = body.get("refresh_token")
    scope = body.get("scope")
    id_token = body.get("id_token")
    return TokenResult(
        access_token=token,
        expires_on=expires_on,
        refresh_on=refresh_time(now, expires_on, _number(body.get("refresh_in"))),
        token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        scope=scope if isinstance(scope, str) else None,
        id_token=id_token if isinstance(id_token, str) and id_token else None,
    )
