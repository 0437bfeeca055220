"""A tiny plugin package for authlayer's tests: secret sources and flows added through entry
points (see ``../authlayer_testplugin-1.0.dist-info/entry_points.txt``)."""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from typing import Any

from authlayer import registry
from authlayer.extend import CLIENT, COMMON, FlowContext, FlowSpec, Key

# The secrets the `vault` source knows: a JSON object in this variable, path -> secret.
VAULT_VARIABLE = "AUTHLAYER_TESTPLUGIN_VAULT"
# What `boom` puts in its error: a token-like text on the first line, a password on the second.
BOOM_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0cGx1Z2luIn0.c2lnbmF0dXJlLXRoYXQtaXMtbG9uZw"
BOOM_PASSWORD = "hunter2-second-line"


def read_vault(value: Any, *, profile: str) -> str:
    """The secret stored under ``value`` (a path, or a table with a path)."""
    path = value["path"] if isinstance(value, dict) else value
    secret: str = json.loads(os.environ.get(VAULT_VARIABLE, "{}"))[path]
    return secret


def read_boom(value: Any, *, profile: str) -> str:
    raise RuntimeError(f"vault refused the token {BOOM_TOKEN}\npassword was {BOOM_PASSWORD}")


def read_nothing(value: Any, *, profile: str) -> Any:
    return None


def _parse_note(value: Any, where: Any) -> str:
    if not isinstance(value, str):
        raise where.type_error("a string", value)
    return value


def _acquire(ctx: FlowContext) -> Generator[Any, Any, Any]:
    # A real plugin would build its own requests; this one borrows the built-in grant.
    return (yield from registry.flow("client_credentials").acquire(ctx))


EMU_APP = FlowSpec(
    name="emu_app",
    acquire=_acquire,
    keys=COMMON | CLIENT,
    required=("client_id", "tenant"),
    credential="one",
    extra_keys=(Key("app_note", _parse_note),),
    summary="client credentials, from a plugin",
)


def _explode(ctx: FlowContext) -> Generator[Any, Any, Any]:
    raise ValueError(f"plugin bug while holding {BOOM_TOKEN}")
    yield  # a generator, like every flow


EXPLODING = FlowSpec(name="exploding", acquire=_explode, keys=COMMON | CLIENT)
NOT_A_SPEC = "a flow spec this is not"


# A store plugin (entry point group authlayer.stores): `cache = "shelf"` or
# `cache = { store = "shelf", shelf = "name" }`. Every store opened on one shelf shares its records
# (a stand-in for a shared service); `calls` counts what authlayer asked of it.
SHELVES: dict[str, Any] = {}


class ShelfStore:
    def __init__(self, shelf: str) -> None:
        from authlayer.store import MemoryStore

        self.records = SHELVES.setdefault(shelf, MemoryStore())
        self.flaky = shelf == "flaky"
        self.calls: list[str] = []

    def load(self, key: str, account_key: str) -> Any:
        self.calls.append("load")
        return self.records.load(key, account_key)

    def save(self, key: str, account_key: str, record: dict[str, Any]) -> None:
        self.calls.append("save")
        if self.flaky:
            raise RuntimeError(f"shelf is full, could not keep {record['access_token']}")
        self.records.save(key, account_key, record)

    def discard(self, key: str) -> None:
        self.records.discard(key)

    def delete(self, key: str, account_key: str) -> None:
        self.records.delete(key, account_key)

    def forget_account_tokens(self, account_key: str) -> None:
        self.records.forget_account_tokens(account_key)


OPENED: list[ShelfStore] = []


def open_shelf(options: dict[str, Any], *, profile: str) -> ShelfStore:
    if options.get("shelf") == "broken":
        raise ValueError("no such shelf")
    store = ShelfStore(str(options.get("shelf", "default")))
    OPENED.append(store)
    return store
