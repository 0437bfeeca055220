"""The shared token stores behind ``cache = ...`` beyond ``memory`` and ``file``: what the
profile's ``cache`` value says (:class:`StoreConfig`, checked by :func:`parse_cache` for the key
table), and opening the store it names (:func:`open_store`, one instance per configuration and
process): Redis (:mod:`authlayer.stores.redis`) or a plugin's store, found through the entry point
group ``authlayer.stores`` (``docs/extending.md``). Nothing here imports ``redis``: that happens
when a Redis store is first opened, on the slow path.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import parse_qsl, urlsplit

from ..errors import AuthLayerError, ConfigError, redact
from ..store import fleet_lock

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from ..profile import Profile, SecretSource
    from ..store import TokenStore

__all__ = [
    "BUILTIN_CACHES",
    "REDIS_SCHEMES",
    "STORE_GROUP",
    "StoreConfig",
    "forget_stores",
    "open_store",
    "parse_cache",
    "store_names",
]

BUILTIN_CACHES = ("memory", "file")
REDIS_SCHEMES = ("redis", "rediss", "unix")
STORE_GROUP = "authlayer.stores"
DEFAULT_PREFIX = "authlayer"
_REDIS_KEYS = ("url", "password", "prefix", "encryption_key")
# What a Redis URL's query may set (redis-py passes them on to its connections): the database,
# TLS files and checks, timeouts, the pool's size.
_URL_OPTIONS = frozenset({
    "db", "ssl_ca_certs", "ssl_ca_path", "ssl_cert_reqs", "ssl_check_hostname", "ssl_certfile",
    "ssl_keyfile", "ssl_min_version", "socket_timeout", "socket_connect_timeout",
    "max_connections", "protocol", "health_check_interval",
})
log = logging.getLogger("authlayer")
_INSTALL = "pip install 'authlayer[redis]'"


@dataclass(frozen=True)
class StoreConfig:
    """A ``cache`` that names a shared store: ``kind`` is ``"redis"`` or a plugin's name.

    For Redis: ``url`` (never with a password in it), ``password`` and ``encryption_key``
    (secret sources, read when the store is first opened), ``prefix`` (of every Redis key).
    For a plugin: ``options``, the other keys of the ``cache`` table, as written. Its repr shows
    no secret."""

    kind: str
    url: Optional[str] = None
    password: Optional[SecretSource] = field(default=None, repr=False)
    prefix: str = DEFAULT_PREFIX
    encryption_key: Optional[SecretSource] = field(default=None, repr=False)
    options: tuple[tuple[str, Any], ...] = field(default=(), hash=False)
    # Where it was written, for messages.
    profile: str = field(default="", compare=False, repr=False)
    path: Optional[str] = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.kind == "redis":
            return f"redis ({self.url})"
        return self.kind

    @property
    def encrypted(self) -> bool:
        return self.encryption_key is not None

    def error(self, message: str, key: str = "cache") -> ConfigError:
        return ConfigError(message, path=self.path, profile=self.profile or None, key=key)


# --------------------------------------------------------------------------------------------
# The `cache` key


def parse_cache(value: Any, where: Any) -> Any:
    """The Profile field of ``cache = ...``: ``"memory"`` or ``"file"``, or a
    :class:`StoreConfig` for a Redis URL, a ``{ url, password, prefix, encryption_key }``
    table, a plugin store's name or a ``{ store = "name", ... }`` table. ``where`` is the key
    table's :class:`~authlayer.config._keys.Where`."""
    if isinstance(value, str):
        if value in BUILTIN_CACHES:
            return value
        if "://" in value:
            return _redis(where, url=value)
        if value and value in store_names():
            return StoreConfig(value, profile=where.profile, path=where.path)
        choices = [*BUILTIN_CACHES, *store_names()]
        from ..config._keys import _suggest

        raise where.error(
            f"cache {_quoted(value)} is not valid" + (_suggest(value, choices) or "")
            + " (cache is 'memory', 'file', a Redis URL like 'redis://host:6379/0', a table "
            "{ url = ..., password = ..., prefix = ..., encryption_key = ... }"
            + (f" or a store plugin: {', '.join(map(repr, store_names()))}"
               if store_names() else "") + ")"
        )
    if isinstance(value, Mapping):
        if "store" in value:
            name = value["store"]
            if not isinstance(name, str) or name not in store_names():
                raise where.error(
                    "cache.store must name an installed store plugin"
                    + (f" ({', '.join(map(repr, store_names()))})" if store_names()
                       else ": none is installed (entry point group 'authlayer.stores')"),
                    "cache.store")
            options = tuple((k, v) for k, v in value.items() if k != "store")
            return StoreConfig(name, options=options, profile=where.profile, path=where.path)
        for name in value:
            if name not in _REDIS_KEYS:
                from ..config._keys import _suggest

                raise where.error(
                    f"unknown key {name!r} in cache" + (_suggest(name, _REDIS_KEYS) or "")
                    + " (a Redis cache takes url, password, prefix and encryption_key; a "
                    "plugin's store takes store and its own keys)", f"cache.{name}")
        if "url" not in value:
            raise where.error('cache needs a url, like cache = { url = "redis://host:6379/0" }',
                              "cache.url")
        return _redis(
            where,
            url=value["url"],
            password=where.secret(value["password"], "cache.password")
            if "password" in value else None,
            prefix=_prefix(value["prefix"], where) if "prefix" in value else DEFAULT_PREFIX,
            encryption_key=where.secret(value["encryption_key"], "cache.encryption_key")
            if "encryption_key" in value else None,
            key="cache.url",
        )
    raise where.type_error("'memory', 'file', a Redis URL or a table like { url = ... }", value)


def _quoted(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[: limit - 1] + "…")


def _prefix(value: Any, where: Any) -> str:
    if not isinstance(value, str):
        raise where.type_error("a string", value, "cache.prefix")
    if not value or len(value) > 64 or any(c.isspace() or c in "*?[]" for c in value) \
            or not value.isprintable():
        raise where.error("cache.prefix must be 1 to 64 printable characters, without spaces "
                          "or the glob characters * ? [ ]", "cache.prefix")
    return value


def _redis(where: Any, *, url: Any, password: Optional[SecretSource] = None,
           prefix: str = DEFAULT_PREFIX, encryption_key: Optional[SecretSource] = None,
           key: str = "cache") -> StoreConfig:
    example = "like 'redis://host:6379/0', 'rediss://host:6380/0' or 'unix:///run/redis.sock'"
    if not isinstance(url, str):
        raise where.type_error(f"a Redis URL, {example}", url, key)
    where.no_control(url, key)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise where.error(f"{key} is not a valid Redis URL, {example}", key) from None
    scheme = parts.scheme.lower()
    if scheme not in REDIS_SCHEMES:
        # Not quoted back: a URL may hold a password.
        raise where.error(f"{key} is not a Redis URL (redis://, rediss:// or unix://), "
                          f"{example}", key)
    if parts.password is not None:
        raise where.error(f"{key} must not contain a password: put it in cache.password, a "
                          'secret source like password = { env = "REDIS_PASSWORD" }', key)
    if scheme != "unix" and not parts.hostname:
        raise where.error(f"{key} names no host, {example}", key)
    if scheme == "unix" and not parts.path:
        raise where.error(f"{key} names no socket path, {example}", key)
    for option, _ in parse_qsl(parts.query, keep_blank_values=True):
        if option not in _URL_OPTIONS:
            raise where.error(f"{key} has an unknown option {option!r} (a Redis URL may set "
                              f"{', '.join(sorted(_URL_OPTIONS))})", key)
    if not redis_installed():
        raise where.error(f"a Redis cache needs the redis extra: {_INSTALL}", key)
    return StoreConfig("redis", url=url, password=password, prefix=prefix,
                       encryption_key=encryption_key, profile=where.profile, path=where.path)


def redis_installed() -> bool:
    """Whether the ``redis`` package can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("redis") is not None
    except (ImportError, ValueError):  # sys.modules["redis"] is None: made unimportable
        return False


# --------------------------------------------------------------------------------------------
# Plugins


_plugins_lock = threading.Lock()
_entry_points: Optional[dict[str, EntryPoint]] = None


def store_names() -> tuple[str, ...]:
    """The names of the installed store plugins (entry point group ``authlayer.stores``);
    one that is a built-in cache's name is ignored."""
    return tuple(_store_entry_points())


def _store_entry_points() -> dict[str, EntryPoint]:
    global _entry_points
    found = _entry_points
    if found is None:
        from .._entrypoints import listed

        found = {}
        for ep in listed(STORE_GROUP):
            if ep.name not in (*BUILTIN_CACHES, "redis") and "://" not in ep.name:
                found.setdefault(ep.name, ep)
        _entry_points = found
    return found


def forget_stores() -> None:
    """Forget the listed entry points and the stores opened, with what they keep in memory
    (:func:`authlayer.reset`); the stores themselves (Redis) keep their entries."""
    global _entry_points
    with _plugins_lock:
        _entry_points = None
        opened = list(_stores.values())
        _stores.clear()
    for store in opened:
        close = getattr(store, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # a plugin's: nothing to do about it here
                log.debug("closing a token store failed", exc_info=False)


# --------------------------------------------------------------------------------------------
# Opening a store


_stores: dict[StoreConfig, TokenStore] = {}


def open_store(config: StoreConfig, profile: Profile) -> TokenStore:
    """The store ``config`` names, opened once per process. Raises :class:`ConfigError` (a
    missing extra, a secret that cannot be read, a plugin that cannot be loaded) naming the
    profile and the key."""
    store = _stores.get(config)
    if store is not None:
        return store
    with _plugins_lock:
        store = _stores.get(config)
        if store is None:
            store = _stores[config] = _open(config, profile)
    return store


def _open(config: StoreConfig, profile: Profile) -> TokenStore:
    where = {"path": profile.config_path, "profile": profile.name}
    if config.kind == "redis":
        try:
            from .redis import RedisStore
        except ImportError:
            raise ConfigError(f"a Redis cache needs the redis extra: {_INSTALL}",
                              key="cache", **where) from None
        assert config.url is not None
        password = config.password.read() if config.password is not None else None
        key = config.encryption_key.read() if config.encryption_key is not None else None
        try:
            return RedisStore(config.url, password=password, prefix=config.prefix,
                              encryption_key=key)
        except (ValueError, TypeError) as exc:  # redis-py reads the URL's option values here
            raise ConfigError(f"cache.url: {redact(str(exc))}", key="cache", **where) from None
    ep = _store_entry_points().get(config.kind)
    if ep is None:
        raise ConfigError(f"store plugin {config.kind!r} is not installed", key="cache", **where)
    try:
        made = ep.load()(dict(config.options), profile=profile.name)
    except AuthLayerError:
        raise
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        text = redact(lines[0])[:200] if lines else ""
        raise ConfigError(
            f"store {config.kind!r} could not be opened: {type(exc).__name__}"
            + (f": {text}" if text else ""), key="cache", **where) from None
    missing = [m for m in ("load", "save", "discard", "delete", "forget_account_tokens")
               if not callable(getattr(made, m, None))]
    if missing:
        raise ConfigError(f"store {config.kind!r} is not a TokenStore: it has no "
                          f"{', '.join(missing)}", key="cache", **where)
    guarded = _GuardedFleet if fleet_lock(made) is not None else _Guarded
    return guarded(config.kind, made)


class _Guarded:
    """A plugin's store, whose failures become :class:`AuthLayerError` (the provider then
    warns and keeps the tokens in memory), with anything that looks like a secret removed."""

    def __init__(self, name: str, store: Any) -> None:
        self._name = name
        self._store = store

    def __repr__(self) -> str:
        return f"<store {self._name!r}>"

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._store, method)(*args)
        except AuthLayerError:
            raise
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            text = redact(lines[0])[:200] if lines else ""
            raise AuthLayerError(f"store {self._name!r} failed in {method}: "
                                 f"{type(exc).__name__}" + (f": {text}" if text else "")
                                 ) from None

    def load(self, key: str, account_key: str) -> Optional[dict[str, Any]]:
        found = self._call("load", key, account_key)
        return found if isinstance(found, dict) else None

    def save(self, key: str, account_key: str, record: dict[str, Any]) -> None:
        self._call("save", key, account_key, record)

    def discard(self, key: str) -> None:
        self._call("discard", key)

    def delete(self, key: str, account_key: str) -> None:
        self._call("delete", key, account_key)

    def forget_account_tokens(self, account_key: str) -> None:
        self._call("forget_account_tokens", account_key)

    def close(self) -> None:
        if callable(getattr(self._store, "close", None)):
            self._call("close")


class _GuardedFleet(_Guarded):
    def try_lead(self, key: str, ttl: float) -> Optional[object]:
        return self._call("try_lead", key, ttl)  # type: ignore[no-any-return]

    def release(self, lease: object) -> None:
        try:
            self._store.release(lease)
        except Exception as exc:  # the lock expires by itself
            log.debug("store %r could not release a fleet lock: %s", self._name,
                      type(exc).__name__)
