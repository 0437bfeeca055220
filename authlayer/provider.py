"""The token provider: ties profiles, the caches and the flows together.

It owns the process-wide in-memory cache. The hot path is :meth:`Provider.cached`-style code in
the callers: one dict read and one comparison with the clock. Everything else here is the slow
path, which runs only on a miss, a refresh or after a 401:

* single flight: concurrent misses for one key make one request to the identity service
  (a ``threading.Lock`` per key for threads, an in-flight record per key and event loop for
  async tasks, asyncio or trio);
* refresh ahead of expiry, and if that refresh fails while the old token is still valid, keep
  serving the old one (and try again 30 s later, not on every request);
* after a 401, drop exactly the rejected token, once, however many requests saw it;
* tokens obtained for a claims challenge never enter the plain cache;
* records (refresh tokens, accounts) kept in a :class:`~authlayer.store.TokenStore`: in memory,
  or in the persistent file cache for profiles with ``cache = "file"``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional, Union

from ._http import Action, Call, run_async, run_sync
from .errors import AuthLayerError
from .flows import FlowContext, default_prompt, load_flow
from .hosts import HostPolicy
from .profile import Profile
from .store import MemoryStore, TokenStore
from .token import AccessToken, TokenResult

__all__ = ["PROVIDER", "Binding", "CachedToken", "Provider", "get_token", "get_token_async"]

log = logging.getLogger("authlayer")

# After a failed refresh ahead of expiry, wait this long before trying again.
RETRY_REFRESH_AFTER = 30
# A token this close to expiry is not served as a fallback.
MIN_VALIDITY = 10

PathArg = Union[str, "os.PathLike[str]", None]
ScopeArg = Union[str, Sequence[str], None]


class CachedToken(NamedTuple):
    """An entry of the in-memory cache: the token, when to refresh it, and the ready header."""

    token: AccessToken
    refresh_on: int
    header: str

    @classmethod
    def from_result(cls, result: TokenResult) -> CachedToken:
        return cls(result.public(), result.refresh_on, f"Bearer {result.access_token}")

    def __repr__(self) -> str:
        return f"CachedToken({self.token!r}, refresh_on={self.refresh_on})"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Binding:
    """A profile with its call's overrides, ready to use: its cache keys and host policy.

    ``key`` identifies the token (authority, tenant, client, credential, scopes, user
    assertion); ``account_key`` the sign-in it came from (the same without the scopes), under
    which refresh tokens are kept.
    """

    profile: Profile
    key: str
    account_key: str
    user_assertion: Optional[str] = field(default=None, repr=False)

    @property
    def hosts(self) -> HostPolicy:
        return self.profile.hosts

    @classmethod
    def make(cls, profile: Profile, user_assertion: Optional[str] = None) -> Binding:
        if profile.flow == "on_behalf_of" and not user_assertion:
            raise profile.config_error(
                "flow 'on_behalf_of' needs the incoming token: pass user_assertion=... to "
                "EntraAuth or get_token"
            )
        who = [profile.username or "", profile.login_hint or "", profile.object_id or "",
               profile.resource_id or ""]
        if user_assertion:
            who.append("obo:" + _digest(user_assertion))
        account = "|".join([
            profile.flow, profile.authority, profile.tenant or "", profile.client_id or "",
            profile.credential_identity, *who,
        ])
        scopes = " ".join(sorted(profile.scopes))
        return cls(profile, f"{account}|{scopes}", account, user_assertion)


@dataclass
class _Flight:
    """One async acquisition under way, that other tasks of the same event loop wait for."""

    event: Any
    result: Optional[CachedToken] = None
    error: Optional[BaseException] = None


def _loop_id() -> int:
    import asyncio

    try:
        return id(asyncio.get_running_loop())
    except RuntimeError:
        import trio

        return id(trio.lowlevel.current_trio_token())


def _record(result: TokenResult) -> dict[str, Any]:
    return {
        "access_token": result.access_token,
        "expires_on": result.expires_on,
        "refresh_on": result.refresh_on,
        "token_type": result.token_type,
    }


class Provider:
    """Process-wide token cache and acquisition. Use the module's :data:`PROVIDER`."""

    def __init__(self) -> None:
        self.entries: dict[str, CachedToken] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._flights: dict[tuple[str, int], _Flight] = {}
        self._bindings: dict[tuple[Any, ...], Binding] = {}
        self._memory_store = MemoryStore()
        self.clock: Callable[[], float] = time.time

    # ------------------------------------------------------------------ binding

    def bind(
        self,
        profile: Optional[str] = None,
        *,
        config: PathArg = None,
        scope: ScopeArg = None,
        tenant: Optional[str] = None,
        user_assertion: Optional[str] = None,
    ) -> Binding:
        """Resolve a profile name and overrides to a :class:`Binding`, once per process."""
        scope_key = scope if scope is None or isinstance(scope, str) else tuple(scope)
        config_key = os.fspath(config) if config is not None else None
        memo = (
            profile if profile is not None else ("$", os.environ.get("AUTHLAYER_PROFILE")),
            config_key if config_key is not None else ("$", os.environ.get("AUTHLAYER_CONFIG")),
            scope_key, tenant, user_assertion,
        )
        binding = self._bindings.get(memo)
        if binding is None:
            from .config import load_profile

            loaded = load_profile(profile, config=config, scope=scope, tenant=tenant)
            binding = Binding.make(loaded, user_assertion)
            if len(self._bindings) > 10_000:  # many distinct user assertions: don't grow forever
                self._bindings.clear()
            self._bindings[memo] = binding
        return binding

    def store_for(self, profile: Profile) -> TokenStore:
        """Where records (refresh tokens, accounts) of this profile are kept."""
        if profile.cache == "file":
            from .filecache import FileStore

            return FileStore.default()
        return self._memory_store

    # ------------------------------------------------------------------ the slow path, sans I/O

    def _obtain(
        self,
        binding: Binding,
        seen: Optional[CachedToken],
        *,
        claims: Optional[str] = None,
        force: bool = False,
        rejected: bool = False,
        interactive: bool = True,
        prompt: Optional[Callable[[str], None]] = None,
    ) -> Generator[Action, Any, CachedToken]:
        """Get a token from the store or the flow; keep it. Runs under the key's single flight.

        ``rejected``: the stored access token got a 401; forget it (but not the refresh token).
        """
        profile = binding.profile
        store = self.store_for(profile)
        now = self.clock()
        record: Optional[dict[str, Any]] = None
        if rejected:
            yield Call(lambda: store.discard(binding.key))
        if not claims:
            found = yield Call(lambda: store.load(binding.key, binding.account_key))
            record = found if isinstance(found, dict) else None
            if record is not None and not force:
                entry = _entry_from_record(record, now)
                if entry is not None:
                    self.entries[binding.key] = entry
                    return entry
        ctx = FlowContext(
            profile,
            claims=claims,
            user_assertion=binding.user_assertion,
            refresh_token=record.get("refresh_token") if record else None,
            account=record.get("account") if record else None,
            interactive=interactive,
            prompt=prompt or default_prompt,
            clock=self.clock,
        )
        try:
            result = yield from load_flow(profile.flow).acquire(ctx)
        except AuthLayerError as exc:
            if seen is None and record is not None:  # e.g. another process's, due for refresh
                seen = _entry_from_record(record, now, due=True)
            if seen is not None and not force and not claims and (
                now < seen.token.expires_on - MIN_VALIDITY
            ):
                log.warning(
                    "profile %r: refreshing the token failed (%s); the current token stays in "
                    "use until it expires", profile.name, type(exc).__name__,
                )
                postponed = seen._replace(
                    refresh_on=int(min(now + RETRY_REFRESH_AFTER, seen.token.expires_on))
                )
                self.entries[binding.key] = postponed
                return postponed
            raise
        entry = CachedToken.from_result(result)
        if claims:
            return entry  # a claims-challenge token never enters the plain cache
        saved = _record(result)
        if result.refresh_token or result.account:
            saved["refresh_token"] = result.refresh_token
            saved["account"] = result.account
        yield Call(lambda: store.save(binding.key, binding.account_key, saved))
        self.entries[binding.key] = entry
        log.debug("profile %r: new token, expires at %d", profile.name, result.expires_on)
        return entry

    # ------------------------------------------------------------------ threads

    def _lock(self, key: str) -> threading.Lock:
        lock = self._locks.get(key)
        if lock is None:
            with self._guard:
                lock = self._locks.setdefault(key, threading.Lock())
        return lock

    def get(
        self,
        binding: Binding,
        *,
        force: bool = False,
        claims: Optional[str] = None,
        interactive: bool = True,
        prompt: Optional[Callable[[str], None]] = None,
    ) -> CachedToken:
        """A valid token for ``binding``, from the cache when it can."""
        entry = self.entries.get(binding.key)
        if entry is not None and not force and not claims and self.clock() < entry.refresh_on:
            return entry
        if claims:
            return run_sync(self._obtain(binding, None, claims=claims, prompt=prompt))
        with self._lock(binding.key):
            current = self.entries.get(binding.key)
            if not force and current is not None and current is not entry and (
                self.clock() < current.refresh_on
            ):
                return current  # another thread got it while we waited
            return run_sync(self._obtain(binding, current, force=force,
                                         interactive=interactive, prompt=prompt))

    def after_rejection(
        self, binding: Binding, rejected: CachedToken, *, claims: Optional[str] = None
    ) -> CachedToken:
        """A new token after ``rejected`` got a 401. However many requests saw that 401, the
        identity service is asked once: later callers find the new token already there."""
        with self._lock(binding.key):
            current = self._drop(binding, rejected)
            if current is not None and not claims:
                return current
            return run_sync(self._obtain(binding, None, claims=claims, force=True,
                                         rejected=current is None))

    def _drop(self, binding: Binding, rejected: CachedToken) -> Optional[CachedToken]:
        """Forget ``rejected``; return the entry that replaced it, if one already has."""
        current = self.entries.get(binding.key)
        if current is not None and current.token.token != rejected.token.token and (
            self.clock() < current.token.expires_on - MIN_VALIDITY
        ):
            return current
        self.entries.pop(binding.key, None)
        return None

    # ------------------------------------------------------------------ async tasks

    async def _single_flight(
        self, key: str, make: Callable[[], Generator[Action, Any, CachedToken]]
    ) -> CachedToken:
        import anyio

        fkey = (key, _loop_id())
        while True:
            flight = self._flights.get(fkey)
            if flight is None:
                break
            await flight.event.wait()
            if flight.result is not None:
                return flight.result
            if flight.error is not None and not isinstance(
                flight.error, anyio.get_cancelled_exc_class()
            ):
                raise flight.error
            # the leader was cancelled: try again, perhaps as the leader
        flight = _Flight(anyio.Event())
        self._flights[fkey] = flight
        try:
            flight.result = await run_async(make())
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[fkey]
            flight.event.set()

    async def get_async(
        self,
        binding: Binding,
        *,
        force: bool = False,
        claims: Optional[str] = None,
        interactive: bool = True,
        prompt: Optional[Callable[[str], None]] = None,
    ) -> CachedToken:
        """:meth:`get` for async code: never blocks the event loop."""
        entry = self.entries.get(binding.key)
        if entry is not None and not force and not claims and self.clock() < entry.refresh_on:
            return entry
        if claims:
            return await run_async(self._obtain(binding, None, claims=claims, prompt=prompt))
        if force:
            return await run_async(self._obtain(binding, entry, force=True,
                                                interactive=interactive, prompt=prompt))

        def make() -> Generator[Action, Any, CachedToken]:
            return self._obtain(binding, self.entries.get(binding.key),
                                interactive=interactive, prompt=prompt)

        return await self._single_flight(binding.key, make)

    async def after_rejection_async(
        self, binding: Binding, rejected: CachedToken, *, claims: Optional[str] = None
    ) -> CachedToken:
        """:meth:`after_rejection` for async code."""
        current = self._drop(binding, rejected)
        if claims:
            return await run_async(self._obtain(binding, None, claims=claims, force=True,
                                                rejected=current is None))
        if current is not None:
            return current
        return await self._single_flight(
            binding.key, lambda: self._obtain(binding, None, force=True, rejected=True)
        )

    # ------------------------------------------------------------------ housekeeping

    def forget(self, binding: Binding) -> None:
        """Drop the binding's tokens from memory and from its store (``authlayer logout``)."""
        self.entries.pop(binding.key, None)
        self.store_for(binding.profile).delete(binding.key, binding.account_key)

    def reset(self) -> None:
        """Forget every token, binding and in-memory record (for tests)."""
        self.entries.clear()
        self._bindings.clear()
        self._memory_store = MemoryStore()


def _entry_from_record(
    record: dict[str, Any], now: float, *, due: bool = False
) -> Optional[CachedToken]:
    """The cache entry for a stored record, if its token is not due for refresh (``due``: if it
    has not expired)."""
    token = record.get("access_token")
    expires_on = record.get("expires_on")
    refresh_on = record.get("refresh_on")
    if not isinstance(token, str) or not isinstance(expires_on, int):
        return None
    if not isinstance(refresh_on, int):
        refresh_on = expires_on - 300
    if now >= (expires_on if due else refresh_on):
        return None
    token_type = record.get("token_type")
    public = AccessToken(token, expires_on, token_type if isinstance(token_type, str) else "Bearer")
    return CachedToken(public, refresh_on, f"Bearer {token}")


PROVIDER = Provider()


def get_token(
    profile: Optional[str] = None,
    *,
    config: PathArg = None,
    scope: ScopeArg = None,
    tenant: Optional[str] = None,
    user_assertion: Optional[str] = None,
    force_refresh: bool = False,
    prompt: Optional[Callable[[str], None]] = None,
) -> AccessToken:
    """The access token that :class:`~authlayer.EntraAuth` would attach for the same arguments.

    ``profile`` defaults to ``$AUTHLAYER_PROFILE``; ``scope`` and ``tenant`` override the
    profile's; ``user_assertion`` is the incoming token for flow ``on_behalf_of``;
    ``force_refresh`` skips the cache; ``prompt`` shows sign-in instructions (default: standard
    error). Raises :class:`~authlayer.ConfigError` or :class:`~authlayer.TokenError`.
    """
    binding = PROVIDER.bind(profile, config=config, scope=scope, tenant=tenant,
                            user_assertion=user_assertion)
    entry = PROVIDER.entries.get(binding.key)
    if entry is not None and not force_refresh and PROVIDER.clock() < entry.refresh_on:
        return entry.token
    return PROVIDER.get(binding, force=force_refresh, prompt=prompt).token


async def get_token_async(
    profile: Optional[str] = None,
    *,
    config: PathArg = None,
    scope: ScopeArg = None,
    tenant: Optional[str] = None,
    user_assertion: Optional[str] = None,
    force_refresh: bool = False,
    prompt: Optional[Callable[[str], None]] = None,
) -> AccessToken:
    """:func:`get_token` for async code (asyncio or trio); never blocks the event loop."""
    binding = PROVIDER.bind(profile, config=config, scope=scope, tenant=tenant,
                            user_assertion=user_assertion)
    return (await PROVIDER.get_async(binding, force=force_refresh, prompt=prompt)).token
