"""The public store interface (CONTRACT §9, docs/extending.md): the `cache` key's forms and its
errors, a store plugin (entry point group `authlayer.stores`, from the test plugin package), and
the file cache's fleet single flight and bounded stale lock."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authlayer import ConfigError, get_token, registry
from authlayer import filecache as filecache_module
from authlayer import stores as stores_module
from authlayer.config import load_profile
from authlayer.emulator import Emulator
from authlayer.provider import PROVIDER
from authlayer.store import MemoryStore, lead_or_wait

from .conftest import Profiles
from .test_fleet_redis import Worker, tokens_of, write_profile

SITE = Path(__file__).parent / "plugins" / "site"


def cache_profile(profiles: Profiles, emu: Emulator, app: Any, cache: str,
                  monkeypatch: pytest.MonkeyPatch, secret: str) -> str:
    return write_profile(profiles, emu, app, cache, monkeypatch, secret)


# ------------------------------------------------------------------------------------------
# The cache key


def test_a_redis_url_is_a_redis_cache(profiles: Profiles, emu: Emulator, app: Any,
                                      monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    name = cache_profile(profiles, emu, app, '"rediss://cache.internal:6380/0"', monkeypatch,
                         secret)
    cache = load_profile(name).cache
    assert isinstance(cache, stores_module.StoreConfig)
    assert (cache.kind, cache.url, cache.prefix) == ("redis", "rediss://cache.internal:6380/0",
                                                      "authlayer")


def test_a_redis_table_takes_secret_sources_and_shows_none(
        profiles: Profiles, emu: Emulator, app: Any, monkeypatch: pytest.MonkeyPatch,
        secret: str) -> None:
    name = cache_profile(
        profiles, emu, app, '{ url = "unix:///run/redis.sock", password = "hunter2-redis", '
        'prefix = "team-a", encryption_key = { env = "CACHE_KEY" } }', monkeypatch, secret)
    profile = load_profile(name)
    cache = profile.cache
    assert isinstance(cache, stores_module.StoreConfig)
    assert cache.prefix == "team-a"
    assert cache.encrypted
    assert "hunter2-redis" not in repr(profile)
    assert "CACHE_KEY" not in repr(cache)


@pytest.mark.parametrize(("cache", "key", "says"), [
    ('"redis://:hunter2-redis@cache:6379/0"', "cache", "must not contain a password"),
    ('"redis://cache:6379/0?ssl_keyfile_password=x&foo=1"', "cache", "unknown option"),
    ('"http://cache:6379"', "cache", "is not a Redis URL"),
    ('"redis:///0"', "cache", "names no host"),
    ('"redis"', "cache", "is not valid"),
    ('"memroy"', "cache", "did you mean 'memory'"),
    ('{ url = "redis://cache", passwrod = "x" }', "cache.passwrod", "did you mean 'password'"),
    ('{ password = "x" }', "cache.url", "needs a url"),
    ('{ url = "redis://cache", prefix = "a b" }', "cache.prefix", "without spaces"),
    ('{ store = "nope" }', "cache.store", "store plugin"),
    ("3", "cache", "not an integer"),
])
def test_a_bad_cache_is_a_clear_error(profiles: Profiles, emu: Emulator, app: Any,
                                      monkeypatch: pytest.MonkeyPatch, secret: str, cache: str,
                                      key: str, says: str) -> None:
    name = cache_profile(profiles, emu, app, cache, monkeypatch, secret)
    with pytest.raises(ConfigError) as caught:
        load_profile(name)
    assert caught.value.key == key
    assert says in str(caught.value)
    assert "hunter2-redis" not in str(caught.value)


def test_a_redis_cache_without_the_extra_names_it(profiles: Profiles, emu: Emulator, app: Any,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  secret: str) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if it were not installed
    name = cache_profile(profiles, emu, app, '"redis://cache:6379/0"', monkeypatch, secret)
    with pytest.raises(ConfigError, match=r"pip install 'authlayer\[redis\]'"):
        get_token(name)


def test_an_encryption_key_that_cannot_be_read_is_a_config_error(
        profiles: Profiles, emu: Emulator, app: Any, monkeypatch: pytest.MonkeyPatch,
        secret: str) -> None:
    name = cache_profile(profiles, emu, app, '{ url = "redis://127.0.0.1:1/0", encryption_key'
                         ' = { env = "NO_SUCH_KEY_VARIABLE" } }', monkeypatch, secret)
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VARIABLE") as caught:
        get_token(name)
    assert caught.value.key == "cache.encryption_key"
    assert emu.count("token") == 0


@pytest.mark.parametrize("option", ["db=abc", "socket_timeout=soon"])
def test_a_redis_url_option_with_a_bad_value_is_a_config_error(
        profiles: Profiles, emu: Emulator, app: Any, monkeypatch: pytest.MonkeyPatch,
        secret: str, option: str) -> None:
    name = cache_profile(profiles, emu, app, f'"redis://127.0.0.1:1/0?{option}"', monkeypatch,
                         secret)
    with pytest.raises(ConfigError, match=r"cache\.url") as caught:
        get_token(name)
    assert caught.value.key == "cache"
    assert emu.count("token") == 0


# ------------------------------------------------------------------------------------------
# A store plugin


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    registry.forget_plugins()
    stores_module.forget_stores()
    monkeypatch.syspath_prepend(str(SITE))
    import authlayer_testplugin

    authlayer_testplugin.SHELVES.clear()
    authlayer_testplugin.OPENED.clear()
    try:
        yield authlayer_testplugin
    finally:
        registry.forget_plugins()
        stores_module.forget_stores()


def test_a_plugin_store_keeps_the_tokens(plugin: Any, profiles: Profiles, emu: Emulator,
                                         app: Any, monkeypatch: pytest.MonkeyPatch,
                                         secret: str) -> None:
    name = cache_profile(profiles, emu, app, '"shelf"', monkeypatch, secret)
    token = get_token(name).token
    assert "save" in plugin.OPENED[0].calls
    PROVIDER.reset()  # as a new process would: only the shelf has the token
    assert get_token(name).token == token
    assert emu.count("token") == 1


def test_a_plugin_store_gets_its_options(plugin: Any, profiles: Profiles, emu: Emulator,
                                         app: Any, monkeypatch: pytest.MonkeyPatch,
                                         secret: str) -> None:
    name = cache_profile(profiles, emu, app, '{ store = "shelf", shelf = "team-b" }',
                         monkeypatch, secret)
    get_token(name)
    assert set(plugin.SHELVES) == {"team-b"}


def test_a_plugin_store_that_cannot_open_is_a_config_error(
        plugin: Any, profiles: Profiles, emu: Emulator, app: Any,
        monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    name = cache_profile(profiles, emu, app, '{ store = "shelf", shelf = "broken" }',
                         monkeypatch, secret)
    with pytest.raises(ConfigError, match="store 'shelf' could not be opened: ValueError"):
        get_token(name)


def test_a_failing_plugin_store_costs_no_request(
        plugin: Any, profiles: Profiles, emu: Emulator, app: Any,
        monkeypatch: pytest.MonkeyPatch, secret: str, caplog: pytest.LogCaptureFixture) -> None:
    name = cache_profile(profiles, emu, app, '{ store = "shelf", shelf = "flaky" }',
                         monkeypatch, secret)
    with caplog.at_level(logging.WARNING, logger="authlayer"):
        assert get_token(name).token
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "store 'shelf' failed in save: RuntimeError" in said


def test_a_misspelt_plugin_store_is_suggested(plugin: Any, profiles: Profiles, emu: Emulator,
                                              app: Any, monkeypatch: pytest.MonkeyPatch,
                                              secret: str) -> None:
    name = cache_profile(profiles, emu, app, '"shelv"', monkeypatch, secret)
    with pytest.raises(ConfigError, match="did you mean 'shelf'"):
        load_profile(name)


# ------------------------------------------------------------------------------------------
# The fleet lock protocol


class Locking(MemoryStore):
    """A memory store with a fleet lock that someone else holds until ``free`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.held_by_other = True
        self.polls = 0

    def try_lead(self, key: str, ttl: float) -> Any:
        self.polls += 1
        return None if self.held_by_other else "lease"

    def release(self, lease: object) -> None:
        self.held_by_other = False


def test_a_waiter_takes_the_leaders_token_when_it_lands() -> None:
    store = Locking()
    record = {"access_token": "t", "expires_on": 2**31, "refresh_on": 2**31}

    def sleep(seconds: float) -> None:
        if store.polls == 3:  # the leader lands while we wait
            store.save("k", "a", record)

    lease, found = lead_or_wait(store, "k", "a", ttl=30, usable=lambda r: True, sleep=sleep)
    assert lease is None
    assert found == record


def test_a_waiter_gives_up_after_two_leaders_time_and_fetches_its_own() -> None:
    store = Locking()
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    lease, found = lead_or_wait(store, "k", "a", ttl=7, usable=lambda r: True,
                                clock=lambda: now[0], sleep=sleep)
    assert (lease, found) == (None, None)
    assert 14 <= now[0] < 15


def test_a_waiter_waits_for_the_process_that_took_over_from_a_dead_leader() -> None:
    # The dead leader's lock (taken just before we started waiting) expires at 7 s; another
    # waiter takes it over at once and lands its token at 10 s: we take that one.
    store = Locking()
    record = {"access_token": "t", "expires_on": 2**31, "refresh_on": 2**31}
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 10 and store.load("k", "a") is None:
            store.save("k", "a", record)

    lease, found = lead_or_wait(store, "k", "a", ttl=7, usable=lambda r: True,
                                clock=lambda: now[0], sleep=sleep)
    assert lease is None
    assert found == record


class Leading(MemoryStore):
    """A memory store with a fleet lock that is always free, whose saves fail as a broken
    store's would (not with an authlayer error); it records the leases given back."""

    def __init__(self) -> None:
        super().__init__()
        self.released: list[object] = []

    def try_lead(self, key: str, ttl: float) -> Any:
        return "lease"

    def release(self, lease: object) -> None:
        self.released.append(lease)

    def save(self, key: str, account_key: str, record: dict[str, Any]) -> None:
        raise RuntimeError("the store broke while saving")


def test_a_leader_that_fails_while_saving_gives_the_fleet_lock_back(
        cc_profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from authlayer.provider import PROVIDER

    store = Leading()
    monkeypatch.setattr(PROVIDER, "store_for", lambda profile: store)
    with pytest.raises(RuntimeError, match="broke while saving"):
        get_token(cc_profile)
    assert store.released == ["lease"]


def test_a_leader_whose_store_cannot_be_read_gives_the_lock_back() -> None:
    from authlayer import AuthLayerError

    class Unreadable(Leading):
        def load(self, key: str, account_key: str) -> Any:
            raise AuthLayerError("the store cannot be read")

    store = Unreadable()
    with pytest.raises(AuthLayerError):
        lead_or_wait(store, "k", "a", ttl=30, usable=lambda r: True)
    assert store.released == ["lease"]


def test_the_waiters_poll_ever_less_often() -> None:
    store = Locking()
    waits: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    lead_or_wait(store, "k", "a", ttl=30, usable=lambda r: True, clock=lambda: now[0],
                 sleep=sleep)
    assert waits == sorted(waits)
    assert len(waits) < 2 * 30 / 0.2 + 10  # at most about five looks a second, for twice the ttl


# ------------------------------------------------------------------------------------------
# The file cache


def test_processes_sharing_the_file_make_one_token_request(
        profiles: Profiles, emu: Emulator, app: Any, monkeypatch: pytest.MonkeyPatch,
        secret: str, tmp_path: Path) -> None:
    name = cache_profile(profiles, emu, app, '"file"', monkeypatch, secret)
    go = tmp_path / "go"
    workers = [Worker(name, "--threads", "4", "--go", str(go)) for _ in range(4)]
    go.touch()
    tokens = tokens_of(workers)
    for worker in workers:
        worker.finish()
    assert len(tokens) == 16
    assert len(set(tokens)) == 1
    assert emu.count("token") == 1


@pytest.mark.timeout(90)
def test_a_lock_left_by_a_stopped_process_costs_one_wait_not_every_request(
        profiles: Profiles, emu: Emulator, app: Any, monkeypatch: pytest.MonkeyPatch,
        secret: str, caplog: pytest.LogCaptureFixture) -> None:
    name = cache_profile(profiles, emu, app, '"file"', monkeypatch, secret)
    lock_path = filecache_module.default_path() + ".lock"
    os.makedirs(os.path.dirname(lock_path), mode=0o700, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import filelock, os, signal, sys\n"
         f"lock = filelock.FileLock({lock_path!r}); lock.acquire()\n"
         "print('held', flush=True); os.kill(os.getpid(), signal.SIGSTOP)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(filecache_module, "LOCK_TIMEOUT", 0.2)
        with caplog.at_level(logging.WARNING, logger="authlayer"):
            assert get_token(name).token  # waits once, then keeps the token in memory
            # Were every write to wait LOCK_TIMEOUT again, these would hang (test timeout).
            monkeypatch.setattr(filecache_module, "LOCK_TIMEOUT", 3600)
            tokens = {get_token(name, force_refresh=True).token for _ in range(5)}
        assert len(tokens) == 5
        said = "\n".join(r.getMessage() for r in caplog.records)
        assert "could not be written" in said
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)


def test_a_stale_lock_is_waited_for_again_once_its_holder_is_gone(
        profiles: Profiles, emu: Emulator, app: Any, monkeypatch: pytest.MonkeyPatch,
        secret: str) -> None:
    name = cache_profile(profiles, emu, app, '"file"', monkeypatch, secret)
    store = filecache_module.FileStore.default()
    store._stuck_until = float("inf")  # as after a timeout
    get_token(name)  # the lock is free: the write succeeds and the store trusts it again
    assert store._stuck_until == 0.0
    data = json.loads(Path(store.path).read_text())
    assert len(data["tokens"]) == 1
