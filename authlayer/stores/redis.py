"""The fleet cache: :class:`RedisStore` keeps token records in Redis, through the ``redis``
client (its connection pool, TLS, ``Lock``), so that every process of a fleet shares them and
makes one token request between them (:class:`~authlayer.store.FleetLock`).

Its job is Redis: key names (hashes that reveal nothing), values (JSON, encrypted with AES-GCM
when an ``encryption_key`` is given), expiry (an access token's entry expires in Redis when the
token does), the fleet lock, and living without Redis: every record is also kept in this
process's memory, and while Redis cannot be reached (down, dropped, slow: short timeouts) the
store serves from memory, warns once, and tries Redis again a few seconds later, writing back
what it kept meanwhile. It never raises for Redis trouble.

Layout, under ``prefix`` (default ``authlayer``): ``{prefix}:t:{hash}`` a token record,
``{prefix}:a:{hash}`` an account's refresh token and account, ``{prefix}:s:{hash}`` the set of an
account's token hashes (for sign-out), ``{prefix}:l:{hash}`` a token key's fleet lock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import LockError, RedisError
from redis.retry import Retry

from ..store import MemoryStore, account_part, expires_on, merge_account

__all__ = ["RedisStore"]

log = logging.getLogger("authlayer")
_T = TypeVar("_T")

# Seconds allowed to connect to Redis and for each answer: a dead or stalled Redis adds at most
# about this much to a token fetch, once per RETRY_AFTER.
CONNECT_TIMEOUT = 0.5
SOCKET_TIMEOUT = 0.5
# After Redis failed, serve from memory without trying it for this many seconds.
RETRY_AFTER = 5.0
# How long an account's refresh token (and the list of its token keys) is kept without use:
# Entra's refresh tokens last 90 days from their last use.
ACCOUNT_TTL = 90 * 24 * 3600
# At most this many records kept while Redis is down, written back when it returns.
MAX_PENDING = 1000
_KDF_SALT = b"authlayer redis cache v1"
_VERSION = b"\x01"  # the first byte of an encrypted value
_NONCE = 12


class _Cipher:
    """AES-256-GCM with a key derived from the secret by scrypt (a passphrase is as good as a
    random key then). Each value is bound to its Redis key name (associated data), so an entry
    copied under another name does not decrypt."""

    def __init__(self, secret: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = hashlib.scrypt(secret.encode("utf-8"), salt=_KDF_SALT, n=2**14, r=8, p=1,
                             dklen=32)
        self._aead = AESGCM(key)

    def seal(self, name: bytes, plain: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plain, name)

    def open(self, name: bytes, sealed: bytes) -> Optional[bytes]:
        from cryptography.exceptions import InvalidTag

        if len(sealed) < 1 + _NONCE + 16 or sealed[:1] != _VERSION:
            return None
        try:
            return self._aead.decrypt(sealed[1:1 + _NONCE], sealed[1 + _NONCE:], name)
        except InvalidTag:
            return None


def _hash(text: str) -> str:
    """A key name part: the key's SHA-256, which names no tenant, client or scope."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()[:20]
    return base64.b32encode(digest).decode("ascii").lower()


class _Lease:
    """A held fleet lock (``lock`` is redis-py's), or one that locks nothing (``None``: Redis
    could not be asked)."""

    __slots__ = ("lock",)

    def __init__(self, lock: Optional[Any]) -> None:
        self.lock = lock


class RedisStore:
    """A :class:`~authlayer.store.TokenStore` and :class:`~authlayer.store.FleetLock` in Redis.

    ``RedisStore(url, password=None, prefix="authlayer", encryption_key=None)``; ``url`` is a
    ``redis://``, ``rediss://`` or ``unix://`` URL as redis-py reads it. Thread-safe; never
    raises for Redis being unreachable (see the module's docstring).
    """

    def __init__(self, url: str, *, password: Optional[str] = None,
                 prefix: str = "authlayer", encryption_key: Optional[str] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.prefix = prefix
        self._cipher = _Cipher(encryption_key) if encryption_key is not None else None
        self._client = redis.Redis.from_url(
            url, password=password, socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT, retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False, health_check_interval=0)
        self._memory = MemoryStore()
        self._clock = clock
        self._guard = threading.Lock()
        self._down_until = 0.0  # monotonic: don't try Redis before this
        self._down = False
        self._warned_value = False
        # Saves made while Redis was down: (key, account_key, record), written back later.
        self._pending: list[tuple[str, str, dict[str, Any]]] = []

    def __repr__(self) -> str:
        return f"RedisStore({self._shown_url()!r}, prefix={self.prefix!r})"

    def _shown_url(self) -> str:
        return self.url.split("?", 1)[0]

    def close(self) -> None:
        """Close the connections (the entries stay in Redis)."""
        self._client.close()

    # ------------------------------------------------------------------ names and values

    def _name(self, kind: str, key: str) -> str:
        return f"{self.prefix}:{kind}:{_hash(key)}"

    def _encode(self, name: str, record: dict[str, Any]) -> bytes:
        plain = json.dumps(record, separators=(",", ":")).encode("utf-8")
        return self._cipher.seal(name.encode(), plain) if self._cipher else plain

    def _decode(self, name: str, raw: Optional[bytes]) -> Optional[dict[str, Any]]:
        """A stored value as a record; ``None`` (and one warning per process) if it cannot
        be read: another key, tampering, not ours."""
        if raw is None:
            return None
        plain: Optional[bytes] = raw
        if self._cipher is not None:
            plain = self._cipher.open(name.encode(), raw)
        record: Any = None
        if plain is not None:
            try:
                record = json.loads(plain)
            except ValueError:
                record = None
        if isinstance(record, dict):
            return record
        if not self._warned_value:
            self._warned_value = True
            why = ("it does not decrypt with this encryption_key (another key, or changed)"
                   if self._cipher is not None else
                   "it is not a record (encrypted by a profile with an encryption_key?)")
            log.warning("the Redis token cache %s has an entry that cannot be read: %s; it is "
                        "treated as missing (said once)", self._shown_url(), why)
        return None

    # ------------------------------------------------------------------ Redis or memory

    def _redis(self, work: Callable[[], _T], fallback: Callable[[], _T]) -> _T:
        """``work()`` against Redis; ``fallback()`` (memory) while Redis cannot be reached."""
        now = time.monotonic()
        if now < self._down_until:
            return fallback()
        try:
            result = work()
        except RedisError as exc:
            with self._guard:
                self._down_until = time.monotonic() + RETRY_AFTER
                first = not self._down
                self._down = True
            if first:
                log.warning("the Redis token cache %s cannot be reached (%s); this process "
                            "keeps its tokens in memory and fetches its own until it can",
                            self._shown_url(), _reason(exc))
            return fallback()
        if self._down:
            self._back()
        return result

    def _back(self) -> None:
        """Redis answers again: write back what was saved meanwhile."""
        with self._guard:
            if not self._down:
                return
            self._down = False
            pending, self._pending = self._pending, []
        log.warning("the Redis token cache %s can be reached again; tokens are shared again",
                    self._shown_url())
        for key, account_key, record in pending:
            self.save(key, account_key, record, _memory=False)

    # ------------------------------------------------------------------ TokenStore

    def load(self, key: str, account_key: str) -> Optional[dict[str, Any]]:
        names = [self._name("t", key), self._name("a", account_key)]

        def work() -> Optional[dict[str, Any]]:
            token_raw, account_raw = self._client.mget(names)
            token = self._decode(names[0], _bytes(token_raw))
            account = self._decode(names[1], _bytes(account_raw))
            return merge_account(token, account)

        return self._redis(work, lambda: self._memory.load(key, account_key))

    def save(self, key: str, account_key: str, record: dict[str, Any],
             _memory: bool = True) -> None:
        if _memory:
            self._memory.save(key, account_key, record)
        token = {k: v for k, v in record.items() if k not in ("refresh_token", "account")}
        account = account_part(record)
        ttl = int(expires_on(record) - self._clock()) if expires_on(record) > 0 else 0

        def work() -> None:
            pipe = self._client.pipeline(transaction=False)
            if ttl > 0:
                name = self._name("t", key)
                pipe.set(name, self._encode(name, token), ex=ttl)
            if account is not None:
                name = self._name("a", account_key)
                pipe.set(name, self._encode(name, account), ex=ACCOUNT_TTL)
            keys = self._name("s", account_key)
            pipe.sadd(keys, _hash(key))
            pipe.expire(keys, ACCOUNT_TTL)
            pipe.execute()

        def keep() -> None:
            with self._guard:
                if len(self._pending) < MAX_PENDING:
                    self._pending.append((key, account_key, dict(record)))

        self._redis(work, keep)

    def discard(self, key: str) -> None:
        self._memory.discard(key)
        self._redis(lambda: self._client.delete(self._name("t", key)), lambda: 0)

    def delete(self, key: str, account_key: str) -> None:
        self._memory.delete(key, account_key)
        self._forget(account_key, [self._name("t", key), self._name("a", account_key)])

    def forget_account_tokens(self, account_key: str) -> None:
        self._memory.forget_account_tokens(account_key)
        self._forget(account_key, [])

    def _forget(self, account_key: str, also: Sequence[str]) -> None:
        keys = self._name("s", account_key)

        def work() -> None:
            members = self._client.smembers(keys)
            hashes = [(_bytes(m) or b"").decode("ascii", "replace") for m in members]
            names = [f"{self.prefix}:t:{h}" for h in hashes]
            self._client.delete(keys, *names, *also)

        def drop_pending() -> None:  # a sign-out while Redis is down must not come back later
            with self._guard:
                self._pending = [p for p in self._pending if p[1] != account_key]

        drop_pending()
        self._redis(work, lambda: None)

    # ------------------------------------------------------------------ FleetLock

    def try_lead(self, key: str, ttl: float) -> Optional[object]:
        lock = self._client.lock(self._name("l", key), timeout=ttl, blocking=False,
                                 thread_local=False)

        def work() -> Optional[object]:
            return _Lease(lock) if lock.acquire(blocking=False) else None

        return self._redis(work, lambda: _Lease(None))

    def release(self, lease: object) -> None:
        lock = lease.lock if isinstance(lease, _Lease) else None
        if lock is None or time.monotonic() < self._down_until:
            return  # (while Redis is down, it expires by itself)
        try:
            lock.release()  # redis-py's Lock releases only with its own token
        except LockError:
            pass  # it expired (and perhaps another process leads now): nothing of ours to free
        except RedisError as exc:  # it expires by itself
            log.debug("could not release a Redis fleet lock: %s", _reason(exc))


def _bytes(value: Any) -> Optional[bytes]:
    """A value from Redis as bytes (the client is made without decode_responses)."""
    if isinstance(value, str):
        return value.encode("utf-8")
    return value if isinstance(value, bytes) else None


def _reason(exc: BaseException) -> str:
    """A one-line reason for a Redis error, without a traceback."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
