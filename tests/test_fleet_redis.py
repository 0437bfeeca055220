"""The fleet cache on Redis (CONTRACT §9), against real ``redis-server`` processes that each
test starts on a free loopback port (``tests/redis_server.py``), and fleets of real processes
(``tests/fleet_worker.py``) that get tokens from the emulator. Without ``redis-server`` these
tests skip, unless ``AUTHLAYER_REQUIRE_REDIS=1``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authlayer import EntraAuth, get_token, get_token_async
from authlayer.emulator import Emulator
from authlayer.provider import PROVIDER
from authlayer.stores import redis as redis_store

from .conftest import Client, Profiles
from .redis_server import RedisServer
from .signin_helpers import Approver, new_person

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as srv:
        yield srv


@pytest.fixture(autouse=True)
def _quick_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    # A store tries Redis again this soon after it failed: tests see sharing resume at once.
    monkeypatch.setattr(redis_store, "RETRY_AFTER", 0.05)


def write_profile(profiles: Profiles, emu: Emulator, app: Any, cache: str,
                  monkeypatch: pytest.MonkeyPatch, secret: str, *, name: str = "app",
                  timeout: float = 10) -> str:
    monkeypatch.setenv("APP_SECRET", secret)
    profiles.write(f"""
        [profiles.{name}]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{app.client_id}"
        client_secret = {{ env = "APP_SECRET" }}
        scope = "{emu.api_scope}"
        timeout = {timeout}
        cache = {cache}
    """)
    return name


@pytest.fixture
def fleet(profiles: Profiles, emu: Emulator, app: Any, server: RedisServer,
          monkeypatch: pytest.MonkeyPatch, secret: str) -> str:
    """A client-credentials profile `app` whose cache is the test's Redis."""
    return write_profile(profiles, emu, app, json.dumps(server.url), monkeypatch, secret)


class Worker:
    """A process of the fleet (tests/fleet_worker.py), started and ready."""

    def __init__(self, profile: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fleet_worker", profile, *args], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ready = self.process.stdout.readline()
        if ready.strip() != "ready":
            self.process.wait(60)
            err = self.process.stderr.read() if self.process.stderr else ""
            raise AssertionError(f"worker did not start: {ready!r} {err}")

    def result(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(60)
            raise AssertionError(f"worker ended with {self.process.returncode}: "
                                 f"{self.process.stderr.read() if self.process.stderr else ''}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def finish(self) -> str:
        _out, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err
        return err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=30)


def tokens_of(workers: list[Worker]) -> list[str]:
    found: list[str] = []
    for worker in workers:
        answer = worker.result()
        assert answer["failed"] == []
        found += answer["tokens"]
    return found


def wait_until(condition: Any, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.01)


def redis_values(server: RedisServer) -> list[bytes]:
    """Every key name and value in the server, and each value's DUMP, as bytes."""
    client: Any = server.client()
    found: list[bytes] = []
    for name in client.scan_iter("*"):
        found.append(name)
        found.append(client.dump(name) or b"")
        if client.type(name) == b"string":
            found.append(client.get(name) or b"")
        elif client.type(name) == b"set":
            found.extend(client.smembers(name))
    return found


# ------------------------------------------------------------------------------------------
# One request for the fleet


def test_a_cold_stampede_of_processes_and_threads_makes_one_token_request(
        fleet: str, emu: Emulator, tmp_path: Path) -> None:
    go = tmp_path / "go"
    workers = [Worker(fleet, "--threads", "8", "--go", str(go)) for _ in range(4)]
    go.touch()
    tokens = tokens_of(workers)
    for worker in workers:
        worker.finish()
    assert len(tokens) == 32
    assert len(set(tokens)) == 1
    assert emu.count("token") == 1


def test_a_new_process_is_served_from_redis_without_a_token_request(
        fleet: str, emu: Emulator) -> None:
    mine = get_token(fleet).token
    worker = Worker(fleet)
    assert tokens_of([worker]) == [mine]
    worker.finish()
    assert emu.count("token") == 1


def test_a_cached_call_does_not_touch_redis(fleet: str, server: RedisServer,
                                            caplog: pytest.LogCaptureFixture) -> None:
    first = get_token(fleet)
    server.stop()  # any Redis call would now fail, and warn
    with caplog.at_level(logging.DEBUG, logger="authlayer"):
        assert all(get_token(fleet) is first for _ in range(100))
    assert not [r for r in caplog.records if "Redis" in r.getMessage()]


def test_a_leader_killed_mid_request_is_taken_over(
        profiles: Profiles, emu: Emulator, app: Any, server: RedisServer,
        monkeypatch: pytest.MonkeyPatch, secret: str, tmp_path: Path) -> None:
    name = write_profile(profiles, emu, app, json.dumps(server.url), monkeypatch, secret,
                         timeout=2)  # the lock lasts 2 + FLEET_GRACE (5) seconds
    go = tmp_path / "go"
    # The followers wait longer than the dead leader's lock lasts (which they would not, by a
    # few milliseconds, with the same grace): one takes over, the other takes its token.
    followers = [Worker(name, "--threads", "4", "--go", str(go), "--grace", "30")
                 for _ in range(2)]
    gate = emu.hold(count=1)  # the leader's token request is held (never answered)
    leader = Worker(name)
    gate.wait_for(1)
    go.touch()  # the followers find the leader's lock, which outlives the leader, and wait
    leader.process.send_signal(signal.SIGKILL)
    leader.kill()
    tokens = tokens_of(followers)
    for worker in followers:
        worker.finish()
    assert len(tokens) == 8
    assert len(set(tokens)) == 1
    assert emu.count("token") == 2  # the dead leader's, and one for everybody else
    first, second = [r for r in emu.requests if r.endpoint == "token"]
    # Nobody asked while the dead leader's lock lasted; then one follower took over.
    assert second.time - first.time >= 2 + 5 - 1


def test_refresh_ahead_is_fleet_wide(fleet: str, emu: Emulator, tmp_path: Path) -> None:
    emu.refresh_in = 4  # the first token is due for refresh four seconds after it came
    go, then = tmp_path / "go", tmp_path / "then"
    workers = [Worker(fleet, "--threads", "2", "--go", str(go), "--then", str(then))
               for _ in range(3)]
    go.touch()
    first = tokens_of(workers)
    assert len(set(first)) == 1
    emu.refresh_in = None
    # Each process moves its clock past the refresh time and sees its token due: one of them
    # refreshes it for all.
    then.with_suffix(".tmp").write_text("4.2")
    then.with_suffix(".tmp").rename(then)
    second = tokens_of(workers)
    for worker in workers:
        worker.finish()
    assert len(set(second)) == 1
    assert second[0] != first[0]
    assert emu.count("token") == 2


# ------------------------------------------------------------------------------------------
# Redis unavailable


def test_redis_stopped_and_restarted_mid_run_fails_no_request(
        fleet: str, emu: Emulator, server: RedisServer, client: Client,
        caplog: pytest.LogCaptureFixture) -> None:
    auth = EntraAuth(fleet)
    assert client.get(f"{emu.api_url}/things", auth).status == 200
    server.stop()
    with caplog.at_level(logging.WARNING, logger="authlayer"):
        for _ in range(3):
            get_token(fleet, force_refresh=True)  # a token fetched while Redis is down
            assert client.get(f"{emu.api_url}/things", auth).status == 200
    down = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(down) == 1
    assert down[0].exc_info is None
    server.start()  # the same port, empty
    time.sleep(0.1)
    latest = get_token(fleet, force_refresh=True).token
    client_redis: Any = server.client()
    assert any(key.startswith(b"authlayer:t:") for key in client_redis.keys("*"))
    PROVIDER.reset()
    worker = Worker(fleet)  # another process is served from Redis again
    assert tokens_of([worker]) == [latest]
    worker.finish()


def test_a_redis_that_answers_nothing_fails_no_request(
        fleet: str, emu: Emulator, server: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    get_token(fleet)
    server.pause()  # accepts connections, answers nothing: the short timeouts apply
    try:
        with caplog.at_level(logging.WARNING, logger="authlayer"):
            tokens = {get_token(fleet, force_refresh=True).token for _ in range(3)}
    finally:
        server.resume()
    assert len(tokens) == 3
    assert len([r for r in caplog.records if "cannot be reached" in r.getMessage()]) == 1


def test_redis_down_at_start_is_one_line_on_standard_error(
        profiles: Profiles, emu: Emulator, app: Any, monkeypatch: pytest.MonkeyPatch,
        secret: str) -> None:
    from .redis_server import free_port

    name = write_profile(profiles, emu, app, json.dumps(f"redis://127.0.0.1:{free_port()}/0"),
                         monkeypatch, secret)
    worker = Worker(name, "--threads", "4")
    answer = worker.result()
    err = worker.finish()
    assert len(answer["tokens"]) == 4
    assert answer["failed"] == []
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "cannot be reached" in lines[0]
    assert "Traceback" not in err


def test_a_wrong_redis_password_falls_back_to_memory(
        profiles: Profiles, emu: Emulator, app: Any, monkeypatch: pytest.MonkeyPatch,
        secret: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with RedisServer(tmp_path / "locked", password="right-password-123") as srv:
        monkeypatch.setenv("REDIS_PASSWORD", "wrong-password-456")
        name = write_profile(profiles, emu, app,
                             f'{{ url = "{srv.url}", password = {{ env = "REDIS_PASSWORD" }} }}',
                             monkeypatch, secret)
        with caplog.at_level(logging.WARNING, logger="authlayer"):
            assert get_token(name).token
        said = "\n".join(r.getMessage() for r in caplog.records)
        assert "cannot be reached" in said
        assert "wrong-password-456" not in said


# ------------------------------------------------------------------------------------------
# What is stored, and how


def test_entries_expire_in_redis_with_their_token(fleet: str, server: RedisServer) -> None:
    token = get_token(fleet)
    client: Any = server.client()
    (name,) = client.keys("authlayer:t:*")
    ttl = client.ttl(name)
    left = token.expires_on - time.time()
    assert left - 5 <= ttl <= left + 1


def test_key_names_reveal_no_tenant_client_or_secret(
        fleet: str, server: RedisServer, emu: Emulator, app: Any, secret: str) -> None:
    get_token(fleet)
    names = b" ".join(server.client().keys("*"))  # type: ignore[attr-defined]
    for part in (emu.tenant_id, app.client_id, secret, "APP_SECRET", "client_credentials"):
        assert part.encode() not in names


def test_redis_never_holds_the_client_secret(fleet: str, server: RedisServer,
                                             secret: str) -> None:
    token = get_token(fleet).token
    everything = b"\n".join(redis_values(server))
    assert token.encode() in everything  # not encrypted: the token is there, readable
    assert secret.encode() not in everything


def test_encrypted_values_show_no_token_in_a_dump(
        profiles: Profiles, emu: Emulator, app: Any, server: RedisServer,
        monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("CACHE_KEY", "a passphrase for the fleet")
    name = write_profile(profiles, emu, app, f'{{ url = "{server.url}", encryption_key = '
                         '{ env = "CACHE_KEY" } }', monkeypatch, secret)
    token = get_token(name).token
    everything = b"\n".join(redis_values(server))
    assert len(everything) > 1000  # the entry is there...
    assert token.encode() not in everything  # ...but not the token
    assert token.split(".")[1].encode() not in everything
    PROVIDER.reset()
    worker = Worker(name)  # the same key reads it back
    assert tokens_of([worker]) == [token]
    worker.finish()
    assert emu.count("token") == 1


def test_a_wrong_encryption_key_is_a_miss_with_one_warning(
        profiles: Profiles, emu: Emulator, app: Any, server: RedisServer,
        monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("CACHE_KEY", "the fleet's key")
    name = write_profile(profiles, emu, app, f'{{ url = "{server.url}", encryption_key = '
                         '{ env = "CACHE_KEY" } }', monkeypatch, secret)
    token = get_token(name).token
    env = dict(os.environ, CACHE_KEY="not the fleet's key")
    process = subprocess.run(
        [sys.executable, "-m", "tests.fleet_worker", name, "--threads", "3"], cwd=ROOT,
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert process.returncode == 0, process.stderr
    answer = json.loads(process.stdout.splitlines()[1])
    assert answer["failed"] == []
    assert len(set(answer["tokens"])) == 1
    assert answer["tokens"][0] != token  # it could not read the entry: it fetched its own
    warnings = [line for line in process.stderr.splitlines() if "cannot be read" in line]
    assert len(warnings) == 1
    assert "Traceback" not in process.stderr
    assert emu.count("token") == 2


def test_a_tampered_value_is_a_miss(
        profiles: Profiles, emu: Emulator, app: Any, server: RedisServer,
        monkeypatch: pytest.MonkeyPatch, secret: str,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CACHE_KEY", "k" * 40)
    name = write_profile(profiles, emu, app, f'{{ url = "{server.url}", encryption_key = '
                         '{ env = "CACHE_KEY" } }', monkeypatch, secret)
    token = get_token(name).token
    client: Any = server.client()
    (entry,) = client.keys("authlayer:t:*")
    value = bytearray(client.get(entry))
    value[-1] ^= 1
    client.set(entry, bytes(value), keepttl=True)
    PROVIDER.reset()
    with caplog.at_level(logging.WARNING, logger="authlayer"):
        again = get_token(name).token
    assert again != token
    assert emu.count("token") == 2
    assert any("cannot be read" in r.getMessage() for r in caplog.records)


def test_sign_out_forgets_the_fleets_tokens(fleet: str, server: RedisServer) -> None:
    get_token(fleet)
    client: Any = server.client()
    assert client.keys("authlayer:t:*")
    PROVIDER.forget(PROVIDER.bind(fleet))
    assert client.keys("authlayer:*") == []


def test_a_prefix_names_every_key(profiles: Profiles, emu: Emulator, app: Any,
                                  server: RedisServer, monkeypatch: pytest.MonkeyPatch,
                                  secret: str) -> None:
    name = write_profile(profiles, emu, app, f'{{ url = "{server.url}", prefix = "team-a" }}',
                         monkeypatch, secret)
    get_token(name)
    names = server.client().keys("*")  # type: ignore[attr-defined]
    assert names
    assert all(n.startswith(b"team-a:") for n in names)


def test_async_callers_share_the_fleets_token(fleet: str, emu: Emulator) -> None:
    worker = Worker(fleet)
    theirs = tokens_of([worker])
    worker.finish()

    async def many() -> set[str]:
        got = await asyncio.gather(*(get_token_async(fleet) for _ in range(20)))
        return {t.token for t in got}

    assert asyncio.run(many()) == set(theirs)
    assert emu.count("token") == 1


# ------------------------------------------------------------------------------------------
# A person's sign-in


def test_a_persons_sign_in_is_shared_by_two_processes(
        profiles: Profiles, emu: Emulator, server: RedisServer) -> None:
    person = new_person(emu)
    public = emu.register_app(public=True)
    profiles.write(f"""
        [profiles.me]
        flow = "device_code"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{public.client_id}"
        scope = "{emu.api_scope}"
        timeout = 5
        cache = "{server.url}"
    """)
    approver = Approver(emu, person)
    get_token("me", prompt=approver)
    assert emu.count("devicecode") == 1
    client: Any = server.client()
    assert client.keys("authlayer:a:*")  # the sign-in (its refresh token) is in Redis
    other_scope = "offline_access " + emu.api_scope.replace(".default", "other")
    worker = Worker("me", "--scope", other_scope)  # it would end with status 3 if it asked
    answer = worker.result()
    worker.finish()
    assert answer["failed"] == []
    assert answer["tokens"]
    assert emu.count("devicecode") == 1
    assert emu.count("token", grant_type="refresh_token") == 1


# ------------------------------------------------------------------------------------------
# TLS and a password


def test_tls_with_a_test_ca_and_a_password(
        profiles: Profiles, emu: Emulator, app: Any, monkeypatch: pytest.MonkeyPatch,
        secret: str, tmp_path: Path) -> None:
    srv = RedisServer(tmp_path / "tls", password="redis-password-789", tls=True)
    try:
        srv.start()
    except RuntimeError as exc:
        log = srv.log.read_text() if srv.log.exists() else ""
        if "tls" in (str(exc) + log).lower():
            pytest.skip("this redis-server was built without TLS")
        raise
    try:
        assert srv.url.startswith("rediss://")
        monkeypatch.setenv("REDIS_PASSWORD", "redis-password-789")
        name = write_profile(profiles, emu, app,
                             f'{{ url = "{srv.url}", password = {{ env = "REDIS_PASSWORD" }} }}',
                             monkeypatch, secret)
        token = get_token(name).token
        worker = Worker(name)
        assert tokens_of([worker]) == [token]
        err = worker.finish()
        assert "cannot be reached" not in err
        assert emu.count("token") == 1
    finally:
        srv.stop()


def test_a_redis_server_with_an_unknown_ca_is_not_trusted(
        profiles: Profiles, emu: Emulator, app: Any, monkeypatch: pytest.MonkeyPatch,
        secret: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    srv = RedisServer(tmp_path / "tls", tls=True)
    try:
        srv.start()
    except RuntimeError:
        pytest.skip("this redis-server was built without TLS")
    try:
        url = srv.url.split("?", 1)[0]  # no ssl_ca_certs: the system's CAs do not know it
        name = write_profile(profiles, emu, app, json.dumps(url), monkeypatch, secret)
        with caplog.at_level(logging.WARNING, logger="authlayer"):
            assert get_token(name).token  # served, from memory
        assert any("cannot be reached" in r.getMessage() for r in caplog.records)
    finally:
        srv.stop()

