"""Which requests may carry a profile's token (CONTRACT §5, "Where the token goes").

A :class:`HostPolicy` is built once per profile, from ``allowed_hosts`` or from the scopes'
resources, and then asked for every outgoing request. It remembers each (scheme, host) verdict,
so after the first request to a host the check is one dictionary read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Optional
from urllib.parse import urlsplit

__all__ = ["HostPolicy", "NoHostError", "is_loopback", "resource_of_scope"]

# Scopes that are about the sign-in itself, not about a resource.
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})

_AZURE_DEVOPS = "499b84ac-1321-427f-aa17-267ca6975798"

# Resources whose tokens are used at hosts other than the resource's own name.
WELL_KNOWN_HOSTS: dict[str, tuple[str, ...]] = {
    _AZURE_DEVOPS: ("dev.azure.com", ".dev.azure.com", ".visualstudio.com"),
    "vault.azure.net": ("vault.azure.net", ".vault.azure.net"),
    "vault.usgovcloudapi.net": ("vault.usgovcloudapi.net", ".vault.usgovcloudapi.net"),
    "vault.azure.cn": ("vault.azure.cn", ".vault.azure.cn"),
    "storage.azure.com": (
        "storage.azure.com",
        ".blob.core.windows.net",
        ".queue.core.windows.net",
        ".table.core.windows.net",
        ".file.core.windows.net",
        ".dfs.core.windows.net",
    ),
    "database.windows.net": ("database.windows.net", ".database.windows.net"),
    "management.core.windows.net": ("management.core.windows.net", "management.azure.com"),
}


class NoHostError(ValueError):
    """No scope names a host, and no ``allowed_hosts`` was given."""


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1`` (brackets allowed)."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":  # not "*.localhost": outside systemd's resolver that goes to DNS
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resource_of_scope(scope: str) -> Optional[str]:
    """The resource a scope is for: ``https://graph.microsoft.com/.default`` → its URL without
    the last path segment; ``499b84ac-…/.default`` → the id; ``User.Read`` → Graph. ``None`` for
    sign-in scopes such as ``openid``."""
    if scope in OIDC_SCOPES:
        return None
    if "://" in scope:
        head, _, _last = scope.rstrip("/").rpartition("/")
        if head.endswith(":/") or head.endswith(":"):  # "https://host" with no path
            return scope.rstrip("/")
        return head
    if "/" in scope:
        return scope.split("/", 1)[0]
    return "https://graph.microsoft.com"  # a bare permission name is a Graph permission


def _hosts_of_resource(resource: str) -> tuple[str, ...]:
    if resource in WELL_KNOWN_HOSTS:
        return WELL_KNOWN_HOSTS[resource]
    if "://" not in resource:
        return ()
    split = urlsplit(resource)
    if split.scheme not in ("http", "https") or not split.hostname:
        return ()
    host = split.hostname.lower()
    return WELL_KNOWN_HOSTS.get(host, (host,))


class HostPolicy:
    """The set of hosts a token may be sent to, and the scheme rule (https, or http on loopback).

    ``patterns`` are host names; one that starts with a dot (``.example.com``) also allows
    ``example.com``'s subdomains.
    """

    __slots__ = ("_exact", "_suffixes", "_verdicts", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(sorted({p.strip().lower().rstrip(".") for p in patterns if p}))
        self._exact = frozenset(p.lstrip(".") for p in self.patterns)
        self._suffixes = tuple(p for p in self.patterns if p.startswith("."))
        self._verdicts: dict[tuple[str, str], bool] = {}

    @classmethod
    def for_scopes(
        cls, scopes: Iterable[str], allowed_hosts: Optional[Iterable[str]] = None
    ) -> HostPolicy:
        """The policy for a profile: ``allowed_hosts`` when given, else the scopes' hosts.

        Raises :class:`NoHostError` when neither names a host.
        """
        if allowed_hosts is not None:
            return cls(allowed_hosts)
        patterns: list[str] = []
        for scope in scopes:
            resource = resource_of_scope(scope)
            if resource is not None:
                patterns.extend(_hosts_of_resource(resource))
        if not patterns:
            raise NoHostError("no scope names a host the token may be sent to")
        return cls(patterns)

    def allows(self, scheme: str, host: str) -> bool:
        """May a request to ``scheme://host`` carry the token? Remembered per (scheme, host)."""
        try:
            return self._verdicts[(scheme, host)]
        except KeyError:
            pass
        verdict = self._decide(scheme.lower(), host.strip("[]").lower().rstrip("."))
        if len(self._verdicts) < 4096:
            self._verdicts[(scheme, host)] = verdict
        return verdict

    def _decide(self, scheme: str, host: str) -> bool:
        if scheme == "http":
            if not is_loopback(host):
                return False
        elif scheme != "https":
            return False
        if host in self._exact:
            return True
        return any(host.endswith(suffix) for suffix in self._suffixes)

    def __repr__(self) -> str:
        return f"HostPolicy({list(self.patterns)!r})"
