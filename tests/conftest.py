"""Shared fixtures: one emulator per test session (reset per test), a fresh provider per test,
profile files in a temporary folder, and a `client` fixture that runs the same request through
requests, httpx.Client, httpx.AsyncClient and an aiohttp.ClientSession."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
import textwrap
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

import httpx
import pytest
import requests

from authlayer import _http
from authlayer.emulator import Emulator, Hold
from authlayer.provider import PROVIDER

# Environment variables that would change what authlayer does; tests start without them.
_ENV = ["AUTHLAYER_CONFIG", "AUTHLAYER_PROFILE", "AUTHLAYER_CACHE_DIR", "HTTPS_PROXY",
        "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy", "NO_PROXY",
        "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
        "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_TENANT_ID", "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST", "AZURE_CONFIG_DIR", "BROWSER"]


class _LogCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}")
_emulators: list[Emulator] = []


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A clean environment and provider for every test, and a leak guard: everything the
    `authlayer` logger says during the test, at DEBUG, must hold no JWT and no emulator app
    secret."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTHLAYER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(_http, "BACKOFF_BASE", 0.01)
    PROVIDER.reset()
    logger = logging.getLogger("authlayer")
    collector = _LogCollector()
    previous = logger.level
    logger.addHandler(collector)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(collector)
        logger.setLevel(previous)
        PROVIDER.reset()
    said = "\n".join(collector.lines)
    assert not _JWT.search(said), "a token reached the authlayer log"
    secrets = [app.secret for emu in _emulators for app in list(emu.state.apps.values())
               if app.secret and len(app.secret) >= 8]
    assert leaked(said, list(secrets)) == [], "a client secret reached the authlayer log"


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        _emulators.append(emu)
        yield emu
        _emulators.remove(emu)


@pytest.fixture
def emu(emulator: Emulator) -> Iterator[Emulator]:
    emulator.reset()
    emulator.latency = 0.0
    emulator.token_lifetime = 3600
    emulator.refresh_in = None
    yield emulator
    emulator.reset()
    emulator.latency = 0.0


@pytest.fixture(scope="session")
def tls_emulator() -> Iterator[Emulator]:
    with Emulator(tls=True) as emu:
        yield emu


@pytest.fixture
def public_app(emu: Emulator) -> Any:
    """A public client (no secret) registered with the emulator: for flows that sign a person
    in."""
    return emu.register_app(public=True)


def write_cc_profile(profiles: Profiles, emu: Emulator, name: str = "p") -> str:
    """A client-credentials profile ``name`` for ``emu`` (an app registered for it, its secret
    inline), for tests with an emulator of their own (TLS, custom routes)."""
    app = emu.register_app(secret="s3cret-value")
    profiles.write(f"""
        [profiles.{name}]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{app.client_id}"
        client_secret = "s3cret-value"
        scope = "{emu.api_scope}"
    """)
    return name


class Profiles:
    """Writes a profiles file and points $AUTHLAYER_CONFIG at it."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        self._monkeypatch = monkeypatch

    def write(self, text: str) -> Path:
        self.path.write_text(textwrap.dedent(text), encoding="utf-8")
        self._monkeypatch.setenv("AUTHLAYER_CONFIG", str(self.path))
        from authlayer import config

        config.clear_cache()
        PROVIDER.reset()
        return self.path


@pytest.fixture
def profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Profiles:
    return Profiles(tmp_path / "profiles.toml", monkeypatch)


@pytest.fixture
def secret() -> str:
    return "emu-secret-" + uuid.uuid4().hex


@pytest.fixture
def app(emu: Emulator, secret: str) -> Any:
    return emu.register_app(secret=secret)


def _toml(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (str, list, bool)) else str(value)


@pytest.fixture
def app_profile(emu: Emulator, app: Any, secret: str, profiles: Profiles) -> Callable[..., str]:
    """Writes a client-credentials profile of the `app` fixture (secret inline) for the
    emulator's API: ``app_profile("name", cache="file", timeout=5)``; returns its name. Each
    call adds a profile to the file."""
    written: list[str] = []

    def write(name: str, **keys: Any) -> str:
        values: dict[str, Any] = {"flow": "client_credentials", "authority": emu.url,
                                  "tenant": emu.tenant_id, "client_id": app.client_id,
                                  "client_secret": secret, "scope": emu.api_scope, **keys}
        body = "\n".join(f"{k} = {_toml(v)}" for k, v in values.items())
        written.append(f"[profiles.{name}]\n{body}\n")
        profiles.write("\n".join(written))
        return name

    return write


@pytest.fixture
def cc_profile(emu: Emulator, app: Any, profiles: Profiles, monkeypatch: pytest.MonkeyPatch,
               secret: str) -> str:
    """A client-credentials profile `app` for the emulator's protected API, secret in the env."""
    monkeypatch.setenv("APP_SECRET", secret)
    profiles.write(f"""
        [profiles.app]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{app.client_id}"
        client_secret = {{ env = "APP_SECRET" }}
        scope = "{emu.api_scope}"
        timeout = 5
    """)
    return "app"


class Answer:
    """What a client got back, the same shape for every client."""

    def __init__(self, status: int, body: bytes, history: int) -> None:
        self.status = status
        self.body = body
        self.history = history

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """Sends one request with a given auth through requests, httpx, httpx async or aiohttp
    (``EntraAuth`` as its middleware; ``trust_env`` on, as requests and httpx have it). Each
    follows redirects, as requests and aiohttp do by default."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return self.kind

    def request(self, method: str, url: str, auth: Any, **kwargs: Any) -> Answer:
        if self.kind == "requests":
            with requests.Session() as session:
                session.auth = auth
                r = session.request(method, url, timeout=10, **kwargs)
                return Answer(r.status_code, r.content, len(r.history))
        if self.kind == "httpx":
            with httpx.Client(auth=auth, timeout=10, follow_redirects=True) as client:
                h = client.request(method, url, **kwargs)
                return Answer(h.status_code, h.content, len(h.history))

        async def go() -> Answer:
            async with httpx.AsyncClient(auth=auth, timeout=10, follow_redirects=True) as client:
                h = await client.request(method, url, **kwargs)
                return Answer(h.status_code, h.content, len(h.history))

        if self.kind == "aiohttp":
            return asyncio.run(_aiohttp_request(method, url, auth, **kwargs))
        return asyncio.run(go())

    def get(self, url: str, auth: Any, **kwargs: Any) -> Answer:
        return self.request("GET", url, auth, **kwargs)


async def _aiohttp_request(method: str, url: str, auth: Any, *,
                           files: Optional[dict[str, Any]] = None, **kwargs: Any) -> Answer:
    import aiohttp

    if files is not None:  # requests' and httpx's files= as aiohttp spells it
        form = aiohttp.FormData()
        for field, (filename, content) in files.items():
            form.add_field(field, content, filename=filename)
        kwargs["data"] = form
    # aiohttp builds its default TLS context once per process, at import: a test's CA file
    # is given to it as a script that trusts its own CA would.
    cafile = os.environ.get("SSL_CERT_FILE")
    if cafile and url.startswith("https:"):
        kwargs.setdefault("ssl", ssl.create_default_context(cafile=cafile))
    async with aiohttp.ClientSession(middlewares=(auth,), trust_env=True,
                                     timeout=aiohttp.ClientTimeout(total=10)) as session, \
            session.request(method, url, **kwargs) as r:
        return Answer(r.status, await r.read(), len(r.history))


@pytest.fixture(params=["requests", "httpx", "httpx-async", "aiohttp"])
def client(request: pytest.FixtureRequest) -> Client:
    return Client(str(request.param))


@pytest.fixture
def deny_read(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Make opening one file fail with EACCES, as chmod 0 would for a non-root user (tests run
    as root in CI, where chmod does not stop reads)."""
    import builtins
    import errno

    denied: set[str] = set()
    real_open = builtins.open

    def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(os.fspath(file)) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    return lambda path: denied.add(os.path.abspath(path))


class Clock:
    """A clock the tests move by hand: ``monkeypatch.setattr(PROVIDER, "clock", clock)``."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def local_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """A loopback HTTP server answering with ``handler``, its ``seen`` list empty, for the
    length of the ``with`` block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class ProxyRecorder(BaseHTTPRequestHandler):
    """A proxy that records what it is sent (the target and the headers, in the server's
    ``seen``) and answers 200 itself (forwards nothing)."""

    def _any(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.server.seen.append({"target": self.path,  # type: ignore[attr-defined]
                                 **{k.lower(): v for k, v in self.headers.items()}})
        body = b"from the proxy"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _any

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[ThreadingHTTPServer]:
    """A recording proxy on loopback (:class:`ProxyRecorder`)."""
    with local_server(ProxyRecorder) as server:
        yield server


def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds, however long that takes (the pytest timeout is the
    backstop): for events the tests cannot be told about directly."""
    import time

    while not condition():
        time.sleep(0.001)


def waiting_callers() -> int:
    """How many callers wait for a token flight of PROVIDER under way (followers of a leader)."""
    flights = PROVIDER._flights
    with flights._guard:
        return sum(flight.waiting for flight in flights._flights.values())


def release_when(gate: Hold, condition: Callable[[], bool]) -> threading.Thread:
    """Release ``gate`` from a thread of its own once ``condition()`` holds (e.g. every
    follower waits for the held leader), for callers that cannot release it themselves (an
    event loop the test runs). Stops early if the gate is released otherwise (a reset)."""
    def watch() -> None:
        until(lambda: gate.released or condition())
        gate.release()

    thread = threading.Thread(target=watch, name="release-when", daemon=True)
    thread.start()
    return thread


def leaked(haystack: str, needles: list[Optional[str]]) -> list[str]:
    """The needles (secrets, tokens) found in a text, shortened for the failure message."""
    return [n[:6] + "…" for n in needles if n and n in haystack]


def env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


Factory = Callable[..., Any]


# --------------------------------------------------------------------------------------------
# Network guard: tests talk to loopback only (127.0.0.0/8, ::1) — never the real IMDS address
# (169.254.169.254), never the internet. Every socket connect in the session is checked; a
# connect elsewhere is refused at once and fails the test that made it, even if the code under
# test swallowed the refusal (as an IMDS probe would).


def _loopback_only(address: Any) -> Optional[str]:
    """Why connecting to ``address`` is not allowed in tests, or ``None``."""
    import ipaddress

    if not isinstance(address, tuple) or not address:
        return None  # AF_UNIX paths and the like stay on this machine
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str) or host.lower() == "localhost":
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return f"{host!r} is a name, not a loopback address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return None if ip.is_loopback else f"{host} is not a loopback address"


_network_violations: list[str] = []


def _install_network_guard() -> None:
    import socket as socketlib

    real_connect = socketlib.socket.connect
    real_connect_ex = socketlib.socket.connect_ex

    def check(address: Any) -> None:
        why = _loopback_only(address)
        if why is not None:
            _network_violations.append(f"connect to {address!r}: {why}")
            raise PermissionError(f"test network guard: {why}")

    def connect(self: socketlib.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socketlib.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    real_getaddrinfo = socketlib.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        # A name lookup leaves the machine (DNS) even when no connection follows.
        why = None if host is None else _loopback_only((host, 0))
        if why is not None:
            _network_violations.append(f"name lookup of {host!r}: {why}")
            raise socketlib.gaierror(socketlib.EAI_NONAME, f"test network guard: {why}")
        return real_getaddrinfo(host, *args, **kwargs)

    socketlib.socket.connect = connect  # type: ignore[method-assign]
    socketlib.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socketlib.getaddrinfo = getaddrinfo


_install_network_guard()


@pytest.fixture(autouse=True)
def _loopback_network_only() -> Iterator[None]:
    """Fails the test that tried to open a socket to a non-loopback address."""
    _network_violations.clear()
    yield
    found, _network_violations[:] = list(_network_violations), []
    assert not found, "a test tried to leave loopback: " + "; ".join(found)
