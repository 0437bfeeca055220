"""The emulator as a server: TLS, HTTP/1.1 keep-alive and framing, clean stop, the extension
points (routes and grants) and the command line."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from authlayer.emulator import (
    GRANTS,
    Emulator,
    EntraError,
    Request,
    Response,
    TenantRef,
    grant,
    json_response,
    token_response,
)
from authlayer.emulator.clientauth import authenticate_client

from ..conftest import until
from .emulator_helpers import assert_entra_error, cc_form

_OTHERS: set[threading.Thread] = set()


@pytest.fixture(autouse=True)
def _other_emulators() -> None:
    """Emulator threads that were running before the test (other tests' emulators)."""
    _OTHERS.clear()
    _OTHERS.update(_all_emulator_threads())


def _all_emulator_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("authlayer-emulator")]


def _emulator_threads() -> list[threading.Thread]:
    """Emulator threads this test started and left running."""
    return [t for t in _all_emulator_threads() if t not in _OTHERS]


def _raw_exchange(sock: socket.socket, request: bytes) -> tuple[bytes, bytes]:
    """Send one request; read one answer framed by its Content-Length."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def test_tls_with_the_emulator_ca() -> None:
    with Emulator(tls=True) as em:
        assert em.url.startswith("https://127.0.0.1:")
        assert em.ca_file is not None
        ca_file = em.ca_file
        assert os.path.exists(ca_file)
        app = em.register_app()
        context = ssl.create_default_context(cafile=em.ca_file)
        with httpx.Client(verify=context) as c:
            r = c.post(em.token_url(), data=cc_form(app.client_id, em.api_scope,
                                                    client_secret=str(app.secret)))
            assert r.status_code == 200
            token = r.json()["access_token"]
            assert c.get(em.api_url, headers={"Authorization": f"Bearer {token}"}).json()["ok"]
            localhost = em.url.replace("127.0.0.1", "localhost")
            assert c.get(f"{localhost}/common/discovery/v2.0/keys").status_code == 200
        with httpx.Client() as untrusting, pytest.raises(httpx.ConnectError):
            untrusting.get(em.api_url)
    assert not os.path.exists(ca_file)  # removed at stop
    assert not _emulator_threads()


def test_plain_emulator_has_no_ca_file(em: Emulator) -> None:
    assert em.ca_file is None
    assert em.url.startswith("http://127.0.0.1:")
    assert em.api_resource == em.api_url == f"{em.url}/api"
    assert em.api_scope == f"{em.url}/api/.default"
    assert em.tenant_domain == "contoso.onmicrosoft.com"


def test_keep_alive_and_content_length_on_every_answer(em: Emulator) -> None:
    host = f"127.0.0.1:{em.port}"
    with socket.create_connection(("127.0.0.1", em.port)) as sock:
        requests_ = [
            f"GET /api HTTP/1.1\r\nHost: {host}\r\n\r\n",
            f"GET /nowhere HTTP/1.1\r\nHost: {host}\r\n\r\n",
            f"POST /{em.tenant_id}/oauth2/v2.0/token HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n",
            f"HEAD /common/discovery/v2.0/keys HTTP/1.1\r\nHost: {host}\r\n\r\n",
            f"GET /common/discovery/v2.0/keys HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ]
        statuses = []
        for raw in requests_:
            if raw.startswith("HEAD"):
                sock.sendall(raw.encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    head += sock.recv(65536)
                assert b"Content-Length: " in head
                statuses.append(int(head.split(b" ")[1]))
                continue
            head, _ = _raw_exchange(sock, raw.encode())
            assert b"\r\nContent-Length: " in head
            statuses.append(int(head.split(b" ")[1]))
    assert statuses == [401, 404, 400, 200, 200]
    assert len(em.requests) == 5


def test_chunked_token_request(em: Emulator) -> None:
    app = em.register_app(secret="s3cret")
    body = (f"grant_type=client_credentials&client_id={app.client_id}&client_secret=s3cret"
            f"&scope={em.api_scope}").encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
    raw = (f"POST /{em.tenant_id}/oauth2/v2.0/token HTTP/1.1\r\nHost: 127.0.0.1:{em.port}\r\n"
           "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"
           "\r\n").encode() + chunked + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", em.port)) as sock:
        head, answer = _raw_exchange(sock, raw)
    assert head.startswith(b"HTTP/1.1 200"), answer
    assert b"access_token" in answer


def test_unknown_path_is_404(em: Emulator, http: httpx.Client) -> None:
    r = http.get(f"{em.url}/favicon.ico")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


def test_stop_is_clean_with_open_and_busy_connections() -> None:
    em = Emulator().start()
    port = em.port
    idle = socket.create_connection(("127.0.0.1", port))  # an idle keep-alive connection
    em.inject("latency", endpoint="api", seconds=600)  # longer than any test may take
    busy_result: list[BaseException] = []

    def busy() -> None:
        try:
            httpx.get(f"{em.api_url}/slow", timeout=60)
        except httpx.HTTPError as exc:
            busy_result.append(exc)

    caller = threading.Thread(target=busy)
    caller.start()
    until(lambda: em.count("api") == 1)  # the call is being delayed
    em.stop()
    # The delayed call's thread ended within stop(): the latency does not hold the stop.
    assert not _emulator_threads()
    caller.join()
    idle.settimeout(2)
    assert idle.recv(10) == b""  # closed by the server
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    em.stop()  # twice is fine
    with pytest.raises(RuntimeError):
        em.start()


def test_url_needs_a_started_emulator_and_loopback_host() -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = Emulator().url
    with pytest.raises(ValueError, match="loopback"):
        Emulator(host="0.0.0.0")


def test_fixed_tenant_id_and_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tid = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    with Emulator(port=port, tenant_id=tid) as em:
        assert em.url == f"http://127.0.0.1:{port}"
        assert em.tenant_id == tid


def test_many_concurrent_clients(em: Emulator) -> None:
    app = em.register_app()
    data = cc_form(app.client_id, em.api_scope, client_secret=str(app.secret))
    results: list[int] = []

    def worker() -> None:
        with httpx.Client() as c:
            for _ in range(5):
                results.append(c.post(em.token_url(), data=data).status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 40
    assert em.count("token") == 40


# --- extension points --------------------------------------------------------------------------


def test_add_route_on_one_emulator(em: Emulator, http: httpx.Client) -> None:
    def hello(emu: Emulator, req: Request) -> Response:
        if req.params["name"] == "nobody":
            raise EntraError("invalid_request", 90023, "nobody is not welcome")
        return json_response({"hello": req.params["name"], "q": req.query})

    em.add_route("GET", "/hello/{name}", hello, endpoint="hello")
    assert http.get(f"{em.url}/hello/world?a=1").json() == {"hello": "world", "q": {"a": "1"}}
    assert_entra_error(http.get(f"{em.url}/hello/nobody"), 400, "invalid_request", 90023)
    assert em.count("hello") == 2
    em.inject("status", endpoint="hello", status=500)
    assert http.get(f"{em.url}/hello/x").status_code == 500
    with Emulator() as other:  # other emulators do not serve it
        assert http.get(f"{other.url}/hello/world").status_code == 404


@pytest.fixture
def echo_grant() -> Iterator[str]:
    name = "urn:test:echo"

    @grant(name)
    def echo(emu: Emulator, req: Request, tenant: TenantRef) -> Response:
        client = authenticate_client(emu, req, tenant.require_specific(), allow_public=True)
        issued = emu.state.issue_access_token(tenant_id=tenant.require_specific().id,
                                              audience=emu.api_resource, app=client.app,
                                              auth_method=client.azpacr)
        return token_response(emu, issued, scope=req.form.get("scope"))

    yield name
    del GRANTS[name]


def test_register_a_grant(em: Emulator, http: httpx.Client, echo_grant: str) -> None:
    app = em.register_app(public=True)
    r = http.post(em.token_url(), data={"grant_type": echo_grant, "client_id": app.client_id,
                                        "scope": "x y"})
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "x y"
    assert em.verify_token(r.json()["access_token"])["azpacr"] == "0"
    r = http.post(em.token_url("common"), data={"grant_type": echo_grant,
                                                "client_id": app.client_id})
    assert_entra_error(r, 400, "invalid_request", 90002)


# --- command line ------------------------------------------------------------------------------


def test_command_line_runs_until_interrupted() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("AUTHLAYER_EMULATOR_SECRET", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "authlayer.emulator", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                break
        text = "\n".join(lines)
        url = text.split("listening on ", 1)[1].split()[0]
        client_id = text.split("client id", 1)[1].split()[0]
        secret = text.split("secret", 1)[1].split()[0]
        tenant = text.split("tenant", 1)[1].split()[0]
        assert 'flow = "client_credentials"' in text
        r = httpx.post(f"{url}/{tenant}/oauth2/v2.0/token", data=cc_form(
            client_id, f"{url}/api/.default", client_secret=secret))
        assert r.status_code == 200, r.text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def test_command_line_refuses_a_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    from authlayer.emulator.cli import main

    assert main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert "loopback" in capsys.readouterr().err
