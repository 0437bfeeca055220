"""The Azure CLI's sign-in: reuse ``az login`` without running ``az`` for every token.

The CLI keeps its sign-in in the profile's ``azure_config_dir``, else ``$AZURE_CONFIG_DIR``,
else ``~/.azure``: MSAL's token cache
``msal_token_cache.json`` (plain JSON on Linux and macOS) and ``azureProfile.json`` (the
subscriptions, each with its tenant and user). This flow picks an account (the profile's
``username``, else the default subscription's user) and a tenant (the profile's ``tenant``, else
that subscription's), finds the account's refresh token (for the profile's client id, by default
the CLI's own, or a family refresh token) and redeems it at ``{authority}/{tenant}/oauth2/v2.0/
token`` for the profile's scope. It only reads the CLI's files, never writes them, and does not
keep the refresh token anywhere: the CLI's cache stays the one source of truth, so ``az logout``
and ``az login`` as someone else take effect at the next token. When the cache cannot be read
(absent, or encrypted as on Windows), holds no usable sign-in, or the CLI is signed in as a
service principal or a managed identity, it runs ``az account get-access-token`` instead
(without a shell, from a system folder, with a timeout that stops its whole process tree).
:func:`cache_identity` names the account and tenant that would be used, for the cache key. File
reads and the ``az`` run (:mod:`authlayer._process`) are :class:`~authlayer._actions.Call` actions;
the token request is :mod:`authlayer.oauth`'s (the shared refresh grant).
"""

from __future__ import annotations

import configparser
import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from .. import jwt
from .._actions import Action, call
from .._process import run, which
from .._record import replace
from ..errors import TokenError, redact
from ..oauth import refresh_grant, refresh_time
from ..profile import Profile, Secret
from ..token import TokenResult
from . import FlowContext

__all__ = ["AZURE_CLI_CLIENT_ID", "AZ_TIMEOUT", "CliState", "acquire", "available",
           "cache_identity", "config_dir", "find_az", "read_state"]

# The Azure CLI's own public client: its refresh tokens are only good for this id (and the
# family of Microsoft's apps). The default client_id of this flow.
AZURE_CLI_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"

CACHE_FILE = "msal_token_cache.json"
ENCRYPTED_CACHE_FILE = "msal_token_cache.bin"
PROFILE_FILE = "azureProfile.json"
CONFIG_FILE = "config"
AZ_TIMEOUT = 30.0
REREAD_DELAY = 0.05  # a cache file caught half-written by the CLI is read again after this
FAMILY_ID = "1"

# Each cloud's names of its sign-in host; MSAL treats each group as one environment.
_CLOUD_HOSTS = (
    frozenset({"login.microsoftonline.com", "login.windows.net", "login.microsoft.com",
               "sts.windows.net"}),
    frozenset({"login.chinacloudapi.cn", "login.partner.microsoftonline.cn"}),
    frozenset({"login.microsoftonline.us", "login.usgovcloudapi.net"}),
)

# What may be passed to az on its command line (on Windows az is a .cmd file, whose arguments
# cmd.exe parses again): no spaces, quotes, % or shell characters, and no leading "-".
_SAFE_ARGUMENT = re.compile(r"[0-9A-Za-z_.:/-]+")
# How knack (the CLI's configuration) reads booleans
_BOOLEANS = {"1": True, "yes": True, "true": True, "on": True,
             "0": False, "no": False, "false": False, "off": False}

# Why a refresh was refused, by AADSTS code, said in the Azure CLI's terms.
_REASONS = {
    700082: "the Azure CLI's sign-in was unused for 90 days and has expired",
    70008: "the Azure CLI's sign-in has expired",
    50173: "the Azure CLI's sign-in was revoked (password changed?)",
    50076: "this tenant requires multi-factor authentication",
    50079: "this tenant requires multi-factor enrolment",
    53003: "Conditional Access blocks the Azure CLI's sign-in here",
    50020: "the account is not in this tenant",
    65001: "consent is missing for the Azure CLI in this tenant",
}


def config_dir(profile: Optional[Profile] = None) -> Path:
    """The Azure CLI's folder: the profile's ``azure_config_dir``, else ``$AZURE_CONFIG_DIR``,
    else ``~/.azure``."""
    if profile is not None and profile.azure_config_dir:
        return Path(profile.azure_config_dir)
    raw = os.environ.get("AZURE_CONFIG_DIR", "").strip()
    return Path(os.path.expanduser(raw)) if raw else Path.home() / ".azure"


@dataclass(frozen=True)
class CliState:
    """What the CLI's folder holds. ``cache`` is ``None`` when it cannot be read, and
    ``cache_problem`` says why."""

    folder: str
    cache: Optional[dict[str, Any]] = field(default=None, repr=False)
    cache_problem: Optional[str] = None
    subscriptions: tuple[dict[str, Any], ...] = ()

    @property
    def cache_path(self) -> str:
        return os.path.join(self.folder, CACHE_FILE)

    @property
    def default_subscription(self) -> Optional[dict[str, Any]]:
        return next((s for s in self.subscriptions if s.get("isDefault") is True), None)

    def section(self, name: str) -> list[dict[str, Any]]:
        entries = (self.cache or {}).get(name)
        if not isinstance(entries, dict):
            return []
        return [e for e in entries.values() if isinstance(e, dict)]


def _pause() -> None:
    time.sleep(REREAD_DELAY)


def _read_json(path: Path) -> Any:
    """A JSON file of the CLI's. One that is not JSON is read again once, a moment later: the
    CLI may have been caught writing it."""
    # utf-8-sig: the CLI on Windows writes azureProfile.json with a byte order mark
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting: not JSON to us
        _pause()
    return json.loads(path.read_bytes().decode("utf-8-sig"))


def _encrypted(folder: Path) -> Optional[str]:
    """Why the CLI's token cache is its encrypted ``msal_token_cache.bin`` (so that a
    ``msal_token_cache.json`` beside it is stale), or ``None``: ``core.encrypt_token_cache``
    (``$AZURE_CORE_ENCRYPT_TOKEN_CACHE``, else the CLI's ``config`` file) when set, else whether
    the ``.bin`` file exists."""
    setting = os.environ.get("AZURE_CORE_ENCRYPT_TOKEN_CACHE")
    where = "$AZURE_CORE_ENCRYPT_TOKEN_CACHE"
    if setting is None:
        parser = configparser.ConfigParser(interpolation=None)
        # A broken file: the CLI would complain itself; the files decide.
        with contextlib.suppress(configparser.Error, UnicodeDecodeError, OSError):
            parser.read(folder / CONFIG_FILE, encoding="utf-8")
        setting = parser.get("core", "encrypt_token_cache", fallback=None)
        where = f"encrypt_token_cache in {folder / CONFIG_FILE}"
    flag = _BOOLEANS.get((setting or "").strip().lower())
    if flag is not None:
        return f"the CLI encrypts its token cache ({where})" if flag else None
    if (folder / ENCRYPTED_CACHE_FILE).exists():
        return f"the CLI keeps its token cache encrypted in {ENCRYPTED_CACHE_FILE}"
    return None


def read_state(folder: Path) -> CliState:
    """Read the CLI's token cache and profile (blocking; read only)."""
    cache: Optional[dict[str, Any]] = None
    problem = _encrypted(folder)
    if problem is not None:
        problem = f"is not used: {problem}"
    else:
        try:
            loaded = _read_json(folder / CACHE_FILE)
            if isinstance(loaded, dict):
                cache = loaded
            else:
                problem = "is not an MSAL token cache"
        except FileNotFoundError:
            problem = "does not exist"
        except (UnicodeDecodeError, ValueError, RecursionError):
            problem = "is not plain JSON (encrypted?)"
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror})"
    subscriptions: tuple[dict[str, Any], ...] = ()
    try:
        doc = _read_json(folder / PROFILE_FILE)
        if isinstance(doc, dict) and isinstance(doc.get("subscriptions"), list):
            subscriptions = tuple(s for s in doc["subscriptions"] if isinstance(s, dict))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        pass  # no subscriptions: the profile's username and tenant, or the cache, must do
    return CliState(str(folder), cache, problem, subscriptions)


# --------------------------------------------------------------------------- choosing


def _environments(profile: Profile) -> frozenset[str]:
    """The cache ``environment`` values that belong to the profile's authority: its host name
    and every other name of that cloud's sign-in host. MSAL writes the authority's host name
    without its port (``urlparse(token_endpoint).hostname``), so a port is no part of it."""
    host = (urlsplit(profile.authority).hostname or "").lower()
    return next((names for names in _CLOUD_HOSTS if host in names), frozenset({host}))


def _login_hint(tenant: Optional[str]) -> str:
    return f"az login --tenant {tenant}" if tenant else "az login"


def _user_of(subscription: Mapping[str, Any]) -> tuple[str, str]:
    user = subscription.get("user")
    if not isinstance(user, dict):
        return "", ""
    return str(user.get("name") or ""), str(user.get("type") or "user")


def _is_cli(client_id: Optional[str]) -> bool:
    return (client_id or "").lower() == AZURE_CLI_CLIENT_ID


@dataclass(frozen=True)
class _Choice:
    username: str
    tenant: str
    home_account_id: str
    refresh_token: str = field(repr=False)
    client_id: str = ""  # the client the refresh token was issued to


class _NotSignedIn(TokenError):
    """No usable sign-in in the CLI's cache: ``az`` may still be asked. ``reason`` is the
    message without the hint."""

    def __init__(self, profile: Profile, reason: str, tenant: Optional[str]) -> None:
        self.reason = reason
        self.tenant = tenant
        super().__init__(reason, profile=profile.name, error="azure_cli_not_signed_in",
                         hint=f"sign in with: {_login_hint(tenant)}")


def _not_signed_in(profile: Profile, message: str, tenant: Optional[str]) -> TokenError:
    return _NotSignedIn(profile, message, tenant)


def _other_client(profile: Profile, exc: Optional[TokenError] = None) -> TokenError:
    """The profile's client_id is not one that can redeem the CLI's refresh token."""
    return TokenError(
        f"client_id {profile.client_id} cannot use the Azure CLI's sign-in: only the Azure "
        f"CLI's own client id ({AZURE_CLI_CLIENT_ID}) or another client of Microsoft's family "
        "of apps can redeem its refresh token",
        profile=profile.name, error=exc.error if exc is not None else "azure_cli_other_client",
        error_codes=exc.error_codes if exc is not None else (),
        correlation_id=exc.correlation_id if exc is not None else None,
        status=exc.status if exc is not None else None,
        hint="remove client_id from the profile to use the Azure CLI's, or sign in as your app "
             "with its own flow (device_code, authorization_code)",
    )


def _choose(profile: Profile, state: CliState) -> Optional[_Choice]:
    """The account, tenant and refresh token to use; ``None`` when ``az`` itself must be asked
    (the CLI is signed in as a service principal or managed identity)."""
    default = state.default_subscription
    if profile.username:
        username = profile.username
        own = [s for s in state.subscriptions if _user_of(s)[0].lower() == username.lower()]
        subscription = default if default in own else (own[0] if own else None)
    elif default is not None:
        subscription = default
        username = _user_of(default)[0]
    else:
        names = {str(a.get("username") or "") for a in state.section("Account")} - {""}
        if len(names) != 1:
            which = "no account" if not names else f"{len(names)} accounts"
            raise _not_signed_in(
                profile,
                f"the Azure CLI has {which} and no default subscription in {state.folder}"
                + ("; set username in the profile to pick one" if names else ""),
                profile.tenant,
            )
        username, subscription = names.pop(), None
    if subscription is not None and _user_of(subscription)[1] != "user":
        return None
    tenant = profile.tenant or (str(subscription.get("tenantId") or "") if subscription else "")
    environments = _environments(profile)
    accounts = [
        a for a in state.section("Account")
        if str(a.get("username") or "").lower() == username.lower()
        and str(a.get("environment") or "").lower() in environments
        and a.get("home_account_id")
    ]
    if not accounts:
        raise _not_signed_in(
            profile,
            f"the Azure CLI is not signed in as {username!r} at "
            f"{urlsplit(profile.authority).netloc} (no account in {state.cache_path})",
            tenant or None,
        )
    accounts.sort(key=lambda a: str(a.get("realm") or "").lower() != tenant.lower())
    home = str(accounts[0]["home_account_id"])
    if not tenant:
        tenant = str(accounts[0].get("realm") or "") or home.partition(".")[2] or "organizations"
    client_id = (profile.client_id or "").lower()
    tokens = [
        t for t in state.section("RefreshToken")
        if t.get("home_account_id") == home
        and str(t.get("environment") or "").lower() in environments
        and isinstance(t.get("secret"), str) and t["secret"]
    ]
    tokens.sort(key=lambda t: (str(t.get("client_id") or "").lower() != client_id,
                               str(t.get("family_id") or "") != FAMILY_ID))
    usable = [t for t in tokens if str(t.get("client_id") or "").lower() == client_id
              or str(t.get("family_id") or "") == FAMILY_ID]
    if not usable:
        if tokens and not _is_cli(client_id):
            raise _other_client(profile)
        raise _not_signed_in(
            profile,
            f"the Azure CLI's cache {state.cache_path} has no refresh token for {username!r} "
            f"that client {profile.client_id} can use",
            tenant,
        )
    chosen = usable[0]
    return _Choice(username, tenant, home, str(chosen["secret"]),
                   str(chosen.get("client_id") or "").lower())


def _refused(profile: Profile, exc: TokenError, choice: _Choice) -> TokenError:
    """The refusal of a refresh, with what to run."""
    if exc.error not in ("invalid_grant", "interaction_required", "unauthorized_client",
                         "invalid_client"):
        return exc
    client_id = (profile.client_id or "").lower()
    if (not _is_cli(client_id) and choice.client_id != client_id
            and not any(c in _REASONS for c in exc.error_codes)
            and (exc.error != "interaction_required")):
        # Another client's (family) refresh token, refused to this client: not a sign-in
        # problem that az login would solve.
        return _other_client(profile, exc)
    reason = next((_REASONS[c] for c in exc.error_codes if c in _REASONS),
                  f"the Azure CLI's sign-in of {choice.username!r} was refused in this tenant")
    return TokenError(
        profile=profile.name, error=exc.error, error_codes=exc.error_codes,
        description=exc.description, correlation_id=exc.correlation_id, status=exc.status,
        suberror=exc.suberror, claims=exc.claims,
        hint=f"{reason}: sign in again with: {_login_hint(choice.tenant)}",
    )


def cache_identity(profile: Profile) -> str:
    """Whose tokens the profile gets now, for the cache key: ``"<home_account_id>|<tenant>"`` of
    the account and tenant the CLI's files choose; when ``az`` would be asked, ``"az:<user>|
    <tenant>"`` of the default subscription; ``""`` when that cannot be told. Called once per
    process, when the profile is first used: ``az login`` as someone else, ``az logout`` or
    ``az account set`` to another tenant are seen by the next process. Never raises."""
    try:
        state = read_state(config_dir(profile))
        if state.cache is not None:
            try:
                choice = _choose(profile, state)
            except TokenError:
                return ""  # not signed in (az may be asked): no one's tokens to tell apart
            if choice is not None:
                return f"{choice.home_account_id}|{choice.tenant}"
        default = state.default_subscription
        if default is None:
            return ""
        return f"az:{_user_of(default)[0]}|{profile.tenant or default.get('tenantId') or ''}"
    except Exception:  # a cache key never fails; acquire() reports the problem
        return ""


# --------------------------------------------------------------------------- az itself


def _argument(profile: Profile, key: str, value: str) -> str:
    """``value`` if it may go on az's command line, else a ConfigError naming ``key``."""
    if not _SAFE_ARGUMENT.fullmatch(value) or value.startswith("-"):
        raise profile.config_error(
            f"{key} {value[:80]!r} cannot be passed to az account get-access-token: it may "
            "hold only letters, digits and _ . : / - and must not start with -",
            key=key,
        )
    return value


def _az_arguments(profile: Profile) -> list[str]:
    scopes = profile.scopes
    if len(scopes) == 1 and scopes[0].endswith("/.default"):
        args = ["--resource", _argument(profile, "scope", scopes[0][: -len("/.default")])]
    else:
        args = ["--scope", *(_argument(profile, "scope", s) for s in scopes)]
    if profile.tenant:
        args += ["--tenant", _argument(profile, "tenant", profile.tenant)]
    return args


def find_az() -> Optional[str]:
    """The ``az`` command on ``PATH``, or ``None``. Only absolute ``PATH`` entries are searched:
    never the current folder (which Windows would search first)."""
    return which("az")


def run_az(profile: Profile, why: str, cache_error: Optional[TokenError] = None
           ) -> dict[str, Any]:
    """``az account get-access-token`` for the profile (blocking): its JSON answer.

    ``why`` says why the CLI's cache could not be used. ``cache_error``, when given, is raised
    as it is if ``az`` is not on ``PATH`` (the cache was readable but held no usable sign-in).
    """
    tenant = profile.tenant
    args = _az_arguments(profile)
    exe = find_az()
    if exe is None:
        if cache_error is not None:
            raise cache_error
        raise _not_signed_in(
            profile,
            f"cannot use the Azure CLI's sign-in: {why}, and the az command is not on PATH to "
            "ask instead (install the Azure CLI)",
            tenant,
        )
    # az reads the same folder as we did.
    env = {"AZURE_CONFIG_DIR": profile.azure_config_dir} if profile.azure_config_dir else None
    try:
        status, out, err = run([exe, "account", "get-access-token", "--output", "json", *args],
                               timeout=AZ_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        raise TokenError(f"az account get-access-token did not finish within {AZ_TIMEOUT:g} s",
                         profile=profile.name, error="azure_cli_failed") from None
    except OSError as exc:
        raise TokenError(f"az could not run: {exc.strerror}", profile=profile.name,
                         error="azure_cli_failed") from None
    if status != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        said = next((ln for ln in lines if ln.startswith("ERROR")), lines[0] if lines else "")
        raise TokenError(
            f"cannot use the Azure CLI's sign-in: {why}; and az account get-access-token "
            f"failed with exit status {status}"
            + (f": {redact(said.strip())[:300]}" if said else ""),
            profile=profile.name, error="azure_cli_failed",
            hint=f"is the Azure CLI signed in? run: {_login_hint(tenant)}",
        )
    try:
        answer = json.loads(out.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        answer = None
    if not isinstance(answer, dict):
        raise TokenError("az account get-access-token printed something that is not a JSON "
                         "object", profile=profile.name, error="malformed_response")
    return answer


def _expiry(answer: Mapping[str, Any]) -> Optional[int]:
    """``expires_on`` (Unix seconds, newer CLIs) or ``expiresOn`` (local time, older ones)."""
    value = answer.get("expires_on")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    text = answer.get("expiresOn")
    if isinstance(text, str):
        for pattern in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
            try:
                return int(dt.datetime.strptime(text.strip(), pattern).timestamp())  # local
            except ValueError:
                continue
    return None


def _from_az(profile: Profile, answer: Mapping[str, Any], now: float) -> TokenResult:
    token = answer.get("accessToken")
    expires_on = _expiry(answer)
    if not isinstance(token, str) or not token or expires_on is None:
        raise TokenError("az account get-access-token answered without accessToken or its "
                         "expiry", profile=profile.name, error="malformed_response")
    if profile.username:
        try:
            claims = jwt.decode(token)[1]
        except jwt.JWTError:
            claims = {}
        names = {str(claims[k]).lower() for k in ("upn", "unique_name", "preferred_username")
                 if k in claims}
        if names and profile.username.lower() not in names:
            raise _not_signed_in(
                profile,
                f"az is signed in as someone else than {profile.username!r}",
                profile.tenant,
            )
    token_type = answer.get("tokenType")
    return TokenResult(
        access_token=token, expires_on=expires_on, refresh_on=refresh_time(now, expires_on),
        token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
    )


# --------------------------------------------------------------------------- the flow


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """A token for the profile's scope from the Azure CLI's sign-in."""
    profile = ctx.profile
    folder = config_dir(profile)
    state = yield from call(lambda: read_state(folder))
    choice: Optional[_Choice] = None
    cache_error: Optional[_NotSignedIn] = None
    if state.cache is None:
        why = f"{state.cache_path} {state.cache_problem}"
    else:
        try:
            choice = _choose(profile, state)
        except _NotSignedIn as exc:
            # Maybe az knows better (a sign-in the cache does not show): ask it if it is there.
            cache_error = exc
        why = (cache_error.reason if cache_error is not None
               else "it is signed in as a service principal or managed identity")
    if choice is None:
        asked = ctx.clock()  # before az runs: its token's lifetime counts from then
        answer = yield from call(lambda: run_az(profile, why, cache_error))
        return _from_az(profile, answer, asked)
    try:
        result = yield from refresh_grant(
            ctx, Secret(choice.refresh_token), scope=profile.scope, tenant=choice.tenant,
            client_id=profile.client_id or "", what="token request", authenticate=False)
    except TokenError as exc:
        raise _refused(profile, exc, choice) from None
    # The CLI's refresh token stays the source of truth: the new one is not kept.
    return replace(result, refresh_token=None, id_token=None)


def available(profile: Profile) -> Optional[str]:
    """``None`` when the Azure CLI's files hold a sign-in this profile can use, or ``az`` is on
    ``PATH`` and the CLI has subscriptions (``az`` is asked then); else why not. Reads files
    only, never runs ``az``."""
    state = read_state(config_dir(profile))
    why = f"{state.cache_path} {state.cache_problem}"
    if state.cache is not None:
        try:
            if _choose(profile, state) is not None:
                return None
            why = "it is signed in as a service principal or managed identity"
        except _NotSignedIn as exc:
            why = exc.reason
        except TokenError as exc:  # another client id: a mistake, reported when used
            return None if exc.error == "azure_cli_other_client" else str(exc)
    if find_az() is not None and state.subscriptions:
        return None
    if find_az() is None:
        return f"the Azure CLI's sign-in cannot be used ({why}) and az is not on PATH"
    return f"the Azure CLI is not signed in ({why}): run {_login_hint(profile.tenant)}"


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import COMMON, FlowSpec  # noqa: E402 - kept next to the entry it declares

FLOW = FlowSpec(
    name="azure_cli",
    acquire=acquire,
    keys=COMMON | {"tenant", "client_id", "username", "azure_config_dir"},
    default_client_id=AZURE_CLI_CLIENT_ID,
    # client_id names the CLI's client here, not the app registration [defaults] is about.
    not_from_defaults=frozenset({"client_id"}),
    file_cache=True,
    identity=cache_identity,
    summary="the Azure CLI's sign-in (az login)",
    available=available,
)
