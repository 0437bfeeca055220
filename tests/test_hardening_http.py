"""Issue 11, the identity-service client: loopback token requests never go through a proxy,
``timeout`` is a deadline for the whole exchange, answers are capped, hostile JSON and cache
records become authlayer's errors, and a TLS error names the CA bundle actually used.

Misbehaving servers are real loopback sockets (:class:`Scripted`) that record how each
connection ended, so the tests see that a connection was dropped rather than time it."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import ssl
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import certifi
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from authlayer import AuthLayerError, TokenError, get_token, get_token_async, jwt
from authlayer._http import (
    MAX_BODY,
    MAX_RETRY_AFTER,
    HttpResponse,
    Send,
    Sleep,
)
from authlayer.emulator import Emulator
from authlayer.emulator.tls import make_tls_files, server_context
from authlayer.filecache import FileStore
from authlayer.oauth import parse_error as error_from_response
from authlayer.oauth import parse_token as token_response
from authlayer.provider import PROVIDER
from authlayer.store import expires_on

from .conftest import Profiles, write_cc_profile
from .test_azure_cli import FakeAz
from .test_http_protocol import drive, resp

Piece = tuple[bytes, float]  # bytes to send, and the pause before sending them
Script = Callable[[], Iterable[Piece]]


class Scripted:
    """A loopback HTTP server that reads one request per connection, then sends a scripted
    answer piece by piece, pausing as told. It records each connection's end: ``"completed"``
    (the whole script was sent) or ``"dropped"`` (the client went away first)."""

    def __init__(self, script: Script, tls: Optional[ssl.SSLContext] = None) -> None:
        self.script = script
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.outcomes: list[str] = []
        self.connections = 0
        self._ended = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self._ended:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        outcome = "dropped"
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            _read_request(conn)
            for data, pause in self.script():
                if pause and _gone_within(conn, pause):
                    return
                conn.sendall(data)
            outcome = "completed"
        except OSError:
            pass
        finally:
            conn.close()
            with self._ended:
                self.outcomes.append(outcome)
                self._ended.notify_all()

    def ended(self) -> list[str]:
        """How every connection made so far ended, once all have (a client that dropped one is
        noticed within one pause of the script)."""
        with self._ended:
            self._ended.wait_for(lambda: len(self.outcomes) == self.connections, timeout=60)
            return list(self.outcomes)

    def close(self) -> None:
        self.listener.close()


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise OSError("no request")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise OSError("request cut short")
        body += chunk


def _gone_within(conn: socket.socket, seconds: float) -> bool:
    """Wait ``seconds``; true as soon as the client closes the connection."""
    readable, _, _ = select.select([conn], [], [], seconds)
    if not readable:
        return False
    try:
        return conn.recv(65536) == b""
    except OSError:
        return True


def _head(status: int = 200, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "Content-Type: application/json"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# A token answer, padded so that trickled a byte every 50 ms it would take half a minute.
TOKEN_BODY = json.dumps({"token_type": "Bearer", "expires_in": 3599,
                         "access_token": "trickled-token-" + "x" * 500}).encode()
TRICKLE = 0.05  # seconds between two bytes: far below the timeout, so no single read times out
TIMEOUT = 0.5  # the profile's timeout


def _trickle(data: bytes) -> Iterator[Piece]:
    return ((data[i:i + 1], TRICKLE) for i in range(len(data)))


def _headers_trickled() -> Iterator[Piece]:
    yield from _trickle(_head(Content_Length=str(len(TOKEN_BODY))) + TOKEN_BODY)


def _body_trickled() -> Iterator[Piece]:
    yield _head(Content_Length=str(len(TOKEN_BODY))), 0.0
    yield from _trickle(TOKEN_BODY)


Servers = Callable[..., Scripted]


@pytest.fixture
def servers() -> Iterator[Servers]:
    """Makes :class:`Scripted` servers: ``servers(script, tls=None)``."""
    made: list[Scripted] = []

    def make(script: Script, tls: Optional[ssl.SSLContext] = None) -> Scripted:
        made.append(Scripted(script, tls))
        return made[-1]

    yield make
    for server in made:
        server.close()


def _entra_profile(profiles: Profiles, authority: str, **extra: Any) -> str:
    keys = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra.items())
    profiles.write(f"""
[profiles.svc]
flow = "client_credentials"
authority = "{authority}"
tenant = "contoso.onmicrosoft.com"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "not-a-real-secret"
scope = "https://graph.microsoft.com/.default"
{keys}""")
    return "svc"


def _get(runner: str, name: str) -> Any:
    """get_token through the blocking driver, or get_token_async under asyncio or trio."""
    if runner == "sync":
        return get_token(name)
    if runner == "asyncio":
        return asyncio.run(get_token_async(name))
    return trio.run(get_token_async, name)


RUNNERS = ["sync", "asyncio", "trio"]


# ------------------------------------------------------------------ item 2: loopback, no proxy


@pytest.fixture
def proxy_env(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> Scripted:
    """Every proxy variable points at a loopback "proxy" that records being contacted (and
    answers 502 to anything)."""
    proxy = servers(lambda: [(_head(502, Content_Length="0"), 0.0)])
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, proxy.url)
    return proxy


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("runner", RUNNERS)
def test_token_request_to_a_loopback_authority_never_goes_through_a_proxy(
        emu: Emulator, app_profile: Callable[..., str], proxy_env: Scripted, host: str,
        runner: str) -> None:
    name = app_profile("local", authority=emu.url.replace("127.0.0.1", host))
    assert _get(runner, name).token
    assert emu.count("token") == 1
    assert proxy_env.connections == 0  # the client secret never went to the proxy


# ------------------------------------------------------------------ item 3: a deadline


@pytest.mark.parametrize("script", [_headers_trickled, _body_trickled])
@pytest.mark.parametrize("runner", RUNNERS)
def test_timeout_is_a_deadline_for_a_server_that_trickles_its_answer(
        servers: Servers, profiles: Profiles, script: Script,
        runner: str) -> None:
    server = servers(script)
    name = _entra_profile(profiles, server.url, timeout=TIMEOUT)
    with pytest.raises(TokenError) as info:
        _get(runner, name)
    message = str(info.value)
    assert "profile 'svc'" in message
    assert f"within timeout = {TIMEOUT:g} s" in message
    assert info.value.status is None
    # Every attempt was cut off by the client long before the trickle could finish.
    outcomes = server.ended()
    assert outcomes
    assert set(outcomes) == {"dropped"}


def test_retry_waits_of_one_request_add_up_to_at_most_a_minute() -> None:
    # Each Retry-After is under the cap, but together they would pass it: the second 429 goes
    # to the caller instead of a second 40 s wait.
    actions, result = drive([resp(429, retry_after="40"), resp(429, retry_after="40"),
                             resp(200)])
    assert [type(a) for a in actions] == [Send, Sleep, Send]
    assert sum(a.seconds for a in actions if isinstance(a, Sleep)) <= MAX_RETRY_AFTER
    assert result.status == 429


@pytest.mark.parametrize("runner", ["sync", "asyncio"])
def test_timeout_is_a_deadline_over_tls_too(servers: Servers, profiles: Profiles,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            runner: str) -> None:
    (tmp_path / "tls").mkdir()
    files = make_tls_files(tmp_path / "tls")
    server = servers(_body_trickled, tls=server_context(files))
    monkeypatch.setenv("SSL_CERT_FILE", str(files.ca_file))
    name = _entra_profile(profiles, server.url, timeout=TIMEOUT)
    with pytest.raises(TokenError) as info:
        _get(runner, name)
    assert f"within timeout = {TIMEOUT:g} s" in str(info.value)
    outcomes = server.ended()
    assert outcomes
    assert set(outcomes) == {"dropped"}


@pytest.mark.parametrize("runner", ["sync", "asyncio"])
def test_managed_identity_endpoint_that_trickles_is_cut_off_too(
        servers: Servers, profiles: Profiles, monkeypatch: pytest.MonkeyPatch,
        runner: str) -> None:
    from authlayer.flows import managed_identity

    monkeypatch.setattr(managed_identity, "_answered", set())
    server = servers(_body_trickled)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", server.url)
    profiles.write(f"""
        [profiles.mi]
        flow = "managed_identity"
        scope = "https://graph.microsoft.com/.default"
        timeout = {TIMEOUT}
    """)
    with pytest.raises(TokenError) as info:
        _get(runner, "mi")
    assert "profile 'mi'" in str(info.value)
    assert "timed out" in str(info.value)
    outcomes = server.ended()
    assert outcomes
    assert set(outcomes) == {"dropped"}


# ------------------------------------------------------------------ item 5: answer size


def _endless_body() -> Iterator[Piece]:
    """A 200 without a length that goes on for 64 MB, as fast as the client reads."""
    yield _head(Connection="close"), 0.0
    for _ in range(1024):
        yield b" " * 65536, 0.0


def _huge_declared_length() -> Iterator[Piece]:
    """A 200 that announces 1.5 GB, then sends its first bytes slowly."""
    yield _head(Content_Length=str(1_500_000_000)), 0.0
    for _ in range(200):
        yield b"{", TRICKLE


@pytest.mark.parametrize("script", [_endless_body, _huge_declared_length])
@pytest.mark.parametrize("runner", ["sync", "asyncio"])
def test_an_answer_over_a_megabyte_is_refused_without_reading_it_all(
        servers: Servers, profiles: Profiles, script: Script,
        runner: str) -> None:
    server = servers(script)
    name = _entra_profile(profiles, server.url, timeout=30)
    with pytest.raises(TokenError) as info:
        _get(runner, name)
    assert f"larger than {MAX_BODY // 1024} kB" in str(info.value)
    assert "profile 'svc'" in str(info.value)
    assert server.ended() == ["dropped"]  # one attempt, cut short: not retried


def test_an_answer_just_under_the_cap_is_read() -> None:
    # The cap is on the body the client keeps; a token answer padded to near it still parses.
    body = json.dumps({"access_token": "t", "expires_in": 60,
                       "pad": " " * (MAX_BODY - 100)}).encode()
    assert len(body) <= MAX_BODY
    assert token_response(HttpResponse(200, {}, body), profile="p").access_token == "t"


# ------------------------------------------------------------------ item 6: hostile JSON


DEEP = [b"[" * 100_000, b'{"a":' * 100_000, b'{"error": ' + b"[" * 100_000]


@pytest.mark.parametrize("body", DEEP)
@pytest.mark.parametrize("status", [200, 400])
def test_deeply_nested_answer_is_a_token_error(servers: Servers, profiles: Profiles, body: bytes,
                                               status: int) -> None:
    server = servers(lambda: [(_head(status, Content_Length=str(len(body))) + body, 0.0)])
    name = _entra_profile(profiles, server.url)
    with pytest.raises(TokenError) as info:
        get_token(name)
    assert info.value.status == status


@pytest.mark.parametrize("part", ["header", "claims"])
def test_deeply_nested_jwt_is_a_jwt_error(part: str) -> None:
    deep = jwt.b64url_encode(b"[" * 100_000)
    normal = jwt.b64url_encode(b"{}")
    token = f"{deep}.{normal}.sig" if part == "header" else f"{normal}.{deep}.sig"
    with pytest.raises(jwt.JWTError, match=part):
        jwt.decode(token)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["access_token", "expires_in", "expires_on", "error",
                                       "error_codes", "error_description", "refresh_in",
                                       "token_type", "x"]), children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(status=st.sampled_from([200, 400, 401, 429, 500]),
       body=st.one_of(_json.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200),
                      st.integers(1, 50_000).map(lambda n: b"[" * n)))
def test_any_answer_is_a_token_result_or_a_token_error(status: int, body: bytes) -> None:
    response = HttpResponse(status, {"content-type": "application/json"}, body)
    try:
        result = token_response(response, profile="p", now=1000)
    except TokenError:
        return
    assert result.expires_on > 1000
    assert isinstance(error_from_response(response, profile="p"), TokenError)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.integers(1, 50_000).map(
    lambda n: ".".join([jwt.b64url_encode(b"[" * n)] * 3)))
def test_any_text_decodes_as_a_jwt_or_is_a_jwt_error(text: str) -> None:
    try:
        header, claims = jwt.decode(text)
    except jwt.JWTError:
        return
    assert isinstance(header, dict)
    assert isinstance(claims, dict)


def _cli_profile(emu: Emulator, profiles: Profiles, folder: Path,
                 monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(folder))
    profiles.write(f"""
        [profiles.cli]
        flow = "azure_cli"
        authority = "{emu.url}"
        scope = "{emu.api_scope}"
    """)
    return "cli"


def test_deeply_nested_azure_cli_cache_is_a_token_error(
        emu: Emulator, profiles: Profiles, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "azure"
    folder.mkdir()
    (folder / "msal_token_cache.json").write_bytes(b"[" * 100_000)
    (folder / "azureProfile.json").write_bytes(b'{"subscriptions": ' + b"[" * 100_000)
    monkeypatch.setenv("PATH", str(tmp_path / "no-az-here"))
    with pytest.raises(TokenError) as info:
        get_token(_cli_profile(emu, profiles, folder, monkeypatch))
    assert "msal_token_cache.json is not plain JSON" in str(info.value)


@pytest.mark.skipif(os.name == "nt", reason="the stand-in az is a POSIX script")
def test_az_printing_deeply_nested_json_is_a_token_error(
        emu: Emulator, profiles: Profiles, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    az = FakeAz(tmp_path / "bin")
    (az.folder / "answer.json").write_bytes(b"[" * 100_000)
    monkeypatch.setenv("PATH", str(az.folder))
    folder = tmp_path / "azure"
    folder.mkdir()
    with pytest.raises(TokenError) as info:
        get_token(_cli_profile(emu, profiles, folder, monkeypatch))
    assert info.value.error == "malformed_response"


# ------------------------------------------------------------------ item 6: hostile cache records


@pytest.fixture
def file_profile(app_profile: Callable[..., str]) -> str:
    return app_profile("cached", cache="file")


def _cache_file() -> Path:
    return Path(os.environ["AUTHLAYER_CACHE_DIR"]) / "tokens.json"


def _tamper(change: Callable[[dict[str, Any]], None]) -> None:
    path = _cache_file()
    doc = json.loads(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")
    PROVIDER.reset()


HUGE = int("9" * 400)


@pytest.mark.parametrize("field", ["expires_on", "refresh_on"])
def test_a_cache_record_with_a_400_digit_time_is_set_aside_not_a_crash(
        emu: Emulator, file_profile: str, app_profile: Callable[..., str], field: str) -> None:
    get_token(file_profile)
    other = app_profile("other", cache="file", scope=f"{emu.api_url}/other/.default")

    def plant(doc: dict[str, Any]) -> None:
        doc["tokens"]["someone-else"] = {"access_token": "planted", "expires_on": 2_000_000_000,
                                         "refresh_on": 1_999_999_000, field: HUGE}

    _tamper(plant)
    with pytest.warns(UserWarning, match=f"{field} is not a valid time.*moved it to"):
        token = get_token(other)
    assert token.expires_on < 10**11
    aside = [p for p in _cache_file().parent.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1
    # The new file is healthy: every profile keeps working, without further warnings.
    PROVIDER.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_token(file_profile).expires_on < 10**11
        assert get_token(other).expires_on < 10**11


@pytest.mark.parametrize("value", [HUGE, -HUGE, 1e300, float("inf"), float("nan")],
                         ids=["400-digits", "minus-400-digits", "1e300", "inf", "nan"])
def test_a_cached_token_with_an_absurd_expiry_is_not_served(
        emu: Emulator, file_profile: str, value: float) -> None:
    first = get_token(file_profile)

    def spoil(doc: dict[str, Any]) -> None:
        for record in doc["tokens"].values():
            record["expires_on"] = value

    _tamper(spoil)
    with pytest.warns(UserWarning, match="expires_on is not a valid time"):
        again = get_token(file_profile)
    assert again.token != first.token  # fetched anew
    assert again.expires_on < 10**11
    assert emu.count("token") == 2


@settings(max_examples=200, deadline=None)
@given(_json)
def test_any_record_expiry_is_a_float_or_minus_infinity(value: Any) -> None:
    assert isinstance(expires_on({"expires_on": value}), float)


def test_file_store_prunes_around_a_planted_record(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "tokens.json")
    Path(store.path).write_text(json.dumps({"version": 1, "accounts": {}, "tokens": {
        "planted": {"access_token": "x", "expires_on": HUGE}}}), encoding="utf-8")
    with pytest.warns(UserWarning, match="not a valid time"):
        store.save("k", "a", {"access_token": "y", "expires_on": 2_000_000_000,
                              "refresh_on": 1_999_999_000})
    assert store.load("k", "a") == {"access_token": "y", "expires_on": 2_000_000_000,
                                    "refresh_on": 1_999_999_000}


# ------------------------------------------------------------------ item 13: which CA bundle




def test_tls_error_names_the_bundle_that_won_and_its_variable(
        tls_emulator: Emulator, profiles: Profiles, monkeypatch: pytest.MonkeyPatch) -> None:
    name = write_cc_profile(profiles, tls_emulator, "tls")
    assert tls_emulator.ca_file is not None
    monkeypatch.setenv("SSL_CERT_FILE", tls_emulator.ca_file)  # the right one ...
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # ... loses to this one
    with pytest.raises(TokenError) as info:
        get_token(name)
    message = str(info.value)
    assert "not trusted" in message
    assert f"{certifi.where()} (from REQUESTS_CA_BUNDLE, which wins over SSL_CERT_FILE)" in message
    assert "set REQUESTS_CA_BUNDLE to a CA bundle" in message


def test_tls_error_without_variables_names_certifi(
        tls_emulator: Emulator, profiles: Profiles) -> None:
    name = write_cc_profile(profiles, tls_emulator, "tls")
    with pytest.raises(TokenError) as info:
        get_token(name)
    message = str(info.value)
    assert f"certifi's bundle {certifi.where()} (no CA variable is set)" in message
    assert "set SSL_CERT_FILE or REQUESTS_CA_BUNDLE" in message


def test_unreadable_ca_bundle_names_its_variable(
        tls_emulator: Emulator, profiles: Profiles, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    name = write_cc_profile(profiles, tls_emulator, "tls")
    missing = tmp_path / "no-such-ca.pem"
    monkeypatch.setenv("SSL_CERT_FILE", str(missing))
    with pytest.raises(AuthLayerError) as info:
        get_token(name)
    assert f"{missing} (from SSL_CERT_FILE)" in str(info.value)
