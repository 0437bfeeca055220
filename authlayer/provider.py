"""The token provider: ties profiles, the caches and the flows together.

It owns the process-wide in-memory cache. The hot path lives in the callers (``EntraAuth``,
``get_token``): one dict read and one comparison with the clock. Everything here is the slow
path, which runs only on a miss, a refresh, or after a 401:

* single flight: however many threads and tasks (asyncio or trio, on any number of event
  loops) need the same missing or expiring token, one of them — the leader — asks the identity
  service; the others wait for its outcome, success or failure, and share it;
* refresh ahead of expiry without making anyone wait: while the current token is still valid,
  a background thread gets the new one and every caller keeps using the current one;
* if that refresh fails while the old token is still valid, keep serving it and try again later
  (30 s, or half the time left, so that the last attempt still lands while it is valid); a
  person is never asked to sign in while it is still valid;
* after a 401, drop exactly the rejected token, once, however many requests saw it; when a token
  fetched moments ago is refused again, ask for no new one for a cooldown that grows (5 s
  doubling to 320 s): an API that refuses everything must not hammer the identity service;
* profiles are bound once per call signature (the hot path's dict key is the call's own
  arguments); a tenant override is derived from the profile's binding without reading the file;
  a profiles file is looked at again (``stat``) at most once a second, and re-read when it
  changed;
* tokens obtained for a claims challenge live under their own key, never the plain one;
* records (refresh tokens, accounts) kept in a :class:`~authlayer.store.TokenStore`: in memory,
  or in the persistent file cache for profiles with ``cache = "file"``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable, NamedTuple, Optional, Union

from . import registry
from ._http import Action, Call, run_async, run_sync
from ._singleflight import SingleFlight
from .errors import AuthLayerError
from .flows import FlowContext, default_prompt
from .hosts import HostPolicy
from .profile import Profile
from .store import MemoryStore, TokenStore, fleet_lock, lead_or_wait
from .token import AccessToken, TokenResult

__all__ = ["PROVIDER", "Binding", "CachedToken", "Provider", "get_token", "get_token_async",
           "reset"]

log = logging.getLogger("authlayer")

# After a failed refresh ahead of expiry, wait this long before trying again (or half the time
# the token has left, whichever is shorter, but at least RETRY_REFRESH_MIN).
RETRY_REFRESH_AFTER = 30
RETRY_REFRESH_MIN = 1
# A token this close to expiry is not served as a fallback.
MIN_VALIDITY = 10
# Past this many cache entries (many on-behalf-of users), expired ones are swept out.
SWEEP_ABOVE = 1000
# Remembered call signatures (profile, overrides); past this, the oldest one is forgotten.
MAX_BINDINGS = 100_000
# A token refused again within this many seconds of being fetched starts a cooldown, during
# which no new token is fetched for that key: COOLDOWN_FIRST seconds, doubling up to
# COOLDOWN_MAX while the refusals go on.
REFUSED_AGAIN_WITHIN = 60
COOLDOWN_FIRST = 5
COOLDOWN_MAX = 320
# A process that leads the fleet for a token (a shared store's lock) and dies is taken over
# this many seconds after the profile's timeout.
FLEET_GRACE = 5.0
# How often (seconds) the profiles files in use are looked at for changes.
PROFILES_RECHECK = 1.0


PathArg = Union[str, "os.PathLike[str]", None]
ScopeArg = Union[str, Sequence[str], None]
Prompt = Optional[Callable[[str], None]]


class CachedToken(NamedTuple):
    """An entry of the in-memory cache: the token, when to refresh it, and the ready header."""

    token: AccessToken
    refresh_on: int
    header: str

    @classmethod
    def from_result(cls, result: TokenResult) -> CachedToken:
        public = result.public()
        if public.token_type == "Bearer":  # one shared string, not one per cached token
            public = public._replace(token_type="Bearer")
        return cls(public, result.refresh_on, f"Bearer {result.access_token}")

    def __repr__(self) -> str:
        return f"CachedToken({self.token!r}, refresh_on={self.refresh_on})"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _escape(part: str) -> str:
    """A key part that cannot contain the separator: profile ``me|x`` is not ``me`` + ``x``."""
    return part.replace("%", "%25").replace("|", "%7C")


class Binding(NamedTuple):
    """A profile with its call's overrides, ready to use: its cache key and host policy.

    ``key`` identifies the token (authority, tenant, client, credential, scopes, and whose it
    is); ``account_key`` the sign-in it came from (the same without the scopes), under which
    refresh tokens are kept. Every token key of an account starts with ``account_key + "|"``.

    A tenant override keeps the profile it was derived from in ``base`` and the tenant in
    ``tenant``: thousands of tenants of one profile share it (``profile`` builds the
    overridden one when a token is fetched).
    """

    base: Profile
    key: str
    user_assertion: Optional[str] = None
    tenant: Optional[str] = None

    def __repr__(self) -> str:
        extra = f", tenant={self.tenant!r}" if self.tenant is not None else ""
        return f"Binding(profile={self.base.name!r}{extra})"

    @property
    def profile(self) -> Profile:
        """The profile with every override applied."""
        if self.tenant is None:
            return self.base
        return replace(self.base, tenant=self.tenant)

    @property
    def account_key(self) -> str:
        # The scopes part of a key is escaped: it holds no "|".
        return self.key.rpartition("|")[0]

    @property
    def hosts(self) -> HostPolicy:
        return self.base.hosts  # a tenant override does not change where the token may go

    @classmethod
    def make(cls, profile: Profile, user_assertion: Optional[str] = None) -> Binding:
        return cls(profile, cls.key_for(profile, user_assertion), user_assertion or None)

    @staticmethod
    def key_for(profile: Profile, user_assertion: Optional[str] = None) -> str:
        if profile.flow == "on_behalf_of" and not user_assertion:
            raise profile.config_error(
                "flow 'on_behalf_of' needs the incoming token: pass user_assertion=... to "
                "EntraAuth or get_token"
            )
        who = [profile.username or "", profile.login_hint or "", profile.object_id or "",
               profile.resource_id or ""]
        if registry.flow(profile.flow).names_profile:
            # Two profiles of one app are two people's sign-ins: never share their tokens.
            who.append("profile:" + profile.name)
        if profile.refresh_token is not None:
            who.append("rt:" + _digest(profile.refresh_token.identity))
        if user_assertion:
            who.append("obo:" + _digest(user_assertion))
        identity = registry.flow(profile.flow).identity
        if identity is not None:
            who.append(str(identity(profile)))  # e.g. the Azure CLI's signed-in account
        account = "|".join(_escape(part) for part in [
            profile.flow, profile.authority, profile.tenant or "", profile.client_id or "",
            profile.credential_identity, *who,
        ])
        scopes = _escape(" ".join(sorted(profile.scopes)))
        return f"{account}|{scopes}"


def _record(result: TokenResult) -> dict[str, Any]:
    return {
        "access_token": result.access_token,
        "expires_on": result.expires_on,
        "refresh_on": result.refresh_on,
        "token_type": result.token_type,
    }


def _environ_reader(name: str) -> Callable[[], Any]:
    """A fast reader of one environment variable, for memo keys: ``os.environ.get`` decodes
    and costs more than the rest of a cached call. Its value only tells calls apart."""
    data = getattr(os.environ, "_data", None)
    encodekey = getattr(os.environ, "encodekey", None)
    if isinstance(data, dict) and callable(encodekey):
        raw = encodekey(name)
        return lambda: data.get(raw)
    return lambda: os.environ.get(name)


_env_profile = _environ_reader("AUTHLAYER_PROFILE")
_env_config = _environ_reader("AUTHLAYER_CONFIG")


def _args(profile: Optional[str], config: PathArg, scope: ScopeArg, tenant: Optional[str],
          user_assertion: Optional[str]) -> tuple[Any, ...]:
    """A call's memo key: its own arguments, and the environment variables that stand in for
    the ones not given. The hot path builds the same tuple inline."""
    if scope is not None and not isinstance(scope, str):
        scope = tuple(scope)
    if profile is None or config is None:
        return (profile, config, scope, tenant, user_assertion,
                _env_profile() if profile is None else None,
                _env_config() if config is None else None)
    return (profile, config, scope, tenant, user_assertion)


@dataclass
class _Refusal:
    """401s for one token key: the token fetched after the last one, and the cooldown."""

    token: Optional[str]  # the replacement fetched after a 401 (None: none since the cooldown)
    fetched_at: float
    delay: float = 0.0  # the last cooldown's length (0: none yet)
    until: float = 0.0  # no new token before this


class Provider:
    """Process-wide token cache and acquisition. Use the module's :data:`PROVIDER`."""

    def __init__(self) -> None:
        self.entries: dict[str, CachedToken] = {}
        self._rejected: dict[str, str] = {}  # key -> the token that last got a 401 there
        self._refusals: dict[str, _Refusal] = {}
        self._flights: SingleFlight[str, CachedToken] = SingleFlight()
        self._loads: SingleFlight[tuple[Any, ...], Binding] = SingleFlight()  # async loads
        self._guard = threading.Lock()
        self._bindings: dict[tuple[Any, ...], Binding] = {}
        self._stamps: dict[str, Optional[tuple[int, int, int]]] = {}  # profiles files in use
        self._memory_store = MemoryStore()
        self._sweep_above = SWEEP_ABOVE
        self.clock: Callable[[], float] = time.time
        # The hot path serves a cached token only before this (then the files are looked at).
        self.recheck_at = 0.0

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
        """Resolve a profile name and overrides to a :class:`Binding`, once per process (and
        again after its profiles file changed)."""
        args = _args(profile, config, scope, tenant, user_assertion)
        binding = self._bindings.get(args)
        if binding is None:
            binding = self._make(args, profile, config, scope, tenant, user_assertion)
        return binding

    def _make(self, args: tuple[Any, ...], profile: Optional[str], config: PathArg,
              scope: ScopeArg, tenant: Optional[str], user_assertion: Optional[str]) -> Binding:
        from .config import load_profile, with_tenant

        binding: Optional[Binding] = None
        if tenant is not None:
            # Derived from the profile's own binding: thousands of tenants read the file once.
            base = self.bind(profile, config=config, scope=scope, user_assertion=user_assertion)
            derived = with_tenant(base.base, tenant)
            if derived is not None:
                key = Binding.key_for(derived, user_assertion)
                binding = base if key == base.key else Binding(
                    base.base, key, base.user_assertion, derived.tenant)
        if binding is None:
            loaded = load_profile(profile, config=config, scope=scope, tenant=tenant)
            binding = Binding.make(loaded, user_assertion)
            self._watch(loaded.config_path)
        with self._guard:
            if len(self._bindings) >= MAX_BINDINGS:  # forget the oldest one, not all
                self._bindings.pop(next(iter(self._bindings)), None)
            self._bindings[args] = binding
        return binding

    async def bind_async(
        self,
        profile: Optional[str] = None,
        *,
        config: PathArg = None,
        scope: ScopeArg = None,
        tenant: Optional[str] = None,
        user_assertion: Optional[str] = None,
    ) -> Binding:
        """:meth:`bind` for async code: the first time, the profiles file is read in a worker
        thread, not on the event loop, once however many tasks ask at once."""
        args = _args(profile, config, scope, tenant, user_assertion)
        binding = self._bindings.get(args)
        if binding is not None:
            return binding
        import anyio.to_thread

        return await self._loads.run_async(args, lambda: anyio.to_thread.run_sync(
            lambda: self._make(args, profile, config, scope, tenant, user_assertion)))

    # ------------------------------------------------------------------ profiles files

    @staticmethod
    def _stamp(path: str) -> Optional[tuple[int, int, int]]:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _watch(self, path: Optional[str]) -> None:
        if path and path not in self._stamps:
            self._stamps[path] = self._stamp(path)

    def check_files(self) -> None:
        """Forget the bindings of every profiles file that changed (modification time, size
        or inode) since it was read, so that the next call reads it again; at most once per
        :data:`PROFILES_RECHECK` seconds. The slow path calls this; the hot path sends a call
        down the slow path when it is time."""
        now = self.clock()
        if now < self.recheck_at:
            return
        self.recheck_at = now + PROFILES_RECHECK
        changed = [path for path, stamp in list(self._stamps.items())
                   if self._stamp(path) != stamp]
        if not changed:
            return
        gone = set(changed)
        with self._guard:
            for path in changed:
                self._stamps.pop(path, None)
            for args in [a for a, b in self._bindings.items() if b.base.config_path in gone]:
                del self._bindings[args]
        log.debug("a profiles file changed; it will be read again")

    def cached(self, profile: Optional[str], config: PathArg, scope: ScopeArg,
               tenant: Optional[str], user_assertion: Optional[str]) -> Optional[CachedToken]:
        """The cached entry for these call arguments if it may be served as it is (the hot
        path of the async callers; :func:`get_token` has it inline)."""
        try:
            binding = self._bindings.get(_args(profile, config, scope, tenant, user_assertion))
        except TypeError:  # an unhashable argument: the slow path says what is wrong
            return None
        if binding is None:
            return None
        entry = self.entries.get(binding.key)
        if entry is None:
            return None
        now = self.clock()
        return entry if now < entry.refresh_on and now < self.recheck_at else None

    def store_for(self, profile: Profile) -> TokenStore:
        """Where records (refresh tokens, accounts) of this profile are kept."""
        if profile.cache == "file":
            from .filecache import FileStore

            return FileStore.default()
        if not isinstance(profile.cache, str):  # a shared store: Redis, a plugin's
            from .stores import open_store

            return open_store(profile.cache, profile)
        return self._memory_store

    # ------------------------------------------------------------------ the slow path, sans I/O

    def _obtain(
        self,
        binding: Binding,
        *,
        key: str,
        claims: Optional[str] = None,
        force: bool = False,
        rejected: bool = False,
        fresh_sign_in: bool = False,
        interactive: bool = True,
        prompt: Prompt = None,
    ) -> Generator[Action, Any, CachedToken]:
        """Get a token from the store or the flow and keep it (under ``key``: the plain key, or
        a claims key). Runs as the leader of ``key``'s single flight.

        ``force``: don't reuse a stored token. ``rejected``: the stored token got a 401; forget
        it (not the refresh token). ``fresh_sign_in``: ``authlayer login`` — sign in anew and,
        on success only, replace the account's tokens.
        """
        profile = binding.profile
        store = self.store_for(profile)
        now = self.clock()
        seen = self.entries.get(key)
        record: Optional[dict[str, Any]] = None
        try:
            if rejected:
                yield Call(lambda: store.discard(binding.key))
            found = yield Call(lambda: store.load(binding.key, binding.account_key))
            record = found if isinstance(found, dict) else None
        except AuthLayerError as exc:  # an unusable token cache must not stop the work
            log.warning("profile %r: the token cache could not be read (%s); tokens are kept "
                        "in memory only", profile.name, exc)
            store = self._memory_store
            record = store.load(binding.key, binding.account_key)
        if record is not None and record.get("access_token") == self._rejected.get(binding.key):
            record = {k: v for k, v in record.items() if k != "access_token"}
        if record is not None and not (force or claims or fresh_sign_in):
            entry = _entry_from_record(record, now)
            if entry is not None:  # another process (or an earlier run) has a fresh one
                self._keep(key, entry)
                return entry
        # Fleet hook (issue 9): with a store shared by processes, lead the fleet (this process
        # asks; the lease is released once the token is saved) or take its leader's token.
        lease: Optional[object] = None
        if not (force or claims or fresh_sign_in) and fleet_lock(store) is not None:
            lease, shared = yield Call(lambda: self._fleet(store, binding, profile))
            shared_entry = _entry_from_record(shared, self.clock()) if shared else None
            if lease is None and shared_entry is not None:
                self._keep(key, shared_entry)
                return shared_entry
            if shared is not None:  # the newest record: its refresh token, not a rejected token
                record = {k: v for k, v in shared.items() if k != "access_token"
                          or v != self._rejected.get(binding.key)}
        from_memory = seen is not None
        if seen is None and record is not None and not (claims or rejected):
            seen = _entry_from_record(record, now, due=True)
        still_valid = seen is not None and now < seen.token.expires_on - MIN_VALIDITY
        ctx = FlowContext(
            profile,
            claims=claims,
            user_assertion=binding.user_assertion,
            refresh_token=(record or {}).get("refresh_token") if not fresh_sign_in else None,
            account=(record or {}).get("account"),
            # Nobody is asked to sign in while the current token still serves.
            interactive=interactive and not (still_valid and not force and not claims),
            fresh_sign_in=fresh_sign_in,
            prompt=prompt or default_prompt,
            clock=self.clock,
        )
        found = record = None  # it holds tokens: keep them out of a failing flow's locals
        try:
            result = yield from _leading(store, lease, registry.flow(profile.flow).acquire(ctx))
        except AuthLayerError as exc:
            fallback = None
            if seen is not None and still_valid and not (force or claims or fresh_sign_in):
                fallback = self._fallback(key, seen, from_memory)
            if fallback is None:
                raise
            log.warning(
                "profile %r: refreshing the token failed (%s); the current token stays in use "
                "until it expires", profile.name, type(exc).__name__,
            )
            return fallback
        entry = CachedToken.from_result(result)
        saved = _record(result)
        if result.refresh_token or result.account:
            saved["refresh_token"] = result.refresh_token
            saved["account"] = result.account
        if fresh_sign_in:  # a new sign-in, perhaps another person: drop the old one's tokens
            self._drop_account(binding)
        try:
            # A claims token is kept under its claims key: never served for the plain one.
            if store is not self._memory_store or "refresh_token" in saved or fresh_sign_in:
                yield Call(lambda: _replace_or_save(store, binding, key, saved, fresh_sign_in))
            # (In memory, a record without a refresh token would only repeat the entry.)
        except AuthLayerError as exc:
            log.warning("profile %r: the token cache could not be written (%s); tokens are "
                        "kept in memory only", profile.name, exc)
            _replace_or_save(self._memory_store, binding, key, saved, fresh_sign_in)
        self._keep(key, entry)
        if lease is not None:  # the token is in the store: the fleet's waiters take it now
            yield Call(lambda: _release(store, lease))
        log.debug("profile %r: new token, expires at %d", profile.name, result.expires_on)
        return entry

    def _fleet(self, store: TokenStore, binding: Binding, profile: Profile,
               ) -> tuple[Optional[object], Optional[dict[str, Any]]]:
        """Lead the fleet for the binding's key or take its leader's token (blocking; see
        :func:`authlayer.store.lead_or_wait`). A leader that died is taken over after the
        profile's timeout and :data:`FLEET_GRACE` seconds. Never raises: an unusable store
        lets this process fetch its own token."""
        rejected = self._rejected.get(binding.key)

        def usable(record: dict[str, Any]) -> bool:
            return (record.get("access_token") != rejected
                    and _entry_from_record(record, self.clock()) is not None)

        try:
            return lead_or_wait(store, binding.key, binding.account_key,
                                ttl=profile.timeout + FLEET_GRACE, usable=usable)
        except AuthLayerError as exc:
            log.warning("profile %r: the token cache's fleet lock could not be used (%s); "
                        "this process fetches its own token", profile.name, exc)
            return None, None

    def _fallback(self, key: str, seen: CachedToken, from_memory: bool,
                  ) -> Optional[CachedToken]:
        """After a failed refresh: the token to keep serving, if any. Never one that has
        expired meanwhile (the failure may have taken minutes), got a 401, or was replaced."""
        now = self.clock()
        current = self.entries.get(key)
        if from_memory and current is not seen:  # dropped after a 401, or replaced
            return current if current is not None and now < current.refresh_on else None
        if now >= seen.token.expires_on - MIN_VALIDITY or (
            seen.token.token == self._rejected.get(key)
        ):
            return None
        # Half the time left (at most RETRY_REFRESH_AFTER): the next attempts still land while
        # the token serves, instead of at the moment the fallback stops.
        left = seen.token.expires_on - MIN_VALIDITY - now
        wait = max(RETRY_REFRESH_MIN, min(RETRY_REFRESH_AFTER, left / 2))
        postponed = seen._replace(refresh_on=int(now + wait + 0.5))
        self._keep(key, postponed)
        return postponed

    def _keep(self, key: str, entry: CachedToken) -> None:
        self.entries[key] = entry
        if self._rejected.get(key) not in (None, entry.token.token):
            self._rejected.pop(key, None)
        if len(self.entries) > self._sweep_above:
            now = self.clock()
            for stale in [k for k, e in list(self.entries.items())
                          if e.token.expires_on <= now]:
                self.entries.pop(stale, None)
                self._rejected.pop(stale, None)
                self._refusals.pop(stale, None)
            # Many live entries (tenants): sweep again only when they have doubled, so that a
            # large cache is not scanned for every new token.
            self._sweep_above = max(SWEEP_ABOVE, 2 * len(self.entries))

    def _drop_account(self, binding: Binding) -> None:
        prefix = binding.account_key + "|"
        for key in [k for k in list(self.entries) if k.startswith(prefix)]:
            self.entries.pop(key, None)

    # ------------------------------------------------------------------ single flight

    def _usable(self, key: str, exclude: Optional[CachedToken] = None) -> Optional[CachedToken]:
        """The entry under ``key`` if it is still valid (and not ``exclude``)."""
        entry = self.entries.get(key)
        if entry is None or entry is exclude:
            return None
        if exclude is not None and entry.token.token == exclude.token.token:
            return None
        return entry if self.clock() < entry.token.expires_on - MIN_VALIDITY else None

    def _fresh(self, key: str) -> Optional[CachedToken]:
        entry = self.entries.get(key)
        return entry if entry is not None and self.clock() < entry.refresh_on else None

    def _run(self, key: str, make: Callable[[], Generator[Action, Any, CachedToken]],
             *, need: str = "plain", wait: bool = True,
             exclude: Optional[CachedToken] = None) -> CachedToken:
        """Run ``make()``'s flow as the leader of ``key``'s flight, or share the leader's
        outcome. ``wait`` false: a follower with a still-valid entry uses it instead of
        waiting."""
        return self._flights.run(
            _flight_key(key), lambda: run_sync(make()), tag=(need, key),
            shares=lambda tag: tag[1] == key, takes=_taker(need, exclude),
            instead=None if wait else lambda: self._usable(key, exclude))

    async def _run_async(self, key: str,
                         make: Callable[[], Generator[Action, Any, CachedToken]],
                         *, need: str = "plain", wait: bool = True,
                         exclude: Optional[CachedToken] = None) -> CachedToken:
        """:meth:`_run` for async code."""
        return await self._flights.run_async(
            _flight_key(key), lambda: run_async(make()), tag=(need, key),
            shares=lambda tag: tag[1] == key, takes=_taker(need, exclude),
            instead=None if wait else lambda: self._usable(key, exclude))

    # ------------------------------------------------------------------ the operations

    def _plan(self, binding: Binding, force: bool, claims: Optional[str], prompt: Prompt,
              interactive: bool, rejected: bool = False,
              ) -> tuple[str, Callable[[], Generator[Action, Any, CachedToken]]]:
        if claims:
            key = self.claims_key(binding, claims)
            return key, lambda: self._obtain(binding, key=key, claims=claims, prompt=prompt,
                                             interactive=interactive, rejected=rejected)
        return binding.key, lambda: self._obtain(binding, key=binding.key, force=force,
                                                 interactive=interactive, prompt=prompt)

    def get(self, binding: Binding, *, force: bool = False, claims: Optional[str] = None,
            prompt: Prompt = None, interactive: bool = True,
            _rejected: bool = False) -> CachedToken:
        """A valid token for ``binding`` (for ``claims``, when given), from the cache when it
        can. ``force`` skips the cache; ``interactive`` false: never ask a person to sign in
        (raise :class:`~authlayer.errors.TokenError` instead)."""
        key, make = self._plan(binding, force, claims, prompt, interactive, _rejected)
        if not force:
            entry = self._serve(binding, key, claims)
            if entry is not None:
                return entry
        return self._run(key, lambda: self._recheck(key, force, make), wait=force,
                         need="forced" if force else "plain")

    async def get_async(self, binding: Binding, *, force: bool = False,
                        claims: Optional[str] = None, prompt: Prompt = None,
                        interactive: bool = True, _rejected: bool = False) -> CachedToken:
        """:meth:`get` for async code: never blocks the event loop."""
        key, make = self._plan(binding, force, claims, prompt, interactive, _rejected)
        if not force:
            entry = self._serve(binding, key, claims)
            if entry is not None:
                return entry
        return await self._run_async(key, lambda: self._recheck(key, force, make), wait=force,
                                     need="forced" if force else "plain")

    def _serve(self, binding: Binding, key: str, claims: Optional[str]) -> Optional[CachedToken]:
        """The entry under ``key`` if it may be served now: fresh, or due for refresh but
        still valid — then the refresh runs in the background (never asking a person) and
        this caller goes on."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if now < entry.refresh_on:
            return entry
        if now >= entry.token.expires_on - MIN_VALIDITY:
            return None
        self._refresh_in_background(key, lambda: self._obtain(
            binding, key=key, claims=claims, interactive=False))
        return entry

    def _refresh_in_background(self, key: str,
                               make: Callable[[], Generator[Action, Any, CachedToken]]) -> None:
        """Lead ``key``'s single flight from a daemon thread, unless a flight is under way.
        A thread serves sync and async callers alike and outlives no event loop."""
        def lead() -> CachedToken:
            try:
                return run_sync(self._recheck(key, False, make))
            except BaseException as exc:  # the fallback already logged a refusal
                if not isinstance(exc, AuthLayerError):
                    log.warning("refreshing a token in the background failed: %s",
                                type(exc).__name__)
                raise

        self._flights.spawn(_flight_key(key), lead, tag=("plain", key),
                            name="authlayer-refresh")

    def join_background(self, timeout: Optional[float] = None) -> None:
        """Wait for the background refreshes under way (tests, a clean shutdown)."""
        self._flights.join_background(timeout)

    def _recheck(self, key: str, force: bool,
                 make: Callable[[], Generator[Action, Any, CachedToken]],
                 ) -> Generator[Action, Any, CachedToken]:
        """The leader's flow: first look again — a flight that just landed may have done the
        work."""
        if not force:
            entry = self._fresh(key)
            if entry is not None:
                return entry
        return (yield from make())

    def after_rejection(self, binding: Binding, rejected: CachedToken, *,
                        claims: Optional[str] = None, prompt: Prompt = None) -> CachedToken:
        """A new token after ``rejected`` got a 401 (for ``claims``, when the 401 was a claims
        challenge). However many requests saw that 401, the identity service is asked once;
        and when the API keeps refusing new tokens, not at all during a cooldown (the request
        is sent again with the current token)."""
        held = self._cooling(binding, rejected)
        if held is not None:
            return held
        replaced = self._drop(binding, rejected)
        if claims:  # the challenged token is dropped from the store too
            return self.get(binding, claims=claims, prompt=prompt, _rejected=replaced is None)
        if replaced is not None:
            return replaced
        return self._fetched(binding.key, self._run(
            binding.key, lambda: self._after_drop(binding, rejected, prompt), exclude=rejected))

    async def after_rejection_async(self, binding: Binding, rejected: CachedToken, *,
                                    claims: Optional[str] = None,
                                    prompt: Prompt = None) -> CachedToken:
        """:meth:`after_rejection` for async code."""
        held = self._cooling(binding, rejected)
        if held is not None:
            return held
        replaced = self._drop(binding, rejected)
        if claims:
            return await self.get_async(binding, claims=claims, prompt=prompt,
                                        _rejected=replaced is None)
        if replaced is not None:
            return replaced
        return self._fetched(binding.key, await self._run_async(
            binding.key, lambda: self._after_drop(binding, rejected, prompt), exclude=rejected))

    def _cooling(self, binding: Binding, rejected: CachedToken) -> Optional[CachedToken]:
        """The token to send again without asking the identity service, when the API refuses
        tokens fetched moments ago: during a cooldown, or when this 401 starts one."""
        now = self.clock()
        with self._guard:
            state = self._refusals.get(binding.key)
            if state is None:
                return None
            if now >= state.until:
                if state.token != rejected.token.token:
                    return None  # the first 401 since the cooldown: try a new token once
                if now - state.fetched_at >= REFUSED_AGAIN_WITHIN:
                    del self._refusals[binding.key]  # it served a while: not the same trouble
                    return None
                self._cool(binding.key, state, now, f"profile {binding.base.name!r}")
        current = self._usable(binding.key)
        return current if current is not None else rejected

    def _cool(self, key: str, state: _Refusal, now: float, what: str) -> None:
        """Start the next cooldown for ``key`` (under the guard)."""
        first = state.delay == 0
        state.delay = min(COOLDOWN_MAX, state.delay * 2 if state.delay else COOLDOWN_FIRST)
        state.until = now + state.delay
        state.token = None
        if first:  # once per streak of refusals
            log.warning("%s: the API refused a token fetched moments ago again; no new token "
                        "is requested for %g s, longer while it goes on (requests are still "
                        "sent once more, with the current token)", what, state.delay)
        else:
            log.debug("%s: tokens still refused; no new token for %g s", what, state.delay)

    def _fetched(self, key: str, entry: CachedToken) -> CachedToken:
        """Remember that ``entry`` was fetched because its predecessor got a 401."""
        now = self.clock()
        with self._guard:
            state = self._refusals.get(key)
            if state is None:
                self._refusals[key] = _Refusal(entry.token.token, now)
            elif state.token != entry.token.token and now >= state.until:
                state.token, state.fetched_at = entry.token.token, now
        return entry

    def _after_drop(self, binding: Binding, rejected: CachedToken,
                    prompt: Prompt) -> Generator[Action, Any, CachedToken]:
        replaced = self._usable(binding.key, exclude=rejected)
        if replaced is not None:  # a flight that just landed brought a new one
            return replaced
        return (yield from self._obtain(binding, key=binding.key, force=True, rejected=True,
                                        prompt=prompt))

    def _drop(self, binding: Binding, rejected: CachedToken) -> Optional[CachedToken]:
        """Forget ``rejected``; return the entry that already replaced it, if any."""
        replaced = self._usable(binding.key, exclude=rejected)
        if replaced is not None:
            return replaced
        self._rejected[binding.key] = rejected.token.token  # not to be reloaded from the store
        current = self.entries.get(binding.key)
        if current is not None and current.token.token == rejected.token.token:
            self.entries.pop(binding.key, None)
        return None

    def claims_key(self, binding: Binding, claims: str) -> str:
        """Where a token for this claims request is kept: never the plain key."""
        return f"{binding.key}|claims:{_digest(claims)}"

    def discard(self, key: str, entry: CachedToken) -> None:
        """Forget ``entry`` under ``key`` if it is still there (a claims token that was
        refused in turn)."""
        current = self.entries.get(key)
        if current is not None and current.token.token == entry.token.token:
            self.entries.pop(key, None)
            self._rejected[key] = entry.token.token
            # A token fetched for a claims challenge was refused in turn: the plain key cools
            # down, so that the next requests do not each fetch two new tokens.
            plain = key.split("|claims:", 1)[0]
            now = self.clock()
            with self._guard:
                state = self._refusals.setdefault(plain, _Refusal(None, now))
                if now >= state.until:
                    self._cool(plain, state, now, "a claims challenge")

    def drop_plain(self, binding: Binding) -> None:
        """Forget the binding's plain token (an Azure SDK answered a claims challenge, which
        means the plain token was refused)."""
        current = self.entries.pop(binding.key, None)
        if current is not None:
            self._rejected[binding.key] = current.token.token

    def login(self, binding: Binding, *, prompt: Prompt = None) -> CachedToken:
        """Sign in anew (``authlayer login``): the kept sign-in is replaced only when the new
        one succeeds."""
        return self._run(binding.key, lambda: self._obtain(
            binding, key=binding.key, force=True, fresh_sign_in=True, prompt=prompt),
            need="login")

    # ------------------------------------------------------------------ housekeeping

    def forget(self, binding: Binding) -> None:
        """Drop every token of the binding's sign-in, from memory and from its store
        (``authlayer logout``)."""
        self._drop_account(binding)
        self.store_for(binding.profile).delete(binding.key, binding.account_key)

    def reset(self) -> None:
        """Forget every token, binding and in-memory record (see :func:`reset`)."""
        self.join_background(timeout=30)  # a refresh landing later must not refill the cache
        with self._guard:
            self.entries.clear()
            self._rejected.clear()
            self._refusals.clear()
            self._bindings.clear()
            self._stamps.clear()
            self._memory_store = MemoryStore()
            self._sweep_above = SWEEP_ABOVE
            self.recheck_at = 0.0
        stores = sys.modules.get("authlayer.stores")  # shared stores keep a copy in memory
        if stores is not None:
            stores.forget_stores()


def _flight_key(key: str) -> str:
    """The single-flight key of a token key: the token key itself, or, for flows that may ask
    a person, the sign-in (the account key) — never a claims key's own."""
    flow = key.split("|", 1)[0]
    # Flows that may ask a person: one acquisition per sign-in, whatever the scopes.
    if registry.flow(flow).may_prompt and "|claims:" not in key:
        return "signin|" + key.rsplit("|", 1)[0]
    return key


def _taker(need: str, exclude: Optional[CachedToken],
           ) -> Callable[[tuple[str, str], CachedToken], bool]:
    """Whether a follower that needs ``need`` takes a leader's token: a forced refresh or a
    login does not take less than it asked for, a retry after a 401 not the rejected token."""
    def takes(tag: tuple[str, str], shared: CachedToken) -> bool:
        kind = tag[0]
        if not (need == "plain" or kind == "login" or kind == need):
            return False
        return exclude is None or shared.token.token != exclude.token.token

    return takes


def _leading(store: TokenStore, lease: Optional[object],
             acquire: Generator[Action, Any, TokenResult],
             ) -> Generator[Action, Any, TokenResult]:
    """A flow's acquisition, giving the fleet lease back when it fails (on success it is given
    back after the token is saved)."""
    if lease is None:
        return (yield from acquire)
    try:
        return (yield from acquire)
    except AuthLayerError:
        yield Call(lambda: _release(store, lease))
        raise
    except BaseException:  # cancelled, a bug: rare; a quick call (the lock would expire)
        _release(store, lease)
        raise


def _release(store: TokenStore, lease: object) -> None:
    lock = fleet_lock(store)
    if lock is not None:
        lock.release(lease)


def _replace_or_save(store: TokenStore, binding: Binding, key: str, record: dict[str, Any],
                     replace: bool) -> None:
    if replace:
        store.forget_account_tokens(binding.account_key)
    store.save(key, binding.account_key, record)


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


def reset() -> None:
    """Forget every profile read and every token held in memory, as if the process had just
    started (the persistent token cache is left alone: ``authlayer logout`` clears that).

    For test suites that rewrite a profiles file between tests, and for long-running
    processes whose configuration was replaced. A changed profiles file is also noticed by
    itself, within about a second.
    """
    from .config import clear_cache

    PROVIDER.reset()
    clear_cache()


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
    # The hot path: one dict read keyed by the call's own arguments (what _args builds), one
    # dict read of the entry, one look at the clock.
    provider = PROVIDER
    if profile is None or config is None:
        args: tuple[Any, ...] = (profile, config, scope, tenant, user_assertion,
                                 _env_profile() if profile is None else None,
                                 _env_config() if config is None else None)
    else:
        args = (profile, config, scope, tenant, user_assertion)
    try:
        binding = provider._bindings.get(args)
    except TypeError:  # a list of scopes: the slow path makes it a tuple
        binding = None
    if binding is not None and not force_refresh:
        entry = provider.entries.get(binding.key)
        if entry is not None:
            now = provider.clock()
            if now < entry.refresh_on and now < provider.recheck_at:
                return entry.token
    provider.check_files()
    binding = provider.bind(profile, config=config, scope=scope, tenant=tenant,
                            user_assertion=user_assertion)
    return provider.get(binding, force=force_refresh, prompt=prompt).token


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
    provider = PROVIDER
    if not force_refresh:
        cached = provider.cached(profile, config, scope, tenant, user_assertion)
        if cached is not None:
            return cached.token
    provider.check_files()
    binding = await provider.bind_async(profile, config=config, scope=scope, tenant=tenant,
                                        user_assertion=user_assertion)
    return (await provider.get_async(binding, force=force_refresh, prompt=prompt)).token
