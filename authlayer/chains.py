"""Which member of a chain serves here (CONTRACT §8): flow ``chain`` (the profiles its
``chain`` key names) and flow ``auto`` (the built-in sources, built here from the ``auto``
profile and the environment, narrowed by ``$AZURE_TOKEN_CREDENTIALS``).

:func:`resolve` is what the provider calls when it binds a profile: a profile that stands for
others comes back as the member to use, with a :class:`Choice` that says which and why the ones
before it were skipped. Members are tried in order; one that is not available here (its
flow's or a secret source's ``available``: no token file, no managed identity endpoint, an
unset variable, a tool not on ``PATH``) is skipped; the first available one is chosen. Whether
it then *works* is the member's business: its errors are its own, and nothing falls through to
the next member. The member that gave a token is remembered for the process (:func:`remember`),
and later resolutions go straight to it. Blocking: deciding availability may probe IMDS for
about a second; async callers resolve in a worker thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Callable, Optional, Union

from . import config, registry
from ._record import record
from .config._keys import Values, parse_values
from .errors import ConfigError, TokenError
from .flows._workload_env import ENV_CLIENT_ID, ENV_FEDERATED_TOKEN_FILE, ENV_TENANT_ID
from .flows._workload_env import prepare as workload_prepare
from .profile import Profile

__all__ = [
    "ENV_TOKEN_CREDENTIALS",
    "SOURCES",
    "ChainUnavailable",
    "Choice",
    "forget",
    "remember",
    "resolve",
]

ENV_TOKEN_CREDENTIALS = "AZURE_TOKEN_CREDENTIALS"
ENV_CLIENT_SECRET = "AZURE_CLIENT_SECRET"
ENV_CERTIFICATE_PATH = "AZURE_CLIENT_CERTIFICATE_PATH"
ENV_CERTIFICATE_PASSWORD = "AZURE_CLIENT_CERTIFICATE_PASSWORD"
ENV_SEND_CERTIFICATE_CHAIN = "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN"

# flow auto's sources, in order (DefaultAzureCredential's, less those that need a person at a
# browser or an editor).
SOURCES = ("environment", "workload_identity", "managed_identity", "azure_cli", "azd",
           "azure_powershell")
# $AZURE_TOKEN_CREDENTIALS: what the Azure tools accept (case-insensitive), and our own names.
_NARROWED: dict[str, tuple[str, ...]] = {
    "dev": ("azure_cli", "azd", "azure_powershell"),
    "prod": ("environment", "workload_identity", "managed_identity"),
    "environmentcredential": ("environment",),
    "workloadidentitycredential": ("workload_identity",),
    "managedidentitycredential": ("managed_identity",),
    "azureclicredential": ("azure_cli",),
    "azuredeveloperclicredential": ("azd",),
    "azurepowershellcredential": ("azure_powershell",),
    **{name: (name,) for name in SOURCES},
}
# Names the Azure tools know for credentials authlayer's auto does not have.
_NOT_IN_AUTO = ("visualstudiocodecredential", "interactivebrowsercredential",
                "sharedtokencachecredential", "brokercredential")
# How deep chains may name chains (cycles are refused when a chain is loaded).
MAX_DEPTH = 8


@record
class Choice:
    """How a chain was resolved: ``flow`` (``"chain"`` or ``"auto"``) profile ``chain`` of the
    file ``path`` uses ``member`` (a profile's name, or auto's source); ``skipped`` are the
    members before it and why; ``remembered``: it gave a token before in this process, so the
    others were not looked at; ``inner``: the member is a chain itself, resolved so."""

    flow: str
    chain: str
    path: Optional[str]
    member: str
    skipped: tuple[tuple[str, str], ...] = ()
    remembered: bool = False
    inner: Optional[Choice] = None

    def describe(self) -> str:
        """``'vm'``, or ``'dev' -> 'cli'`` through a chain of chains."""
        return repr(self.member) + (f" -> {self.inner.describe()}" if self.inner else "")


class ChainUnavailable(TokenError):
    """No member of a chain is available here; ``skipped`` says why, member by member."""

    def __init__(self, head: Profile, kind: str, skipped: Sequence[tuple[str, str]]) -> None:
        self.skipped = tuple(skipped)
        listed = "; ".join(f"{name}: {why}" for name, why in skipped) or "it has no members"
        what = "no source of flow 'auto'" if kind == "auto" else "no member of the chain"
        hint = ("each source is skipped when its environment is absent: sign in (az login, "
                "azd auth login, Connect-AzAccount), or run where a managed or workload "
                f"identity is, or set AZURE_CLIENT_ID and a secret; ${ENV_TOKEN_CREDENTIALS} "
                "narrows the sources" if kind == "auto" else
                "a member is skipped when its environment is absent: authlayer check NAME "
                "shows what each member needs")
        super().__init__(f"{what} is available here ({listed})", profile=head.name,
                         error="chain_unavailable", hint=hint)


_lock = threading.Lock()
# (profiles file, chain) -> the member that gave a token in this process
_chosen: dict[tuple[Optional[str], str], str] = {}


def remember(choice: Choice) -> None:
    """The chain's member gave a token: use it directly from now on, in this process."""
    with _lock:
        while choice is not None:
            _chosen[(choice.path, choice.chain)] = choice.member
            choice = choice.inner  # type: ignore[assignment]


def forget() -> None:
    """Forget the members remembered (``authlayer.reset``)."""
    with _lock:
        _chosen.clear()


def resolve(name: Optional[str], *, path: Any = None, scope: Any = None,
            tenant: Optional[str] = None) -> tuple[Profile, Optional[Choice]]:
    """The profile ``name`` of the profiles file ``path`` (as ``config=`` chooses it) with the
    call's overrides — or, for a chain, the member to use and
    how it was chosen. Raises :class:`ConfigError`, or :class:`ChainUnavailable` (a
    :class:`TokenError`) when no member is available here."""
    head = config.load_profile(name, config=path, scope=scope, tenant=tenant)
    if registry.flow(head.flow).stands_for is None:
        return head, None
    return choose(head, scope=scope, tenant=tenant)


Loader = Callable[[], Union[Profile, str]]


def choose(head: Profile, *, scope: Any = None, tenant: Optional[str] = None,
           depth: int = 0) -> tuple[Profile, Choice]:
    """The member of chain ``head`` to use here, and how it was chosen."""
    kind = registry.flow(head.flow).stands_for or "chain"
    members = (_chain_members(head, scope, tenant) if kind == "chain"
               else _auto_members(head, tenant))
    with _lock:
        remembered = _chosen.get((head.config_path, head.name))
    if remembered not in [label for label, _ in members]:
        remembered = None
    # Narrowed to one source, auto uses it as it is (no IMDS probe), as the Azure tools do.
    probe = not (kind == "auto" and len(members) == 1)
    skipped: list[tuple[str, str]] = []

    def chosen(label: str, inner: Optional[Choice] = None) -> Choice:
        return Choice(kind, head.name, head.config_path, label, tuple(skipped),
                      remembered is not None, inner)

    for label, load in members:
        if remembered is not None and label != remembered:
            skipped.append((label, f"not tried: {remembered!r} gave a token before"))
            continue
        found = load()
        if isinstance(found, str):
            skipped.append((label, found))
            continue
        if registry.flow(found.flow).stands_for is not None:
            if depth >= MAX_DEPTH:
                raise head.config_error(f"chains name chains more than {MAX_DEPTH} deep",
                                        key="chain")
            try:
                member, inner = choose(found, scope=scope, tenant=tenant, depth=depth + 1)
            except ChainUnavailable as exc:
                skipped.append((label, "none of its members is available ("
                                + "; ".join(f"{n}: {w}" for n, w in exc.skipped) + ")"))
                continue
            return member, chosen(label, inner)
        if remembered is None and probe:
            why = registry.unavailable(found)
            if why is not None:
                skipped.append((label, why))
                continue
        return found, chosen(label)
    raise ChainUnavailable(head, kind, skipped)


def _chain_members(head: Profile, scope: Any, tenant: Optional[str]) -> list[tuple[str, Loader]]:
    def loader(name: str) -> Loader:
        return lambda: config.load_member(head, name, scope=scope, tenant=tenant)

    return [(name, loader(name)) for name in head.chain]


# --------------------------------------------------------------------------------------------
# flow auto: its sources as profiles


def narrowed(head: Profile) -> tuple[str, ...]:
    """auto's sources, narrowed by ``$AZURE_TOKEN_CREDENTIALS`` as the Azure tools do."""
    raw = os.environ.get(ENV_TOKEN_CREDENTIALS, "")
    value = raw.strip().lower()
    if not value:
        return SOURCES
    found = _NARROWED.get(value)
    if found is not None:
        return found
    shown = repr(raw[:60])
    if value in _NOT_IN_AUTO:
        why = "names a credential that flow 'auto' does not have"
    else:
        why = "is not a value it takes"
    raise ConfigError(
        f"${ENV_TOKEN_CREDENTIALS} ({shown}) {why}: set it to 'dev', 'prod' or one of "
        + ", ".join(repr(n) for n in list(_NARROWED)[2:2 + 6]) + " (or authlayer's names: "
        + ", ".join(repr(n) for n in SOURCES) + "), or unset it",
        path=head.config_path, profile=head.name)


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _auto_members(head: Profile, tenant: Optional[str]) -> list[tuple[str, Loader]]:
    build: dict[str, Loader] = {
        "environment": lambda: _environment(head, tenant),
        "workload_identity": lambda: _workload(head, tenant),
        "managed_identity": lambda: _managed(head),
        "azure_cli": lambda: _tool(head, tenant, "azure_cli"),
        "azd": lambda: _tool(head, tenant, "azd"),
        "azure_powershell": lambda: _tool(head, tenant, "azure_powershell"),
    }
    return [(source, build[source]) for source in narrowed(head)]


def _values(head: Profile, tenant: Optional[str]) -> Values:
    values = Values(head.config_path, head.name)
    if tenant is not None:
        values.set("tenant", tenant, "from the tenant= argument")
    return values


def _unset(*names: str) -> list[str]:
    return ["$" + n for n in names if not _env(n)]


def _environment(head: Profile, tenant: Optional[str]) -> Union[Profile, str]:
    """An app's secret or certificate named by the environment (EnvironmentCredential)."""
    missing = _unset(ENV_CLIENT_ID) if tenant is not None else _unset(ENV_TENANT_ID,
                                                                       ENV_CLIENT_ID)
    secret, certificate = _env(ENV_CLIENT_SECRET), _env(ENV_CERTIFICATE_PATH)
    if not secret and not certificate:
        missing.append(f"${ENV_CLIENT_SECRET} or ${ENV_CERTIFICATE_PATH}")
    if missing:
        return "not set: " + ", ".join(missing)
    values = _values(head, tenant)
    if tenant is None:
        values.set("tenant", _env(ENV_TENANT_ID), f"from ${ENV_TENANT_ID}")
    values.set("client_id", _env(ENV_CLIENT_ID), f"from ${ENV_CLIENT_ID}")
    if secret:
        values.set("client_secret", {"env": ENV_CLIENT_SECRET}, f"from ${ENV_CLIENT_SECRET}")
    else:
        table: dict[str, Any] = {"path": os.path.abspath(os.path.expanduser(certificate))}
        if _env(ENV_CERTIFICATE_PASSWORD):
            table["password"] = {"env": ENV_CERTIFICATE_PASSWORD}
        if _env(ENV_SEND_CERTIFICATE_CHAIN):  # any value, as azure-identity reads it
            table["send_x5c"] = True
        values.set("certificate", table, f"from ${ENV_CERTIFICATE_PATH}")
    return _member(head, "environment", "client_credentials", parse_values(
        values, registry.flow("client_credentials")))


def _workload(head: Profile, tenant: Optional[str]) -> Union[Profile, str]:
    """The federated token the workload identity webhook hands a Kubernetes pod."""
    needed = (ENV_CLIENT_ID, ENV_FEDERATED_TOKEN_FILE)
    missing = _unset(*needed) if tenant is not None else _unset(ENV_TENANT_ID, *needed)
    if missing:
        return "not set: " + ", ".join(missing)
    values = _values(head, tenant)
    values.set("authority", head.authority, "")  # the profile's (or $AZURE_AUTHORITY_HOST)
    prepared = workload_prepare(values)
    spec = registry.flow("workload_identity")
    return _member(head, "workload_identity", spec.name,
                   {**parse_values(values, spec), **prepared})


def _managed(head: Profile) -> Union[Profile, str]:
    """The host's managed identity (a user-assigned one when $AZURE_CLIENT_ID names it, as
    DefaultAzureCredential does)."""
    if len(head.scopes) != 1:
        return (f"a managed identity gives a token for one resource at a time, and scope has "
                f"{len(head.scopes)} scopes")
    values = _values(head, None)
    if _env(ENV_CLIENT_ID):
        values.set("client_id", _env(ENV_CLIENT_ID), f"from ${ENV_CLIENT_ID}")
    spec = registry.flow("managed_identity")
    return _member(head, "managed_identity", spec.name, parse_values(values, spec))


def _tool(head: Profile, tenant: Optional[str], flow: str) -> Profile:
    """A developer tool's sign-in: the Azure CLI, azd or Azure PowerShell."""
    spec = registry.flow(flow)
    fields = parse_values(_values(head, tenant), spec)
    fields.setdefault("tenant", head.tenant)
    if spec.default_client_id is not None:
        fields["client_id"] = spec.default_client_id
    if spec.takes("azure_config_dir"):
        fields["azure_config_dir"] = head.azure_config_dir
    return _member(head, flow, flow, fields)


def _member(head: Profile, source: str, flow: str, fields: dict[str, Any]) -> Profile:
    """A source of ``auto`` as a profile: the ``auto`` profile's scope, hosts, cache, timeout
    and (where the flow takes them) authority, cae and allowed tenants, with ``fields``."""
    spec = registry.flow(flow)
    inherited: dict[str, Any] = {
        "scopes": head.scopes, "hosts": head.hosts, "allowed_hosts": head.allowed_hosts,
        "cache": head.cache, "timeout": head.timeout, "config_path": head.config_path,
    }
    if spec.takes("authority"):
        inherited["authority"] = head.authority
    if spec.takes("cae"):
        inherited["cae"] = head.cae
    if spec.takes("additionally_allowed_tenants"):
        inherited["additionally_allowed_tenants"] = head.additionally_allowed_tenants
    return Profile(name=f"{head.name}[{source}]", flow=flow, **{**inherited, **fields})
