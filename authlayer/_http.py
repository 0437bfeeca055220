"""The one place that talks to the identity service: transport, not OAuth.

Three layers, from pure to I/O:

1. Values: :class:`HttpRequest`, :class:`HttpResponse`, :class:`ConnectionFailed`. The
   actions a flow yields (:class:`Send`, :class:`Sleep`, :class:`Call`, :func:`call`) and the
   two drivers (:func:`run_sync`, :func:`run_async`) live in :mod:`authlayer._actions`, which
   a token served from a cache needs without this module; they are importable from here too.
2. Sans-I/O retry policy: :func:`send` (bounded retries of 429, 5xx and dropped connections,
   honouring ``Retry-After``; no retry of other 4xx). What an answer means (a token, Entra's
   error) is :mod:`authlayer.oauth`'s business.
3. One attempt, for the drivers: :func:`new_client` (``httpx.Client`` /
   ``httpx.AsyncClient``), :func:`exchange_sync` and :func:`exchange_async`. Each attempt has
   a deadline (the request's ``timeout``) for the whole exchange, however slowly the server
   trickles bytes, and its answer is read incrementally up to :data:`MAX_BODY`. Clients honour
   ``HTTPS_PROXY``/``NO_PROXY`` (httpx's ``trust_env``), except for loopback hosts, and the
   CA-bundle variables ``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``, ``SSL_CERT_DIR`` and
   ``CURL_CA_BUNDLE``.

Nothing else in authlayer sends HTTP to Entra or to a managed identity endpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Union
from urllib.parse import urlsplit

from ._actions import Action, Call, Flow, Send, Sleep, call, run_async, run_sync
from ._log import log
from ._version import __version__
from .errors import TokenError, redact
from .hosts import is_loopback

if TYPE_CHECKING:  # imported where used: a token served from a cache needs none of them
    import socket
    import ssl

__all__ = [
    "Action",
    "Call",
    "ConnectionFailed",
    "Flow",
    "HttpRequest",
    "HttpResponse",
    "Send",
    "Sleep",
    "call",
    "exchange_async",
    "exchange_sync",
    "new_client",
    "retry_after",
    "run_async",
    "run_sync",
    "send",
]



RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_ATTEMPTS = 4
BACKOFF_BASE = 0.5  # seconds; doubled per attempt, with jitter
# The waits between the attempts of one request add up to at most this: a Retry-After that would
# go beyond is not waited for, the answer goes to the caller. With MAX_ATTEMPTS attempts of at most
# `timeout` each, one request takes at most MAX_ATTEMPTS * timeout + MAX_RETRY_AFTER seconds.
MAX_RETRY_AFTER = 60.0
# An answer larger than this is not a token (Entra's are a few kB): refused, never read whole.
MAX_BODY = 1024 * 1024
USER_AGENT = f"authlayer/{__version__}"


@dataclass(frozen=True)
class HttpRequest:
    """One request to the identity service (or a managed identity endpoint).

    ``form`` is sent as ``application/x-www-form-urlencoded``. ``what`` names the request in
    errors and logs ("token request", "device code request", ...).
    """

    method: str
    url: str
    form: Optional[Mapping[str, str]] = field(default=None, repr=False)
    params: Optional[Mapping[str, str]] = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float = 30.0
    retry_statuses: frozenset[int] = RETRY_STATUSES
    max_attempts: int = MAX_ATTEMPTS
    max_retry_after: float = MAX_RETRY_AFTER
    what: str = "token request"
    proxy: bool = True
    """False: never through a proxy (managed identity endpoints: a proxy must not see their
    secret header, and could not reach a link-local or loopback address anyway). A loopback
    host never goes through a proxy either way (see :attr:`via_proxy`)."""
    pin: Optional[str] = None
    """The SHA-1 thumbprint (40 lower-case hex digits) of the one server certificate to trust,
    whoever signed it (Service Fabric's ``IDENTITY_SERVER_THUMBPRINT``); ``None``: the CA bundle
    decides, as usual."""

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def via_proxy(self) -> bool:
        """Whether the environment's proxy may carry this request: never to a loopback host,
        where plain http is allowed only because the traffic stays on this machine."""
        return self.proxy and not is_loopback(urlsplit(self.url).hostname or "")


@dataclass(frozen=True)
class HttpResponse:
    """An answer: status, headers (names lower-cased) and the body's bytes."""

    status: int
    headers: Mapping[str, str]
    content: bytes = field(repr=False)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def json_object(self) -> Optional[dict[str, Any]]:
        """The body as a JSON object, or ``None`` when it is anything else."""
        try:
            value = json.loads(self.content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting: not ours
            return None
        return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class ConnectionFailed:
    """What the driver sends back when no usable answer came.

    ``kind`` says what happened: ``"connect"`` (refused, or no connection within the timeout),
    ``"timeout"`` (connected, but no complete answer in time), ``"dropped"`` (the connection
    broke), ``"tls"`` (the server's certificate is not trusted), ``"invalid"`` (a URL or answer
    that cannot work, an answer over :data:`MAX_BODY`). ``retry`` is false when trying again
    cannot help.
    """

    reason: str
    retry: bool = True
    kind: str = "dropped"


# --------------------------------------------------------------------------- retry policy


def retry_after(response: HttpResponse) -> Optional[float]:
    """Seconds the answer asks us to wait (``Retry-After``: seconds or an HTTP date;
    ``x-ms-retry-after-ms``), or ``None``."""
    value = response.headers.get("retry-after") or response.headers.get("x-ms-retry-after-ms")
    if not value:
        return None
    if "x-ms-retry-after-ms" in response.headers and "retry-after" not in response.headers:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` when the service gave no Retry-After."""
    import random

    return float(BACKOFF_BASE * (2 ** (attempt - 1)) * random.uniform(0.75, 1.25))  # noqa: S311


def send(
    request: Union[HttpRequest, Callable[[], Flow[HttpRequest]]],
    *,
    profile: Optional[str] = None,
) -> Flow[HttpResponse]:
    """Send ``request`` with bounded retries; return the final answer.

    ``request`` may be a function returning a flow that builds the request: it is called for
    every attempt, so that a client assertion is made anew (with a fresh ``jti``) each time.
    429 and the 5xx in ``request.retry_statuses`` and dropped connections are retried up to
    ``request.max_attempts`` attempts in all, waiting ``Retry-After`` when given or an exponential
    backoff; the waits add up to at most ``request.max_retry_after`` (a Retry-After that would go
    beyond is not waited for: that answer is returned). Other answers return at once. When no
    attempt got an answer, raises :class:`TokenError`.
    """
    build = None if isinstance(request, HttpRequest) else request
    attempt = 0
    waited = 0.0
    while True:
        attempt += 1
        if build is not None:
            request = yield from build()
        assert isinstance(request, HttpRequest)
        result = yield Send(request)
        if isinstance(result, ConnectionFailed):
            if attempt >= request.max_attempts or not result.retry:
                raise TokenError(
                    f"{request.what} to {request.host} failed"
                    + (f" after {attempt} attempts" if attempt > 1 else "")
                    + f": {result.reason}",
                    profile=profile,
                    error="connection_failed",
                )
            delay = backoff(attempt)
            waited += delay
            log.info("%s to %s: %s; retrying in %.1f s", request.what, request.host,
                     result.reason, delay)
            yield Sleep(delay, f"{request.what} to {request.host}: {result.reason}; "
                               f"retrying in {delay:.1f} s")
            continue
        if result.status not in request.retry_statuses or attempt >= request.max_attempts:
            return result  # type: ignore[no-any-return]
        wait = retry_after(result)
        if wait is None:
            wait = backoff(attempt)
        if waited + wait > request.max_retry_after:
            return result  # type: ignore[no-any-return]
        waited += wait
        log.info("%s to %s: HTTP %d; retrying in %.1f s", request.what, request.host,
                 result.status, wait)
        yield Sleep(wait, f"{request.what} to {request.host}: HTTP {result.status}; "
                          f"retrying in {wait:.1f} s")


# --------------------------------------------------------------------------- drivers

_ssl_lock = threading.Lock()
_ssl_cache: dict[tuple[Optional[str], ...], ssl.SSLContext] = {}
# The CA-file variables, in the order they are honoured (requests' order: the first set wins).
CA_FILE_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")


@dataclass(frozen=True)
class CaBundle:
    """The CA certificates the identity-service client trusts, and where that choice came from:
    ``variable`` is the environment variable that named ``cafile`` (``None``: certifi's bundle,
    or ``SSL_CERT_DIR`` alone), ``ignored`` the CA-file variables also set but not used."""

    cafile: Optional[str]
    capath: Optional[str]
    variable: Optional[str]
    ignored: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls) -> CaBundle:
        env = os.environ
        chosen = [name for name in CA_FILE_VARIABLES if env.get(name)]
        variable = chosen[0] if chosen else None
        return cls(env[variable] if variable else None, env.get("SSL_CERT_DIR") or None,
                   variable, tuple(chosen[1:]))

    def describe(self) -> str:
        """Which bundle is used and why, for error messages: names paths, never contents."""
        parts = []
        if self.variable is not None:
            text = f"{self.cafile} (from {self.variable}"
            if self.ignored:
                text += f", which wins over {' and '.join(self.ignored)}"
            parts.append(text + ")")
        if self.capath is not None:
            parts.append(f"the folder {self.capath} (from SSL_CERT_DIR)")
        if not parts:
            import certifi

            parts.append(f"certifi's bundle {certifi.where()} (no CA variable is set)")
        return " and ".join(parts)


def ssl_context() -> ssl.SSLContext:
    """The TLS context for the identity service, honouring the usual CA-bundle variables.

    ``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE`` or ``CURL_CA_BUNDLE`` (the first set) names a CA
    file, ``SSL_CERT_DIR`` a CA folder; otherwise certifi's bundle, like httpx and requests.
    """
    bundle = CaBundle.from_environment()
    key = (bundle.cafile, bundle.capath)
    with _ssl_lock:
        ctx = _ssl_cache.get(key)
        if ctx is None:
            import ssl

            cafile = bundle.cafile
            if cafile is None and bundle.capath is None:
                import certifi

                cafile = certifi.where()
            try:
                ctx = ssl.create_default_context(cafile=cafile, capath=bundle.capath)
            except (OSError, ssl.SSLError) as exc:
                raise TokenError(
                    f"cannot load the CA bundle {bundle.describe()}: {exc}") from None
            _ssl_cache[key] = ctx
        return ctx


class PinMismatch(Exception):
    """Raised in the TLS handshake when the server's certificate is not the pinned one (an
    ``ssl.SSLError`` subclass is made from it where ``ssl`` is imported)."""


_pinned_cache: dict[str, ssl.SSLContext] = {}


def pinned_context(thumbprint: str) -> ssl.SSLContext:
    """A TLS context that trusts exactly the server certificate whose SHA-1 thumbprint is
    ``thumbprint``, and nothing else, whatever CA signed it (Service Fabric's cluster
    certificate is self-signed). The check runs when the handshake completes, before a byte of
    the request is sent, for blocking sockets and for asyncio's and trio's TLS objects alike."""
    with _ssl_lock:
        ctx = _pinned_cache.get(thumbprint)
        if ctx is not None:
            return ctx
        import hashlib
        import hmac
        import ssl

        class Mismatch(ssl.SSLError, PinMismatch):
            pass

        def check(tls: Any) -> None:
            der = tls.getpeercert(binary_form=True) or b""
            seen = hashlib.sha1(der).hexdigest()  # noqa: S324 - a thumbprint, as pinned
            if not hmac.compare_digest(seen, thumbprint):
                raise Mismatch(f"the server's certificate has thumbprint {seen}, not the "
                               f"pinned {thumbprint}")

        class PinnedSocket(ssl.SSLSocket):
            def do_handshake(self, *args: Any, **kwargs: Any) -> None:
                super().do_handshake(*args, **kwargs)
                check(self)

        class PinnedObject(ssl.SSLObject):
            def do_handshake(self) -> None:
                super().do_handshake()
                check(self)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the pin is the whole trust
        ctx.sslsocket_class = PinnedSocket
        ctx.sslobject_class = PinnedObject
        _pinned_cache[thumbprint] = ctx
        return ctx


def _headers(request: HttpRequest) -> dict[str, str]:
    import uuid

    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
        "client-request-id": str(uuid.uuid4()),
    }
    headers.update(request.headers)
    return headers


def _timed_out(req: HttpRequest, connected: bool) -> ConnectionFailed:
    """The failure of an attempt that reached its deadline."""
    if not connected:
        return ConnectionFailed(f"no connection within timeout = {req.timeout:g} s",
                                kind="connect")
    return ConnectionFailed(
        f"timed out: no complete answer within timeout = {req.timeout:g} s", kind="timeout")


def _failure(exc: Exception, req: HttpRequest) -> ConnectionFailed:
    """What an httpx exception means for the retry policy."""
    import ssl

    import httpx

    text = str(exc) or type(exc).__name__
    reason = f"{type(exc).__name__}: {redact(text)}"
    cause: Optional[BaseException] = exc
    while cause is not None:
        if isinstance(cause, PinMismatch):
            return ConnectionFailed(f"{cause.args[0]} (a man in the middle, or the wrong "
                                    "thumbprint)", retry=False, kind="tls")
        if isinstance(cause, ssl.SSLCertVerificationError):
            bundle = CaBundle.from_environment()
            fix = bundle.variable or "SSL_CERT_FILE or REQUESTS_CA_BUNDLE"
            return ConnectionFailed(
                f"the server's TLS certificate is not trusted ({redact(text)}) by the CA "
                f"bundle in use, {bundle.describe()}; set {fix} to a CA bundle that includes "
                "its issuer",
                retry=False, kind="tls",
            )
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return ConnectionFailed(reason, kind="connect")
    if isinstance(exc, httpx.TimeoutException):
        return _timed_out(req, connected=True)
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.DecodingError, httpx.InvalidURL)):
        return ConnectionFailed(reason, retry=False, kind="invalid")
    return ConnectionFailed(reason)


class _Body:
    """An answer's body, collected chunk by chunk up to :data:`MAX_BODY`."""

    def __init__(self, req: HttpRequest, headers: Any) -> None:
        self.req = req
        self.chunks: list[bytes] = []
        self.size = 0
        declared = headers.get("content-length", "")
        self.too_large = declared.isdigit() and int(declared) > MAX_BODY

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk``; false once the body is over the limit (stop reading then)."""
        self.size += len(chunk)
        self.too_large = self.too_large or self.size > MAX_BODY
        if not self.too_large:
            self.chunks.append(chunk)
        return not self.too_large

    def failure(self) -> ConnectionFailed:
        return ConnectionFailed(
            f"the answer is larger than {MAX_BODY // 1024} kB, which no token answer is "
            "(not read further)", retry=False, kind="invalid")

    def answer(self, r: Any, started: float) -> HttpResponse:
        response = HttpResponse(r.status_code, {k.lower(): v for k, v in r.headers.items()},
                                b"".join(self.chunks))
        log.debug("%s %s -> HTTP %d in %.0f ms", self.req.method, self.req.host,
                  response.status, (time.perf_counter() - started) * 1000)
        return response


class _Watchdog:
    """The deadline of one blocking attempt.

    httpx's timeouts bound each read and write, not the exchange: a server trickling one byte
    at a time keeps a blocking request going for ever. When ``seconds`` pass before
    :meth:`stop`, a timer shuts the connection's socket down, which ends whatever read or write
    is blocked on it. The socket is learnt from httpcore's ``trace`` extension.
    """

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._done = False
        self.connected = False
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def trace(self, name: str, info: Mapping[str, Any]) -> None:
        if not name.endswith((".connect_tcp.complete", ".start_tls.complete")):
            return
        import socket  # here, not at import: a token served from a cache opens no socket

        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            self.connected = True
            if isinstance(sock, socket.socket):
                self._sockets.append(sock)
                if self.fired:
                    _shut_down(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            for sock in self._sockets:
                _shut_down(sock)

    def stop(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def _shut_down(sock: socket.socket) -> None:
    # socket.socket's own shutdown, not SSLSocket's (which also drops its TLS state under the
    # reading thread's feet); a socket that is closed already raises OSError.
    import socket

    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _build(client: Any, req: HttpRequest, trace: Callable[..., Any]) -> Any:
    """The httpx request for ``req`` (the same for the blocking and the async client)."""
    return client.build_request(req.method, req.url, data=req.form, params=req.params,
                                headers=_headers(req), timeout=req.timeout,
                                extensions={"trace": trace})


def new_client(asynchronous: bool, proxy: bool, pin: Optional[str] = None) -> Any:
    """An ``httpx.Client`` (``httpx.AsyncClient`` if ``asynchronous``). With ``proxy``
    false, proxies from the environment are ignored (CA bundles still apply: ``verify`` is ours).
    With ``pin``, only the server certificate of that thumbprint is trusted.
    """
    import httpx  # only now: a flow served from a cache sends nothing

    cls = httpx.AsyncClient if asynchronous else httpx.Client
    return cls(verify=ssl_context() if pin is None else pinned_context(pin), trust_env=proxy)


def exchange_sync(client: Any, req: HttpRequest) -> Union[HttpResponse, ConnectionFailed]:
    """One attempt with blocking I/O, within ``req.timeout`` in all."""
    import httpx

    watchdog = _Watchdog(req.timeout)
    started = time.perf_counter()
    try:
        request = _build(client, req, watchdog.trace)
        watchdog.start()
        r = client.send(request, stream=True)
        try:
            body = _Body(req, r.headers)
            if not body.too_large:
                for chunk in r.iter_bytes():
                    if not body.add(chunk):
                        break
        finally:
            r.close()  # before the whole body came: closes the connection
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return _timed_out(req, watchdog.connected) if watchdog.fired else _failure(exc, req)
    finally:
        watchdog.stop()
    if watchdog.fired:  # even if something came: it may be cut short
        return _timed_out(req, watchdog.connected)
    return body.failure() if body.too_large else body.answer(r, started)


async def exchange_async(client: Any, req: HttpRequest) -> Union[HttpResponse, ConnectionFailed]:
    """One attempt without blocking the event loop, within ``req.timeout`` in all."""
    import anyio
    import httpx

    connected = False

    async def trace(name: str, info: Mapping[str, Any]) -> None:
        nonlocal connected
        connected = connected or name.endswith(".connect_tcp.complete")

    started = time.perf_counter()
    try:
        with anyio.fail_after(req.timeout):
            r = await client.send(_build(client, req, trace), stream=True)
            try:
                body = _Body(req, r.headers)
                if not body.too_large:
                    async for chunk in r.aiter_bytes():
                        if not body.add(chunk):
                            break
            finally:
                await r.aclose()
    except TimeoutError:
        return _timed_out(req, connected)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return _failure(exc, req)
    return body.failure() if body.too_large else body.answer(r, started)
