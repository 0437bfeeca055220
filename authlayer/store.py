"""Where token records live beyond the hot in-memory entry: the public store interface
(:class:`TokenStore`, and the optional :class:`FleetLock` that lets a shared store make one token
request for a whole fleet), and the in-memory store.

A store is what ``cache = ...`` names: ``memory`` (:class:`MemoryStore`), ``file``
(:class:`authlayer.filecache.FileStore`), a Redis URL (:class:`authlayer.stores.redis.RedisStore`)
or a plugin's store (entry point group ``authlayer.stores``, see ``docs/extending.md``). Keys are
opaque strings that name no secret (a store that is shared should still hash them: they name
tenants, clients and scopes); values are JSON-able dicts.

A record is a JSON-able dict: ``access_token``, ``expires_on``, ``refresh_on``, ``token_type``
and, for flows that sign a person in, ``refresh_token`` and ``account``. Records are kept per
token key; the refresh token and account are also kept per account key, so that a sign-in can be
reused for another scope set. A token key is its account key, ``|`` and its scopes
(:meth:`authlayer.provider.Binding.make`), so the token records of an account are the ones whose
key starts with ``account_key + "|"``. The persistent store is
:class:`authlayer.filecache.FileStore`.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional, Protocol

__all__ = ["FleetLock", "MemoryStore", "TokenStore", "fleet_lock", "lead_or_wait",
           "merge_account"]

# MemoryStore bounds: once it holds more than PRUNE_THRESHOLD token records, a save drops the
# expired ones; it never holds more than MAX_RECORDS token records (when it would, the ones
# expiring first go, down to MAX_RECORDS less a tenth, so that a full store is not scanned on
# every save) nor more than MAX_RECORDS accounts (the ones saved longest ago go). On-behalf-of
# makes one key per incoming user assertion: a long-running API would otherwise grow unbounded.
PRUNE_THRESHOLD = 1000
MAX_RECORDS = 10000
# While another process holds a key's fleet lock, look again for its token after this many
# seconds, doubling up to FLEET_POLL_MAX: bounded polling, a handful of reads per second.
FLEET_POLL_FIRST = 0.01
FLEET_POLL_MAX = 0.2
# A record's expires_on / refresh_on beyond this (the year 5138) is not a time: it was not written
# by authlayer.
MAX_TIME = 10**11


class TokenStore(Protocol):
    """Keeps token records. Implementations are thread-safe.

    The provider calls these on its slow path only (a miss, a refresh, a 401, a sign-out),
    never for a cached token; an async caller's calls run in a worker thread, so they may
    block. A store that cannot do its job raises :class:`~authlayer.errors.AuthLayerError`: the
    provider then warns and keeps the tokens in its own memory. A shared store that can be
    unreachable should rather fall back by itself and warn once (as the Redis store does).
    """

    def load(self, key: str, account_key: str) -> Optional[dict[str, Any]]:
        """The record for ``key``, completed with the account's refresh token when it has
        none; or the account's record alone; or ``None``."""
        ...

    def save(self, key: str, account_key: str, record: dict[str, Any]) -> None:
        """Keep ``record`` under ``key``, and its refresh token and account under
        ``account_key``."""
        ...

    def discard(self, key: str) -> None:
        """Forget the access token under ``key`` (it was rejected); keep the refresh token."""
        ...

    def delete(self, key: str, account_key: str) -> None:
        """Forget the account: the record under ``key``, every other token record of the
        account (keys starting with ``account_key + "|"``) and its refresh token (sign-out)."""
        ...

    def forget_account_tokens(self, account_key: str) -> None:
        """Forget every token record of the account (keys starting with ``account_key + "|"``)
        but keep its refresh token and account: a fresh sign-in replaced the account, so
        tokens obtained for the previous one must not be served."""
        ...


class FleetLock(Protocol):
    """What a store shared by processes may add so that they make one token request between
    them (optional: the provider looks for ``try_lead`` and ``release``).

    Before the provider asks the identity service for a token that is missing or due, the
    process that leads its in-process single flight calls :func:`lead_or_wait`: it either takes
    the key's lock (it leads the fleet: it asks, saves the token, then releases the lock) or
    waits, looking at the store now and then, until the leader's token is there.
    """

    def try_lead(self, key: str, ttl: float) -> Optional[object]:
        """Take the fleet-wide lock for ``key`` without waiting: a lease for :meth:`release`,
        or ``None`` when someone else holds it. The lock must end by itself ``ttl`` seconds
        after it was taken (a leader that died must not block the fleet) or when its holder
        dies. A store that cannot tell (it is unreachable) answers a lease that locks nothing:
        then the process fetches its own token."""
        ...

    def release(self, lease: object) -> None:
        """Give the lock back, only if this lease still holds it (it may have expired and been
        taken by another process); never raises."""
        ...


def fleet_lock(store: object) -> Optional[FleetLock]:
    """``store`` as a :class:`FleetLock`, if it is one."""
    if callable(getattr(store, "try_lead", None)) and callable(getattr(store, "release", None)):
        return store  # type: ignore[return-value]  # checked just above
    return None


def lead_or_wait(
    store: TokenStore,
    key: str,
    account_key: str,
    *,
    ttl: float,
    usable: Callable[[dict[str, Any]], bool],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Optional[object], Optional[dict[str, Any]]]:
    """Lead the fleet for ``key`` or wait for its leader (blocking; see :class:`FleetLock`).

    Returns ``(lease, record)``: with a lease, this process asks the identity service and
    releases it afterwards (``record``, if any, is the newest stored one: a refresh token to
    use); without one, ``record`` is the token another process just got (``usable(record)``
    holds), or ``None`` when the store has no fleet lock or the wait lasted ``2 * ttl`` seconds
    (leaders that stopped without dying): then the process fetches its own.

    A leader that dies is taken over when its lock expires, ``ttl`` after it was taken, by one
    of the waiters; the others go on waiting for that one. Hence a waiter gives up only after
    two leaders' worth of time: ``ttl`` alone, counted from its own start, would end moments
    after the dead leader's lock, while the new leader is at work, and each waiter would then
    ask for a token of its own.
    """
    lock = fleet_lock(store)
    if lock is None:
        return None, None
    deadline = clock() + 2 * ttl
    delay = FLEET_POLL_FIRST
    while True:
        lease = lock.try_lead(key, ttl)
        try:
            record = store.load(key, account_key)
        except BaseException:
            if lease is not None:  # not ours to keep: the others would wait for it to expire
                lock.release(lease)
            raise
        found = record if record is not None and usable(record) else None
        if lease is not None:
            if found is not None:  # the previous leader landed between our look and the lock
                lock.release(lease)
                return None, found
            return lease, record
        if found is not None:
            return None, found
        if clock() >= deadline:
            return None, None
        sleep(delay)
        delay = min(delay * 2, FLEET_POLL_MAX)


def merge_account(
    token: Optional[dict[str, Any]], account: Optional[dict[str, Any]]
) -> Optional[dict[str, Any]]:
    """A token record completed with the account's (newest) refresh token and account."""
    if account is None:
        return token
    merged = dict(token) if token else {}
    if account.get("refresh_token"):
        merged["refresh_token"] = account["refresh_token"]
    if account.get("account") and not merged.get("account"):
        merged["account"] = account["account"]
    return merged


def account_prefix(account_key: str) -> str:
    """What the token keys of the account ``account_key`` start with."""
    return account_key + "|"


def is_time(value: Any) -> bool:
    """Whether ``value`` is a number that can be a record's time (finite, within
    :data:`MAX_TIME`): a 400-digit integer is not, and would overflow a ``float``."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and -MAX_TIME <= value <= MAX_TIME)  # false for NaN too


def expires_on(record: dict[str, Any]) -> float:
    """The record's ``expires_on`` (seconds since the epoch); ``-inf`` when it has none (or
    one that is not a time: such a record is dropped as expired)."""
    value = record.get("expires_on")
    return float(value) if value is not None and is_time(value) else float("-inf")


def account_part(record: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The part of a record kept per account, if it has one."""
    if not record.get("refresh_token") and not record.get("account"):
        return None
    return {"refresh_token": record.get("refresh_token"), "account": record.get("account")}


class MemoryStore:
    """Records in this process's memory only, bounded: see :data:`PRUNE_THRESHOLD` and
    :data:`MAX_RECORDS`."""

    def __init__(self) -> None:
        self._tokens: dict[str, dict[str, Any]] = {}
        self._accounts: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        # Prune when the token records grow beyond this; raised after a prune that left many
        # live records, so that a large live set is not scanned on every save.
        self._prune_above = PRUNE_THRESHOLD

    def load(self, key: str, account_key: str) -> Optional[dict[str, Any]]:
        with self._lock:
            return merge_account(self._tokens.get(key), self._accounts.get(account_key))

    def save(self, key: str, account_key: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._tokens[key] = dict(record)
            account = account_part(record)
            if account is not None:
                self._accounts.pop(account_key, None)  # re-insert: the newest account goes last
                self._accounts[account_key] = account
            if len(self._tokens) > min(self._prune_above, MAX_RECORDS):
                self._prune(time.time())
            while len(self._accounts) > MAX_RECORDS:
                del self._accounts[next(iter(self._accounts))]  # the one saved longest ago

    def discard(self, key: str) -> None:
        with self._lock:
            self._tokens.pop(key, None)

    def delete(self, key: str, account_key: str) -> None:
        with self._lock:
            self._tokens.pop(key, None)
            self._drop_account_tokens(account_key)
            self._accounts.pop(account_key, None)

    def forget_account_tokens(self, account_key: str) -> None:
        with self._lock:
            self._drop_account_tokens(account_key)

    def _drop_account_tokens(self, account_key: str) -> None:
        prefix = account_prefix(account_key)
        for key in [k for k in self._tokens if k.startswith(prefix)]:
            del self._tokens[key]

    def _prune(self, now: float) -> None:
        """Drop expired token records; beyond :data:`MAX_RECORDS`, the ones expiring first
        too, down to a tenth below it. Runs under the lock."""
        for key in [k for k, r in self._tokens.items() if expires_on(r) <= now]:
            del self._tokens[key]
        if len(self._tokens) > MAX_RECORDS:
            import heapq  # rarely: not worth its start-up time

            excess = len(self._tokens) - (MAX_RECORDS - MAX_RECORDS // 10)
            soonest = heapq.nsmallest(excess, self._tokens.items(),
                                      key=lambda kv: expires_on(kv[1]))
            for key, _ in soonest:
                del self._tokens[key]
        self._prune_above = max(PRUNE_THRESHOLD, 2 * len(self._tokens))
