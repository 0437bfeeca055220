"""The declarations the rest of authlayer reads: what a flow is, what a profile key is, what a
secret source is, and what one token acquisition gets.

A flow module ends with ``FLOW = FlowSpec(...)``: its name, its keys, and every fact that
config, the provider and the adapters need about it (which cache it uses by default, whether
its cache key names the profile, whether it may prompt, ...). Nothing outside a flow branches on
a flow's name; it asks :mod:`authlayer.registry` for the spec. The same holds for secret
sources (:class:`SecretSourceSpec`) and for profile keys (:class:`Key`, the table in
:mod:`authlayer.config._keys`). This module is a leaf: values and types only, no I/O.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional

from ._record import field, record

if TYPE_CHECKING:
    from ._http import Action
    from .profile import Profile
    from .token import TokenResult

__all__ = [
    "CLIENT",
    "COMMON",
    "CREDENTIALS",
    "AtMostOne",
    "FlowContext",
    "FlowSpec",
    "Key",
    "ReadContext",
    "SecretSourceSpec",
    "default_prompt",
    "endpoint",
]

# The client credentials: a flow takes exactly one, at most one, or none of them.
CREDENTIALS = ("client_secret", "certificate", "client_assertion")
# Keys every flow that talks to Entra takes, and those of a client with a credential.
COMMON = frozenset({"flow", "scope", "authority", "cloud", "allowed_hosts", "cache", "timeout",
                    "cae", "additionally_allowed_tenants"})
CLIENT = frozenset({"tenant", "client_id", "assertion_alg", *CREDENTIALS})


def default_prompt(message: str) -> None:
    """Show sign-in instructions on standard error, never standard output."""
    print(message, file=sys.stderr, flush=True)


def endpoint(profile: Profile, name: str, tenant: Optional[str] = None) -> str:
    """``{authority}/{tenant}/oauth2/v2.0/{name}``."""
    return f"{profile.authority}/{tenant or profile.tenant}/oauth2/v2.0/{name}"


@record
class FlowContext:
    """What one token acquisition needs beyond the profile.

    ``claims`` is a claims request (JSON text) to send with the token request; ``user_assertion``
    the incoming token for on-behalf-of; ``refresh_token`` one found in the cache, for flows that
    can use it; ``interactive`` is false when no person may be asked (then a flow that would
    need a person raises :class:`~authlayer.errors.TokenError`); ``prompt`` shows sign-in
    instructions; ``fresh_sign_in`` is true for ``authlayer login``: sign the person in anew
    (ignore any kept refresh token, and let them choose the account).
    """

    profile: Profile
    claims: Optional[str] = None
    user_assertion: Optional[str] = field(default=None, repr=False)
    refresh_token: Optional[str] = field(default=None, repr=False)
    account: Optional[dict[str, Any]] = None
    interactive: bool = True
    fresh_sign_in: bool = False
    prompt: Callable[[str], None] = default_prompt
    clock: Callable[[], float] = time.time

    def token_url(self, tenant: Optional[str] = None) -> str:
        """``{authority}/{tenant}/oauth2/v2.0/token``."""
        return endpoint(self.profile, "token", tenant)


@record
class Key:
    """One profile key: how its value is checked and turned into a :class:`Profile` field.

    ``parse(value, where)`` returns the field's value or raises the :class:`ConfigError` that
    ``where`` (an :class:`authlayer.config._keys.Where`) makes; ``None`` for the keys the layers
    handle themselves (``flow``, ``extends``). ``missing`` completes "flow 'x' needs …" when a
    flow requires the key. ``field`` is the Profile attribute (default: the key's name).
    ``group`` names keys that stand for one setting across layers (a profile that sets one of
    them replaces what the layers it inherits from set for the whole group). ``aliases`` are
    names people reach for that a spelling suggestion would not find.
    """

    name: str
    parse: Optional[Callable[[Any, Any], Any]]
    missing: str = "it"
    field: Optional[str] = None
    group: Optional[str] = None
    aliases: tuple[str, ...] = ()

    @property
    def attribute(self) -> str:
        return self.field or self.name


@record
class AtMostOne:
    """A combination a flow forbids: at most one of ``keys``; ``why`` completes the message
    "a and b are both set: {why} with one of a, b or c"."""

    keys: tuple[str, ...]
    why: str


@record
class ReadContext:
    """Where a secret source is read for: the profile, the key, the profiles file."""

    profile: str
    key: str
    path: Optional[str] = None


@record
class SecretSourceSpec:
    """A kind of secret source: the table key in ``client_secret = { KIND = ... }``.

    ``read(ref, where)`` returns the secret (raising :class:`ConfigError` naming the profile and
    key); ``check(value, where)`` validates what the profile wrote when it is loaded and returns
    the ``ref`` that ``read`` gets (``None``: any value, kept as written); ``blocking`` says that
    reading it does I/O (a file, a command), so it runs off the event loop; ``identity(ref)``
    is the non-secret part of a cache key, ``describe(ref)`` how it is shown to people.
    ``available(ref, ctx)`` says whether the source can give a secret here: ``None`` when it
    can, else a short reason ("environment variable X is not set"); no ``available``: always.
    """

    name: str
    read: Callable[[Any, ReadContext], str]
    identity: Callable[[Any], str]
    describe: Callable[[Any], str]
    check: Optional[Callable[[Any, Any], Any]] = None
    blocking: bool = True
    available: Optional[Callable[[Any, ReadContext], Optional[str]]] = None


@record
class FlowSpec:
    """Everything authlayer needs to know about a flow, declared next to its code.

    ``keys`` are the profile keys it takes (besides ``extends``); ``required`` those it cannot do
    without, reported missing in this order; ``credential`` says whether it needs ``"one"`` client
    credential, takes an ``"optional"`` one or ``"none"``; ``at_most_one`` lists combinations it
    forbids. ``default_tenant`` and ``default_client_id`` fill what the profile leaves out;
    ``refused_tenants`` are tenants it cannot use; ``not_from_defaults`` are keys ``[defaults]``
    does not give it. ``file_cache``: its tokens (a person's refresh token) go to the file cache
    by default. ``names_profile``: its cache key names the profile (two profiles are two
    people's sign-ins). ``may_prompt``: it may ask a person, so there is one acquisition per
    sign-in rather than per token. ``ignores_requested_tenant``: an Azure SDK's ``tenant_id`` is
    ignored. ``needs_user_assertion``: it needs the caller's incoming token. ``identity(profile)``
    adds to the cache key (never raises). ``prepare(values)`` fills keys from the environment
    when the profile is loaded. ``extra_keys`` are keys only a plugin flow takes; their parsed
    values land in ``Profile.extras``. ``available(profile)`` says whether the flow can work
    here at all: ``None`` when it can, else a short reason ("azd is not on PATH", "no managed
    identity endpoint answered"); it may block (run ``which``, read a file, probe IMDS for
    about a second) and raises only :class:`~authlayer.errors.ConfigError` for a profile that
    is wrong rather than unavailable. No ``available``: always. ``stands_for``: the profile
    stands for other profiles, one of which serves here (``"chain"``: those its ``chain`` key
    names; ``"auto"``: the built-in sources); the provider binds that member instead
    (:mod:`authlayer.chains`), and a ``tenant=`` override goes to the member.
    """

    name: str
    acquire: Callable[[FlowContext], Generator[Action, Any, TokenResult]]
    keys: frozenset[str]
    required: tuple[str, ...] = ()
    credential: str = "none"
    at_most_one: tuple[AtMostOne, ...] = ()
    default_tenant: Optional[str] = None
    refused_tenants: tuple[str, ...] = ()
    default_client_id: Optional[str] = None
    not_from_defaults: frozenset[str] = frozenset()
    file_cache: bool = False
    names_profile: bool = False
    may_prompt: bool = False
    ignores_requested_tenant: bool = False
    needs_user_assertion: bool = False
    identity: Optional[Callable[[Profile], str]] = None
    prepare: Optional[Callable[[Any], Mapping[str, Any]]] = None
    extra_keys: tuple[Key, ...] = ()
    summary: str = ""
    available: Optional[Callable[[Profile], Optional[str]]] = None
    stands_for: Optional[str] = None

    def takes(self, key: str) -> bool:
        """Whether a profile of this flow may set ``key``."""
        return key in self.keys or any(k.name == key for k in self.extra_keys)
