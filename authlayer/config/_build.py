"""Building one profile: ``[defaults]`` < the profiles it ``extends`` < the profile < the call's
overrides, checked key by key and as a whole against the flow's rules, into a :class:`Profile`.
Every mistake becomes a :class:`ConfigError` that names the file, the profile and the key and never
quotes a secret. Built profiles are remembered per file and per override.
"""

from __future__ import annotations

import ipaddress
import math
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Optional, Union
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..flows._workload_env import (
    ENV_AUTHORITY_HOST,
    ENV_CLIENT_ID,
    ENV_FEDERATED_TOKEN_FILE,
    ENV_TENANT_ID,
)
from ..flows._workload_env import VARIABLES as _WORKLOAD_ENV
from ..hosts import HostPolicy, NoHostError, is_loopback
from ..profile import DEFAULT_AUTHORITY, FLOWS, CertificateConfig, Profile, SecretSource
from ._find import ENV_PROFILE, PathArg, config_path
from ._keys import (
    _CLIENT,
    _COMMON,
    _CREDENTIALS,
    _DOMAIN,
    _ENTRA_HOSTS,
    _GROUPS,
    _GUID,
    _HOST,
    _KEY_ALIASES,
    ASSERTION_ALGS,
    CACHES,
    CLOUDS,
    DEFAULT_TIMEOUT,
    KEYS,
    MAX_TIMEOUT,
    MULTI_TENANTS,
    PROMPTS,
    _control,
    _one_of,
    _short,
    _suggest,
    _type_name,
)
from ._layers import _File, _load_file, _lock

__all__ = ["load_profile", "load_profiles", "profile_names", "workload_identity_for"]

AZURE_CLI_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
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

_DEFAULTS_ORIGIN = "set in [defaults]"


# Built profiles remembered per file; more distinct scope/tenant overrides than this start over.
_MEMO_LIMIT = 256

# How many profiles deep an `extends` chain may go.
MAX_EXTENDS_DEPTH = 32


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
            if len(chain) > MAX_EXTENDS_DEPTH:
                raise self.error(
                    "extends",
                    f"extends goes more than {MAX_EXTENDS_DEPTH} profiles deep "
                    f"({' -> '.join(chain[:3])} -> …): let profiles extend a common one instead",
                    "",
                )
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
        self.no_control(key, value)
        return value

    def no_control(self, key: str, value: str) -> None:
        found = _control(value)
        if found is not None:
            raise self.error(key, f"{key} has a control character ({found}) in it")

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
            self.no_control("scope", value)
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
            self.no_control("scope", " ".join(items))
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
            if "\0" in arg:  # no program can receive it
                raise self.error(key, f"{key}.command item {number} has a NUL character in it")
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
