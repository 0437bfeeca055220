"""The emulator as a running HTTP server: :class:`Emulator`, the object tests and the CLI use.

:class:`Emulator` owns the :class:`~authlayer.emulator.state.State` (tenants, apps, keys, tokens),
the pending faults and the request log, and runs a threaded HTTP/1.1 server on loopback in a
background thread (plain HTTP, or HTTPS with a throwaway CA). Each connection gets a thread; a
request is read in full (``Content-Length`` or chunked), recorded, held, delayed and spoiled
as the holds and pending faults say, and handed to the handler the routing table names.
Handlers are plain functions of ``(emulator, Request) -> Response`` registered in
``routes.py``/``grants.py``; this module is the only one that touches sockets. ``stop()``
closes the listener and every open connection, abandons every hold and joins every thread it
started.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import selectors
import shutil
import socket
import socketserver
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union
from urllib.parse import parse_qsl, urlsplit

from ..hosts import is_loopback
from .faults import FAULT_KINDS, Fault, FaultQueue, Hold, mangle, short_circuit
from .routes import ROUTES, Handler, Route, RouteTable
from .state import App, State, User
from .tls import make_tls_files, server_context
from .wire import (
    EntraError,
    Headers,
    Request,
    RequestRecord,
    Response,
    entra_error_response,
    json_response,
    text_response,
)

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

__all__ = ["ENDPOINTS", "Emulator"]

logger = logging.getLogger("authlayer.emulator")

# Endpoint names fault injection and counters know even before a module serves them.
ENDPOINTS = frozenset(
    {"any", "token", "devicecode", "authorize", "api", "imds", "openid", "keys", "unknown"}
)

_MAX_BODY = 64 * 1024 * 1024
_FORM = "application/x-www-form-urlencoded"


T = TypeVar("T")

class _BadRequest(Exception):
    pass


def _first_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


class _Server(socketserver.TCPServer):
    """A TCP server with one daemon thread per connection that it can close and join."""

    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        emulator: Emulator,
        ssl_context: Optional[ssl.SSLContext],
        family: socket.AddressFamily,
    ) -> None:
        self.address_family = family
        self.emulator = emulator
        self.ssl_context = ssl_context
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._conns: set[socket.socket] = set()
        self._closing = False
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            super().__init__(address, _Handler)
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise

    def serve(self) -> None:
        """Accept connections until :meth:`wake` is called (no polling: stop is immediate)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._closing:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r or self._closing:
                        return
                    try:
                        request, client_address = self.get_request()
                    except OSError:
                        continue
                    self.process_request(request, client_address)

    def wake(self) -> None:
        """Make :meth:`serve` return."""
        with self._lock:
            self._closing = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="authlayer-emulator-connection",
            daemon=True,
        )
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        conn = request
        try:
            if self.ssl_context is not None:
                request.settimeout(10)
                conn = self.ssl_context.wrap_socket(request, server_side=True)
                conn.settimeout(None)
            with self._lock:
                if self._closing:
                    return
                self._conns.add(conn)
            self.finish_request(conn, client_address)
        except OSError as exc:  # the client went away, or its TLS handshake failed
            logger.debug("emulator connection ended: %s", exc)
        except Exception:
            logger.exception("emulator connection failed")
        finally:
            with self._lock:
                self._conns.discard(conn)
            self.shutdown_request(conn)
            with self._lock:  # last: until then close_all() must wait for this thread
                self._threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("emulator request failed", exc_info=True)

    def close_all(self, timeout: float = 5.0) -> None:
        """Close every open connection and wait for the connection threads."""
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(http.server.BaseHTTPRequestHandler):
    """Reads one request at a time from a keep-alive connection and writes the answer."""

    protocol_version = "HTTP/1.1"
    server_version = "authlayer-emulator"
    sys_version = ""
    timeout = 120  # an idle keep-alive connection is closed after this
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s", self.address_string(), format % args)

    def _serve(self) -> None:
        emulator = self.server.emulator
        try:
            body = self._read_body()
        except _BadRequest as exc:
            self.close_connection = True
            self._write(text_response(str(exc), status=400))
            return
        response = emulator._dispatch(self.command, self.path, self.headers.items(), body)
        if response is None:  # an injected "drop"
            self.close_connection = True
            return
        self._write(response)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _BadRequest("bad Content-Length") from None
        if length < 0 or length > _MAX_BODY:
            raise _BadRequest("bad Content-Length")
        data = self.rfile.read(length) if length else b""
        if len(data) != length:
            raise _BadRequest("the body ended early")
        return data

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest("bad chunk size") from None
            if size == 0:
                while True:  # trailers, up to the empty line
                    trailer = self.rfile.readline(65537)
                    if trailer in (b"\r\n", b"\n", b""):
                        return b"".join(parts)
            total += size
            if size < 0 or total > _MAX_BODY:
                raise _BadRequest("the body is too large")
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise _BadRequest("the body ended early")
            parts.append(chunk)
            self.rfile.readline(3)  # the CRLF after the chunk

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)


class Emulator:
    """A local Entra ID: token endpoint, discovery, a protected API, faults and counters.

    ::

        with Emulator() as emu:
            app = emu.register_app()
            httpx.post(f"{emu.url}/{emu.tenant_id}/oauth2/v2.0/token", data={
                "grant_type": "client_credentials", "client_id": app.client_id,
                "client_secret": app.secret, "scope": emu.api_scope})

    ``host`` must be a loopback address; ``port=0`` picks a free port. With ``tls=True`` the
    server speaks HTTPS with a certificate from a throwaway CA (``ca_file``). ``tenant_id``
    fixes the default tenant's GUID (random otherwise). ``signing_key`` (an RSA private key)
    signs the access tokens; by default a key shared by the emulators of this process.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        *,
        tenant_id: Optional[str] = None,
        tenant_domain: str = "contoso.onmicrosoft.com",
        signing_key: Optional[RSAPrivateKey] = None,
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"the emulator listens on loopback only, not on {host!r}")
        self.host = host
        self.tls = tls
        self.latency = 0.0
        """Seconds added before every answer."""
        self.max_requests: Optional[int] = None
        """Keep at most this many request records (the oldest go first); ``None``: all."""
        self.state = State(
            tenant_id=tenant_id, tenant_domain=tenant_domain, signing_key=signing_key
        )
        self.routes = RouteTable()
        """Routes of this emulator only; they are tried before the global ones."""
        self._port = port
        self._faults = FaultQueue()
        self._holds: list[Hold] = []
        self._holds_lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._tmpdir: Optional[str] = None
        self._ca_file: Optional[str] = None
        self._started = False
        self._extensions: dict[str, Any] = {}
        self._extensions_lock = threading.Lock()

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Listen and serve in a background thread. An emulator starts only once."""
        if self._started:
            if self._server is None:
                raise RuntimeError("this emulator was stopped; create a new one")
            return self
        context = None
        try:
            if self.tls:
                self._tmpdir = tempfile.mkdtemp(prefix="authlayer-emulator-")
                files = make_tls_files(Path(self._tmpdir))
                self._ca_file = str(files.ca_file)
                context = server_context(files)
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self._server = _Server((self.host.strip("[]"), self._port), self, context, family)
        except BaseException:
            self._remove_tmpdir()
            self._ca_file = None
            raise
        self._started = True
        self._port = int(self._server.server_address[1])
        self.state.base_url = self.url
        self._thread = threading.Thread(
            target=self._server.serve,
            name="authlayer-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: close the listener and every connection, join every thread, remove
        the TLS files. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        self._abandon_holds()
        server.wake()
        if self._thread is not None:
            self._thread.join(5)
        server.server_close()
        server.close_all()
        self._remove_tmpdir()

    def _remove_tmpdir(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port else "not started"
        return f"<Emulator {where}>"

    # --- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:PORT``: a profile's ``authority``."""
        if not self._port:
            raise RuntimeError("start the emulator first: its port is not known yet")
        host = self.host.strip("[]")
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self._port}"

    @property
    def authority(self) -> str:
        """Same as :attr:`url`."""
        return self.url

    @property
    def ca_file(self) -> Optional[str]:
        """Path of the PEM CA certificate that signed the server's (``tls=True``), else None."""
        return self._ca_file

    @property
    def tenant_id(self) -> str:
        return self.state.default_tenant_id

    @property
    def tenant_domain(self) -> str:
        return self.state.default_domain

    @property
    def api_resource(self) -> str:
        """The protected API's resource id (the ``aud`` of its tokens): ``{url}/api``."""
        return f"{self.url}/api"

    @property
    def api_url(self) -> str:
        """Base URL of the protected API (same as :attr:`api_resource`)."""
        return self.api_resource

    @property
    def api_scope(self) -> str:
        return f"{self.api_resource}/.default"

    def token_url(self, tenant: Optional[str] = None) -> str:
        """The token endpoint for a tenant (GUID, domain or special name; default tenant)."""
        return f"{self.url}/{tenant or self.tenant_id}/oauth2/v2.0/token"

    @property
    def public_key(self) -> RSAPublicKey:
        """The RSA public key that signs access tokens."""
        return self.state.public_key

    # --- directory -------------------------------------------------------------------------

    def add_tenant(self, domain: Optional[str] = None) -> str:
        """A new tenant; returns its GUID. ``domain`` also names it in URLs."""
        return self.state.add_tenant(domain)

    def register_app(
        self,
        client_id: Optional[str] = None,
        *,
        secret: Optional[str] = None,
        certificate: Union[bytes, str, x509.Certificate, None] = None,
        public: bool = False,
        roles: Sequence[str] = ("Data.Read",),
        tenants: Optional[Sequence[str]] = None,
        federated: Sequence[Mapping[str, Any]] = (),
    ) -> App:
        """Register an application and return it.

        ``client_id`` is a random GUID unless given. A confidential app given neither
        ``secret`` nor ``certificate`` nor ``federated`` gets a random secret (``app.secret``).
        ``certificate`` (PEM bytes or an object): assertions signed by its key are accepted.
        ``tenants`` (ids or domains) limits where the app is consented; ``None`` means all.
        ``federated`` entries are ``{"issuer", "subject", "audience"}`` dicts.
        """
        return self.state.register_app(
            client_id,
            secret=secret,
            certificate=certificate,
            public=public,
            roles=roles,
            tenants=tenants,
            federated=federated,
        )

    def app(self, client_id: str) -> Optional[App]:
        """The current registration of an app, or ``None``."""
        return self.state.app(client_id)

    def expire_secret(self, client_id: str) -> None:
        """From now on the app's secret is answered with AADSTS7000222 (expired)."""
        self.state.update_app(client_id, secret_expired=True)

    def add_certificate(
        self, client_id: str, certificate: Union[bytes, str, x509.Certificate]
    ) -> None:
        """Register one more certificate on an app (certificate roll-over)."""
        from .state import load_certificate

        app = self.state.app(client_id)
        if app is None:
            raise KeyError(f"no app {client_id!r} is registered")
        certs = (*app.certificates, load_certificate(certificate))
        self.state.update_app(client_id, certificates=certs)

    def add_user(
        self, username: str, password: Optional[str] = None, *, tenant: Optional[str] = None
    ) -> User:
        """Add a person (for the grants that sign someone in)."""
        return self.state.add_user(username, password, tenant=tenant)

    # --- tokens ----------------------------------------------------------------------------

    @property
    def token_lifetime(self) -> int:
        """Seconds: ``expires_in`` of the access tokens issued from now on."""
        return self.state.token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, value: int) -> None:
        self.state.token_lifetime = int(value)

    @property
    def refresh_in(self) -> Optional[int]:
        """When set, token answers carry ``refresh_in`` with this value."""
        return self.state.refresh_in

    @refresh_in.setter
    def refresh_in(self, value: Optional[int]) -> None:
        self.state.refresh_in = None if value is None else int(value)

    def issue_token(
        self,
        client_id: Optional[str] = None,
        *,
        resource: Optional[str] = None,
        tenant: Optional[str] = None,
        lifetime: Optional[int] = None,
        roles: Optional[Sequence[str]] = None,
        claims: Optional[Mapping[str, Any]] = None,
    ) -> str:
        """Mint an access token directly (no request), for tests: for the protected API unless
        ``resource`` says otherwise; ``lifetime`` may be negative for an expired token."""
        app = self.state.app(client_id) if client_id else App(str(uuid.uuid4()))
        if app is None:
            raise KeyError(f"no app {client_id!r} is registered")
        tid = self.state.tenant_id_of(tenant) if tenant else self.tenant_id
        issued = self.state.issue_access_token(
            tenant_id=tid,
            audience=resource or self.api_resource,
            app=app,
            roles=roles,
            lifetime=lifetime,
            extra_claims=claims,
        )
        return issued.token

    def verify_token(self, token: str, *, audience: Optional[str] = None) -> dict[str, Any]:
        """The claims of a valid token from this emulator; raises
        :class:`~authlayer.emulator.state.InvalidToken` otherwise."""
        return self.state.verify_token(token, audience=audience)

    def revoke_all(self) -> None:
        """Every token issued so far is refused by the protected API from now on."""
        self.state.revoke_all()

    def revoke(self, token: str) -> None:
        """This token is refused by the protected API from now on."""
        self.state.revoke(token)

    def claims_challenge(
        self,
        count: int = 1,
        *,
        style: str = "insufficient_claims",
        claims: Optional[Mapping[str, Any]] = None,
    ) -> dict[str, Any]:
        """The next ``count`` API calls whose token lacks the challenged claims get a 401 claims
        challenge. ``claims`` defaults to an authentication-context demand,
        ``{"access_token": {"acrs": {"essential": true, "value": "c1"}}}``; a token requested
        with that ``claims`` value satisfies it. ``style="invalid_token"`` is ARM's form.
        Returns the challenged claims."""
        return self.state.set_challenge(count, style, claims).claims

    # --- faults and counters -----------------------------------------------------------------

    def inject(
        self,
        kind: str,
        count: int = 1,
        *,
        endpoint: str = "token",
        status: Optional[int] = None,
        retry_after: Optional[float] = None,
        seconds: float = 0.0,
        field: str = "access_token",
    ) -> None:
        """Spoil the next ``count`` requests to ``endpoint`` (see ``faults.py`` for the kinds).

        ``status`` defaults to 503 for ``"status"`` and 200 for ``"html"``.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        self._check_endpoint(endpoint)
        self._faults.add(
            Fault(kind, endpoint, int(count), status, retry_after, float(seconds), field)
        )

    def _check_endpoint(self, endpoint: str) -> None:
        known = ENDPOINTS | {r.endpoint for r in ROUTES} | {r.endpoint for r in self.routes}
        if endpoint not in known:
            raise ValueError(f"unknown endpoint {endpoint!r}; use one of {sorted(known)}")

    def hold(self, endpoint: str = "token", count: Optional[int] = None) -> Hold:
        """Hold requests to ``endpoint`` (or ``"any"``) before they are answered, until the
        returned :class:`~authlayer.emulator.faults.Hold` is released: ``gate.wait_for(n)``
        waits until ``n`` are held, ``gate.release()`` lets them go on. ``count`` holds only
        the next ``count`` requests (``None``: every one). Held requests are recorded (so
        counted) at once; pending faults apply to them after the release. :meth:`reset` and
        :meth:`stop` abandon every hold: its requests get no answer (their connections are
        closed), so that nothing held for one test runs in the next."""
        self._check_endpoint(endpoint)
        if count is not None and count < 1:
            raise ValueError(f"count must be 1 or more (or None), not {count!r}")
        gate = Hold(endpoint, count)
        with self._holds_lock:
            self._holds = [h for h in self._holds if not h.released] + [gate]
        if self._stopping.is_set():
            gate.abandon()
        return gate

    def _abandon_holds(self) -> None:
        with self._holds_lock:
            holds, self._holds = self._holds, []
        for gate in holds:
            gate.abandon()

    @property
    def pending_faults(self) -> list[Fault]:
        return self._faults.pending()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received so far (a copy), oldest first."""
        with self._log_lock:
            return list(self._requests)

    def count(self, endpoint: str = "token", **match: Any) -> int:
        """How many requests ``endpoint`` (or ``"any"``) got whose form (or query) fields equal
        ``match``: ``emu.count("token", grant_type="client_credentials")``."""
        wanted = {k: str(v) for k, v in match.items()}
        total = 0
        for rec in self.requests:
            if endpoint not in ("any", rec.endpoint):
                continue
            if all(rec.form.get(k, rec.query.get(k)) == v for k, v in wanted.items()):
                total += 1
        return total

    def reset(self) -> None:
        """Forget the request log (so the counters), drop pending faults and challenges, and
        abandon every hold (its requests get no answer)."""
        self._abandon_holds()
        with self._log_lock:
            self._requests.clear()
        self._faults.clear()
        with self.state.lock:
            self.state.challenge = None
        for extension in list(self._extensions.values()):
            reset = getattr(extension, "reset", None)
            if callable(reset):
                reset()

    # --- extensions ------------------------------------------------------------------------

    def extension(self, name: str, factory: Callable[[Emulator], T]) -> T:
        """Per-emulator state of a feature module (device codes, managed identity, ...),
        made by ``factory(self)`` on first use. Its ``reset()``, if any, runs on :meth:`reset`.
        """
        with self._extensions_lock:
            if name not in self._extensions:
                self._extensions[name] = factory(self)
            return self._extensions[name]  # type: ignore[no-any-return]

    # --- routing ---------------------------------------------------------------------------

    def add_route(self, method: str, pattern: str, handler: Handler, *, endpoint: str) -> Route:
        """Serve ``handler`` for (method, pattern) on this emulator only, before global routes."""
        return self.routes.add(method, pattern, handler, endpoint=endpoint)

    def _find_route(
        self, method: str, path: str
    ) -> tuple[Optional[Route], dict[str, str], list[str]]:
        entry, params, allowed = self.routes.find(method, path)
        if entry is not None:
            return entry, params, allowed
        entry, params, more = ROUTES.find(method, path)
        return entry, params, allowed + more

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _dispatch(
        self, method: str, target: str, header_items: Iterable[tuple[str, str]], body: bytes
    ) -> Optional[Response]:
        """Answer one request; ``None`` means close the connection without an answer."""
        split = urlsplit(target)
        path = split.path or "/"
        headers = Headers(header_items)
        ctype = str(headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        form: dict[str, str] = {}
        if body and ctype in (_FORM, ""):
            form = _first_values(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        query = _first_values(parse_qsl(split.query, keep_blank_values=True))
        host = headers.get("host") or self.url.split("://", 1)[1]
        entry, params, allowed = self._find_route(method, path)
        endpoint = entry.endpoint if entry is not None else "unknown"
        req = Request(
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=body,
            form=form,
            url=f"{'https' if self.tls else 'http'}://{host}{path}",
            base_url=self.url,
            endpoint=endpoint,
            params=params,
        )
        with self._log_lock:
            self._requests.append(
                RequestRecord(endpoint, method, path, headers, form, query, time.time(), body)
            )
            if self.max_requests is not None and len(self._requests) > self.max_requests:
                del self._requests[: len(self._requests) - self.max_requests]
        with self._holds_lock:
            holds = [h for h in self._holds if h.matches(endpoint)]
        for gate in holds:
            if not gate.enter():
                return None  # held for a test that is over: no answer, no fault taken
        self._sleep(self.latency)
        fault = self._faults.take(endpoint)
        if fault is not None:
            if fault.kind == "drop":
                return None
            if fault.kind == "latency":
                self._sleep(fault.seconds)
            answer = short_circuit(fault, req)
            if answer is not None:
                return answer
        response = self._call(entry, req, allowed)
        if fault is not None and fault.kind in ("truncated", "missing_field"):
            response = mangle(fault, response)
        return response

    def _call(self, entry: Optional[Route], req: Request, allowed: list[str]) -> Response:
        if entry is None:
            if allowed:
                err = EntraError(
                    "invalid_request",
                    900561,
                    f"The endpoint only accepts {' or '.join(sorted(set(allowed)))} requests. "
                    f"Received a {req.method} request.",
                    status=405,
                    headers=[("Allow", ", ".join(sorted(set(allowed))))],
                )
                return entra_error_response(req, err)
            return json_response(
                {"error": "not_found", "error_description": f"No emulator endpoint at {req.path}"},
                status=404,
            )
        try:
            return entry.handler(self, req)
        except EntraError as refusal:
            return entra_error_response(req, refusal)
        except Exception:
            logger.exception("emulator handler for %s %s failed", req.method, req.path)
            failure = EntraError("server_error", 90033,
                                 "The emulator failed to handle the request.", status=500)
            return entra_error_response(req, failure)
