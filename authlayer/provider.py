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

import functools
import os
import sys
import threading
import time
import weakref
from collections.abc import Generator, Hashable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Union

from . import registry
from ._actions import ASYNC_READY, Action, Call, Flow, import_async_stack, run_async, run_sync
from ._log import log
from ._record import record, replace
from ._singleflight import SingleFlight, off_loop, running_library
from .errors import AuthLayerError
from .flows import FlowContext, default_prompt
from .hosts import HostPolicy
from .profile import Profile
from .store import MemoryStore, TokenStore, fleet_lock, lead_or_wait
from .token import AccessToken, TokenResult

if TYPE_CHECKING:
    from .chains import Choice

__all__ = ["FORCED", "LOGIN", "PLAIN", "POLICY", "PROVIDER", "Binding", "CachedToken", "Forget",
           "Need", "Policy", "Provider", "Want", "after_401", "for_claims", "get_token",
           "get_token_async", "reset"]


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
    """An entry of the in-memory cache: the token and when to refresh it.

    ``refresh_on`` is a float (Unix seconds), unlike the token's and the records' integers:
    every cached call compares it with the clock's float, and comparing a float with a float
    costs a quarter of comparing it with an integer (about 10 ns against 40 ns here)."""

    token: AccessToken
    refresh_on: float

    @classmethod
    def from_result(cls, result: TokenResult) -> CachedToken:
        return cls(_shared_type(result.public()), _moment(result.refresh_on))

    @property
    def header(self) -> str:
        """The ``Authorization`` header's value, joined anew: an entry keeps none, which would
        hold the token's characters a second time for every cached token (about 1.3 kB each
        with Entra's tokens). Attaching uses :meth:`_Slot.header`, which joins it once."""
        return "Bearer " + self.token.token

    def __repr__(self) -> str:
        return f"CachedToken({self.token!r}, refresh_on={self.refresh_on})"


_BEARER = "Bearer"

# Refresh times as float objects shared by every entry due in the same second: thousands of
# tenants' entries then point at a few dozen floats, which stay in the processor's cache while
# a cached call cycles through the tenants (one memory read fewer that misses), and take no
# memory of their own. Bounded: past MOMENTS_KEPT seconds, new ones start a new table.
MOMENTS_KEPT = 4096
_MOMENTS: dict[int, float] = {}


def _moment(seconds: int) -> float:
    """Whole ``seconds`` as the shared float for that second."""
    shared = _MOMENTS.get(seconds)
    if shared is None:
        if len(_MOMENTS) >= MOMENTS_KEPT:
            _MOMENTS.clear()
        shared = _MOMENTS[seconds] = float(seconds)
    return shared


def _shared_type(token: AccessToken) -> AccessToken:
    """``token`` with the one shared ``"Bearer"`` string, not a copy of its own per token (an
    answer's or a record's JSON makes one each)."""
    if token.token_type == "Bearer" and token.token_type is not _BEARER:
        return token._replace(token_type=_BEARER)
    return token


# ---------------------------------------------------------------------- what a caller needs


class Want(Enum):
    """What a caller asks the provider for (see :class:`Need` and :data:`POLICY`)."""

    PLAIN = "plain"  # a valid token, from the cache when it can
    FORCED = "forced"  # a new token (get_token(force_refresh=True))
    AFTER_401 = "after_401"  # a new token instead of one that got a 401
    CLAIMS = "claims"  # a token for a claims challenge (kept under its own key)
    LOGIN = "login"  # a new sign-in (authlayer login)


class Forget(Enum):
    """What :meth:`Provider.forget` forgets."""

    TOKEN = "token"  # one token
    SIGN_IN = "sign_in"  # every token of a sign-in, in memory
    SIGN_OUT = "sign_out"  # and its records in the store: logout


@record
class Need:
    """What one caller needs, as one value: ``want``, the claims of a claims challenge, the
    token that got a 401, and whether a person may be asked to sign in. Build it with
    :data:`PLAIN`, :data:`FORCED`, :data:`LOGIN`, :func:`after_401` or :func:`for_claims`, and
    ``.but(interactive=False)``."""

    want: Want
    claims: Optional[str] = None
    rejected: Optional[CachedToken] = None
    interactive: bool = True

    def but(self, *, interactive: bool) -> Need:
        return replace(self, interactive=interactive)


PLAIN = Need(Want.PLAIN)
FORCED = Need(Want.FORCED)
LOGIN = Need(Want.LOGIN)


def after_401(rejected: CachedToken, claims: Optional[str] = None) -> Need:
    """A token to send again after ``rejected`` got a 401 (a claims challenge: for ``claims``)."""
    if claims:
        return Need(Want.CLAIMS, claims, rejected)
    return Need(Want.AFTER_401, rejected=rejected)


def for_claims(claims: str) -> Need:
    """A token for a claims challenge that some code other than ours saw (an Azure SDK)."""
    return Need(Want.CLAIMS, claims)


class Policy(NamedTuple):
    """How the provider serves one :class:`Want`: every decision that depends on it."""

    cached: bool  # serve a cached entry that is not due (a due, valid one too, refreshing it
    #               in the background)
    no_wait: bool  # a follower with a still-valid entry uses it instead of waiting for a flight
    takes: Optional[frozenset[Want]]  # whose flights' tokens a follower takes (None: any
    #                                   leader's, but never the token that got the 401)
    recheck: Optional[str]  # the leader first looks at memory again: "fresh" (not due) or
    #                         "valid" (any valid entry but the rejected one)
    current_ok: bool  # the current token will do: reuse a fresh one another process stored;
    #                   while it is valid, nobody is asked to sign in, and a failed refresh
    #                   keeps it in use
    fresh_sign_in: bool  # sign in anew; on success only, replace the account's tokens
    cooldown: bool  # a token that got a 401 may be sent again during a cooldown instead
    refusals: bool  # the new token is watched: refused again moments later starts a cooldown
    fleet: bool  # with a store shared by processes: one of them asks, the others take its token


_FORCED = frozenset({Want.FORCED, Want.LOGIN})
_LOGIN = frozenset({Want.LOGIN})
POLICY: dict[Want, Policy] = {
    #                   cached no_wait takes    recheck  current fresh  cooldown refusals fleet
    Want.PLAIN:     Policy(True,  True,   None,    "fresh", True,   False, False,   False, True),
    Want.FORCED:    Policy(False, False,  _FORCED, None,    False,  False, False,   False, False),
    Want.AFTER_401: Policy(False, False,  None,    "valid", False,  False, True,    True,  True),
    Want.CLAIMS:    Policy(True,  True,   None,    "fresh", False,  False, True,    False, False),
    Want.LOGIN:     Policy(False, False,  _LOGIN,  None,    False,  True,  False,   False, False),
}


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class AccountKey(NamedTuple):
    """A sign-in: whose tokens (``who``: the person, the managed identity, the user assertion,
    the profile for a person's flows...) from which client and credential, where."""

    flow: str
    authority: str
    tenant: str
    client_id: str
    credential: str
    who: tuple[str, ...]


class TokenKey(NamedTuple):
    """A token: the sign-in, its scopes (sorted) and, for a claims challenge, its claims'
    digest (never the plain token's key)."""

    account: AccountKey
    scopes: tuple[str, ...]
    claims: Optional[str] = None


def _escape(part: str) -> str:
    """A key part that cannot contain the separator: profile ``me|x`` is not ``me`` + ``x``."""
    return part.replace("%", "%25").replace("|", "%7C")


def store_account_key(account: AccountKey) -> str:
    """The account's key in a :class:`~authlayer.store.TokenStore`: this very string is in
    users' token cache files, so it never changes (``tests/test_store_keys.py``)."""
    return "|".join(_escape(part) for part in (
        account.flow, account.authority, account.tenant, account.client_id,
        account.credential, *account.who))


def store_key(key: TokenKey) -> str:
    """The token's key in a :class:`~authlayer.store.TokenStore` (it starts with its
    account's key and ``|``); never changes either."""
    text = f"{store_account_key(key.account)}|{_escape(' '.join(key.scopes))}"
    return text if key.claims is None else f"{text}|claims:{key.claims}"


class _Slot:
    """Where the hot path finds a token key's cache entry without hashing the key: one per
    key, shared by every binding of that key, kept equal to ``Provider.entries[key]``."""

    __slots__ = ("__weakref__", "entry", "joined")

    def __init__(self, entry: Optional[CachedToken] = None) -> None:
        self.entry = entry
        # (entry, its header): the header last attached, joined once per entry, not per
        # request; only for keys whose tokens are attached to requests (EntraAuth).
        self.joined: Optional[tuple[CachedToken, str]] = None

    def header(self, entry: CachedToken) -> str:
        """``entry.header``, joined the first time it is attached (one tuple, read and
        written whole: threads never pair one entry with another's header)."""
        joined = self.joined
        if joined is not None and joined[0] is entry:
            return joined[1]
        header = entry.header
        self.joined = (entry, header)
        return header


class Binding(NamedTuple):
    """A profile with its call's overrides, ready to use: its cache key and host policy.

    ``key`` identifies the token (authority, tenant, client, credential, scopes, and whose it
    is); ``key.account`` the sign-in it came from (the same without the scopes), under which
    refresh tokens are kept. ``store_key`` and ``store_account_key`` are the same as
    strings, for the stores. ``slot`` holds the key's cache entry, for the hot path.

    A tenant override keeps the profile it was derived from in ``base`` and the tenant in
    ``tenant``: thousands of tenants of one profile share it (``profile`` builds the
    overridden one when a token is fetched).
    """

    base: Profile
    key: TokenKey
    user_assertion: Optional[str]
    tenant: Optional[str]
    slot: _Slot
    # For a chain (flow chain or auto): which member ``base`` is, and why (authlayer.chains).
    via: Optional[Choice] = None

    def __repr__(self) -> str:
        extra = f", tenant={self.tenant!r}" if self.tenant is not None else ""
        if self.via is not None:
            extra += f", chain={self.via.chain!r}"
        return f"Binding(profile={self.base.name!r}{extra})"

    @property
    def profile(self) -> Profile:
        """The profile with every override applied."""
        if self.tenant is None:
            return self.base
        return replace(self.base, tenant=self.tenant)

    @property
    def store_key(self) -> str:
        return store_key(self.key)

    @property
    def store_account_key(self) -> str:
        return store_account_key(self.key.account)

    @property
    def hosts(self) -> HostPolicy:
        return self.base.hosts  # a tenant override does not change where the token may go

    @classmethod
    def make(cls, profile: Profile, user_assertion: Optional[str] = None,
             via: Optional[Choice] = None) -> Binding:
        return cls(profile, cls.key_for(profile, user_assertion), user_assertion or None, None,
                   _Slot(), via)

    @staticmethod
    def key_for(profile: Profile, user_assertion: Optional[str] = None) -> TokenKey:
        spec = registry.flow(profile.flow)
        if spec.needs_user_assertion and not user_assertion:
            raise profile.config_error(
                f"flow {profile.flow!r} needs the incoming token: pass user_assertion=... to "
                "EntraAuth or get_token"
            )
        who = [profile.username or "", profile.login_hint or "", profile.object_id or "",
               profile.resource_id or ""]
        if spec.names_profile:
            # Two profiles of one app are two people's sign-ins: never share their tokens.
            who.append("profile:" + profile.name)
        if profile.refresh_token is not None:
            who.append("rt:" + _digest(profile.refresh_token.identity))
        if user_assertion:
            who.append("obo:" + _digest(user_assertion))
        if spec.identity is not None:
            who.append(str(spec.identity(profile)))  # e.g. the Azure CLI's signed-in account
        if profile.cae:
            # CAE tokens (asked with the client capabilities) never share a non-CAE entry;
            # non-CAE keys keep the form they always had.
            who.append("cae")
        account = AccountKey(profile.flow, profile.authority, profile.tenant or "",
                             profile.client_id or "", profile.credential_identity, tuple(who))
        return TokenKey(account, tuple(sorted(profile.scopes)))


def _sharing(key: TokenKey, like: TokenKey) -> TokenKey:
    """``key`` made of ``like``'s objects wherever the two are equal: the keys of thousands of
    tenants of one profile then share its scopes, credential and identity parts, and differ
    only by the tenant."""
    account = AccountKey._make(
        theirs if mine == theirs else mine for mine, theirs in zip(key.account, like.account))
    scopes = like.scopes if key.scopes == like.scopes else key.scopes
    return TokenKey(account, scopes, key.claims)


def _record(result: TokenResult) -> dict[str, Any]:
    return {
        "access_token": result.access_token,
        "expires_on": result.expires_on,
        "refresh_on": result.refresh_on,
        "token_type": result.token_type,
    }


def _environ_reader() -> tuple[Callable[[Any], Any], Any, Any]:
    """A fast reader of the environment for memo keys, and the keys of ``AUTHLAYER_PROFILE``
    and ``AUTHLAYER_CONFIG`` for it: ``os.environ.get`` decodes and costs more than the rest
    of a cached call, so where it can this is the environment's own mapping's ``get`` (a
    builtin, no Python frame), given the raw keys. Its values only tell calls apart."""
    data = getattr(os.environ, "_data", None)
    encodekey = getattr(os.environ, "encodekey", None)
    if isinstance(data, dict) and callable(encodekey):
        return data.get, encodekey("AUTHLAYER_PROFILE"), encodekey("AUTHLAYER_CONFIG")
    return os.environ.get, "AUTHLAYER_PROFILE", "AUTHLAYER_CONFIG"


_env_get, _ENV_PROFILE, _ENV_CONFIG = _environ_reader()


class _ConfigFromEnv:
    """In a memo key, where ``config`` would be, standing for ``$AUTHLAYER_CONFIG``'s raw
    value: one object per value (:func:`_new_config_mark`), equal only to itself and hashed by
    identity, so that it never equals, nor is ever compared with, anything a caller passes."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def __repr__(self) -> str:
        return f"<$AUTHLAYER_CONFIG {self.raw!r}>"


_NO_CONFIG = _ConfigFromEnv(None)  # unset or empty: the default location
_CONFIG_MARKS: dict[Any, _ConfigFromEnv] = {None: _NO_CONFIG}
_config_mark_get = _CONFIG_MARKS.get  # the hot path's read: None for a value not seen yet
CONFIG_MARKS_KEPT = 64


def _new_config_mark(raw: Any) -> _ConfigFromEnv:
    """The mark of a raw value of ``$AUTHLAYER_CONFIG`` not seen yet (the slow path makes it;
    the hot path only reads :data:`_CONFIG_MARKS`, and misses until then)."""
    if len(_CONFIG_MARKS) >= CONFIG_MARKS_KEPT:  # a process that keeps changing it
        _CONFIG_MARKS.clear()
        _CONFIG_MARKS[None] = _NO_CONFIG
    # (setdefault: two threads meeting a new value both get the one mark)
    return _CONFIG_MARKS.setdefault(raw, _ConfigFromEnv(raw) if raw else _NO_CONFIG)


def _args(profile: Optional[str], config: PathArg, scope: ScopeArg, tenant: Optional[str],
          user_assertion: Optional[str]) -> tuple[Any, ...]:
    """A call's memo key: its own arguments, and the environment variables that stand in for
    the ones not given; a call without overrides (the common one) has a shorter key, cheaper
    to hash. The hot path builds the same tuple inline.

    Keys of each kind have their own length or, for the two of five items, their own type
    in the second place, so they never collide: a call with overrides and a profile has
    ``(profile, config, scope, tenant, user_assertion)``, where a missing ``config`` is
    ``$AUTHLAYER_CONFIG``'s mark (:class:`_ConfigFromEnv`). Not seven items like the other
    keys with the environment in them: thousands of tenants' keys of five items sit in the
    allocator's 80-byte blocks, among objects the hot path reads, where seven would sit among
    objects it does not read and cost a 50,000-tenant cycle 100 ns more per call
    (benchmarks/bench_cliffs.py). Not the variable's raw value: where it is a ``str`` it could
    equal a caller's argument, and POSIX ``bytes`` hash as the path's ``str`` does, so that a
    dict compares the two (``BytesWarning`` under ``python -bb``)."""
    if scope is not None and not isinstance(scope, str):
        scope = tuple(scope)
    if scope is None and tenant is None and user_assertion is None:
        if profile is None or config is None:
            return (profile, config, _env_get(_ENV_PROFILE) if profile is None else None,
                    _env_get(_ENV_CONFIG) if config is None else None)
        return (profile, config)
    if profile is None:
        return (None, config, scope, tenant, user_assertion, _env_get(_ENV_PROFILE),
                _env_get(_ENV_CONFIG) if config is None else None)
    if config is None:  # (the async hot path comes here: a mark seen is one dict read)
        raw = _env_get(_ENV_CONFIG)
        return (profile, _config_mark_get(raw) or _new_config_mark(raw), scope, tenant,
                user_assertion)
    return (profile, config, scope, tenant, user_assertion)


class _Refusal:
    """401s for one token key: the token fetched after the last one, and the cooldown."""

    __slots__ = ("delay", "fetched_at", "token", "until")

    def __init__(self, token: Optional[str], fetched_at: float) -> None:
        self.token = token  # the replacement fetched after a 401 (None: none since the cooldown)
        self.fetched_at = fetched_at
        self.delay = 0.0  # the last cooldown's length (0: none yet)
        self.until = 0.0  # no new token before this


class Provider:
    """Process-wide token cache and acquisition. Use the module's :data:`PROVIDER`."""

    def __init__(self) -> None:
        self.entries: dict[TokenKey, CachedToken] = {}
        # Each key's entry again, for the hot path; a slot lives while a binding holds it.
        self._slots: weakref.WeakValueDictionary[TokenKey, _Slot] = (
            weakref.WeakValueDictionary())
        self._rejected: dict[TokenKey, str] = {}  # key -> the token that last got a 401 there
        self._refusals: dict[TokenKey, _Refusal] = {}
        # Keyed by a token key, or by ("signin", account key) for flows that may ask a person.
        self._flights: SingleFlight[Hashable, CachedToken] = SingleFlight()
        self._loads: SingleFlight[tuple[Any, ...], Binding] = SingleFlight()  # async loads
        self._guard = threading.Lock()
        self._bindings: dict[tuple[Any, ...], Binding] = {}
        # The same call signatures, straight to their binding's slot: the hot path's one read.
        # Cleared, never replaced: get_token holds PROVIDER's memo's get (_memo_get).
        self._memo: dict[tuple[Any, ...], _Slot] = {}
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
        from .chains import resolve
        from .config import with_tenant

        binding: Optional[Binding] = None
        if tenant is not None:
            # Derived from the profile's own binding: thousands of tenants read the file once.
            base = self.bind(profile, config=config, scope=scope, user_assertion=user_assertion)
            derived = with_tenant(base.base, tenant)
            if derived is not None:
                key = _sharing(Binding.key_for(derived, user_assertion), base.key)
                binding = base if key == base.key else Binding(
                    base.base, key, base.user_assertion, derived.tenant, self._slot(key),
                    base.via)
        if binding is None:
            # A chain comes back as its member: the member's key, flights and cooldowns serve
            # it, exactly as they serve the member used by its own name.
            loaded, via = resolve(profile, path=config, scope=scope, tenant=tenant)
            binding = Binding.make(loaded, user_assertion, via)
            binding = binding._replace(slot=self._slot(binding.key))
            self._watch(loaded.config_path)
        with self._guard:
            if len(self._bindings) >= MAX_BINDINGS:  # forget the oldest one, not all
                oldest = next(iter(self._bindings))
                del self._bindings[oldest]
                self._memo.pop(oldest, None)
            self._bindings[args] = binding
            self._memo[args] = binding.slot
        return binding

    def with_cae(self, binding: Binding) -> Binding:
        """``binding`` asking for CAE tokens (an Azure SDK's ``enable_cae``): its profile with
        ``cae = true``, under its own key. A flow that takes no ``cae`` (managed identity, the
        developer tools) is left as it is."""
        profile = binding.base
        if profile.cae or not registry.flow(profile.flow).takes("cae"):
            return binding
        args = ("cae", binding.key, binding.user_assertion)
        found = self._bindings.get(args)
        if found is None:
            cae = replace(profile, cae=True)
            key = Binding.key_for(replace(binding.profile, cae=True), binding.user_assertion)
            found = Binding(cae, key, binding.user_assertion, binding.tenant, self._slot(key),
                            binding.via)
            with self._guard:
                self._bindings[args] = found
        return found

    def _slot(self, key: TokenKey) -> _Slot:
        """The key's one slot (every binding of the key shares it)."""
        with self._guard:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot(self.entries.get(key))
            return slot

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
        # (A partial, not a closure: each of a thousand waiting tasks builds it.)
        return await self._loads.run_async(args, functools.partial(
            off_loop, functools.partial(self._load, running_library(), args, profile, config,
                                        scope, tenant, user_assertion)))

    def _load(self, library: str, args: tuple[Any, ...], profile: Optional[str],
              config: PathArg, scope: ScopeArg, tenant: Optional[str],
              user_assertion: Optional[str]) -> Binding:
        """:meth:`bind_async`'s load, in a worker thread."""
        made = self._make(args, profile, config, scope, tenant, user_assertion)
        if library not in ASYNC_READY:  # the token's flight comes next: its imports too
            import_async_stack(library)
        return made

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
                self._memo.pop(args, None)
        log.debug("a profiles file changed; it will be read again")

    def cached(self, profile: Optional[str], config: PathArg, scope: ScopeArg,
               tenant: Optional[str], user_assertion: Optional[str]) -> Optional[CachedToken]:
        """The cached entry for these call arguments if it may be served as it is (the hot
        path of the async callers; :func:`get_token` has it inline)."""
        try:
            slot = self._memo.get(_args(profile, config, scope, tenant, user_assertion))
        except TypeError:  # an unhashable argument: the slow path says what is wrong
            return None
        if slot is None:
            return None
        entry = slot.entry
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

    def _obtain(self, binding: Binding, key: TokenKey, need: Need, prompt: Prompt,
                discard: bool = False) -> Generator[Action, Any, CachedToken]:
        """Get a token from the store or the flow and keep it (under ``key``: the plain key, or
        a claims key), as :data:`POLICY` says for ``need``. Runs as the leader of ``key``'s
        single flight. ``discard``: the stored token got a 401; forget it (not the refresh
        token) first.
        """
        policy = POLICY[need.want]
        profile = binding.profile
        store = self.store_for(profile)
        now = self.clock()
        seen = self.entries.get(key)
        record: Optional[dict[str, Any]] = None
        stored, account = binding.store_key, binding.store_account_key
        try:
            if discard:
                yield Call(lambda: store.discard(stored))
            found = yield Call(lambda: store.load(stored, account))
            record = found if isinstance(found, dict) else None
        except AuthLayerError as exc:  # an unusable token cache must not stop the work
            log.warning("profile %r: the token cache could not be read (%s); tokens are kept "
                        "in memory only", profile.name, exc)
            store = self._memory_store
            record = store.load(stored, account)
        if record is not None and record.get("access_token") == self._rejected.get(binding.key):
            record = {k: v for k, v in record.items() if k != "access_token"}
        if record is not None and policy.current_ok:
            entry = _entry_from_record(record, now)
            if entry is not None:  # another process (or an earlier run) has a fresh one
                self._keep(key, entry)
                return entry
        # Fleet hook (issue 9): with a store shared by processes, lead the fleet (this process
        # asks; the lease is released once the token is saved) or take its leader's token.
        lease: Optional[object] = None
        if policy.fleet and fleet_lock(store) is not None:
            lease, shared = yield Call(lambda: self._fleet(store, binding, profile))
            shared_entry = _entry_from_record(shared, self.clock()) if shared else None
            if lease is None and shared_entry is not None:
                self._keep(key, shared_entry)
                return shared_entry
            if shared is not None:  # the newest record: its refresh token, not a rejected token
                record = {k: v for k, v in shared.items() if k != "access_token"
                          or v != self._rejected.get(binding.key)}
        from_memory = seen is not None
        if seen is None and record is not None and policy.current_ok:
            seen = _entry_from_record(record, now, due=True)
        still_valid = seen is not None and now < seen.token.expires_on - MIN_VALIDITY
        ctx = FlowContext(
            profile,
            claims=need.claims,
            user_assertion=binding.user_assertion,
            refresh_token=None if policy.fresh_sign_in else (record or {}).get("refresh_token"),
            account=(record or {}).get("account"),
            # Nobody is asked to sign in while the current token still serves.
            interactive=need.interactive and not (still_valid and policy.current_ok),
            fresh_sign_in=policy.fresh_sign_in,
            prompt=prompt or default_prompt,
            clock=self.clock,
        )
        found = record = None  # it holds tokens: keep them out of a failing flow's locals
        try:
            result = yield from _leading(store, lease, registry.flow(profile.flow).acquire(ctx))
        except AuthLayerError as exc:
            fallback = None
            if seen is not None and still_valid and policy.current_ok:
                fallback = self._fallback(key, seen, from_memory)
            if fallback is None:
                raise
            log.warning(
                "profile %r: refreshing the token failed (%s); the current token stays in use "
                "until it expires", profile.name, type(exc).__name__,
            )
            return fallback
        released = lease is None
        try:
            entry = CachedToken.from_result(result)
            saved = _record(result)
            if result.refresh_token or result.account:
                saved["refresh_token"] = result.refresh_token
                saved["account"] = result.account
            fresh = policy.fresh_sign_in
            if fresh:  # a new sign-in, perhaps another person: drop the old one's tokens
                self.forget(binding, Forget.SIGN_IN)
            try:
                # A claims token is kept under its claims key: never served for the plain one.
                if store is not self._memory_store or "refresh_token" in saved or fresh:
                    yield Call(lambda: _replace_or_save(store, binding, key, saved, fresh))
                # (In memory, a record without a refresh token would only repeat the entry.)
            except AuthLayerError as exc:
                log.warning("profile %r: the token cache could not be written (%s); tokens are "
                            "kept in memory only", profile.name, exc)
                _replace_or_save(self._memory_store, binding, key, saved, fresh)
            self._keep(key, entry)
            if lease is not None:  # the token is in the store: the fleet's waiters take it now
                yield Call(lambda: _release(store, lease))
                released = True
        finally:
            # Cancelled, or failed while saving: free the fleet's lock now rather than make the
            # other processes wait for it to expire (releasing twice is harmless).
            if not released:
                _release(store, lease)
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
            return lead_or_wait(store, binding.store_key, binding.store_account_key,
                                ttl=profile.timeout + FLEET_GRACE, usable=usable)
        except AuthLayerError as exc:
            log.warning("profile %r: the token cache's fleet lock could not be used (%s); "
                        "this process fetches its own token", profile.name, exc)
            return None, None

    def _fallback(self, key: TokenKey, seen: CachedToken, from_memory: bool,
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
        postponed = seen._replace(refresh_on=_moment(round(now + wait)))
        self._keep(key, postponed)
        return postponed

    def _set(self, key: TokenKey, entry: CachedToken) -> None:
        """The one way an entry is written: into ``entries`` and the key's slot."""
        self.entries[key] = entry
        slot = self._slots.get(key)
        if slot is not None:
            slot.entry = entry

    def _pop(self, key: TokenKey) -> Optional[CachedToken]:
        """The one way an entry is removed."""
        slot = self._slots.get(key)
        if slot is not None:
            slot.entry = None
        return self.entries.pop(key, None)

    def _keep(self, key: TokenKey, entry: CachedToken) -> None:
        self._set(key, entry)
        if self._rejected.get(key) not in (None, entry.token.token):
            self._rejected.pop(key, None)
        if len(self.entries) > self._sweep_above:
            now = self.clock()
            for stale in [k for k, e in list(self.entries.items())
                          if e.token.expires_on <= now]:
                self._pop(stale)
                self._rejected.pop(stale, None)
                self._refusals.pop(stale, None)
            # Many live entries (tenants): sweep again only when they have doubled, so that a
            # large cache is not scanned for every new token.
            self._sweep_above = max(SWEEP_ABOVE, 2 * len(self.entries))

    # ------------------------------------------------------------------ single flight

    def _usable(self, key: TokenKey,
                exclude: Optional[CachedToken] = None) -> Optional[CachedToken]:
        """The entry under ``key`` if it is still valid (and not ``exclude``)."""
        entry = self.entries.get(key)
        if entry is None or entry is exclude:
            return None
        if exclude is not None and entry.token.token == exclude.token.token:
            return None
        return entry if self.clock() < entry.token.expires_on - MIN_VALIDITY else None

    def _fresh(self, key: TokenKey) -> Optional[CachedToken]:
        entry = self.entries.get(key)
        return entry if entry is not None and self.clock() < entry.refresh_on else None

    def _lead(self, binding: Binding, key: TokenKey, need: Need, prompt: Prompt,
              discard: bool = False) -> Generator[Action, Any, CachedToken]:
        """The leader's flow: first look again (a flight that just landed may have done the
        work), as :data:`POLICY` says, then obtain the token."""
        recheck = POLICY[need.want].recheck
        if recheck is not None:
            entry = (self._fresh(key) if recheck == "fresh"
                     else self._usable(key, exclude=need.rejected))
            if entry is not None:
                return entry
        return (yield from self._obtain(binding, key, need, prompt, discard))

    def _flight(self, key: TokenKey, need: Need) -> dict[str, Any]:
        """How a caller with ``need`` joins ``key``'s single flight (see :data:`POLICY`)."""
        policy = POLICY[need.want]
        rejected = need.rejected
        wants = policy.takes

        def takes(tag: tuple[Want, str], shared: CachedToken) -> bool:
            if wants is not None and tag[0] not in wants:
                return False  # a forced refresh or a login does not take less than it asked
            return rejected is None or shared.token.token != rejected.token.token

        return {"tag": (need.want, key), "shares": lambda tag: tag[1] == key, "takes": takes,
                "instead": (lambda: self._usable(key, rejected)) if policy.no_wait else None}

    # ------------------------------------------------------------------ the operations

    def get(self, binding: Binding, need: Need = PLAIN, *, prompt: Prompt = None) -> CachedToken:
        """A token for ``binding`` as ``need`` says (by default: a valid one, from the cache
        when it can). A person is asked to sign in only if ``need.interactive``; otherwise
        :class:`~authlayer.errors.TokenError` says that one must."""
        served, key, discard = self._prepare(binding, need)
        if served is not None:
            return served
        entry = self._flights.run(
            _flight_key(key), lambda: run_sync(self._lead(binding, key, need, prompt, discard)),
            **self._flight(key, need))
        if binding.via is not None:
            _remember(binding.via)
        return self._fetched(key, entry) if POLICY[need.want].refusals else entry

    async def get_async(self, binding: Binding, need: Need = PLAIN, *,
                        prompt: Prompt = None) -> CachedToken:
        """:meth:`get` for async code: never blocks the event loop."""
        served, key, discard = self._prepare(binding, need)
        if served is not None:
            return served
        entry = await self._flights.run_async(
            _flight_key(key), lambda: _run_async(self._lead(binding, key, need, prompt, discard)),
            **self._flight(key, need))
        if binding.via is not None:
            _remember(binding.via)
        return self._fetched(key, entry) if POLICY[need.want].refusals else entry

    def _prepare(self, binding: Binding, need: Need,
                 ) -> tuple[Optional[CachedToken], TokenKey, bool]:
        """What needs no flight: ``(entry to serve now or None, the token's key, whether the
        stored token is discarded first)``. After a 401: the token to send during a cooldown,
        or the one that already replaced the rejected one; else a cached entry."""
        policy = POLICY[need.want]
        discard = False
        if need.rejected is not None:
            if policy.cooldown:
                held = self._cooling(binding, need.rejected)
                if held is not None:
                    return held, binding.key, False
            replaced = self.forget(binding, Forget.TOKEN, token=need.rejected)
            if replaced is not None and need.claims is None:
                return replaced, binding.key, False
            discard = replaced is None  # the challenged token is dropped from the store too
        key = binding.key if need.claims is None else self.claims_key(binding, need.claims)
        if policy.cached:
            entry = self._serve(binding, key, need)
            if entry is not None:
                return entry, key, False
        return None, key, discard

    def _serve(self, binding: Binding, key: TokenKey, need: Need) -> Optional[CachedToken]:
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
        self._refresh_in_background(binding, key, Need(need.want, need.claims, interactive=False))
        return entry

    def _refresh_in_background(self, binding: Binding, key: TokenKey, need: Need) -> None:
        """Lead ``key``'s single flight from a daemon thread, unless a flight is under way.
        A thread serves sync and async callers alike and outlives no event loop."""
        def lead() -> CachedToken:
            try:
                return run_sync(self._lead(binding, key, need, None))
            except BaseException as exc:  # the fallback already logged a refusal
                if not isinstance(exc, AuthLayerError):
                    log.warning("refreshing a token in the background failed: %s",
                                type(exc).__name__)
                raise

        self._flights.spawn(_flight_key(key), lead, tag=(need.want, key),
                            name="authlayer-refresh")

    def join_background(self, timeout: Optional[float] = None) -> None:
        """Wait for the background refreshes under way (tests, a clean shutdown)."""
        self._flights.join_background(timeout)

    # ------------------------------------------------------------------ after a 401

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

    def _cool(self, key: TokenKey, state: _Refusal, now: float, what: str) -> None:
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

    def _fetched(self, key: TokenKey, entry: CachedToken) -> CachedToken:
        """Remember that ``entry`` was fetched because its predecessor got a 401."""
        now = self.clock()
        with self._guard:
            state = self._refusals.get(key)
            if state is None:
                self._refusals[key] = _Refusal(entry.token.token, now)
            elif state.token != entry.token.token and now >= state.until:
                state.token, state.fetched_at = entry.token.token, now
        return entry

    def claims_key(self, binding: Binding, claims: str) -> TokenKey:
        """Where a token for this claims request is kept: never the plain key."""
        return binding.key._replace(claims=_digest(claims))

    # ------------------------------------------------------------------ forgetting

    def forget(self, binding: Binding, what: Forget = Forget.SIGN_OUT, *,
               claims: Optional[str] = None,
               token: Optional[CachedToken] = None) -> Optional[CachedToken]:
        """Forget ``what`` of ``binding``:

        * ``Forget.TOKEN``: its token (for ``claims``, when given) — if it is still ``token``,
          when given; that token is remembered as refused (never reloaded from the store).
          Returns the entry that already replaced ``token``, if any (then nothing is
          forgotten). A claims token forgotten this way was refused in turn: the plain token
          cools down, so that the next requests do not each fetch two new tokens.
        * ``Forget.SIGN_IN``: every token of its sign-in (all scopes, claims tokens too), in
          memory.
        * ``Forget.SIGN_OUT``: the same, and the sign-in's records in its store (``authlayer
          logout``).

        :meth:`reset` forgets everything.
        """
        if what is Forget.TOKEN:
            return self._forget_token(binding, claims, token)
        account = binding.key.account
        for key in [k for k in list(self.entries)
                    if isinstance(k, TokenKey) and k.account == account]:
            self._pop(key)
        if what is Forget.SIGN_OUT:
            self.store_for(binding.profile).delete(binding.store_key, binding.store_account_key)
        return None

    def _forget_token(self, binding: Binding, claims: Optional[str],
                      token: Optional[CachedToken]) -> Optional[CachedToken]:
        key = binding.key if claims is None else self.claims_key(binding, claims)
        if token is not None:
            replaced = self._usable(key, exclude=token)
            if replaced is not None:
                return replaced
        current = self.entries.get(key)
        if current is not None and (token is None or current.token.token == token.token.token):
            self._pop(key)
        else:
            current = None
        refused = token or current
        if refused is not None:
            self._rejected[key] = refused.token.token  # not to be reloaded from the store
        if claims is not None and current is not None:
            now = self.clock()
            with self._guard:
                state = self._refusals.setdefault(binding.key, _Refusal(None, now))
                if now >= state.until:
                    self._cool(binding.key, state, now, "a claims challenge")
        return None

    # ------------------------------------------------------------------ housekeeping

    def reset(self) -> None:
        """Forget every token, binding and in-memory record (see :func:`reset`)."""
        self.join_background(timeout=30)  # a refresh landing later must not refill the cache
        with self._guard:
            self.entries.clear()
            for slot in list(self._slots.values()):  # bindings kept by callers (EntraAuth)
                slot.entry = None
            self._rejected.clear()
            self._refusals.clear()
            self._bindings.clear()
            self._memo.clear()
            self._stamps.clear()
            self._memory_store = MemoryStore()
            self._sweep_above = SWEEP_ABOVE
            self.recheck_at = 0.0
        chains = sys.modules.get("authlayer.chains")  # the chains' remembered members
        if chains is not None:
            chains.forget()
        stores = sys.modules.get("authlayer.stores")  # shared stores keep a copy in memory
        if stores is not None:
            stores.forget_stores()
        registry.forget_plugins()  # entry points are listed again: a plugin installed since


async def _run_async(flow: Flow[CachedToken]) -> CachedToken:
    """:func:`~authlayer._actions.run_async`, the async transport imported off the event loop
    the first time."""
    library = running_library()
    if library not in ASYNC_READY:
        await off_loop(lambda: import_async_stack(library))
    return await run_async(flow)


def _remember(choice: Choice) -> None:
    """A chain's member gave a token: the chain goes straight to it from now on."""
    from .chains import remember

    remember(choice)


def _flight_key(key: TokenKey) -> Hashable:
    """The single-flight key of a token key: the token key itself, or, for flows that may ask
    a person, the sign-in (one acquisition per sign-in, whatever the scopes) — never for a
    claims key."""
    if key.claims is None and registry.flow(key.account.flow).may_prompt:
        return ("signin", key.account)
    return key


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


def _replace_or_save(store: TokenStore, binding: Binding, key: TokenKey,
                     record: dict[str, Any], replace: bool) -> None:
    account = binding.store_account_key
    if replace:
        store.forget_account_tokens(account)
    store.save(store_key(key), account, record)


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
    return CachedToken(_shared_type(public), _moment(refresh_on))


PROVIDER = Provider()
# The hot path's read of PROVIDER's memo (a dict that is cleared, never replaced).
_memo_get = PROVIDER._memo.get


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
    # The hot path: one dict read keyed by the call's own arguments (what _args builds) gives
    # the binding's slot (no key to hash); its entry; one look at the clock.
    provider = PROVIDER
    if scope is None and tenant is None and user_assertion is None:
        if config is None:
            args: tuple[Any, ...] = (
                profile, None, _env_get(_ENV_PROFILE) if profile is None else None,
                _env_get(_ENV_CONFIG))
        elif profile is None:
            args = (None, config, _env_get(_ENV_PROFILE), None)
        else:
            args = (profile, config)
    elif profile is None:
        args = (None, config, scope, tenant, user_assertion, _env_get(_ENV_PROFILE),
                _env_get(_ENV_CONFIG) if config is None else None)
    elif config is None:
        args = (profile, _config_mark_get(_env_get(_ENV_CONFIG)), scope, tenant,
                user_assertion)
    else:
        args = (profile, config, scope, tenant, user_assertion)
    if not force_refresh:
        try:
            slot = _memo_get(args)
        except TypeError:  # a list of scopes: the slow path makes it a tuple
            slot = None
        if slot is not None:
            entry = slot.entry
            if entry is not None:
                now = provider.clock()
                if now < entry.refresh_on and now < provider.recheck_at:
                    return entry.token
    provider.check_files()
    binding = provider.bind(profile, config=config, scope=scope, tenant=tenant,
                            user_assertion=user_assertion)
    return provider.get(binding, FORCED if force_refresh else PLAIN, prompt=prompt).token


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
    return (await provider.get_async(binding, FORCED if force_refresh else PLAIN,
                                     prompt=prompt)).token
