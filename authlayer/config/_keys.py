"""The profile's keys and the small helpers of every message about them.

A leaf module: flows may import it to check values taken from elsewhere (the environment) the way
keys of the file are checked.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from typing import Optional

from ..profile import DEFAULT_AUTHORITY

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

_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}", re.IGNORECASE)
_HOST = re.compile(r"\.?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?", re.IGNORECASE)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


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


def _control(value: str) -> Optional[str]:
    """The first control character in ``value`` (but whitespace, which callers judge
    themselves), as ``U+0000``; ``None`` if there is none. NUL and its kin have no place in a
    URL, an id or a name, and may cut or bend what a C library or a server reads."""
    for char in value:
        if (char < " " or "\x7f" <= char <= "\x9f") and not char.isspace():
            return f"U+{ord(char):04X}"
    return None


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else '"' + name.replace('"', '\\"') + '"'


def _one_of(choices: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in choices)
