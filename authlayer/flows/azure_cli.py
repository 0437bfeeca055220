"""The Azure CLI's sign-in: reuse ``az login`` without running ``az`` for every token.

The CLI keeps its sign-in in ``$AZURE_CONFIG_DIR`` (default ``~/.azure``): MSAL's token cache
``msal_token_cache.json`` (plain JSON on Linux and macOS) and ``azureProfile.json`` (the
subscriptions, each with its tenant and user). This flow picks an account (the profile's
``username``, else the default subscription's user) and a tenant (the profile's ``tenant``, else
that subscription's), finds the account's refresh token (for the profile's client id, by default
the CLI's own, or a family refresh token) and redeems it at ``{authority}/{tenant}/oauth2/v2.0/
token`` for the profile's scope. It only reads the CLI's files, never writes them, and does not
keep the refresh token anywhere: the CLI's cache stays the one source of truth, so ``az logout``
and ``az login`` as someone else take effect at the next token. When the cache cannot be read
(absent, or encrypted as on Windows), or the CLI is signed in as a service principal or a
managed identity, it runs ``az account get-access-token`` instead (without a shell, with a
timeout). File reads and the ``az`` run are :class:`~authlayer._http.Call` actions; HTTP is
:mod:`authlayer._http`'s.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from .. import jwt
from .._http import Action, Call, HttpRequest, refresh_time, send, token_response
from ..errors import TokenError, redact
from ..profile import Profile
from ..token import TokenResult
from . import FlowContext, endpoint

__all__ = ["AZ_TIMEOUT", "CliState", "acquire", "config_dir", "read_state"]

CACHE_FILE = "msal_token_cache.json"
ENCRYPTED_CACHE_FILE = "msal_token_cache.bin"
PROFILE_FILE = "azureProfile.json"
AZ_TIMEOUT = 30.0
FAMILY_ID = "1"

# Names of the public cloud's sign-in host; MSAL treats them as one environment.
_PUBLIC_HOSTS = frozenset(
    {"login.microsoftonline.com", "login.windows.net", "login.microsoft.com", "sts.windows.net"}
)

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


def config_dir() -> Path:
    """The Azure CLI's folder: ``$AZURE_CONFIG_DIR``, else ``~/.azure``."""
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


def _read_json(path: Path) -> Any:
    # utf-8-sig: the CLI on Windows writes azureProfile.json with a byte order mark
    return json.loads(path.read_bytes().decode("utf-8-sig"))


def read_state(folder: Path) -> CliState:
    """Read the CLI's token cache and profile (blocking; read only)."""
    cache: Optional[dict[str, Any]] = None
    problem: Optional[str] = None
    try:
        loaded = _read_json(folder / CACHE_FILE)
        if isinstance(loaded, dict):
            cache = loaded
        else:
            problem = "is not an MSAL token cache"
    except FileNotFoundError:
        problem = (
            f"does not exist (the CLI keeps an encrypted {ENCRYPTED_CACHE_FILE} instead)"
            if (folder / ENCRYPTED_CACHE_FILE).exists() else "does not exist"
        )
    except (UnicodeDecodeError, ValueError):
        problem = "is not plain JSON (encrypted?)"
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror})"
    subscriptions: tuple[dict[str, Any], ...] = ()
    try:
        doc = _read_json(folder / PROFILE_FILE)
        if isinstance(doc, dict) and isinstance(doc.get("subscriptions"), list):
            subscriptions = tuple(s for s in doc["subscriptions"] if isinstance(s, dict))
    except (OSError, UnicodeDecodeError, ValueError):
        pass  # no subscriptions: the profile's username and tenant, or the cache, must do
    return CliState(str(folder), cache, problem, subscriptions)


# --------------------------------------------------------------------------- choosing


def _environments(profile: Profile) -> frozenset[str]:
    """The cache ``environment`` values that belong to the profile's authority: its host (with
    the port, if any), and for the public cloud every alias of it."""
    host = urlsplit(profile.authority).netloc.lower()
    return _PUBLIC_HOSTS if host in _PUBLIC_HOSTS else frozenset({host})


def _login_hint(tenant: Optional[str]) -> str:
    return f"az login --tenant {tenant}" if tenant else "az login"


def _user_of(subscription: Mapping[str, Any]) -> tuple[str, str]:
    user = subscription.get("user")
    if not isinstance(user, dict):
        return "", ""
    return str(user.get("name") or ""), str(user.get("type") or "user")


@dataclass(frozen=True)
class _Choice:
    username: str
    tenant: str
    refresh_token: str = field(repr=False)


def _not_signed_in(profile: Profile, message: str, tenant: Optional[str]) -> TokenError:
    return TokenError(
        message, profile=profile.name, error="azure_cli_not_signed_in",
        hint=f"sign in with: {_login_hint(tenant)}",
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
        raise _not_signed_in(
            profile,
            f"the Azure CLI's cache {state.cache_path} has no refresh token for {username!r} "
            f"that client {profile.client_id} can use",
            tenant,
        )
    return _Choice(username, tenant, str(usable[0]["secret"]))


def _refused(profile: Profile, exc: TokenError, choice: _Choice) -> TokenError:
    """The refusal of a refresh, with what to run."""
    if exc.error not in ("invalid_grant", "interaction_required", "unauthorized_client",
                         "invalid_client"):
        return exc
    reason = next((_REASONS[c] for c in exc.error_codes if c in _REASONS),
                  f"the Azure CLI's sign-in of {choice.username!r} was refused in this tenant")
    return TokenError(
        profile=profile.name, error=exc.error, error_codes=exc.error_codes,
        description=exc.description, correlation_id=exc.correlation_id, status=exc.status,
        suberror=exc.suberror, claims=exc.claims,
        hint=f"{reason}: sign in again with: {_login_hint(choice.tenant)}",
    )


# --------------------------------------------------------------------------- az itself


def _resource_args(profile: Profile) -> list[str]:
    scopes = profile.scopes
    if len(scopes) == 1 and scopes[0].endswith("/.default"):
        return ["--resource", scopes[0][: -len("/.default")]]
    return ["--scope", *scopes]


def run_az(profile: Profile, why: str) -> dict[str, Any]:
    """``az account get-access-token`` for the profile (blocking): its JSON answer."""
    tenant = profile.tenant
    exe = shutil.which("az")
    if exe is None:
        raise _not_signed_in(
            profile,
            f"cannot use the Azure CLI's sign-in: {why}, and the az command is not on PATH to "
            "ask instead (install the Azure CLI)",
            tenant,
        )
    args = [exe, "account", "get-access-token", "--output", "json", *_resource_args(profile)]
    if tenant:
        args += ["--tenant", tenant]
    try:
        done = subprocess.run(
            args, capture_output=True, timeout=AZ_TIMEOUT, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise TokenError(f"az account get-access-token did not finish within {AZ_TIMEOUT:g} s",
                         profile=profile.name, error="azure_cli_failed") from None
    except OSError as exc:
        raise TokenError(f"az could not run: {exc.strerror}", profile=profile.name,
                         error="azure_cli_failed") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        said = next((ln for ln in lines if ln.startswith("ERROR")), lines[0] if lines else "")
        raise TokenError(
            f"cannot use the Azure CLI's sign-in: {why}; and az account get-access-token "
            f"failed with exit status {done.returncode}"
            + (f": {redact(said.strip())[:300]}" if said else ""),
            profile=profile.name, error="azure_cli_failed",
            hint=f"is the Azure CLI signed in? run: {_login_hint(tenant)}",
        )
    try:
        answer = json.loads(done.stdout.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
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
    folder = config_dir()
    state: CliState = yield Call(lambda: read_state(folder))
    choice = _choose(profile, state) if state.cache is not None else None
    if choice is None:
        why = (f"{state.cache_path} {state.cache_problem}" if state.cache is None
               else "it is signed in as a service principal or managed identity")
        answer = yield Call(lambda: run_az(profile, why))
        return _from_az(profile, answer, ctx.clock())
    form = {
        "grant_type": "refresh_token",
        "client_id": profile.client_id or "",
        "refresh_token": choice.refresh_token,
        "scope": profile.scope,
    }
    if ctx.claims:
        form["claims"] = ctx.claims
    request = HttpRequest("POST", endpoint(profile, "token", choice.tenant), form=form,
                          timeout=profile.timeout)
    response = yield from send(request, profile=profile.name)
    try:
        result = token_response(response, profile=profile.name, now=ctx.clock())
    except TokenError as exc:
        raise _refused(profile, exc, choice) from None
    # The CLI's refresh token stays the source of truth: the new one is not kept.
    return replace(result, refresh_token=None, id_token=None)
