"""The identity service misbehaving, timeouts, proxies and CA bundles — over real loopback HTTP."""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from authlayer import EntraAuth, TokenError, get_token, get_token_async
from authlayer.emulator import Emulator

from .conftest import Client, Profiles, write_cc_profile


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried(emu: Emulator, cc_profile: str, status: int) -> None:
    emu.inject("status", count=2, status=status, retry_after=0)
    assert get_token(cc_profile).token
    assert emu.count("token") == 3


def test_retry_after_is_honoured(emu: Emulator, cc_profile: str) -> None:
    emu.inject("status", count=1, status=429, retry_after=0.3)
    get_token(cc_profile)
    first, second = [r for r in emu.requests if r.endpoint == "token"]
    assert second.time - first.time >= 0.29


def test_retries_are_bounded(emu: Emulator, cc_profile: str) -> None:
    emu.inject("status", count=100, status=503, retry_after=0)
    with pytest.raises(TokenError) as info:
        get_token(cc_profile)
    assert info.value.status == 503
    assert emu.count("token") == 4


def test_long_retry_after_is_reported_not_waited(emu: Emulator, cc_profile: str) -> None:
    emu.inject("status", count=1, status=429, retry_after=3600)
    with pytest.raises(TokenError) as info:
        get_token(cc_profile)
    assert info.value.status == 429
    assert "throttled" in str(info.value).lower()
    assert emu.count("token") == 1


def test_dropped_connection_is_retried(emu: Emulator, cc_profile: str, client: Client) -> None:
    emu.inject("drop", count=2)
    assert client.get(f"{emu.api_url}/x", EntraAuth(cc_profile)).status == 200
    assert emu.count("token") == 3


@pytest.mark.parametrize("kind", ["html", "truncated", "missing_field"])
def test_malformed_answers_become_token_errors(emu: Emulator, cc_profile: str,
                                               kind: str) -> None:
    emu.inject(kind, count=1, status=200)
    with pytest.raises(TokenError) as info:
        get_token(cc_profile)
    assert info.value.status == 200
    assert emu.count("token") == 1


def test_html_error_page_is_a_token_error(emu: Emulator, cc_profile: str) -> None:
    emu.inject("html", count=1, status=400)
    with pytest.raises(TokenError) as info:
        get_token(cc_profile)
    assert "HTTP 400" in str(info.value)


def test_timeout_applies_to_each_request(emu: Emulator,
                                         app_profile: Callable[..., str]) -> None:
    app_profile("slow", timeout=0.2)
    emu.hold()  # no answer comes within the timeout (until the test ends)
    with pytest.raises(TokenError) as info:
        get_token("slow")
    assert "timed out" in str(info.value)
    assert info.value.status is None


def test_async_path_retries_the_same_way(emu: Emulator, cc_profile: str) -> None:
    import asyncio

    emu.inject("status", count=2, status=503, retry_after=0)
    assert asyncio.run(get_token_async(cc_profile)).token
    assert emu.count("token") == 3


def test_unreachable_service_is_a_clear_error(profiles: Profiles) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once closed
    profiles.write(f"""
        [profiles.nobody]
        flow = "client_credentials"
        authority = "http://127.0.0.1:{port}"
        tenant = "contoso.onmicrosoft.com"
        client_id = "11111111-2222-3333-4444-555555555555"
        client_secret = "x"
        scope = "https://graph.microsoft.com/.default"
    """)
    with pytest.raises(TokenError) as info:
        get_token("nobody")
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "failed after 4 attempts" in str(info.value)


# ------------------------------------------------------------------ proxies


class _Proxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    seen: list[str]


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    """A forward proxy for plain-http absolute-form requests; remembers what it carried."""

    def _forward(self) -> None:
        assert isinstance(self.server, _Proxy)
        self.server.seen.append(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("proxy-connection", "connection", "host")}
        req = urllib.request.Request(self.path, data=body, headers=headers,
                                     method=self.command)
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with direct.open(req, timeout=10) as r:
                status, payload, rh = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, payload, rh = e.code, e.read(), e.headers
        self.send_response(status)
        for k, v in rh.items():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _forward

    def do_CONNECT(self) -> None:
        """Remember a tunnel request and refuse it: nothing leaves this machine."""
        assert isinstance(self.server, _Proxy)
        self.server.seen.append(f"CONNECT {self.path}")
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    server = _Proxy(("127.0.0.1", 0), _ProxyHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_proxy_environment_is_honoured(profiles: Profiles, proxy: _Proxy,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A remote authority goes through the proxy (which refuses the tunnel); loopback ones never
    # do (tests/test_hardening_http.py).
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    profiles.write("""
        [profiles.remote]
        flow = "client_credentials"
        authority = "https://login.example.test"
        tenant = "contoso.onmicrosoft.com"
        client_id = "11111111-2222-3333-4444-555555555555"
        client_secret = "x"
        scope = "https://graph.microsoft.com/.default"
    """)
    with pytest.raises(TokenError):
        get_token("remote")
    assert proxy.seen
    assert set(proxy.seen) == {"CONNECT login.example.test:443"}


def test_no_proxy_is_honoured(emu: Emulator, cc_profile: str, proxy: _Proxy,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert get_token(cc_profile).token
    assert proxy.seen == []


# ------------------------------------------------------------------ TLS and CA bundles




@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
def test_ca_bundle_variables_are_honoured(tls_emulator: Emulator, profiles: Profiles,
                                          monkeypatch: pytest.MonkeyPatch,
                                          variable: str) -> None:
    assert tls_emulator.url.startswith("https://")
    name = write_cc_profile(profiles, tls_emulator, "tls")
    assert tls_emulator.ca_file is not None
    monkeypatch.setenv(variable, tls_emulator.ca_file)
    assert get_token(name).token


def test_untrusted_certificate_is_a_clear_error(tls_emulator: Emulator, profiles: Profiles,
                                                tmp_path: Path) -> None:
    name = write_cc_profile(profiles, tls_emulator, "tls")
    tls_emulator.reset()
    with pytest.raises(TokenError) as info:
        get_token(name)
    assert "not trusted" in str(info.value)
    assert "SSL_CERT_FILE" in str(info.value)
    assert tls_emulator.count("token") == 0
