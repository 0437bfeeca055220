"""Where token records live beyond the hot in-memory entry: the :class:`TokenStore` protocol
and the in-memory store.

A record is a JSON-able dict: ``access_token``, ``expires_on``, ``refresh_on``, ``token_type``
and, for flows that sign a person in, ``refresh_token`` and ``account``. Records are kept per
token key; the refresh token and account are also kept per account key, so that a sign-in can be
reused for another scope set. The persistent store is :class:`authlayer.filecache.FileStore`.
"""

from __future__ import annotations

import threading
from typing import Any, Optional, Protocol

__all__ = ["MemoryStore", "TokenStore", "merge_account"]


class TokenStore(Protocol):
    """Keeps token records. Implementations are thread-safe."""

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
        """Forget the record and its account's refresh token."""
        ...


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


def account_part(record: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The part of a record kept per account, if it has one."""
    if not record.get("refresh_token") and not record.get("account"):
        return None
    return {"refresh_token": record.get("refresh_token"), "account": record.get("account")}


class MemoryStore:
    """Records in this process's memory only."""

    def __init__(self) -> None:
        self._tokens: dict[str, dict[str, Any]] = {}
        self._accounts: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def load(self, key: str, account_key: str) -> Optional[dict[str, Any]]:
        with self._lock:
            return merge_account(self._tokens.get(key), self._accounts.get(account_key))

    def save(self, key: str, account_key: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._tokens[key] = dict(record)
            account = account_part(record)
            if account is not None:
                self._accounts[account_key] = account

    def discard(self, key: str) -> None:
        with self._lock:
            self._tokens.pop(key, None)

    def delete(self, key: str, account_key: str) -> None:
        with self._lock:
            self._tokens.pop(key, None)
            self._accounts.pop(account_key, None)
