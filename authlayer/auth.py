"""``EntraAuth``: one object that is a ``requests`` auth and an ``httpx`` auth (sync and async).

The hot path, for a request that may carry the token: one verdict read from a per-origin
dict, one dict read of the cached entry, one clock comparison, one header assignment.
After a 401 to a request that carried our token, the rejected token is dropped (once, however
many requests saw it), a new one is fetched — for the claims in a ``WWW-Authenticate`` claims
challenge when there is one — and the request is sent once more, provided its body can be sent
again. A second 401 goes back to the caller as it came.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any, Callable, Optional, Union, overload
from urllib.parse import urlsplit
from urllib.request import getproxies

import httpx

from .errors import ConfigError
from .jwt import JWTError, b64url_decode
from .profile import Profile
from .provider import PROVIDER, Binding, CachedToken, Forget, PathArg, ScopeArg, after_401

if TYPE_CHECKING:
    from collections.abc import Awaitable

    import requests
    from aiohttp import ClientRequest, ClientResponse
    from aiohttp.client_middlewares import ClientHandlerType

__all__ = ["EntraAuth", "challenge_params", "claims_from_challenge"]

log = logging.getLogger("authlayer")

# Declares that this client handles claims challenges (Continuous Access Evaluation).
CLIENT_CAPABILITIES = {"access_token": {"xms_cc": {"values": ["cp1"]}}}

# A claims challenge is a few hundred characters; a longer header is not parsed at all.
MAX_CHALLENGE = 8192

# Each pattern matches one maximal run from a given position, with no choice to backtrack
# into, and the scanner never goes back: parsing is linear in the header.
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SPACE_RE = re.compile(r"[ \t]*")
_TOKEN_RE = re.compile(r"[^\s,]*")
_QUOTED_RE = re.compile(r'[^"\\]*')


def _end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Where ``pattern``'s run starting at ``pos`` ends (``pos`` itself if there is none)."""
    found = pattern.match(text, pos)
    return found.end() if found else pos


def challenge_params(header: str) -> dict[str, str]:
    """The ``name=value`` parameters of a ``WWW-Authenticate`` header (names lower-cased,
    quoted values unescaped; a later one of the same name wins). Linear in the header; a
    parameter with an unterminated quoted value ends the parse."""
    params: dict[str, str] = {}
    i, n = 0, len(header)
    while i < n:
        name = _NAME_RE.match(header, i)
        if name is None:
            i += 1
            continue
        i = name.end()
        j = _end(_SPACE_RE, header, i)
        if j >= n or header[j] != "=":
            continue
        j = _end(_SPACE_RE, header, j + 1)
        if j < n and header[j] == '"':
            parts: list[str] = []
            j += 1
            while True:
                run = _end(_QUOTED_RE, header, j)
                parts.append(header[j:run])
                if run >= n or (header[run] == "\\" and run + 1 >= n):
                    return params  # unterminated: nothing after it can be trusted
                if header[run] == '"':
                    j = run + 1
                    break
                parts.append(header[run + 1])  # a quoted pair: the escaped character
                j = run + 2
            value = "".join(parts)
        else:
            end = _end(_TOKEN_RE, header, j)
            value = header[j:end]
            j = end
        params[name.group().lower()] = value
        i = j
    return params


def claims_from_challenge(header: Optional[str]) -> Optional[str]:
    """The claims request (JSON text) in a ``WWW-Authenticate`` claims challenge, merged with
    our client capabilities; ``None`` when the header is not such a challenge.

    A claims challenge is ``error="insufficient_claims"`` or ``error="invalid_token"`` with a
    ``claims`` parameter holding base64url JSON (padding may be missing). A header over
    :data:`MAX_CHALLENGE` characters is not one.
    """
    if not header or "claims" not in header:
        return None
    if len(header) > MAX_CHALLENGE:
        log.debug("a WWW-Authenticate header of %d characters (over %d) is not read as a "
                  "claims challenge", len(header), MAX_CHALLENGE)
        return None
    params = challenge_params(header)
    if params.get("error") not in ("insufficient_claims", "invalid_token"):
        return None
    encoded = params.get("claims")
    if not encoded:
        return None
    try:
        claims = json.loads(b64url_decode(encoded))
    except RecursionError:  # nested too deeply: no claims request of Entra's looks like that
        return None
    except (JWTError, ValueError, UnicodeDecodeError):
        try:
            claims = json.loads(encoded)  # some servers send it as plain JSON
        except (ValueError, RecursionError):
            return None
    if not isinstance(claims, dict):
        return None
    merged: dict[str, Any] = {**claims}
    access = merged.get("access_token")
    merged["access_token"] = {**(access if isinstance(access, dict) else {}),
                              **CLIENT_CAPABILITIES["access_token"]}
    return json.dumps(merged, separators=(",", ":"))


def _origin(url: str) -> str:
    """``scheme://netloc`` of a prepared URL, by slicing (no parsing on the hot path). requests
    always gives a path (``https://host/?q``), so the netloc ends at the first slash."""
    end = url.find("/", url.find("://") + 3)
    return url if end < 0 else url[:end]


def _requests_proxy(url: str) -> bool:
    """Would ``requests`` send ``url`` through a proxy from the environment? Its own rules:
    ``get_environ_proxies`` (``NO_PROXY`` included) and ``select_proxy``, as ``Session.request``
    applies them with ``trust_env`` (the default)."""
    from requests.utils import get_environ_proxies, select_proxy

    return bool(select_proxy(url, get_environ_proxies(url)))


def _httpx_proxy(scheme: str, host: str) -> bool:
    """Would an ``httpx`` client with ``trust_env`` (the default) send a request to
    ``scheme://host`` through a proxy from the environment? Erring towards yes: ``NO_PROXY``
    exempts the host only with ``*`` or the host itself (``127.0.0.1``, ``localhost``, ``::1``),
    which httpx honours too."""
    proxies = getproxies()
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    exempt = {entry.strip().lower() for entry in proxies.get("no", "").split(",")}
    return "*" not in exempt and host not in exempt


_PROXY_WHY = ("plain http to loopback is exempt from https only because it stays on this "
              "machine, but the environment sends it through a proxy (HTTP_PROXY or ALL_PROXY); "
              "add the host to NO_PROXY")


def may_carry(binding: Binding, scheme: str, host: str, proxied: Callable[[], bool],
              proxy_why: str = _PROXY_WHY) -> bool:
    """Whether a request to ``scheme://host`` gets the token (httpx and aiohttp; requests keeps
    its verdicts per origin): an allowed host, and for plain http (loopback) no proxy on the
    way, ``proxied()`` being asked only then. A request without it is logged once."""
    if binding.hosts.allows(scheme, host):
        if scheme != "http" or not proxied():
            return True
        why: Optional[str] = proxy_why
    else:
        why = binding.hosts.refusal(scheme, host)
    _no_token(binding, scheme, host, why)
    return False


def _no_token(binding: Binding, scheme: str, host: str, why: Optional[str]) -> None:
    """Say once per profile and host, at DEBUG, why a request went without the token (host and
    profile name only: the rest of a URL may hold a secret)."""
    if binding.hosts.first_time(scheme, host, why or ""):
        log.debug("profile %r: no token for %s host %r: %s", binding.profile.name, scheme, host,
                  why or "not allowed")


def _httpx_replayable(request: httpx.Request) -> bool:
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        return True
    # Multipart bodies re-render from their fields; httpx rewinds seekable files itself.
    if type(stream).__name__ == "MultipartStream":
        files = getattr(stream, "fields", ())
        return all(
            not hasattr(f, "file") or hasattr(getattr(f, "file", None), "seek") for f in files
        )
    return False


def _rejected(request: httpx.Request, response: httpx.Response, entry: CachedToken) -> bool:
    """Was our token refused? A 401 to the request that carried it — not to a redirect target
    that never saw it — whose body can be sent again."""
    return (
        response.status_code == 401
        and response.request.headers.get("authorization") == entry.header
        and _httpx_replayable(request)
    )


def _require_hosts(profile: Profile, scope_given: bool) -> None:
    """Refuse to attach a token whose scope names no host when ``allowed_hosts`` is not set
    (``get_token`` and the CLI send the token nowhere, so config.py lets such a profile load)."""
    if profile.allowed_hosts is None and not profile.hosts.patterns:
        origin = " (from the scope= argument)" if scope_given else ""
        raise profile.config_error(
            f"scope {' '.join(profile.scopes)!r} names no host the token may be sent to: set "
            'allowed_hosts to the hosts of the API, like allowed_hosts = ["api.example.com"]'
            + origin,
            key="scope",
        )


class EntraAuth(httpx.Auth):
    """Attach a profile's Entra ID token to requests, with ``requests``, ``httpx`` or aiohttp.

    >>> session.auth = EntraAuth("prod-graph")               # requests
    >>> httpx.Client(auth=EntraAuth("prod-graph"))          # httpx, sync
    >>> httpx.AsyncClient(auth=EntraAuth("prod-graph"))     # httpx, async
    >>> aiohttp.ClientSession(middlewares=(EntraAuth("prod-graph"),))  # aiohttp 3.12+

    ``profile`` defaults to ``$AUTHLAYER_PROFILE``; ``config`` is the profiles file;
    ``scope`` and ``tenant`` override the profile's; ``user_assertion`` is the incoming token for
    flow ``on_behalf_of``; ``prompt`` shows sign-in instructions (device code, browser) instead of
    standard error. Constructing it does no I/O: the profile is read on the first request.
    The token goes only to the profile's allowed hosts, over https (or http to loopback, unless
    the environment would send that through a proxy); other requests pass untouched.

    A pickled ``EntraAuth`` holds only its constructor's arguments, never a secret or a token:
    the profile is read again where it is unpickled. One with a ``user_assertion`` (a token)
    cannot be pickled.
    """

    def __init__(
        self,
        profile: Optional[str] = None,
        *,
        config: PathArg = None,
        scope: ScopeArg = None,
        tenant: Optional[str] = None,
        user_assertion: Optional[str] = None,
        prompt: Optional[Callable[[str], None]] = None,
    ) -> None:
        self._args = (profile, config, scope, tenant)
        self._user_assertion = user_assertion
        self._prompt = prompt
        self._binding: Optional[Binding] = None
        self._origins: dict[str, bool] = {}

    def __repr__(self) -> str:
        profile, _config, scope, tenant = self._args
        extra = "".join(
            f", {name}={value!r}" for name, value in (("scope", scope), ("tenant", tenant))
            if value is not None
        )
        return f"EntraAuth({profile!r}{extra})"

    def __getstate__(self) -> dict[str, Any]:
        if self._user_assertion is not None:
            raise ConfigError(
                "an EntraAuth with a user_assertion cannot be pickled: the assertion is a token; "
                "pass it to the other process yourself and build the EntraAuth there",
                profile=self._args[0], key="user_assertion",
            )
        return {"args": self._args, "prompt": self._prompt}

    def __setstate__(self, state: dict[str, Any]) -> None:
        profile, config, scope, tenant = state["args"]
        EntraAuth.__init__(self, profile, config=config, scope=scope, tenant=tenant,
                           prompt=state["prompt"])

    def __copy__(self) -> EntraAuth:
        # A copy stays in this process: unlike a pickle, it may keep the user assertion.
        profile, config, scope, tenant = self._args
        return EntraAuth(profile, config=config, scope=scope, tenant=tenant,
                         user_assertion=self._user_assertion, prompt=self._prompt)

    def __deepcopy__(self, memo: dict[int, Any]) -> EntraAuth:
        return self.__copy__()

    @property
    def binding(self) -> Binding:
        """The resolved profile (read on first use)."""
        binding = self._binding
        if binding is None:
            profile, config, scope, tenant = self._args
            binding = PROVIDER.bind(
                profile, config=config, scope=scope, tenant=tenant,
                user_assertion=self._user_assertion,
            )
            _require_hosts(binding.profile, scope is not None)
            self._binding = binding
        return binding

    def _allowed(self, url: str) -> bool:
        origin = _origin(url)
        verdict = self._origins.get(origin)
        if verdict is None:
            split = urlsplit(origin)
            scheme, host = split.scheme, split.hostname or ""
            hosts = self.binding.hosts
            verdict = hosts.allows(scheme, host)
            if not verdict:
                _no_token(self.binding, scheme, host, hosts.refusal(scheme, host))
            if len(self._origins) < 4096:
                self._origins[origin] = verdict
        # Plain http is loopback here; the environment may change, so ask every time.
        if verdict and url.startswith("http:") and _requests_proxy(url):
            _no_token(self.binding, "http", urlsplit(url).hostname or "", _PROXY_WHY)
            return False
        return verdict

    def _httpx_allowed(self, binding: Binding, url: httpx.URL) -> bool:
        scheme, host = url.scheme, url.raw_host.decode("ascii", "replace")
        return may_carry(binding, scheme, host, lambda: _httpx_proxy(scheme, host))

    def _token(self, binding: Binding) -> CachedToken:
        """The cached token if it is not due, else the provider's (a miss, a refresh)."""
        entry = binding.slot.entry
        if entry is None or PROVIDER.clock() >= entry.refresh_on:
            entry = PROVIDER.get(binding, prompt=self._prompt)
        return entry

    # ------------------------------------------------------------------ httpx

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """httpx (sync): attach the token; after a 401, refresh and resend once."""
        binding = self._binding or self.binding
        if not self._httpx_allowed(binding, request.url):
            yield request
            return
        entry = self._token(binding)
        request.headers["Authorization"] = binding.slot.header(entry)
        response = yield request
        if not _rejected(request, response, entry):
            return
        claims = claims_from_challenge(response.headers.get("www-authenticate"))
        response.read()
        entry = PROVIDER.get(binding, after_401(entry, claims), prompt=self._prompt)
        request.headers["Authorization"] = entry.header
        response = yield request
        if claims and response.status_code == 401:  # the claims token was refused in turn
            PROVIDER.forget(binding, Forget.TOKEN, claims=claims, token=entry)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """httpx (async): the same, without ever blocking the event loop."""
        binding = self._binding
        if binding is None:  # first request: read the profile off the event loop
            profile, config, scope, tenant = self._args
            binding = await PROVIDER.bind_async(
                profile, config=config, scope=scope, tenant=tenant,
                user_assertion=self._user_assertion)
            _require_hosts(binding.profile, scope is not None)
            self._binding = binding
        if not self._httpx_allowed(binding, request.url):
            yield request
            return
        entry = binding.slot.entry
        if entry is None or PROVIDER.clock() >= entry.refresh_on:
            entry = await PROVIDER.get_async(binding, prompt=self._prompt)
        request.headers["Authorization"] = binding.slot.header(entry)
        response = yield request
        if not _rejected(request, response, entry):
            return
        claims = claims_from_challenge(response.headers.get("www-authenticate"))
        await response.aread()
        entry = await PROVIDER.get_async(binding, after_401(entry, claims), prompt=self._prompt)
        request.headers["Authorization"] = entry.header
        response = yield request
        if claims and response.status_code == 401:  # the claims token was refused in turn
            PROVIDER.forget(binding, Forget.TOKEN, claims=claims, token=entry)

    # ------------------------------------------------------------------ requests, aiohttp

    @overload
    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest: ...

    @overload
    def __call__(self, r: ClientRequest,
                 handler: ClientHandlerType) -> Awaitable[ClientResponse]: ...

    def __call__(  # type: ignore[misc]  # r is a ClientRequest when handler is given
        self, r: requests.PreparedRequest, handler: Optional[ClientHandlerType] = None
    ) -> Any:
        """requests calls an auth with the request: attach the token and register the 401
        handler. aiohttp calls a client middleware with the request and the next handler: the
        same contract, in authlayer._aiohttp (imported only then)."""
        if handler is not None:
            middleware = _aiohttp_middleware or _load_aiohttp_middleware()
            return middleware(self, r, handler)  # type: ignore[arg-type]
        if not r.url or not self._allowed(r.url):
            return r
        binding = self._binding or self.binding
        entry = self._token(binding)
        r.headers["Authorization"] = binding.slot.header(entry)
        body = r.body
        position: Optional[int] = None
        if body is None or isinstance(body, (bytes, str)):
            replayable = True
        elif hasattr(body, "seek") and hasattr(body, "tell"):
            try:
                position = body.tell()
                replayable = True
            except OSError:
                replayable = False
        else:
            replayable = False  # a generator or a one-shot stream: the 401 goes to the caller
        if replayable:
            # What register_hook does, without its slow isinstance(hook, Callable) check.
            r.hooks["response"].append(_RequestsRetry(self, entry, position))
        return r


_Middleware = Callable[[EntraAuth, "ClientRequest", "ClientHandlerType"],
                      "Awaitable[ClientResponse]"]
_aiohttp_middleware: Optional[_Middleware] = None


def _load_aiohttp_middleware() -> _Middleware:
    """authlayer._aiohttp, imported the first time aiohttp calls an EntraAuth (an import
    statement on every request would cost more than the rest of the middleware)."""
    global _aiohttp_middleware
    from ._aiohttp import middleware

    _aiohttp_middleware = middleware
    return middleware


class _RequestsRetry:
    """The response hook that resends a ``requests`` request once after a 401."""

    __slots__ = ("auth", "entry", "position")

    def __init__(self, auth: EntraAuth, entry: CachedToken, position: Optional[int]) -> None:
        self.auth = auth
        self.entry = entry
        self.position = position

    def __call__(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        if r.status_code != 401:
            return r
        from requests.cookies import extract_cookies_to_jar

        prep = r.request
        # requests copies hooks onto redirected requests: act only on the request that carried
        # our token, and only where the token may go.
        if (getattr(prep, "_authlayer_resent", False)
                or prep.headers.get("Authorization") != self.entry.header
                or not prep.url or not self.auth._allowed(prep.url)):
            return r
        if self.position is not None:
            body: Union[Any, None] = prep.body
            try:
                body.seek(self.position)  # type: ignore[union-attr]
            except (AttributeError, OSError):
                return r
        claims = claims_from_challenge(r.headers.get("www-authenticate"))
        # Consume and release the first answer so its connection can be reused.
        _ = r.content
        r.close()
        entry = PROVIDER.get(self.auth.binding, after_401(self.entry, claims),
                             prompt=self.auth._prompt)
        again = prep.copy()
        again._authlayer_resent = True  # type: ignore[attr-defined,unused-ignore]
        jar = again._cookies  # type: ignore[attr-defined]
        extract_cookies_to_jar(jar, r.request, r.raw)  # type: ignore[no-untyped-call]
        again.prepare_cookies(jar)
        again.headers["Authorization"] = entry.header
        second = r.connection.send(again, **kwargs)  # type: ignore[attr-defined,unused-ignore]
        if claims and second.status_code == 401:  # the claims token was refused in turn
            binding = self.auth.binding
            PROVIDER.forget(binding, Forget.TOKEN, claims=claims, token=entry)
        second.history.append(r)
        second.request = again
        return second  # type: ignore[no-any-return,unused-ignore]
