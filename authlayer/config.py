"""Finding, reading and validating the profiles file, and building :class:`Profile` values.

This module is the one place that knows the profiles file (CONTRACT §3 and §4): where it is looked
for (the ``config`` argument, ``$AUTHLAYER_CONFIG``, the user's config folder, never the working
directory), its TOML layout, how ``[defaults]`` and ``extends`` are inherited, which keys each flow
takes, and how secret sources are written. Every mistake becomes a :class:`ConfigError` that names
the file, the profile and the key and never quotes a secret. Its only I/O is reading the file and
checking that certificate files can be read: secrets are read later by :meth:`SecretSource.read`,
certificates are parsed by :mod:`authlayer.certificate`. A parsed file is remembered per path,
modification time and size, so loading a profile again costs one ``stat``.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import stat
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import urlsplit

from .errors import ConfigError
from .hosts import HostPolicy, NoHostError, is_loopback
from .profile import DEFAULT_AUTHORITY, FLOWS, CertificateConfig, Profile, SecretSource

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9 and 3.10 only
    import tomli as tomllib

__all__ = [
    "AZURE_CLI_CLIENT_ID",
    "CLOUDS",
    "ENV_AUTHORITY_HOST",
    "ENV_CLIENT_ID",
    "ENV_CONFIG",
    "ENV_FEDERATED_TOKEN_FILE",
    "ENV_PROFILE",
    "ENV_TENANT_ID",
    "KEYS",
    "clear_cache",
    "config_path",
    "load_profile",
    "load_profiles",
    "profile_names",
    "with_tenant",
]

PathArg = Union[str, os.PathLike[str]]

ENV_CONFIG = "AUTHLAYER_CONFIG"
ENV_PROFILE = "AUTHLAYER_PROFILE"
CONFIG_FILENAME = "profiles.toml"

# The Azure CLI's own public client: its refresh tokens are only good for this id.
AZURE_CLI_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"

# What the Kubernetes workload identity webhook (and azure-identity) use; flow
# `workload_identity` takes from them what the profile leaves out, when the profile is loaded.
ENV_TENANT_ID = "AZURE_TENANT_ID"
ENV_CLIENT_ID = "AZURE_CLIENT_ID"
ENV_FEDERATED_TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"
ENV_AUTHORITY_HOST = "AZURE_AUTHORITY_HOST"
_WORKLOAD_ENV = (ENV_TENANT_ID, ENV_CLIENT_ID, ENV_FEDERATED_TOKEN_FILE, ENV_AUTHORITY_HOST)

CLOUDS: dict[str, str] = {
    "public": DEFAULT_AUTHORITY,
    "usgov": "https://login.microsoftonline.us",
    "china": "https://login.partner.microsoftonline.cn",
}

# Microsoft's sign-in hosts: on these, a path in `authority` is a tenant put in the wrong key.
_ENTRA_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.partner.microsoftonline.cn",
        "login.chinacloudapi.cn",
        "login.microsoft.com",
        "login.windows.net",
    }
)

PROMPTS = ("login", "consent", "select_account", "none", "create")
CACHES = ("memory", "file")
ASSERTION_ALGS = ("PS256", "RS256")
MULTI_TENANTS = ("organizations", "common", "consumers")
MAX_TIMEOUT = 600.0
DEFAULT_TIMEOUT = 30.0

# Every key a profile may have, in the order they are checked.
KEYS = (
    "flow",
    "tenant",
    "client_id",
    "scope",
    "authority",
    "cloud",
    "client_secret",
    "certificate",
    "assertion_alg",
    "client_assertion",
    "refresh_token",
    "username",
    "password",
    "redirect_port",
    "login_hint",
    "domain_hint",
    "prompt",
    "object_id",
    "resource_id",
    "allowed_hosts",
    "cache",
    "timeout",
    "extends",
)

# Names people reach for that difflib would not match.
_KEY_ALIASES = {
    "cert": "certificate",
    "secret": "client_secret",
    "tenant_id": "tenant",
    "app_id": "client_id",
    "application_id": "client_id",
    "scopes": "scope",
    "resource": "scope",
    "port": "redirect_port",
    "authority_host": "authority",
    "inherits": "extends",
}

_CREDENTIALS = ("client_secret", "certificate", "client_assertion")

# Keys that stand for one setting: a layer that sets one of them replaces what farther layers set
# for the whole group (a profile with a certificate extending one with a secret is not both).
_GROUPS = (_CREDENTIALS, ("cloud", "authority"), ("client_id", "object_id", "resource_id"))

_COMMON = frozenset({"flow", "scope", "authority", "cloud", "allowed_hosts", "cache", "timeout"})
_CLIENT = frozenset({"tenant", "client_id", "assertion_alg", *_CREDENTIALS})


@dataclass(frozen=True)
class _FlowRules:
    keys: frozenset[str]  # the keys this flow takes (besides `extends`)
    required: tuple[str, ...] = ()
    credential: str = "none"  # "one": exactly one of _CREDENTIALS; "optional": at most one
    default_tenant: Optional[str] = None
    refused_tenants: tuple[str, ...] = ()
    person: bool = False  # signs a person in: tokens are cached in a file by default
    # Keys [defaults] does not give this flow: for managed identity and the Azure CLI,
    # client_id names the identity or the CLI, not the app registration [defaults] is about.
    not_from_defaults: frozenset[str] = frozenset()


_RULES: dict[str, _FlowRules] = {
    "client_credentials": _FlowRules(
        _COMMON | _CLIENT,
        required=("client_id", "tenant"),
        credential="one",
        refused_tenants=MULTI_TENANTS,
    ),
    "on_behalf_of": _FlowRules(
        _COMMON | _CLIENT, required=("client_id", "tenant"), credential="one"
    ),
    "authorization_code": _FlowRules(
        _COMMON | _CLIENT | {"redirect_port", "login_hint", "domain_hint", "prompt"},
        required=("client_id",),
        credential="optional",
        default_tenant="organizations",
        person=True,
    ),
    "device_code": _FlowRules(
        _COMMON | {"tenant", "client_id"},
        required=("client_id",),
        default_tenant="organizations",
        person=True,
    ),
    "refresh_token": _FlowRules(
        _COMMON | _CLIENT | {"refresh_token"},
        required=("client_id", "tenant", "refresh_token"),
        credential="optional",
        person=True,
    ),
    "password": _FlowRules(
        _COMMON | _CLIENT | {"username", "password"},
        required=("client_id", "tenant", "username", "password"),
        credential="optional",
        refused_tenants=("common", "consumers"),
        person=True,
    ),
    "managed_identity": _FlowRules(
        frozenset(
            {"flow", "scope", "allowed_hosts", "cache", "timeout"}
            | {"client_id", "object_id", "resource_id"}
        ),
        not_from_defaults=frozenset({"client_id"}),
    ),
    "workload_identity": _FlowRules(
        _COMMON | {"tenant", "client_id", "client_assertion"}, credential="optional"
    ),
    "azure_cli": _FlowRules(
        _COMMON | {"tenant", "client_id", "username"},
        person=True,
        not_from_defaults=frozenset({"client_id"}),
    ),
}
assert set(_RULES) == set(FLOWS)

_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}", re.IGNORECASE)
_HOST = re.compile(r"\.?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?", re.IGNORECASE)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

_DEFAULTS_ORIGIN = "set in [defaults]"

# Built profiles remembered per file; more distinct scope/tenant overrides than this start over.
_MEMO_LIMIT = 256


# --------------------------------------------------------------------------------------------
# Small helpers


def _type_name(value: object) -> str:
    """How a value's type is called in messages, in TOML's words."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, datetime):
        return "a date-time"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, time):
        return "a time"
    return f"a {type(value).__name__}"


def _suggest(word: str, choices: Iterable[str], aliases: Optional[Mapping[str, str]] = None) -> str:
    """``"; did you mean 'x'?"`` for the nearest choice, or ``""``."""
    choices = list(choices)
    if aliases and word.lower() in aliases and aliases[word.lower()] in choices:
        return f"; did you mean {aliases[word.lower()]!r}?"
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        close = [lowered[m] for m in difflib.get_close_matches(word.lower(), list(lowered), n=1)]
    return f"; did you mean {close[0]!r}?" if close else ""


def _short(value: str, limit: int = 60) -> str:
    """A value quoted for a message, cut short (used only for values that are not secrets)."""
    return repr(value if len(value) <= limit else value[: limit - 1] + "…")


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else '"' + name.replace('"', '\\"') + '"'


def _one_of(choices: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in choices)


# --------------------------------------------------------------------------------------------
# Where the file is


def _default_config_dir() -> Path:
    if sys.platform.startswith("linux"):
        xdg = os.environ.get("XDG_CONFIG_HOME", "")
        # The XDG spec says a relative value is invalid and must be ignored.
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
        return base / "authlayer"
    import platformdirs  # only here: Linux needs no import

    return Path(platformdirs.user_config_dir("authlayer", appauthor=False))


def _resolve(config: Optional[PathArg]) -> tuple[Path, str]:
    """The profiles file's absolute path, and how it was chosen (for messages)."""
    if config is not None:
        raw, how = os.fspath(config), "the config argument"
        if not raw:
            raise ConfigError("the config argument is empty: give the path of a profiles file")
    elif os.environ.get(ENV_CONFIG):
        raw, how = os.environ[ENV_CONFIG], f"${ENV_CONFIG}"
    else:
        return _default_config_dir() / CONFIG_FILENAME, "the default location"
    return Path(os.path.abspath(os.path.expanduser(raw))), how


def config_path(config: Optional[PathArg] = None) -> Path:
    """The profiles file to use: ``config``, else ``$AUTHLAYER_CONFIG``, else ``profiles.toml``
    in the user's config folder. Never the working directory; ``~`` is expanded and a relative
    path is made absolute. The file need not exist."""
    return _resolve(config)[0]


# --------------------------------------------------------------------------------------------
# Reading and memoising the file


@dataclass
class _File:
    """A parsed profiles file whose top level has been checked; profiles are built on demand."""

    path: str
    defaults: dict[str, Any]
    profiles: dict[str, dict[str, Any]]
    built: dict[Any, Profile] = field(default_factory=dict)

    @property
    def directory(self) -> str:
        return os.path.dirname(self.path)

    def error(self, message: str, key: Optional[str] = None) -> ConfigError:
        return ConfigError(message, path=self.path, key=key)


_lock = threading.Lock()
_files: dict[str, tuple[tuple[int, int, int], _File]] = {}


def clear_cache() -> None:
    """Forget every parsed profiles file (the next load reads the file again)."""
    with _lock:
        _files.clear()


def _load_file(config: Optional[PathArg]) -> _File:
    path, how = _resolve(config)
    name = str(path)
    try:
        st = os.stat(name)
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(
            f"the profiles file does not exist (chosen by {how}). Create it with a "
            "[profiles.NAME] table for each profile (see the profiles file format in the docs), "
            f"or pass config= (--config) or set ${ENV_CONFIG} to use another file",
            path=name,
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the profiles file: {exc.strerror}", path=name) from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(
            f"the profiles file is a folder (chosen by {how}); give the path of a TOML file",
            path=name,
        )
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    with _lock:
        cached = _files.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    # Parsed outside the lock; a file changed meanwhile is caught by the next call's stat.
    parsed = _parse(name)
    with _lock:
        _files[name] = (stamp, parsed)
    return parsed


def _parse(path: str) -> _File:
    """Read and parse the file, and check its top level (``[defaults]``, ``[profiles.*]``)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the profiles file: {exc.strerror or exc}", path=path
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"the profiles file is not UTF-8 text (line {line})", path=path) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if "line" not in message:  # "(at end of document)"
            message += f" (line {text.count(chr(10)) + 1}, the last)"
        raise ConfigError(f"not valid TOML: {message}", path=path) from None
    except RecursionError:
        raise ConfigError("not valid TOML: nested too deeply", path=path) from None
    return _check_top_level(path, doc)


def _check_top_level(path: str, doc: dict[str, Any]) -> _File:
    for key, value in doc.items():
        if key in ("defaults", "profiles"):
            continue
        if isinstance(value, dict):
            if "flow" in value:
                message = (
                    f"unknown top-level table [{_toml_key(key)}]: "
                    f"profiles go in [profiles.{_toml_key(key)}]"
                )
            else:
                message = f"unknown top-level table [{_toml_key(key)}]" + _suggest(
                    key, ("defaults", "profiles")
                )
        else:
            message = (
                f"unknown top-level key {key!r}: the file holds an optional [defaults] table "
                "and [profiles.NAME] tables"
            )
        raise ConfigError(message, path=path, key=key)
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(
            f"defaults must be a table ([defaults]), not {_type_name(defaults)}",
            path=path,
            key="defaults",
        )
    for key in defaults:
        if key == "extends":
            raise ConfigError(
                "extends cannot be set in [defaults]: set it in a profile", path=path, key=key
            )
        if key not in KEYS:
            raise ConfigError(
                f"unknown key {key!r} in [defaults]" + _suggest(key, KEYS, _KEY_ALIASES),
                path=path,
                key=key,
            )
    profiles = doc.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(
            f"profiles must be tables ([profiles.NAME]), not {_type_name(profiles)}",
            path=path,
            key="profiles",
        )
    for name, table in profiles.items():
        if not isinstance(table, dict):
            raise ConfigError(
                f"profiles.{_toml_key(name)} must be a table ([profiles.{_toml_key(name)}]), "
                f"not {_type_name(table)}",
                path=path,
                profile=name,
            )
    return _File(path=path, defaults=defaults, profiles=profiles)


# --------------------------------------------------------------------------------------------
# Building one profile


@dataclass(frozen=True)
class _Value:
    value: Any
    origin: str  # "" when set on the profile itself, else where it came from


class _Builder:
    """Turns one profile's tables (with [defaults], extends and overrides) into a Profile."""

    def __init__(self, file: _File, name: str) -> None:
        self.file = file
        self.name = name
        self.values: dict[str, _Value] = {}

    # -- errors ---------------------------------------------------------------------------

    def error(self, key: Optional[str], message: str, origin: Optional[str] = None) -> ConfigError:
        if origin is None and key is not None:
            held = self.values.get(key.split(".", 1)[0])
            origin = held.origin if held is not None else ""
        if origin:
            message += f" ({origin})"
        return ConfigError(message, path=self.file.path, profile=self.name, key=key)

    def type_error(self, key: str, expected: str, value: object) -> ConfigError:
        return self.error(key, f"{key} must be {expected}, not {_type_name(value)}")

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
            chain.append(target)

    def merge(self, chain: list[str]) -> str:
        """Fill ``self.values`` from [defaults] < extended profiles < the profile; return the
        flow."""
        layers = [(self.file.defaults, _DEFAULTS_ORIGIN)]
        layers += [(self.file.profiles[n], f"inherited from profile {n!r}") for n in chain[:0:-1]]
        layers.append((self.file.profiles[self.name], ""))
        for table, origin in layers[1:]:
            for key in table:
                if key not in KEYS:
                    raise self.error(
                        key, f"unknown key {key!r}" + _suggest(key, KEYS, _KEY_ALIASES), origin
                    )

        flow_value: Optional[_Value] = None
        for table, origin in layers:
            if "flow" in table:
                flow_value = _Value(table["flow"], origin)
        if flow_value is None:
            raise self.error("flow", "flow is missing: set flow = one of " + _one_of(FLOWS), "")
        flow = flow_value.value
        if not isinstance(flow, str):
            raise self.error(
                "flow", f"flow must be a string, not {_type_name(flow)}", flow_value.origin
            )
        if flow not in _RULES:
            raise self.error(
                "flow",
                f"unknown flow {_short(flow)}"
                + (_suggest(flow, FLOWS) or "; flows are " + _one_of(FLOWS)),
                flow_value.origin,
            )
        rules = _RULES[flow]

        for table, origin in layers:
            from_defaults = origin == _DEFAULTS_ORIGIN
            # [defaults] gives each flow only the keys that fit it.
            keys = [
                k
                for k in table
                if k != "extends"
                and not (from_defaults and (k not in rules.keys or k in rules.not_from_defaults))
            ]
            for group in _GROUPS:
                if any(k in group for k in keys):
                    for k in group:
                        self.values.pop(k, None)
            for k in keys:
                self.values[k] = _Value(table[k], origin)
        return flow

    # -- the whole profile ----------------------------------------------------------------

    def build(self, scope: Any, tenant: Any) -> Profile:
        flow = self.merge(self.chain())
        rules = _RULES[flow]
        if scope is not None:
            self.values["scope"] = _Value(scope, "from the scope= argument")
        if tenant is not None:
            self.values["tenant"] = _Value(tenant, "from the tenant= argument")

        for key in KEYS:
            if key in self.values and key not in rules.keys:
                users = [repr(f) for f in FLOWS if key in _RULES[f].keys]
                if len(users) == 1:
                    where = f"it is only for flow {users[0]}"
                elif len(users) <= 5:
                    where = f"it is only for flows {', '.join(users[:-1])} and {users[-1]}"
                else:
                    where = "remove it"
                raise self.error(key, f"{key} does not apply to flow {flow!r}: {where}")
        self.check_combinations(flow, rules)
        if flow == "workload_identity":
            self.workload_identity_env()

        v = self.values
        authority = DEFAULT_AUTHORITY
        if "cloud" in v:
            authority = self.cloud(v["cloud"].value)
        elif "authority" in v:
            authority = self.authority(v["authority"].value)
        scopes = self.scopes(v["scope"].value) if "scope" in v else None
        tenant_value = self.tenant(v["tenant"].value, flow, rules) if "tenant" in v else None
        certificate = self.certificate(v["certificate"].value) if "certificate" in v else None
        allowed_hosts = (
            self.allowed_hosts(v["allowed_hosts"].value) if "allowed_hosts" in v else None
        )
        client_id = self.client_id(v["client_id"].value) if "client_id" in v else None
        client_secret = self.secret("client_secret")
        client_assertion = self.secret("client_assertion")
        if flow == "workload_identity" and client_assertion is None:
            client_assertion = self.federated_token_file()
        refresh_token = self.secret("refresh_token")
        password = self.secret("password")
        assertion_alg = self.choice("assertion_alg", ASSERTION_ALGS) or "PS256"
        username = self.text("username", "the user's sign-in name")
        login_hint = self.text("login_hint", "a sign-in name")
        domain_hint = self.text("domain_hint", "a domain name")
        prompt = self.choice("prompt", PROMPTS)
        redirect_port = self.port()
        object_id = self.object_id()
        resource_id = self.resource_id()
        cache = self.choice("cache", CACHES) or ("file" if rules.person else "memory")
        timeout = self.timeout()

        for key in rules.required:
            if key not in v:
                raise self.error(key, self.missing_message(key, flow), "")
        if scopes is None:
            raise self.error(
                "scope",
                "scope is missing: set the scopes to ask for, like "
                'scope = "https://graph.microsoft.com/.default"',
                "",
            )
        if tenant_value is None:
            tenant_value = rules.default_tenant
        if flow == "azure_cli" and client_id is None:
            client_id = AZURE_CLI_CLIENT_ID
        try:
            hosts = HostPolicy.for_scopes(scopes, allowed_hosts)
        except NoHostError:
            raise self.error(
                "scope",
                f"scope {' '.join(scopes)!r} names no host the token may be sent to: set "
                'allowed_hosts to the hosts of the API, like allowed_hosts = ["api.example.com"]',
            ) from None
        return Profile(
            name=self.name,
            flow=flow,
            scopes=scopes,
            hosts=hosts,
            tenant=tenant_value,
            client_id=client_id,
            authority=authority,
            config_path=self.file.path,
            client_secret=client_secret,
            certificate=certificate,
            assertion_alg=assertion_alg,
            client_assertion=client_assertion,
            refresh_token=refresh_token,
            username=username,
            password=password,
            redirect_port=redirect_port,
            login_hint=login_hint,
            domain_hint=domain_hint,
            prompt=prompt,
            object_id=object_id,
            resource_id=resource_id,
            allowed_hosts=allowed_hosts,
            cache=cache,
            timeout=timeout,
        )

    def check_combinations(self, flow: str, rules: _FlowRules) -> None:
        v = self.values
        if "cloud" in v and "authority" in v:
            raise self.error(
                "cloud",
                "cloud and authority are both set: use one (cloud is a shortcut for "
                "a national cloud's authority)",
            )
        present = [k for k in _CREDENTIALS if k in v]
        if len(present) > 1:
            raise self.error(
                present[1],
                f"{present[0]} and {present[1]} are both set: flow {flow!r} takes one client "
                "credential",
            )
        if rules.credential == "one" and not present:
            raise self.error(
                "client_secret",
                f"flow {flow!r} needs a client credential: set one of client_secret, certificate "
                "or client_assertion",
                "",
            )
        identities = [k for k in ("client_id", "object_id", "resource_id") if k in v]
        if flow == "managed_identity" and len(identities) > 1:
            raise self.error(
                identities[1],
                f"{identities[0]} and {identities[1]} are both set: pick the user-assigned "
                "identity with one of client_id, object_id or resource_id",
            )
        if "assertion_alg" in v and "certificate" not in v:
            if v["assertion_alg"].origin:
                # Inherited along with a certificate that this profile replaced: not meant here.
                del v["assertion_alg"]
            else:
                raise self.error(
                    "assertion_alg",
                    "assertion_alg applies only with certificate: it chooses how the "
                    "certificate signs the client assertion",
                )

    def workload_identity_env(self) -> None:
        """Fill what a workload identity profile leaves out from the environment: tenant,
        client_id and authority (unless cloud is set). Read now, when the profile is loaded, so
        that the profile is complete and cache keys tell apps apart; checked like the keys.

        The variables win over ``[defaults]``: they are what the platform says about this very
        workload. Only keys in the profile (or what it ``extends``) win over them."""
        env = os.environ

        def open_to_env(*keys: str) -> bool:
            held = [self.values[k] for k in keys if k in self.values]
            return all(v.origin == _DEFAULTS_ORIGIN for v in held)

        for key, name in (("tenant", ENV_TENANT_ID), ("client_id", ENV_CLIENT_ID)):
            if open_to_env(key) and env.get(name, "").strip():
                self.values[key] = _Value(env[name].strip(), f"from ${name}")
        host = env.get(ENV_AUTHORITY_HOST, "").strip()
        if host and open_to_env("authority", "cloud"):
            # azure-identity accepts a bare host name here
            url = host if "://" in host else f"https://{host}"
            self.values.pop("cloud", None)
            self.values["authority"] = _Value(url, f"from ${ENV_AUTHORITY_HOST}")
        if open_to_env("client_assertion") and env.get(ENV_FEDERATED_TOKEN_FILE, "").strip():
            # build() then takes the token file (see federated_token_file)
            self.values.pop("client_assertion", None)

    def federated_token_file(self) -> Optional[SecretSource]:
        """The token file named by ``$AZURE_FEDERATED_TOKEN_FILE``, as a secret source whose
        ``key`` is the variable's name (so that errors name it), or ``None``."""
        raw = os.environ.get(ENV_FEDERATED_TOKEN_FILE, "").strip()
        if not raw:
            return None
        path = os.path.abspath(os.path.expanduser(raw))
        return SecretSource(
            "file", path, key=ENV_FEDERATED_TOKEN_FILE, profile=self.name, path=self.file.path
        )

    @staticmethod
    def missing_message(key: str, flow: str) -> str:
        what = {
            "client_id": "the application (client) id",
            "tenant": "the tenant's GUID or domain",
            "refresh_token": "a secret source for the refresh token",
            "username": "the user's sign-in name",
            "password": "a secret source for the user's password",
        }.get(key, "it")
        return f"{key} is missing: flow {flow!r} needs {what}"

    # -- single keys ----------------------------------------------------------------------

    def string(self, key: str, value: Any, expected: str) -> str:
        if not isinstance(value, str):
            raise self.type_error(key, expected, value)
        if not value.strip():
            raise self.error(key, f"{key} is empty: it must be {expected}")
        return value

    def text(self, key: str, expected: str) -> Optional[str]:
        if key not in self.values:
            return None
        value = self.string(key, self.values[key].value, expected)
        if value != value.strip():
            raise self.error(key, f"{key} has spaces at its start or end")
        return value

    def choice(self, key: str, choices: Sequence[str]) -> Optional[str]:
        if key not in self.values:
            return None
        value = self.values[key].value
        expected = "one of " + _one_of(choices)
        if not isinstance(value, str):
            raise self.type_error(key, expected, value)
        if value not in choices:
            raise self.error(
                key,
                f"{key} {_short(value)} is not valid"
                + (_suggest(value, choices) or "")
                + f" ({key} is {expected})",
            )
        return value

    def tenant(self, value: Any, flow: str, rules: _FlowRules) -> str:
        expected = "a tenant GUID or domain, or one of " + _one_of(MULTI_TENANTS)
        given = self.string("tenant", value, expected)
        tenant = given.lower()
        if not (tenant in MULTI_TENANTS or _GUID.fullmatch(tenant) or _DOMAIN.fullmatch(tenant)):
            raise self.error(
                "tenant",
                f"tenant {_short(given)} is not a tenant GUID, a domain (like "
                "contoso.onmicrosoft.com) or one of " + _one_of(MULTI_TENANTS),
            )
        if tenant in rules.refused_tenants:
            raise self.error(
                "tenant",
                f"flow {flow!r} cannot use tenant {tenant!r}: set the tenant's GUID or domain"
                + (", or 'organizations'" if "organizations" not in rules.refused_tenants else ""),
            )
        return tenant

    def client_id(self, value: Any) -> str:
        client_id = self.string("client_id", value, "the application (client) id, a GUID")
        if any(c.isspace() for c in client_id):
            raise self.error("client_id", "client_id must not contain spaces or line breaks")
        return client_id

    def scopes(self, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            items = value.split()
            if not items:
                raise self.error("scope", "scope is empty: name at least one scope")
        elif isinstance(value, (list, tuple)):
            if not value:
                raise self.error("scope", "scope is an empty list: name at least one scope")
            items = []
            for number, item in enumerate(value, 1):
                if not isinstance(item, str):
                    raise self.error(
                        "scope",
                        f"scope must be a list of strings, but item {number} is {_type_name(item)}",
                    )
                if not item.strip():
                    raise self.error("scope", f"scope item {number} is empty")
                if any(c.isspace() for c in item):
                    raise self.error(
                        "scope",
                        f"scope item {number} ({_short(item)}) contains a space: write each "
                        "scope as its own list item",
                    )
                items.append(item)
        else:
            raise self.type_error(
                "scope", "a string (scopes separated by spaces) or a list of strings", value
            )
        return tuple(dict.fromkeys(items))  # duplicates dropped, order kept

    def cloud(self, value: Any) -> str:
        expected = "one of " + _one_of(CLOUDS)
        if not isinstance(value, str):
            raise self.type_error("cloud", expected, value)
        if value not in CLOUDS:
            raise self.error(
                "cloud",
                f"unknown cloud {_short(value)}"
                + _suggest(value, CLOUDS)
                + f" (cloud is {expected};"
                " set authority for any other identity service)",
            )
        return CLOUDS[value]

    def authority(self, value: Any) -> str:
        example = "like https://login.microsoftonline.com"
        given = self.string("authority", value, f"the identity service's base URL, {example}")
        url: str = given.rstrip("/")
        if any(c.isspace() for c in url):
            raise self.error("authority", "authority must not contain spaces or line breaks")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise self.error("authority", f"authority is not a valid URL, {example}") from None
        if "@" in parts.netloc:
            # Not quoted back: it may hold a password.
            raise self.error("authority", "authority must not contain a user name or password")
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        if scheme not in ("http", "https") or not host:
            raise self.error(
                "authority", f"authority {_short(value)} is not an https:// URL, {example}"
            )
        if scheme == "http" and not is_loopback(host):
            raise self.error(
                "authority",
                f"authority {_short(value)} uses http://, which is allowed only for loopback "
                "hosts (localhost, 127.0.0.1, ::1): use https://",
            )
        if parts.query or parts.fragment or "?" in url or "#" in url:
            raise self.error("authority", "authority must not have a query (?) or fragment (#)")
        if parts.path and host.lower() in _ENTRA_HOSTS:
            raise self.error(
                "authority",
                f"authority {_short(value)} has a path: for Microsoft's sign-in hosts it is only "
                "the base URL (the tenant goes in tenant)",
            )
        return url

    def secret(self, key: str, value: Any = None) -> Optional[SecretSource]:
        """A secret source (CONTRACT §4). Messages never quote the value: it may be the secret."""
        if value is None:
            if key not in self.values:
                return None
            value = self.values[key].value
        kinds = ("env", "file", "command")
        how = "a table with one of env, file or command"

        def source(kind: str, ref: Union[str, tuple[str, ...]]) -> SecretSource:
            return SecretSource(kind, ref, key=key, profile=self.name, path=self.file.path)

        if isinstance(value, str):
            if not value.strip():
                raise self.error(
                    key, f'{key} is empty: give the secret, or {how}, like {{ env = "NAME" }}'
                )
            return source("value", value)
        if not isinstance(value, Mapping):
            raise self.type_error(key, f"a string (the secret itself) or {how}", value)
        for name in value:
            if name not in kinds:
                raise self.error(
                    key,
                    f"unknown key {name!r} in {key}"
                    + _suggest(name, kinds)
                    + f" ({key} must be {how})",
                )
        if not value:
            raise self.error(key, f"{key} is an empty table: it must be {how}")
        if len(value) > 1:
            first, second = list(value)[:2]
            raise self.error(
                key, f"{key} has both {first!r} and {second!r}: a secret source takes exactly one"
            )
        kind, ref = next(iter(value.items()))
        if kind == "env":
            if not isinstance(ref, str) or not ref or "=" in ref or "\0" in ref:
                raise self.error(
                    key,
                    f"{key}.env must be the name of an environment variable"
                    + ("" if isinstance(ref, str) else f", not {_type_name(ref)}"),
                )
            return source("env", ref)
        if kind == "file":
            if not isinstance(ref, str) or not ref.strip():
                raise self.error(
                    key,
                    f"{key}.file must be the path of a file"
                    + ("" if isinstance(ref, str) else f", not {_type_name(ref)}"),
                )
            return source("file", self.local_path(key, ref))
        if isinstance(ref, str):
            raise self.error(
                key,
                f'{key}.command must be a list like ["prog", "arg"], not a string: it runs '
                "without a shell, so give the program and each argument as list items",
            )
        if not isinstance(ref, list) or not ref:
            raise self.error(
                key,
                f'{key}.command must be a non-empty list like ["prog", "arg"]'
                + ("" if isinstance(ref, list) else f", not {_type_name(ref)}"),
            )
        for number, arg in enumerate(ref, 1):
            if not isinstance(arg, str):
                raise self.error(
                    key, f"{key}.command item {number} must be a string, not {_type_name(arg)}"
                )
        if not ref[0].strip():
            raise self.error(key, f"{key}.command must start with the program to run")
        return source("command", tuple(ref))

    def local_path(self, key: str, raw: str) -> str:
        """A path from the file: ``~`` expanded, relative to the profiles file's folder."""
        if "\0" in raw:
            raise self.error(key, f"the path in {key} has a NUL character in it")
        path = os.path.expanduser(raw)
        if not os.path.isabs(path):
            path = os.path.join(self.file.directory, path)
        return os.path.normpath(path)

    def certificate(self, value: Any) -> CertificateConfig:
        password: Optional[SecretSource] = None
        send_x5c = False
        if isinstance(value, str):
            key, raw = "certificate", value
        elif isinstance(value, Mapping):
            fields = ("path", "password", "send_x5c")
            for name in value:
                if name not in fields:
                    raise self.error(
                        f"certificate.{name}",
                        f"unknown key {name!r} in certificate"
                        + _suggest(name, fields)
                        + " (certificate takes path, password and send_x5c)",
                    )
            if "path" not in value:
                raise self.error(
                    "certificate.path",
                    'certificate needs a path, like certificate = { path = "app.pem" }',
                )
            key, raw = "certificate.path", value["path"]
            if "password" in value:
                password = self.secret("certificate.password", value["password"])
            if "send_x5c" in value:
                send_x5c = value["send_x5c"]
                if not isinstance(send_x5c, bool):
                    raise self.type_error("certificate.send_x5c", "true or false", send_x5c)
        else:
            raise self.type_error(
                "certificate", "a path, or a table like { path = ..., password = ... }", value
            )
        path = self.local_path(key, self.string(key, raw, "the path of a PEM or PKCS#12 file"))
        try:
            st = os.stat(path)
            if stat.S_ISDIR(st.st_mode):
                raise self.error(key, f"certificate {path} is a folder, not a file")
            if not stat.S_ISREG(st.st_mode):
                raise self.error(key, f"certificate {path} is not a regular file")
            with open(path, "rb"):
                pass
        except FileNotFoundError:
            raise self.error(key, f"certificate file {path} does not exist") from None
        except OSError as exc:
            raise self.error(key, f"cannot read certificate file {path}: {exc.strerror}") from None
        return CertificateConfig(path=path, password=password, send_x5c=send_x5c)

    def port(self) -> Optional[int]:
        if "redirect_port" not in self.values:
            return None
        value = self.values["redirect_port"].value
        expected = "a port number from 0 to 65535 (0 = any free port)"
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.type_error("redirect_port", expected, value)
        if not 0 <= value <= 65535:
            raise self.error("redirect_port", f"redirect_port {value} is not {expected}")
        return value

    def object_id(self) -> Optional[str]:
        value = self.text("object_id", "the managed identity's object (principal) id, a GUID")
        if value is not None and not _GUID.fullmatch(value):
            raise self.error(
                "object_id",
                "object_id must be the managed identity's object (principal) id, a GUID",
            )
        return value

    def resource_id(self) -> Optional[str]:
        expected = (
            "the identity's Azure resource id, like /subscriptions/…/userAssignedIdentities/NAME"
        )
        value = self.text("resource_id", expected)
        if value is not None and (not value.startswith("/") or any(c.isspace() for c in value)):
            raise self.error("resource_id", f"resource_id must be {expected}")
        return value

    def allowed_hosts(self, value: Any) -> tuple[str, ...]:
        example = 'like ["api.example.com", ".example.net"]'
        if not isinstance(value, (list, tuple)):
            raise self.type_error("allowed_hosts", f"a list of host names, {example}", value)
        if not value:
            raise self.error(
                "allowed_hosts",
                f"allowed_hosts is empty: the token would go nowhere; list host names, {example}",
            )
        hosts = []
        for number, item in enumerate(value, 1):
            if not isinstance(item, str):
                raise self.error(
                    "allowed_hosts",
                    f"allowed_hosts item {number} must be a host name, not {_type_name(item)}",
                )
            hosts.append(self.host(number, item))
        return tuple(dict.fromkeys(hosts))

    def host(self, number: int, item: str) -> str:
        def bad(why: str) -> ConfigError:
            return self.error("allowed_hosts", f"allowed_hosts item {number} {_short(item)} {why}")

        host = item.strip().lower()
        if not host or host == ".":
            raise bad("is empty")
        literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            if ipaddress.ip_address(literal).version == 6:
                return literal
        except ValueError:
            pass
        if "://" in host:
            raise bad("is a URL: give only the host name, like 'api.example.com'")
        if "/" in host:
            raise bad("has a path: give only the host name")
        if ":" in host:
            raise bad("has a port: give only the host name (any port is allowed)")
        if "*" in host:
            raise bad("has a wildcard: write '.example.com' to allow example.com's subdomains")
        if not host.isascii():
            raise bad("is not ASCII: give the host in its punycode (xn--) form")
        if not _HOST.fullmatch(host):
            raise bad("is not a host name")
        return host

    def timeout(self) -> float:
        if "timeout" not in self.values:
            return DEFAULT_TIMEOUT
        value = self.values["timeout"].value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.type_error("timeout", "a number of seconds", value)
        if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
            raise self.error(
                "timeout",
                f"timeout {value} is out of range: give seconds, more than 0 and at most "
                f"{MAX_TIMEOUT:g}",
            )
        return float(value)


def workload_identity_for(profile: Profile) -> Profile:
    """``profile`` (flow ``managed_identity``) made ready for the workload identity exchange, on
    a host where the workload identity webhook set ``$AZURE_TENANT_ID``, ``$AZURE_CLIENT_ID`` and
    ``$AZURE_FEDERATED_TOKEN_FILE``: tenant, client id (the profile's ``client_id`` wins over
    ``$AZURE_CLIENT_ID``), authority (``$AZURE_AUTHORITY_HOST``, else the public cloud) and the
    token file as client assertion, read now and checked like keys of the file."""
    file = _File(path=profile.config_path or "", defaults={}, profiles={profile.name: {}})
    builder = _Builder(file, profile.name)
    if profile.client_id:
        builder.values["client_id"] = _Value(profile.client_id, "")
    builder.workload_identity_env()
    v = builder.values
    rules = _RULES["workload_identity"]
    tenant = builder.tenant(v["tenant"].value, "workload_identity", rules) if "tenant" in v \
        else None
    client_id = builder.client_id(v["client_id"].value) if "client_id" in v else None
    authority = builder.authority(v["authority"].value) if "authority" in v \
        else DEFAULT_AUTHORITY
    return replace(profile, tenant=tenant, client_id=client_id, authority=authority,
                   client_assertion=builder.federated_token_file())


def with_tenant(profile: Profile, tenant: Any) -> Optional[Profile]:
    """``profile`` with a ``tenant=`` argument applied, checked as :func:`load_profile` checks
    it, without reading the file again; ``None`` when the flow needs the full load (the tenant
    does not apply to it, or comes from the environment)."""
    rules = _RULES.get(profile.flow)
    if rules is None or "tenant" not in rules.keys or profile.flow == "workload_identity":
        return None
    file = _File(path=profile.config_path or "", defaults={}, profiles={profile.name: {}})
    builder = _Builder(file, profile.name)
    builder.values["tenant"] = _Value(tenant, "from the tenant= argument")
    checked = builder.tenant(tenant, profile.flow, rules)
    return replace(profile, tenant=tenant if checked == tenant else checked)  # share the string


# --------------------------------------------------------------------------------------------
# The public functions


def _profile(file: _File, name: str, scope: Any, tenant: Any) -> Profile:
    if isinstance(scope, (list, tuple)):
        scope = tuple(scope)
    # Workload identity profiles take values from the environment: a change makes a new one.
    memo: Any = (name, scope, tenant, tuple(os.environ.get(n) for n in _WORKLOAD_ENV))
    try:
        hash(memo)
    except TypeError:
        memo = None
    if memo is not None:
        with _lock:
            hit = file.built.get(memo)
        if hit is not None:
            return hit
    profile = _Builder(file, name).build(scope, tenant)
    if memo is not None:
        with _lock:
            if len(file.built) >= _MEMO_LIMIT:
                file.built.clear()
            file.built[memo] = profile
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


def load_profiles(config: Optional[PathArg] = None) -> dict[str, Profile]:
    """Every profile of the file, validated, in file order; the first broken one raises."""
    file = _load_file(config)
    return {name: _profile(file, name, None, None) for name in file.profiles}


def profile_names(config: Optional[PathArg] = None) -> list[str]:
    """The names of the file's profiles, in file order, without validating them."""
    return list(_load_file(config).profiles)
