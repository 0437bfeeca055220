"""Where flows and secret sources are looked up by name: the built-ins, and those that other
installed packages add through entry points (CONTRACT §10, ``docs/extending.md``).

The built-in flows are the modules of :mod:`authlayer.flows`; each declares itself with
``FLOW = FlowSpec(...)`` at its end. A flow module is imported only when a profile uses that
flow, so ``import authlayer.config`` imports none of them; only error messages that list every
flow taking a key load every spec.

Plugins are found through the entry point groups ``authlayer.flows`` (the name is the flow's,
the object a :class:`~authlayer.schema.FlowSpec`) and ``authlayer.secret_sources`` (the name is
the table key, the object ``read(value, *, profile) -> str`` or a
:class:`~authlayer.schema.SecretSourceSpec`). The entry points are listed only for a name that
is not built in, or for a listing or a suggestion; a plugin is loaded only when a profile names
it, once, and a failure to load it is remembered and breaks only the profiles that name it.
Everything a plugin gives is wrapped here: its errors become :class:`ConfigError` or
:class:`TokenError` naming the profile, with anything that looks like a secret removed.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union, cast

from ._log import log
from .errors import AuthLayerError, ConfigError, TokenError, redact

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from ._http import Action
    from .profile import Profile
    from .schema import FlowContext, FlowSpec, ReadContext, SecretSourceSpec
    from .token import TokenResult

__all__ = [
    "BUILTIN_FLOWS",
    "BUILTIN_SECRET_SOURCES",
    "FLOW_GROUP",
    "SECRET_SOURCE_GROUP",
    "flow",
    "flow_names",
    "flows_taking",
    "forget_plugins",
    "has_secret_source",
    "secret_source",
    "secret_source_names",
    "unavailable",
]

_T = TypeVar("_T")

# The built-in flows, in the order they are listed to people.
BUILTIN_FLOWS = (
    "client_credentials",
    "device_code",
    "authorization_code",
    "refresh_token",
    "on_behalf_of",
    "password",
    "managed_identity",
    "workload_identity",
    "azure_cli",
    "azd",
    "azure_powershell",
    "chain",
    "auto",
)
# The built-in secret sources' table keys (a plain string is the secret itself: kind "value").
# The last three are borrowed identities, for client_assertion only.
BUILTIN_SECRET_SOURCES = ("env", "file", "command", "profile", "github_actions",
                          "azure_pipelines")

FLOW_GROUP = "authlayer.flows"
SECRET_SOURCE_GROUP = "authlayer.secret_sources"

_lock = threading.Lock()
_flows: dict[str, FlowSpec] = {}
# Plugins: the entry points of each group by name (listed once), and what loading each gave.
_entry_points: dict[str, dict[str, EntryPoint]] = {}
_loaded: dict[tuple[str, str], Union[FlowSpec, SecretSourceSpec, ConfigError]] = {}
_warned: set[tuple[str, str]] = set()


def flow(name: str) -> FlowSpec:
    """The spec of flow ``name``. Raises :class:`LookupError` for a name that is no flow, and
    :class:`ConfigError` (without a file or profile: the caller adds them) for a plugin that
    cannot be loaded."""
    spec = _flows.get(name)
    if spec is not None:
        return spec
    if name in BUILTIN_FLOWS:
        module = importlib.import_module(f"{__package__}.flows.{name}")
        spec = cast("FlowSpec", module.FLOW)
        with _lock:
            _flows[name] = spec
        return spec
    return cast("FlowSpec", _plugin(FLOW_GROUP, name, _wrap_flow))


def flow_names() -> tuple[str, ...]:
    """Every flow's name: the built-ins first, then the plugins' (which lists entry points)."""
    return BUILTIN_FLOWS + tuple(n for n in _names(FLOW_GROUP) if n not in BUILTIN_FLOWS)


def flows_taking(key: str) -> list[str]:
    """The built-in flows whose profiles may set ``key``, in :func:`flow_names` order, and the
    plugin flows already loaded that take it. Loads every built-in spec: for error messages."""
    names = [name for name in BUILTIN_FLOWS if flow(name).takes(key)]
    with _lock:
        loaded = [cast("FlowSpec", v) for (group, _), v in _loaded.items()
                  if group == FLOW_GROUP and not isinstance(v, ConfigError)]
    return names + [spec.name for spec in loaded if spec.takes(key)]


def secret_source(name: str, *, plugins: bool = True) -> SecretSourceSpec:
    """The spec of the secret source ``name`` (``"value"`` for a secret written in the profile).
    Raises :class:`LookupError` for an unknown name, :class:`ConfigError` for a plugin that
    cannot be loaded."""
    if name == "value" or name in BUILTIN_SECRET_SOURCES:
        from .config._sources import BUILTIN

        return BUILTIN[name]
    if not plugins:
        raise LookupError(name)
    return cast("SecretSourceSpec", _plugin(SECRET_SOURCE_GROUP, name, _wrap_secret_source))


def has_secret_source(name: str) -> bool:
    """Whether ``name`` is a secret source's table key (a plugin's need not load for this)."""
    return name in BUILTIN_SECRET_SOURCES or name in _names(SECRET_SOURCE_GROUP)


def secret_source_names() -> tuple[str, ...]:
    """Every secret source's table key: the built-ins first, then the plugins'."""
    return BUILTIN_SECRET_SOURCES + tuple(
        n for n in _names(SECRET_SOURCE_GROUP) if n not in BUILTIN_SECRET_SOURCES
    )


def unavailable(profile: Profile) -> Optional[str]:
    """Why ``profile`` cannot work here, or ``None``: its flow's ``available`` and that of each
    of its secret sources (an unset environment variable, no GitHub Actions token, ...), the
    first reason found. Blocking (a flow may probe, for about a second). Raises
    :class:`ConfigError` only for a profile that is wrong rather than unavailable."""
    spec = flow(profile.flow)
    reason = spec.available(profile) if spec.available is not None else None
    if reason is not None:
        return reason
    certificate = profile.certificate
    for source in (profile.client_secret, profile.client_assertion, profile.refresh_token,
                   profile.password, certificate.password if certificate else None):
        if source is not None:
            reason = source.available()
            if reason is not None:
                return f"{source.key}: {reason}"
    return None


def forget_plugins() -> None:
    """Forget the listed entry points and the loaded plugins (tests; ``authlayer.reset``)."""
    with _lock:
        _entry_points.clear()
        _loaded.clear()
        _warned.clear()


# --------------------------------------------------------------------------------------------
# Entry points


def _names(group: str) -> dict[str, EntryPoint]:
    """The group's entry points by name; a name that is built in is ignored (and logged)."""
    found = _entry_points.get(group)
    if found is not None:
        return found
    from ._entrypoints import listed

    builtin = BUILTIN_FLOWS if group == FLOW_GROUP else (*BUILTIN_SECRET_SOURCES, "value")
    found = {}
    for ep in listed(group):
        if ep.name in builtin:
            if (group, ep.name) not in _warned:
                _warned.add((group, ep.name))
                log.warning("plugin entry point %r (%s) ignored: a built-in has that name",
                            ep.name, _package(ep))
            continue
        found.setdefault(ep.name, ep)
    with _lock:
        _entry_points[group] = found
    return found


def _package(ep: EntryPoint) -> str:
    from ._entrypoints import package

    return package(ep)


def _plugin(group: str, name: str, wrap: Callable[[str, Any, EntryPoint], Any]) -> Any:
    """The plugin ``name`` of ``group``, loaded and wrapped once; a failure is remembered."""
    with _lock:
        done = _loaded.get((group, name))
    if done is None:
        ep = _names(group).get(name)
        if ep is None:
            raise LookupError(name)
        what = "flow" if group == FLOW_GROUP else "secret source"
        try:
            done = wrap(name, ep.load(), ep)
        except ConfigError as exc:
            done = exc
        except Exception as exc:
            done = ConfigError(
                f"{what} {name!r} comes from {_package(ep)}, which could not be loaded: "
                f"{_described(exc)}"
            )
        with _lock:
            done = _loaded.setdefault((group, name), done)
    if isinstance(done, ConfigError):
        raise ConfigError(done.reason)
    return done


def _described(exc: BaseException) -> str:
    """``Type: first line of the message``, with anything that looks like a secret removed."""
    lines = str(exc).strip().splitlines()
    text = redact(lines[0])[:200] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Wrapping what a plugin gives


def _wrap_secret_source(name: str, loaded: Any, ep: EntryPoint) -> SecretSourceSpec:
    from ._record import replace
    from .profile import keyed_hash
    from .schema import SecretSourceSpec

    if isinstance(loaded, SecretSourceSpec):
        if loaded.name != name:
            raise ConfigError(f"secret source {name!r} from {_package(ep)} is named "
                              f"{loaded.name!r}: the entry point and the spec must agree")
        spec = loaded
    elif callable(loaded):
        def read_value(ref: str, ctx: ReadContext) -> str:
            import json

            secret: str = loaded(json.loads(ref), profile=ctx.profile)
            return secret

        spec = SecretSourceSpec(name, read_value, identity=lambda ref: f"{name}:" + keyed_hash(ref),
                                describe=lambda ref: f"{name} source")
    else:
        raise ConfigError(f"secret source {name!r} from {_package(ep)} is "
                          f"{type(loaded).__name__}: it must be read(value, *, profile) -> str "
                          "or a SecretSourceSpec")
    return replace(spec, read=_guarded_read(name, spec.read),
                   identity=_never_raises(spec.identity))


def _guarded_read(name: str, read: Callable[[Any, ReadContext], str]
                  ) -> Callable[[Any, ReadContext], str]:
    def guarded(ref: Any, ctx: ReadContext) -> str:
        try:
            secret = read(ref, ctx)
        except ConfigError as exc:
            raise ConfigError(exc.reason, path=ctx.path, profile=ctx.profile or None,
                              key=ctx.key) from None
        except AuthLayerError:
            raise
        except Exception as exc:
            raise ConfigError(f"secret source {name!r} failed: {_described(exc)}", path=ctx.path,
                              profile=ctx.profile or None, key=ctx.key) from None
        if not isinstance(secret, str) or not secret:
            raise ConfigError(f"secret source {name!r} gave "
                              + ("an empty string" if isinstance(secret, str)
                                 else type(secret).__name__)
                              + ": it must give the secret as a non-empty string",
                              path=ctx.path, profile=ctx.profile or None, key=ctx.key)
        return secret

    return guarded


def _never_raises(identity: Callable[[_T], str]) -> Callable[[_T], str]:
    """``identity``, answering ``""`` instead of raising: a cache key never fails."""
    def safe(arg: _T) -> str:
        try:
            return str(identity(arg))
        except Exception:
            return ""

    return safe


def _wrap_flow(name: str, loaded: Any, ep: EntryPoint) -> FlowSpec:
    from ._record import replace
    from .config import KEYS
    from .schema import FlowSpec

    if not isinstance(loaded, FlowSpec):
        raise ConfigError(f"flow {name!r} from {_package(ep)} is {type(loaded).__name__}, "
                          "not a FlowSpec")
    if loaded.name != name:
        raise ConfigError(f"flow {name!r} from {_package(ep)} is named {loaded.name!r}: the "
                          "entry point and the spec must agree")
    unknown = sorted(loaded.keys - set(KEYS))
    clash = sorted(k.name for k in loaded.extra_keys if k.name in KEYS)
    if unknown or clash:
        raise ConfigError(f"flow {name!r} from {_package(ep)} "
                          + (f"takes keys that are not built in: {', '.join(unknown)} (declare "
                             "them in extra_keys)" if unknown
                             else f"declares built-in keys as its own: {', '.join(clash)}"))
    identity = loaded.identity
    return replace(loaded, acquire=_guarded_acquire(name, loaded.acquire),
                   identity=None if identity is None else _never_raises(identity))


_Acquire = Callable[["FlowContext"], "Generator[Action, Any, TokenResult]"]


def _guarded_acquire(name: str, acquire: _Acquire) -> _Acquire:
    def guarded(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
        try:
            return (yield from acquire(ctx))
        except AuthLayerError:
            raise
        except Exception as exc:
            raise TokenError(f"flow {name!r} failed: {_described(exc)}",
                             profile=ctx.profile.name, error="plugin_failed") from None

    return guarded
