"""The profile's keys: one row per key (:class:`~authlayer.schema.Key`) with the function that
checks its value and turns it into a :class:`Profile` field, and :func:`parse_values`, the loop
over that table.

A leaf module: flows may import it to check values taken from elsewhere (the environment) the way
keys of the file are checked. Messages never quote a value that may be a secret.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Union
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..hosts import is_loopback, public_suffix_problem
from ..profile import DEFAULT_AUTHORITY, CertificateConfig, SecretSource
from ..schema import CREDENTIALS, Key

if TYPE_CHECKING:
    from ..schema import FlowSpec

__all__ = ["ALIASES", "KEYS", "TABLE", "Value", "Values", "Where", "parse_values"]

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
CACHES = ("memory", "file")  # and a shared store: authlayer.stores.parse_cache
ASSERTION_ALGS = ("PS256", "RS256")
MULTI_TENANTS = ("organizations", "common", "consumers")
MAX_TIMEOUT = 600.0
DEFAULT_TIMEOUT = 30.0

# Patterns, compiled at their first use by re's own cache: compiling them all (the domain's
# alone takes a millisecond) would cost every start, and most profiles need one or none.
_GUID = r"(?i)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = rf"(?i)(?:{_LABEL}\.)+{_LABEL}"
_HOST = r"(?i)\.?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?"
_BARE_KEY = r"[A-Za-z0-9_-]+"



# --------------------------------------------------------------------------------------------
# Small helpers


# How TOML's types are called in messages; datetime before date, which it subclasses.
_TYPE_NAMES: tuple[tuple[Any, str], ...] = (
    (bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
    ((list, tuple), "a list"), (Mapping, "a table"), (datetime, "a date-time"),
    (date, "a date"), (time, "a time"),
)


def _type_name(value: object) -> str:
    """How a value's type is called in messages, in TOML's words."""
    for types, name in _TYPE_NAMES:
        if isinstance(value, types):
            return name
    return f"a {type(value).__name__}"


def _suggest(word: str, choices: Iterable[str], aliases: Optional[Mapping[str, str]] = None) -> str:
    """``"; did you mean 'x'?"`` for the nearest choice, or ``""``."""
    import difflib  # only for a mistake: it costs start-up time

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


def _control(value: str) -> Optional[str]:
    """The first control character in ``value`` (but whitespace, which callers judge
    themselves), as ``U+0000``; ``None`` if there is none. NUL and its kin have no place in a
    URL, an id or a name, and may cut or bend what a C library or a server reads."""
    for char in value:
        if (char < " " or "\x7f" <= char <= "\x9f") and not char.isspace():
            return f"U+{ord(char):04X}"
    return None


def _toml_key(name: str) -> str:
    return name if re.fullmatch(_BARE_KEY, name) else '"' + name.replace('"', '\\"') + '"'


def _one_of(choices: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in choices)


# --------------------------------------------------------------------------------------------
# Where a value comes from


DEFAULTS_ORIGIN = "set in [defaults]"


class Value(NamedTuple):  # not a dataclass: making one costs start-up time
    """A key's value as written, and where it came from: ``""`` when set on the profile itself,
    else ``"set in [defaults]"``, ``"inherited from profile 'x'"``, ``"from $VAR"``, ..."""

    value: Any
    origin: str


class Values:
    """The values a profile ends up with, key by key, with their origins; and the environment
    variables read to fill them (a memoised profile is used again only while they are
    unchanged)."""

    def __init__(self, path: Optional[str], profile: str) -> None:
        self.path = path
        self.profile = profile
        self.held: dict[str, Value] = {}
        self.environ: dict[str, Optional[str]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.held

    def __getitem__(self, key: str) -> Value:
        return self.held[key]

    def set(self, key: str, value: Any, origin: str) -> None:
        self.held[key] = Value(value, origin)

    def pop(self, key: str) -> None:
        self.held.pop(key, None)

    def env(self, name: str) -> str:
        """``$name``, stripped (``""`` when unset), remembered as read."""
        raw = os.environ.get(name)
        self.environ[name] = raw
        return (raw or "").strip()

    def open_to_env(self, *keys: str) -> bool:
        """Whether the environment may fill ``keys``: the profile (and what it extends) sets none
        of them; ``[defaults]`` may."""
        return all(self.held[k].origin == DEFAULTS_ORIGIN for k in keys if k in self.held)

    def error(self, key: Optional[str], message: str, origin: Optional[str] = None) -> ConfigError:
        """A :class:`ConfigError` about ``key``, naming where its value came from."""
        if origin is None and key is not None:
            held = self.held.get(key.split(".", 1)[0])
            origin = held.origin if held is not None else ""
        if origin:
            message += f" ({origin})"
        return ConfigError(message, path=self.path, profile=self.profile, key=key)

    def where(self, key: str, spec: Optional[FlowSpec] = None) -> Where:
        return Where(self, key, spec)


class Where:
    """What a key's parser needs to know: which key, which profile and file, which flow; and
    the errors it raises, which name all that."""

    def __init__(self, values: Values, key: str, spec: Optional[FlowSpec]) -> None:
        self.values = values
        self.key = key
        self.spec = spec

    @property
    def profile(self) -> str:
        return self.values.profile

    @property
    def path(self) -> Optional[str]:
        return self.values.path

    def error(self, message: str, key: Optional[str] = None) -> ConfigError:
        return self.values.error(key or self.key, message)

    def type_error(self, expected: str, value: object, key: Optional[str] = None) -> ConfigError:
        return self.error(f"{key or self.key} must be {expected}, not {_type_name(value)}", key)

    def no_control(self, value: str, key: Optional[str] = None) -> None:
        found = _control(value)
        if found is not None:
            raise self.error(f"{key or self.key} has a control character ({found}) in it", key)

    def string(self, value: Any, expected: str, key: Optional[str] = None) -> str:
        key = key or self.key
        if not isinstance(value, str):
            raise self.type_error(expected, value, key)
        if not value.strip():
            raise self.error(f"{key} is empty: it must be {expected}", key)
        self.no_control(value, key)
        return value

    def text(self, value: Any, expected: str) -> str:
        text = self.string(value, expected)
        if text != text.strip():
            raise self.error(f"{self.key} has spaces at its start or end")
        return text

    def choice(self, value: Any, choices: Sequence[str]) -> str:
        expected = "one of " + _one_of(choices)
        if not isinstance(value, str):
            raise self.type_error(expected, value)
        if value not in choices:
            raise self.error(
                f"{self.key} {_short(value)} is not valid"
                + (_suggest(value, choices) or "")
                + f" ({self.key} is {expected})"
            )
        return value

    def local_path(self, raw: str, key: Optional[str] = None) -> str:
        """A path from the file: ``~`` expanded, relative to the profiles file's folder."""
        key = key or self.key
        if "\0" in raw:
            raise self.error(f"the path in {key} has a NUL character in it", key)
        path = os.path.expanduser(raw)
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(self.path or ""), path)
        return os.path.normpath(path)

    def secret(self, value: Any, key: Optional[str] = None) -> SecretSource:
        """A secret source (CONTRACT §4). Messages never quote the value: it may be the secret."""
        from ._sources import parse_secret

        return parse_secret(value, self if key is None else Where(self.values, key, self.spec))


# --------------------------------------------------------------------------------------------
# One parser per key: (value as written, where) -> the Profile field's value


def _text(expected: str) -> Any:
    return lambda value, where: where.text(value, expected)


def _choice(choices: Sequence[str]) -> Any:
    return lambda value, where: where.choice(value, choices)


def _secret(value: Any, where: Where) -> SecretSource:
    return where.secret(value)


def _tenant(value: Any, where: Where) -> str:
    expected = "a tenant GUID or domain, or one of " + _one_of(MULTI_TENANTS)
    given = where.string(value, expected)
    tenant = given.lower()
    if not (tenant in MULTI_TENANTS or re.fullmatch(_GUID, tenant)
            or re.fullmatch(_DOMAIN, tenant)):
        raise where.error(
            f"tenant {_short(given)} is not a tenant GUID, a domain (like "
            "contoso.onmicrosoft.com) or one of " + _one_of(MULTI_TENANTS)
        )
    refused = where.spec.refused_tenants if where.spec is not None else ()
    if tenant in refused:
        assert where.spec is not None
        raise where.error(
            f"flow {where.spec.name!r} cannot use tenant {tenant!r}: set the tenant's GUID or "
            "domain" + (", or 'organizations'" if "organizations" not in refused else "")
        )
    return tenant


def _client_id(value: Any, where: Where) -> str:
    client_id = where.string(value, "the application (client) id, a GUID")
    if any(c.isspace() for c in client_id):
        raise where.error("client_id must not contain spaces or line breaks")
    return client_id


def _scopes(value: Any, where: Where) -> tuple[str, ...]:
    if isinstance(value, str):
        items = value.split()
        if not items:
            raise where.error("scope is empty: name at least one scope")
        where.no_control(value)
    elif isinstance(value, (list, tuple)):
        if not value:
            raise where.error("scope is an empty list: name at least one scope")
        items = []
        for number, item in enumerate(value, 1):
            if not isinstance(item, str):
                raise where.error(
                    f"scope must be a list of strings, but item {number} is {_type_name(item)}"
                )
            if not item.strip():
                raise where.error(f"scope item {number} is empty")
            if any(c.isspace() for c in item):
                raise where.error(
                    f"scope item {number} ({_short(item)}) contains a space: write each "
                    "scope as its own list item"
                )
            items.append(item)
        where.no_control(" ".join(items))
    else:
        raise where.type_error("a string (scopes separated by spaces) or a list of strings", value)
    return tuple(dict.fromkeys(items))  # duplicates dropped, order kept


def _cloud(value: Any, where: Where) -> str:
    expected = "one of " + _one_of(CLOUDS)
    if not isinstance(value, str):
        raise where.type_error(expected, value)
    if value not in CLOUDS:
        raise where.error(
            f"unknown cloud {_short(value)}"
            + _suggest(value, CLOUDS)
            + f" (cloud is {expected}; set authority for any other identity service)"
        )
    return CLOUDS[value]


def _authority(value: Any, where: Where) -> str:
    example = "like https://login.microsoftonline.com"
    given = where.string(value, f"the identity service's base URL, {example}")
    url: str = given.rstrip("/")
    if any(c.isspace() for c in url):
        raise where.error("authority must not contain spaces or line breaks")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise where.error(f"authority is not a valid URL, {example}") from None
    if "@" in parts.netloc:
        # Not quoted back: it may hold a password.
        raise where.error("authority must not contain a user name or password")
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme not in ("http", "https") or not host:
        raise where.error(f"authority {_short(value)} is not an https:// URL, {example}")
    if scheme == "http" and not is_loopback(host):
        raise where.error(
            f"authority {_short(value)} uses http://, which is allowed only for loopback "
            "hosts (localhost, 127.0.0.1, ::1): use https://"
        )
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise where.error("authority must not have a query (?) or fragment (#)")
    if parts.path and host.lower() in _ENTRA_HOSTS:
        raise where.error(
            f"authority {_short(value)} has a path: for Microsoft's sign-in hosts it is only "
            "the base URL (the tenant goes in tenant)"
        )
    return url


def _certificate(value: Any, where: Where) -> CertificateConfig:
    password: Optional[SecretSource] = None
    send_x5c = False
    if isinstance(value, str):
        key, raw = "certificate", value
    elif isinstance(value, Mapping):
        fields = ("path", "password", "send_x5c")
        for name in value:
            if name not in fields:
                raise where.error(
                    f"unknown key {name!r} in certificate"
                    + _suggest(name, fields)
                    + " (certificate takes path, password and send_x5c)",
                    f"certificate.{name}",
                )
        if "path" not in value:
            raise where.error(
                'certificate needs a path, like certificate = { path = "app.pem" }',
                "certificate.path",
            )
        key, raw = "certificate.path", value["path"]
        if "password" in value:
            password = where.secret(value["password"], "certificate.password")
        if "send_x5c" in value:
            send_x5c = value["send_x5c"]
            if not isinstance(send_x5c, bool):
                raise where.type_error("true or false", send_x5c, "certificate.send_x5c")
    else:
        raise where.type_error("a path, or a table like { path = ..., password = ... }", value)
    path = where.local_path(where.string(raw, "the path of a PEM or PKCS#12 file", key), key)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise where.error(f"certificate {path} is a folder, not a file", key)
        if not stat.S_ISREG(st.st_mode):
            raise where.error(f"certificate {path} is not a regular file", key)
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise where.error(f"certificate file {path} does not exist", key) from None
    except OSError as exc:
        raise where.error(f"cannot read certificate file {path}: {exc.strerror}", key) from None
    return CertificateConfig(path=path, password=password, send_x5c=send_x5c)


def _port(value: Any, where: Where) -> int:
    expected = "a port number from 0 to 65535 (0 = any free port)"
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.type_error(expected, value)
    if not 0 <= value <= 65535:
        raise where.error(f"redirect_port {value} is not {expected}")
    return value


def _object_id(value: Any, where: Where) -> str:
    expected = "the managed identity's object (principal) id, a GUID"
    text = where.text(value, expected)
    if not re.fullmatch(_GUID, text):
        raise where.error(f"object_id must be {expected}")
    return text


def _resource_id(value: Any, where: Where) -> str:
    expected = (
        "the identity's Azure resource id, like /subscriptions/…/userAssignedIdentities/NAME"
    )
    text = where.text(value, expected)
    if not text.startswith("/") or any(c.isspace() for c in text):
        raise where.error(f"resource_id must be {expected}")
    return text


def _folder(value: Any, where: Where) -> str:
    """A folder's path: ``~`` expanded, relative to the profiles file's folder."""
    return where.local_path(where.string(value, "the path of a folder"))


def _chain(value: Any, where: Where) -> tuple[str, ...]:
    """The member profiles' names (whether they exist and make no cycle is checked against
    the file, in :mod:`._build`)."""
    expected = 'a list of profile names, like ["ci", "laptop"]'
    if not isinstance(value, (list, tuple)):
        raise where.type_error(expected, value)
    if not value:
        raise where.error(f"chain is empty: it must be {expected}")
    names: list[str] = []
    for number, item in enumerate(value, 1):
        if not isinstance(item, str):
            raise where.error(f"chain item {number} must be a profile name, not "
                              f"{_type_name(item)}")
        if not item.strip():
            raise where.error(f"chain item {number} is empty: it must be a profile name")
        where.no_control(item)
        if item in names:
            raise where.error(f"chain names profile {_short(item)} twice")
        names.append(item)
    return tuple(names)


def _flag(value: Any, where: Where) -> bool:
    if not isinstance(value, bool):
        raise where.type_error("true or false", value)
    return value


def _allowed_tenants(value: Any, where: Where) -> tuple[str, ...]:
    expected = 'a list of tenant GUIDs or domains, or ["*"] for any tenant'
    if not isinstance(value, (list, tuple)):
        raise where.type_error(expected, value)
    tenants: list[str] = []
    for number, item in enumerate(value, 1):
        if not isinstance(item, str):
            raise where.error(f"additionally_allowed_tenants item {number} must be a tenant, "
                              f"not {_type_name(item)}")
        tenant = item.strip().lower()
        if tenant != "*" and not (re.fullmatch(_GUID, tenant) or re.fullmatch(_DOMAIN, tenant)):
            raise where.error(f"additionally_allowed_tenants item {number} ({_short(item)}) "
                              "is not a tenant GUID, a domain or \"*\"")
        tenants.append(tenant)
    return tuple(dict.fromkeys(tenants))


def _allowed_hosts(value: Any, where: Where) -> tuple[str, ...]:
    example = 'like ["api.example.com", ".example.net"]'
    if not isinstance(value, (list, tuple)):
        raise where.type_error(f"a list of host names, {example}", value)
    if not value:
        raise where.error(
            f"allowed_hosts is empty: the token would go nowhere; list host names, {example}"
        )
    hosts = []
    for number, item in enumerate(value, 1):
        if not isinstance(item, str):
            raise where.error(
                f"allowed_hosts item {number} must be a host name, not {_type_name(item)}"
            )
        hosts.append(_host(number, item, where))
    return tuple(dict.fromkeys(hosts))


def _host(number: int, item: str, where: Where) -> str:
    def bad(why: str) -> ConfigError:
        return where.error(f"allowed_hosts item {number} {_short(item)} {why}")

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
    if not re.fullmatch(_HOST, host):
        raise bad("is not a host name")
    problem = public_suffix_problem(host)
    if problem:
        raise bad(problem)
    return host


def _cache(value: Any, where: Where) -> Any:
    if value in CACHES:  # the usual: no need to import the stores
        return value
    from ..stores import parse_cache  # light: redis is imported when a store opens

    return parse_cache(value, where)


def _timeout(value: Any, where: Where) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.type_error("a number of seconds", value)
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
        raise where.error(
            f"timeout {value} is out of range: give seconds, more than 0 and at most "
            f"{MAX_TIMEOUT:g}"
        )
    return float(value)


# --------------------------------------------------------------------------------------------
# The table


_CREDENTIAL = "credential"
_IDENTITY = "identity"
_AUTHORITY = "authority"

# Every key a profile may have, in the order the values are checked (which decides the error
# reported when two values are wrong). `flow` and `extends` are handled by the layers.
TABLE: tuple[Key, ...] = (
    Key("flow", None),
    Key("cloud", _cloud, field="authority", group=_AUTHORITY),
    Key("authority", _authority, group=_AUTHORITY, aliases=("authority_host",)),
    Key("scope", _scopes, field="scopes", aliases=("scopes", "resource")),
    Key("tenant", _tenant, missing="the tenant's GUID or domain", aliases=("tenant_id",)),
    Key("certificate", _certificate, group=_CREDENTIAL, aliases=("cert",)),
    Key("allowed_hosts", _allowed_hosts),
    Key("client_id", _client_id, missing="the application (client) id", group=_IDENTITY,
        aliases=("app_id", "application_id")),
    Key("client_secret", _secret, group=_CREDENTIAL, aliases=("secret",)),
    Key("client_assertion", _secret, group=_CREDENTIAL),
    Key("refresh_token", _secret, missing="a secret source for the refresh token"),
    Key("password", _secret, missing="a secret source for the user's password"),
    Key("assertion_alg", _choice(ASSERTION_ALGS)),
    Key("username", _text("the user's sign-in name"), missing="the user's sign-in name"),
    Key("login_hint", _text("a sign-in name")),
    Key("domain_hint", _text("a domain name")),
    Key("prompt", _choice(PROMPTS)),
    Key("redirect_port", _port, aliases=("port",)),
    Key("object_id", _object_id, group=_IDENTITY),
    Key("resource_id", _resource_id, group=_IDENTITY),
    Key("azure_config_dir", _folder, aliases=("config_dir",)),
    Key("chain", _chain, missing='the profiles to try, like chain = ["ci", "laptop"]',
        aliases=("members", "profiles")),
    Key("cae", _flag, aliases=("enable_cae",)),
    Key("additionally_allowed_tenants", _allowed_tenants,
        aliases=("allowed_tenants", "additional_tenants")),
    Key("cache", _cache),
    Key("timeout", _timeout),
    Key("extends", None, aliases=("inherits",)),
)
KEYS = tuple(key.name for key in TABLE)
BY_NAME = {key.name: key for key in TABLE}
# Names people reach for that a spelling suggestion would not find.
ALIASES = {alias: key.name for key in TABLE for alias in key.aliases}
# Keys that stand for one setting: a layer that sets one of them replaces what farther layers
# set for the whole group (a profile with a certificate extending one with a secret is not both).
GROUPS: dict[str, tuple[str, ...]] = {}
for _key in TABLE:
    if _key.group is not None:
        GROUPS[_key.group] = (*GROUPS.get(_key.group, ()), _key.name)
assert set(GROUPS[_CREDENTIAL]) == set(CREDENTIALS)


def parse_values(
    values: Values, spec: Optional[FlowSpec], keys: Union[Iterable[Key], None] = None
) -> dict[str, Any]:
    """The Profile fields of the values present, each checked by its key's parser, in table
    order (or the order of ``keys``)."""
    fields: dict[str, Any] = {}
    for key in TABLE if keys is None else keys:
        if key.parse is not None and key.name in values:
            fields[key.attribute] = key.parse(values[key.name].value, values.where(key.name, spec))
    return fields
