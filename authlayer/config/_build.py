"""Building one profile: ``[defaults]`` < the profiles it ``extends`` < the profile < the call's
overrides, checked against the flow's spec (which keys it takes, the combinations it forbids,
what it fills from the environment) and key by key (:mod:`._keys`), into a :class:`Profile`.
Every mistake becomes a :class:`ConfigError` that names the file, the profile and the key and
never quotes a secret. Built profiles are remembered per file and per override.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional, Union

from .. import registry
from .._record import replace
from ..errors import ConfigError
from ..hosts import HostPolicy, NoHostError
from ..profile import Profile
from ..schema import CREDENTIALS, FlowSpec
from ._find import ENV_PROFILE, PathArg, config_path
from ._keys import (
    ALIASES,
    BY_NAME,
    DEFAULTS_ORIGIN,
    GROUPS,
    KEYS,
    Value,
    Values,
    _one_of,
    _short,
    _suggest,
    _type_name,
    parse_values,
)
from ._layers import _File, _load_file, _lock

__all__ = ["INHERITED", "MAX_EXTENDS_DEPTH", "load_member", "load_profile", "load_profiles",
           "member_of", "profile_names"]

# Built profiles remembered per file; more distinct scope/tenant overrides than this start over.
_MEMO_LIMIT = 256
# How many profiles deep an `extends` chain may go.
MAX_EXTENDS_DEPTH = 32


class _Builder:
    """Turns one profile's tables (with [defaults], extends and overrides) into a Profile."""

    def __init__(self, file: _File, name: str) -> None:
        self.file = file
        self.name = name
        self.values = Values(file.path, name)

    def error(self, key: Optional[str], message: str, origin: Optional[str] = None) -> ConfigError:
        return self.values.error(key, message, origin)

    # -- inheritance ----------------------------------------------------------------------

    def chain(self) -> list[str]:
        """The profile and the profiles it extends, nearest first."""
        chain = [self.name]
        while True:
            current = chain[-1]
            table = self.file.profiles[current]
            if "extends" not in table:
                return chain
            target = table["extends"]
            where = "" if current == self.name else f"in profile {current!r}"
            if not isinstance(target, str) or not target:
                expected = "the name of another profile"
                message = (
                    f"extends must be {expected}, not {_type_name(target)}"
                    if not isinstance(target, str)
                    else f"extends must be {expected}, not an empty string"
                )
                raise self.error("extends", message, where)
            if target not in self.file.profiles:
                raise self.error(
                    "extends",
                    f"extends {target!r}, but the file has no such profile"
                    + _suggest(target, self.file.profiles),
                    where,
                )
            if target in chain:
                cycle = [*chain[chain.index(target) :], target]
                raise self.error("extends", "extends makes a cycle: " + " -> ".join(cycle), where)
            if len(chain) > MAX_EXTENDS_DEPTH:
                raise self.error(
                    "extends",
                    f"extends goes more than {MAX_EXTENDS_DEPTH} profiles deep "
                    f"({' -> '.join(chain[:3])} -> …): let profiles extend a common one instead",
                    "",
                )
            chain.append(target)

    def merge(self, chain: list[str]) -> FlowSpec:
        """Fill ``self.values`` from [defaults] < extended profiles < the profile; return the
        flow's spec."""
        layers = [(self.file.defaults, DEFAULTS_ORIGIN)]
        layers += [(self.file.profiles[n], f"inherited from profile {n!r}") for n in chain[:0:-1]]
        layers.append((self.file.profiles[self.name], ""))
        for table, origin in layers[1:]:
            for key in table:
                if key not in KEYS and not _plugin_key(key, layers):
                    raise self.error(
                        key, f"unknown key {key!r}" + _suggest(key, KEYS, ALIASES), origin
                    )

        flow_value: Optional[Value] = None
        for table, origin in layers:
            if "flow" in table:
                flow_value = Value(table["flow"], origin)
        if flow_value is None:
            raise self.error(
                "flow", "flow is missing: set flow = one of " + _one_of(registry.flow_names()), ""
            )
        flow = flow_value.value
        if not isinstance(flow, str):
            raise self.error(
                "flow", f"flow must be a string, not {_type_name(flow)}", flow_value.origin
            )
        try:
            spec = registry.flow(flow)
        except LookupError:
            names = registry.flow_names()
            raise self.error(
                "flow",
                f"unknown flow {_short(flow)}"
                + (_suggest(flow, names) or "; flows are " + _one_of(names)),
                flow_value.origin,
            ) from None
        except ConfigError as exc:  # a plugin that cannot be loaded
            raise self.error("flow", exc.reason, flow_value.origin) from None

        for table, origin in layers:
            from_defaults = origin == DEFAULTS_ORIGIN
            # [defaults] gives each flow only the keys that fit it.
            keys = [
                k
                for k in table
                if k != "extends"
                and not (from_defaults and (not spec.takes(k) or k in spec.not_from_defaults))
            ]
            for group in GROUPS.values():
                if any(k in group for k in keys):
                    for k in group:
                        self.values.pop(k)
            for k in keys:
                self.values.set(k, table[k], origin)
        return spec

    # -- the whole profile ----------------------------------------------------------------

    def build(self, scope: Any, tenant: Any,
              inherit: Optional[tuple[str, dict[str, Any]]] = None) -> Profile:
        """The profile; ``inherit`` is ``(chain, values)`` for a member of that chain: the
        chain's values it takes where it sets none of its own (``[defaults]`` does not count),
        and a ``tenant=`` override that applies only if its flow takes a tenant."""
        spec = self.merge(self.chain())
        v = self.values
        if inherit is not None:
            via, values = inherit
            for key, value in values.items():
                if spec.takes(key) and (key not in v or v[key].origin == DEFAULTS_ORIGIN):
                    v.set(key, value, f"inherited from chain {via!r}")
        if scope is not None:
            v.set("scope", scope, "from the scope= argument")
        # A chain passes a tenant= override on to its member; a member whose flow chooses no
        # tenant (a managed identity) ignores it, as azure-identity does.
        if tenant is not None and spec.stands_for is None and (
                inherit is None or spec.takes("tenant")):
            v.set("tenant", tenant, "from the tenant= argument")
        for key in KEYS:
            if key in v and not spec.takes(key):
                raise self.error(key, f"{key} does not apply to flow {spec.name!r}: "
                                 + _only_for(registry.flows_taking(key)))
        self.check_combinations(spec)
        prepared = spec.prepare(v) if spec.prepare is not None else {}
        fields = parse_values(v, spec)
        for key, value in prepared.items():
            fields.setdefault(key, value)
        if spec.extra_keys:
            fields["extras"] = tuple(parse_values(v, spec, spec.extra_keys).items())

        for key in spec.required:
            if key not in v:
                row = BY_NAME.get(key) or next(k for k in spec.extra_keys if k.name == key)
                raise self.error(
                    key, f"{key} is missing: flow {spec.name!r} needs {row.missing}", ""
                )
        if spec.stands_for == "chain":
            self.check_members(fields["chain"])
            fields.setdefault("scopes", ())  # then each member sets its own
        if "scopes" not in fields:
            chains = [n for n in self.file.profiles
                      if self.name in _raw(self.file, n, "chain")
                      and _raw(self.file, n, "flow") == "chain"]
            raise self.error(
                "scope",
                "scope is missing: set the scopes to ask for, like "
                'scope = "https://graph.microsoft.com/.default"'
                + (f" (through chain {chains[0]!r} it takes the chain's: use the chain, or set "
                   "scope here too)" if chains and inherit is None else ""),
                "",
            )
        if fields.get("tenant") is None:
            fields["tenant"] = spec.default_tenant
        if fields.get("client_id") is None:
            fields["client_id"] = spec.default_client_id
        fields.setdefault("cache", "file" if spec.file_cache else "memory")
        scopes = fields["scopes"]
        try:
            hosts = HostPolicy.for_scopes(scopes, fields.get("allowed_hosts"))
        except NoHostError:
            # Sends the token nowhere, which is all get_token and the CLI need; EntraAuth, which
            # attaches tokens, refuses such a profile (auth.py).
            hosts = HostPolicy(())
        return Profile(name=self.name, flow=spec.name, config_path=self.file.path, hosts=hosts,
                       **fields)

    def check_members(self, members: tuple[str, ...]) -> None:
        """A chain names profiles of the file, never itself, and no chain it reaches names it
        back (a cycle)."""
        def visit(name: str, path: list[str]) -> None:
            where = "" if name == self.name else f"in profile {name!r}"
            for member in _raw(self.file, name, "chain") if name != self.name else members:
                if not isinstance(member, str):
                    continue  # reported when that chain is loaded
                if member not in self.file.profiles:
                    raise self.error("chain", f"chain names profile {member!r}, but the file "
                                     "has no such profile"
                                     + _suggest(member, self.file.profiles), where)
                if member in path:
                    cycle = [*path[path.index(member):], member]
                    what = ("names itself" if len(cycle) == 2
                            else "makes a cycle: " + " -> ".join(cycle))
                    raise self.error("chain", f"chain {what}", where)
                flow = _raw(self.file, member, "flow")
                if isinstance(flow, str) and flow in registry.BUILTIN_FLOWS \
                        and registry.flow(flow).stands_for == "chain":
                    visit(member, [*path, member])

        visit(self.name, [self.name])

    def check_combinations(self, spec: FlowSpec) -> None:
        """The rules across keys: the flow's and those of every flow."""
        v = self.values
        if "cloud" in v and "authority" in v:
            raise self.error(
                "cloud",
                "cloud and authority are both set: use one (cloud is a shortcut for "
                "a national cloud's authority)",
            )
        present = [k for k in CREDENTIALS if k in v]
        if len(present) > 1:
            raise self.error(
                present[1],
                f"{present[0]} and {present[1]} are both set: flow {spec.name!r} takes one "
                "client credential",
            )
        if spec.credential == "one" and not present:
            raise self.error(
                "client_secret",
                f"flow {spec.name!r} needs a client credential: set one of client_secret, "
                "certificate or client_assertion",
                "",
            )
        for rule in spec.at_most_one:
            found = [k for k in rule.keys if k in v]
            if len(found) > 1:
                raise self.error(
                    found[1],
                    f"{found[0]} and {found[1]} are both set: {rule.why} with one of "
                    + _listed(rule.keys),
                )
        if "assertion_alg" in v and "certificate" not in v:
            if v["assertion_alg"].origin:
                # Inherited along with a certificate that this profile replaced: not meant here.
                v.pop("assertion_alg")
            else:
                raise self.error(
                    "assertion_alg",
                    "assertion_alg applies only with certificate: it chooses how the "
                    "certificate signs the client assertion",
                )


def _raw(file: _File, name: str, key: str) -> Any:
    """``key`` of profile ``name`` as its layers give it, unchecked: the profile's, else the
    nearest profile it extends, else ``[defaults]``; a list for ``chain``, ``None`` if unset."""
    seen: set[str] = set()
    while name in file.profiles and name not in seen:
        seen.add(name)
        table = file.profiles[name]
        if key in table:
            value = table[key]
            return value if key != "chain" or isinstance(value, list) else []
        target = table.get("extends")
        if not isinstance(target, str):
            break
        name = target
    return file.defaults.get(key, [] if key == "chain" else None)


def _plugin_key(key: str, layers: list[tuple[dict[str, Any], str]]) -> bool:
    """Whether ``key`` is one that the profile's plugin flow declares as its own."""
    flow = next((table["flow"] for table, _ in reversed(layers) if "flow" in table), None)
    if not isinstance(flow, str) or flow in registry.BUILTIN_FLOWS:
        return False
    try:
        return registry.flow(flow).takes(key)
    except (LookupError, ConfigError):
        return False  # reported as such when the flow is looked at


def _only_for(users: list[str]) -> str:
    """Which flows a key is for, in a message."""
    quoted = [repr(f) for f in users]
    if len(quoted) == 1:
        return f"it is only for flow {quoted[0]}"
    if len(quoted) <= 5:
        return f"it is only for flows {', '.join(quoted[:-1])} and {quoted[-1]}"
    return "remove it"


def _listed(words: Sequence[str]) -> str:
    """``a, b or c``."""
    return ", ".join(words[:-1]) + " or " + words[-1]


# --------------------------------------------------------------------------------------------
# The public functions


# What a chain's members inherit unless they set their own.
INHERITED = ("scope", "allowed_hosts", "cae", "additionally_allowed_tenants")


def _profile(file: _File, name: str, scope: Any, tenant: Any,
             inherit: Optional[tuple[str, dict[str, Any]]] = None) -> Profile:
    if isinstance(scope, (list, tuple)):
        scope = tuple(scope)
    memo: Any = (name, scope, tenant,
                 None if inherit is None else (inherit[0], tuple(sorted(inherit[1].items()))))
    try:
        hash(memo)
    except TypeError:
        memo = None
    if memo is not None:
        with _lock:
            hit = file.built.get(memo)
        # A profile that took values from the environment is used again while they hold.
        if hit is not None and all(os.environ.get(n) == v for n, v in hit[1]):
            return hit[0]
    builder = _Builder(file, name)
    profile = builder.build(scope, tenant, inherit)
    if memo is not None:
        with _lock:
            if len(file.built) >= _MEMO_LIMIT:
                file.built.clear()
            file.built[memo] = (profile, tuple(builder.values.environ.items()))
    return profile


def _unknown_profile(file: _File, name: str) -> ConfigError:
    names = list(file.profiles)
    if not names:
        hint = "; the file has no [profiles.NAME] tables"
    else:
        hint = _suggest(name, names)
        if not hint:
            shown = ", ".join(repr(n) for n in names[:12]) + (", …" if len(names) > 12 else "")
            hint = f"; the file has {shown}"
    return ConfigError(f"no profile {name!r} in the file{hint}", path=file.path, profile=name)


def load_profile(
    name: Optional[str] = None,
    *,
    config: Optional[PathArg] = None,
    scope: Union[str, Sequence[str], None] = None,
    tenant: Optional[str] = None,
) -> Profile:
    """The validated profile ``name`` (default ``$AUTHLAYER_PROFILE``) from the profiles file.

    ``scope`` and ``tenant`` replace the profile's own and are checked like them. Raises
    :class:`ConfigError` naming the file, the profile and the key for anything wrong.
    """
    if name is None:
        name = os.environ.get(ENV_PROFILE) or None
        if name is None:
            raise ConfigError(
                f"no profile named: pass a profile name or set {ENV_PROFILE}",
                path=str(config_path(config)),
            )
    file = _load_file(config)
    if name not in file.profiles:
        raise _unknown_profile(file, name)
    return _profile(file, name, scope, tenant)


def with_tenant(profile: Profile, tenant: Any) -> Optional[Profile]:
    """``profile`` with a ``tenant=`` argument applied, checked as :func:`load_profile` checks
    it, without reading the file again; ``None`` when the flow needs the full load (it takes no
    tenant, or fills its values from the environment)."""
    spec = registry.flow(profile.flow)
    if not spec.takes("tenant") or spec.prepare is not None:
        return None
    values = Values(profile.config_path, profile.name)
    values.set("tenant", tenant, "from the tenant= argument")
    parse = BY_NAME["tenant"].parse
    assert parse is not None
    checked = parse(tenant, values.where("tenant", spec))
    return replace(profile, tenant=tenant if checked == tenant else checked)  # share the string


def member_of(name: str, config: Optional[PathArg] = None) -> Optional[Profile]:
    """The first chain of the file that names profile ``name``, loaded; ``None`` if none does
    (``authlayer profiles`` shows a member as its chain gives it)."""
    file = _load_file(config)
    for chain in file.profiles:
        if name in _raw(file, chain, "chain") and _raw(file, chain, "flow") == "chain":
            return _profile(file, chain, None, None)
    return None


def load_member(chain: Profile, name: str, *, scope: Union[str, Sequence[str], None] = None,
                tenant: Optional[str] = None) -> Profile:
    """Member ``name`` of ``chain`` (a profile of flow ``chain``), from the chain's file: the
    chain's scope, allowed_hosts, cae and additionally_allowed_tenants where it sets none of
    its own, then the call's ``scope`` and ``tenant`` (the latter only if its flow takes one).
    """
    file = _load_file(chain.config_path)
    if name not in file.profiles:  # the file changed since the chain was loaded
        raise ConfigError(f"chain names profile {name!r}, but the file has no such profile",
                          path=file.path, profile=chain.name, key="chain")
    # What the chain has (its own, inherited from a chain above it, or [defaults]), as
    # written; a member's [defaults] values give way to it.
    inherit: dict[str, Any] = {}
    if chain.scopes:
        inherit["scope"] = chain.scopes
    if chain.allowed_hosts is not None:
        inherit["allowed_hosts"] = chain.allowed_hosts
    if chain.cae:
        inherit["cae"] = True
    if chain.additionally_allowed_tenants:
        inherit["additionally_allowed_tenants"] = chain.additionally_allowed_tenants
    return _profile(file, name, scope, tenant, (chain.name, inherit))


def load_profiles(config: Optional[PathArg] = None) -> dict[str, Profile]:
    """Every profile of the file, validated, in file order; the first broken one raises."""
    file = _load_file(config)
    return {name: _profile(file, name, None, None) for name in file.profiles}


def profile_names(config: Optional[PathArg] = None) -> list[str]:
    """The names of the file's profiles, in file order, without validating them."""
    return list(_load_file(config).profiles)
