"""``EntraAuth`` as an aiohttp (3.12+) client middleware.

aiohttp calls a middleware once per request it sends — once per hop of a redirect, too — as
``await middleware(request, handler)``. This module gives that call the contract of the httpx
adapter: the token goes only to allowed hosts (plain http only to loopback, and never through a
proxy), tokens come from the provider's async path (the event loop never blocks; many tasks, one
token request), and after a 401 the request is sent once more with a new token when its body can
be sent again. A redirect target never gets the token unless it is on the same origin as a
request that carried it, as with requests and httpx.

Imported only when aiohttp calls an ``EntraAuth``, so ``import authlayer`` never imports aiohttp.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, NamedTuple, Optional

from aiohttp.multipart import MultipartWriter
from aiohttp.payload import BytesPayload, IOBasePayload, Payload
from yarl import URL

from .auth import _require_hosts, claims_from_challenge, may_carry
from .provider import PROVIDER, Binding, Forget, after_401

if TYPE_CHECKING:
    from aiohttp import ClientRequest, ClientResponse
    from aiohttp.client_middlewares import ClientHandlerType

    from .auth import EntraAuth

__all__ = ["middleware"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

_PROXY_WHY = ("plain http to loopback is exempt from https only because it stays on this "
              "machine, but this request goes through a proxy (proxy=, or HTTP_PROXY / ALL_PROXY "
              "with trust_env); add the host to NO_PROXY or send it without a proxy")


class _Hop(NamedTuple):
    """Where aiohttp goes next if it follows the redirect it just received."""

    url: URL
    origin: URL  # of the request that was redirected
    carried: bool  # did that request carry our token?


# aiohttp runs every hop of a redirect through the middlewares in the same task, one after
# the other; the hop a redirect answer announces is noted here and read by the next call.
_NEXT_HOP: ContextVar[Optional[_Hop]] = ContextVar("authlayer_aiohttp_next_hop", default=None)


def _allowed(binding: Binding, request: ClientRequest) -> bool:
    url = request.url
    # aiohttp knows its proxy (given in code, or from the environment with trust_env).
    return may_carry(binding, url.scheme, url.raw_host or "", lambda: request.proxy is not None,
                     _PROXY_WHY)


def _replayable(body: object) -> bool:
    """Can aiohttp send this request body again? Bytes, text, JSON and url-encoded forms
    always; files and multipart bodies where aiohttp rewinds them (its payloads have
    ``consumed`` since 3.12.x) and did so; an async iterable or a stream never."""
    if not isinstance(body, Payload):
        return True  # no body
    if getattr(body, "consumed", False):
        return False
    if isinstance(body, BytesPayload):
        return True
    if isinstance(body, IOBasePayload):
        return hasattr(body, "consumed")
    if isinstance(body, MultipartWriter):
        return hasattr(body, "consumed") and all(_replayable(part) for part, _, _ in body)
    return False


def _note_redirect(request: ClientRequest, response: ClientResponse, carried: bool) -> None:
    location = response.headers.get("Location") or response.headers.get("URI")
    if not location:
        return
    try:  # resolved as aiohttp resolves it
        target = URL(location, encoded=not request.session.requote_redirect_url)
        if not target.is_absolute():
            target = request.url.join(target)
        target = target.with_user(None).with_fragment(None)
        origin = request.url.origin()
    except (ValueError, TypeError):
        return  # aiohttp refuses such a redirect itself
    _NEXT_HOP.set(_Hop(target, origin, carried))


def _redirect_may_carry(request: ClientRequest, hop: _Hop) -> bool:
    """False for a request that is the hop of a redirect away from the origin that had our
    token (or of a redirect of a request that had none)."""
    _NEXT_HOP.set(None)
    if hop.url != request.url.with_fragment(None):
        return True  # not that redirect: a request of its own
    try:
        return hop.carried and hop.origin == request.url.origin()
    except ValueError:
        return False


async def middleware(auth: EntraAuth, request: ClientRequest,
                     handler: ClientHandlerType) -> ClientResponse:
    """Attach the token; after a 401 to it, get a new one and send the request once more."""
    binding = auth._binding
    if binding is None:  # first request: read the profile off the event loop
        profile, config, scope, tenant = auth._args
        binding = await PROVIDER.bind_async(profile, config=config, scope=scope, tenant=tenant,
                                            user_assertion=auth._user_assertion)
        _require_hosts(binding.profile, scope is not None)
        auth._binding = binding
    hop = _NEXT_HOP.get()
    if not ((hop is None or _redirect_may_carry(request, hop)) and _allowed(binding, request)):
        response = await handler(request)
        if response.status in _REDIRECTS:
            _note_redirect(request, response, carried=False)
        return response
    entry = binding.slot.entry
    if entry is None or PROVIDER.clock() >= entry.refresh_on:
        entry = await PROVIDER.get_async(binding, prompt=auth._prompt)
    request.headers["Authorization"] = binding.slot.header(entry)
    response = await handler(request)
    if response.status != 401 or not _replayable(request.body):
        if response.status in _REDIRECTS:
            _note_redirect(request, response, carried=True)
        return response
    claims = claims_from_challenge(response.headers.get("WWW-Authenticate"))
    # Not read: a short 401 body has arrived with the headers and the connection is reused;
    # a long one is not waited for (aiohttp closes that connection instead).
    response.release()
    entry = await PROVIDER.get_async(binding, after_401(entry, claims), prompt=auth._prompt)
    request.headers["Authorization"] = entry.header
    response = await handler(request)
    if claims and response.status == 401:  # the claims token was refused in turn
        PROVIDER.forget(binding, Forget.TOKEN, claims=claims, token=entry)
    if response.status in _REDIRECTS:
        _note_redirect(request, response, carried=True)
    return response
