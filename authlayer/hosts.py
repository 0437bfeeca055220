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

__all__ = ["HostPolicy", "NoHostError", "is_loopback", "is_valid_host", "public_suffix_problem",
           "resource_of_scope"]

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


# Public suffixes that ``allowed_hosts`` must not name: under each, anyone can own a name, so
# allowing one would send the token to strangers. A small table of the common ones, not the
# whole Public Suffix List: every single-label ".tld" pattern is refused anyway, and the table
# adds the common top-level domains as exact names and the common multi-label suffixes —
# country second levels and hosting platforms where anyone gets a subdomain (Azure's web-app
# suffixes among them). Azure data-plane suffixes such as blob.core.windows.net or
# vault.azure.net are not here: a token for those resources is valid at every such host anyway.
_PUBLIC_SUFFIX_TABLE = """
    com net org edu gov mil int info biz name pro mobi app dev io co ai me tv cc ws xyz online
    site cloud tech store top club live ly to gg sh eu uk us ca au nz de fr it es nl be ch at se
    no dk fi pl cz pt ie ru ua cn jp kr in br mx ar za sg hk tw il tr gr hu ro
    co.uk org.uk me.uk ltd.uk plc.uk net.uk ac.uk gov.uk nhs.uk sch.uk
    com.au net.au org.au edu.au gov.au asn.au id.au co.nz net.nz org.nz govt.nz ac.nz
    co.jp ne.jp or.jp ac.jp go.jp ad.jp gr.jp co.kr or.kr ne.kr go.kr ac.kr
    com.cn net.cn org.cn gov.cn edu.cn com.hk net.hk org.hk com.tw net.tw org.tw
    com.sg net.sg org.sg edu.sg gov.sg com.my co.id co.th in.th com.vn com.ph
    co.in net.in org.in firm.in gen.in ind.in ac.in gov.in co.il org.il ac.il gov.il
    com.br net.br org.br gov.br com.mx org.mx gob.mx com.ar org.ar gob.ar com.co com.pe
    co.za org.za gov.za ac.za com.tr org.tr gov.tr com.pl net.pl org.pl com.es org.es
    com.ua co.ua com.ru
    azurewebsites.net scm.azurewebsites.net azurestaticapps.net cloudapp.net
    cloudapp.azure.com azurecontainer.io azurecontainerapps.io azure-api.net azurefd.net
    azureedge.net trafficmanager.net azure-mobile.net azurehdinsight.net
    github.io githubusercontent.com gitlab.io herokuapp.com appspot.com web.app
    firebaseapp.com pages.dev workers.dev netlify.app vercel.app onrender.com fly.dev
    cloudfront.net amazonaws.com elasticbeanstalk.com blogspot.com ngrok.io ngrok-free.app
    ngrok.app trycloudflare.com glitch.me repl.co
"""
PUBLIC_SUFFIXES = frozenset(_PUBLIC_SUFFIX_TABLE.split())

_DNS_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def is_valid_host(host: str) -> bool:
    """True for an IP address or a DNS name (lower case, ASCII, labels of 1 to 63 letters,
    digits, ``-`` or ``_``, 253 characters at most). Anything else — a ``\\``, an empty label
    as in ``a..example.com``, a ``%`` escape, non-ASCII — could be read differently by
    whatever resolves it, so it never matches an allowed host."""
    if not host:
        return False
    if len(host) <= 253 and all(
        0 < len(label) <= 63 and _DNS_CHARS.issuperset(label) for label in host.split(".")
    ):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def public_suffix_problem(pattern: str) -> Optional[str]:
    """Why an ``allowed_hosts`` pattern (``host`` or ``.suffix``, lower case) allows a public
    suffix, or ``None`` when it does not."""
    name = pattern.lstrip(".").rstrip(".")
    if pattern.startswith(".") and "." not in name:
        return (f"allows every host under the top-level domain {name!r}: "
                "list your API's own host names")
    if name in PUBLIC_SUFFIXES:
        return (f"is a public suffix, under which anyone can own a name: list your API's own "
                f"host names, like 'myapi.{name}'")
    return None


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

    __slots__ = ("_exact", "_suffixes", "_told", "_verdicts", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(sorted({p.strip().lower().rstrip(".") for p in patterns if p}))
        self._exact = frozenset(p.lstrip(".") for p in self.patterns)
        self._suffixes = tuple(p for p in self.patterns if p.startswith("."))
        self._verdicts: dict[tuple[str, str], bool] = {}
        self._told: set[tuple[str, ...]] = set()

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
        verdict = self._decide(scheme, host)
        if len(self._verdicts) < 4096:
            self._verdicts[(scheme, host)] = verdict
        return verdict

    def _decide(self, scheme: str, host: str) -> bool:
        return self.refusal(scheme, host) is None

    def refusal(self, scheme: str, host: str) -> Optional[str]:
        """Why a request to ``scheme://host`` may not carry the token (``None`` if it may).
        Not cached: for the slow path and for logging."""
        scheme = scheme.lower()
        host = host.strip("[]").lower().rstrip(".")
        if scheme == "http":
            if not is_loopback(host):
                return "plain http is allowed only to loopback hosts"
        elif scheme != "https":
            return f"scheme {scheme!r} is neither https nor http"
        if not is_valid_host(host):
            return "not a valid host name or IP address"
        if host in self._exact or any(host.endswith(suffix) for suffix in self._suffixes):
            return None
        return "host not allowed for the profile (allowed_hosts, or the scope's host)"

    def first_time(self, *key: str) -> bool:
        """True the first time ``key`` is asked about: to say why a host gets no token once,
        not on every request (bounded like the verdicts)."""
        if key in self._told:
            return False
        if len(self._told) < 4096:
            self._told.add(key)
        return True

    def __repr__(self) -> str:
        return f"HostPolicy({list(self.patterns)!r})"
