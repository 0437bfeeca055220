"""The token stores: what every :class:`~authlayer.store.TokenStore` does with an account's
records (both stores), and the bounds of the in-memory store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from authlayer import store as store_module
from authlayer.filecache import FileStore
from authlayer.store import MemoryStore, TokenStore

HOUR = 3600


def record(token: str, *, expires_in: int = HOUR, refresh_token: str | None = None,
           account: Any = None) -> dict[str, Any]:
    now = int(time.time())
    rec: dict[str, Any] = {"access_token": token, "expires_on": now + expires_in,
                           "refresh_on": now + expires_in - 300, "token_type": "Bearer"}
    if refresh_token is not None or account is not None:
        rec["refresh_token"] = refresh_token
        rec["account"] = account
    return rec


@pytest.fixture(params=["memory", "file"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> TokenStore:
    if request.param == "memory":
        return MemoryStore()
    return FileStore(tmp_path / "store" / "tokens.json")


def access_token(store: TokenStore, key: str, account_key: str) -> Any:
    return (store.load(key, account_key) or {}).get("access_token")


def refresh_token(store: TokenStore, key: str, account_key: str) -> Any:
    return (store.load(key, account_key) or {}).get("refresh_token")


# ---------------------------------------------------------------------- every store


def test_delete_forgets_every_token_and_the_refresh_token_of_the_account(
    any_store: TokenStore,
) -> None:
    # token keys are the account key, "|" and the scopes (provider.Binding.make)
    any_store.save("acct|graph", "acct", record("at-graph", refresh_token="rt-acct"))
    any_store.save("acct|arm storage", "acct", record("at-arm"))
    any_store.save("acct2|graph", "acct2", record("at-2", refresh_token="rt-2"))
    any_store.save("acctx|graph", "acctx", record("at-x", refresh_token="rt-x"))
    any_store.delete("acct|graph", "acct")
    assert any_store.load("acct|graph", "acct") is None
    assert any_store.load("acct|arm storage", "acct") is None
    # other accounts, even one whose key starts like it, are left alone
    assert access_token(any_store, "acct2|graph", "acct2") == "at-2"
    assert refresh_token(any_store, "acct2|graph", "acct2") == "rt-2"
    assert access_token(any_store, "acctx|graph", "acctx") == "at-x"
    assert refresh_token(any_store, "acctx|graph", "acctx") == "rt-x"


def test_forget_account_tokens_keeps_the_refresh_token(any_store: TokenStore) -> None:
    any_store.save("acct|graph", "acct", record("at-graph", refresh_token="rt-acct",
                                                account={"upn": "me"}))
    any_store.save("acct|arm", "acct", record("at-arm"))
    any_store.save("acct2|graph", "acct2", record("at-2", refresh_token="rt-2"))
    any_store.forget_account_tokens("acct")
    for key in ("acct|graph", "acct|arm"):
        assert any_store.load(key, "acct") == {"refresh_token": "rt-acct", "account": {"upn": "me"}}
    assert access_token(any_store, "acct2|graph", "acct2") == "at-2"
    any_store.forget_account_tokens("nobody")
    any_store.forget_account_tokens("acct")  # nothing left: fine


def test_discard_keeps_the_other_tokens_of_the_account(any_store: TokenStore) -> None:
    any_store.save("acct|graph", "acct", record("at-graph", refresh_token="rt-acct"))
    any_store.save("acct|arm", "acct", record("at-arm"))
    any_store.discard("acct|graph")
    assert any_store.load("acct|graph", "acct") == {"refresh_token": "rt-acct"}
    assert access_token(any_store, "acct|arm", "acct") == "at-arm"


# ---------------------------------------------------------------------- the in-memory bounds


def tokens_of(store: MemoryStore) -> dict[str, dict[str, Any]]:
    return store._tokens


def test_defaults_bound_many_on_behalf_of_keys() -> None:
    assert store_module.PRUNE_THRESHOLD == 1000
    assert store_module.MAX_RECORDS == 10000
    store = MemoryStore()
    for i in range(2000):  # one key per incoming user assertion, all expired by now
        store.save(f"obo:{i}|api", f"obo:{i}", record(f"at-{i}", expires_in=-1))
    assert len(tokens_of(store)) <= store_module.PRUNE_THRESHOLD
    sizes = set()
    for i in range(12000):
        store.save(f"live:{i}|api", f"live:{i}", record(f"at-{i}", expires_in=HOUR + i))
        sizes.add(len(tokens_of(store)))
    assert max(sizes) == store_module.MAX_RECORDS
    kept = tokens_of(store)
    assert len(kept) < store_module.MAX_RECORDS
    assert "live:11999|api" in kept  # the ones expiring last stay
    assert "live:0|api" not in kept
    assert len(store._accounts) == 0  # none of these had a refresh token


def test_expired_records_are_pruned_beyond_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "PRUNE_THRESHOLD", 10)
    store = MemoryStore()
    for i in range(10):
        store.save(f"old{i}|s", f"old{i}", record(f"at-{i}", expires_in=-10,
                                                  refresh_token=f"rt-{i}"))
    assert len(tokens_of(store)) == 10  # not beyond the threshold yet
    store.save("live|s", "live", record("at-live"))
    assert set(tokens_of(store)) == {"live|s"}
    # the sign-ins survive: only access tokens expire here
    assert store.load("old3|s", "old3") == {"refresh_token": "rt-3"}
    assert access_token(store, "live|s", "live") == "at-live"


def test_records_are_capped_dropping_those_expiring_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "PRUNE_THRESHOLD", 3)
    monkeypatch.setattr(store_module, "MAX_RECORDS", 5)
    store = MemoryStore()
    lifetimes = [HOUR + 10 * i for i in (5, 1, 7, 3, 0, 6, 2, 4)]
    for i, life in enumerate(lifetimes):
        store.save(f"k{i}|s", f"a{i}", record(f"at-{i}", expires_in=life))
        assert len(tokens_of(store)) <= 5
    # the five expiring last: lifetimes 7, 6, 5, 4, 3
    assert set(tokens_of(store)) == {"k2|s", "k5|s", "k0|s", "k7|s", "k3|s"}


def test_a_full_store_makes_room_for_a_tenth_more(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "PRUNE_THRESHOLD", 5)
    monkeypatch.setattr(store_module, "MAX_RECORDS", 20)
    store = MemoryStore()
    prunes: list[int] = []
    real = store._prune

    def counting(now: float) -> None:
        prunes.append(len(tokens_of(store)))
        real(now)

    monkeypatch.setattr(store, "_prune", counting)
    for i in range(21):
        store.save(f"k{i}|s", f"a{i}", record(f"at-{i}", expires_in=HOUR + i))
    assert set(tokens_of(store)) == {f"k{i}|s" for i in range(3, 21)}  # 18: the latest
    for i in range(21, 23):  # room for two more before it is full again
        store.save(f"k{i}|s", f"a{i}", record(f"at-{i}", expires_in=HOUR + i))
    assert prunes == [6, 13, 21]
    store.save("k23|s", "a23", record("at-23", expires_in=HOUR + 23))
    assert prunes == [6, 13, 21, 21]
    assert len(tokens_of(store)) == 18


def test_accounts_are_capped_dropping_those_saved_longest_ago(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "MAX_RECORDS", 3)
    store = MemoryStore()
    for i in range(5):
        store.save(f"a{i}|s", f"a{i}", record(f"at-{i}", refresh_token=f"rt-{i}"))
    assert list(store._accounts) == ["a2", "a3", "a4"]
    store.save("a2|s", "a2", record("at-2b", refresh_token="rt-2b"))  # the newest again
    store.save("a5|s", "a5", record("at-5", refresh_token="rt-5"))
    assert list(store._accounts) == ["a4", "a2", "a5"]


def test_many_live_records_are_not_scanned_on_every_save(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "PRUNE_THRESHOLD", 10)
    store = MemoryStore()
    prunes: list[int] = []
    real = store._prune

    def counting(now: float) -> None:
        prunes.append(len(tokens_of(store)))
        real(now)

    monkeypatch.setattr(store, "_prune", counting)
    for i in range(1000):
        store.save(f"k{i}|s", f"a{i}", record(f"at-{i}"))
    assert len(tokens_of(store)) == 1000
    assert prunes == [11, 23, 47, 95, 191, 383, 767]  # each time it doubled
