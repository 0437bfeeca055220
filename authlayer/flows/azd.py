"""The Azure Developer CLI's sign-in: reuse ``azd auth login`` by running ``azd auth token``.

``azd`` is found on ``PATH`` only (absolute entries, never the current folder) and run without
a shell, from a system folder, with standard input closed and ``NO_COLOR=true``, for at most the
profile's ``timeout`` seconds, after which its whole process tree is stopped
(:mod:`authlayer._process`). Its answer is read as azure-identity reads it: JSON
``{"token": ..., "expiresOn": "<RFC 3339>"}`` on standard output; on failure, the message azd
prints (its JSON ``error`` field, or the older ``consoleMessage``), with "run ``azd auth
login``" when it is not signed in. azd keeps and refreshes its own tokens, so nothing is kept
here beyond the access token. Running azd is a :class:`~authlayer._actions.Call` action.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import subprocess
from collections.abc import Generator
from typing import Any, Optional

from .._actions import Action, call
from .._process import run, safe_argument, which
from ..errors import TokenError, redact
from ..profile import Profile
from ..token import TokenResult
from . import FlowContext
from ._tool import tool_result

__all__ = ["acquire", "available", "run_azd"]

_NOT_SIGNED_IN = "not logged in, run `azd auth login` to login"
# RFC 3339 as azd writes it: seconds, maybe fractions (older azd: nanoseconds), Z or an offset.
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:\.\d+)?([Zz]|[+-]\d\d:\d\d)")
_TOKEN_FIELD = re.compile(r'"token"\s*:\s*"[^"]*"')


def _login(tenant: Optional[str]) -> str:
    return f"azd auth login --tenant-id {tenant}" if tenant else "azd auth login"


def _arguments(profile: Profile, claims: Optional[str]) -> list[str]:
    args = ["auth", "token", "--output", "json", "--no-prompt"]
    for scope in profile.scopes:
        if not safe_argument(scope):
            raise profile.config_error(
                f"scope {scope[:80]!r} cannot be passed to azd: it may hold only letters, "
                "digits and _ . : / - and must not start with -", key="scope")
        args += ["--scope", scope]
    if profile.tenant:
        if not safe_argument(profile.tenant):
            raise profile.config_error(f"tenant {profile.tenant[:80]!r} cannot be passed to azd",
                                       key="tenant")
        args += ["--tenant-id", profile.tenant]
    if claims:
        args += ["--claims", base64.b64encode(claims.encode()).decode()]
    return args


def _said(output: str) -> str:
    """What azd said went wrong: the ``error`` of its JSON lines (azd 1.23.7 and later), the
    ``message`` of an older ``consoleMessage``, else its first line; tokens removed."""
    for line in output.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            data = item.get("data")
            text = item.get("error") or (data.get("message") if isinstance(data, dict) else None)
            if isinstance(text, str) and text.strip():
                return redact(_TOKEN_FIELD.sub('"token": "[redacted]"', text.strip()))[:300]
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return redact(_TOKEN_FIELD.sub('"token": "[redacted]"', lines[0]))[:300] if lines else ""


def _expiry(text: Any) -> Optional[int]:
    """``expiresOn`` (RFC 3339) as Unix seconds; an offset is honoured, never local time."""
    match = _RFC3339.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    zone = match.group(3).upper().replace("Z", "+00:00")
    try:
        when = dt.datetime.strptime(f"{match.group(1)}T{match.group(2)}{zone.replace(':', '')}",
                                    "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return None
    return int(when.timestamp())


def run_azd(profile: Profile, claims: Optional[str]) -> dict[str, Any]:
    """``azd auth token`` for the profile (blocking): its JSON answer."""
    args = _arguments(profile, claims)
    exe = which("azd")
    if exe is None:
        raise TokenError("azd (the Azure Developer CLI) is not on PATH", profile=profile.name,
                         error="azd_not_found",
                         hint="install the Azure Developer CLI and sign in with: "
                              + _login(profile.tenant))
    try:
        status, out, err = run([exe, *args], timeout=profile.timeout,
                               env={"NO_COLOR": "true"})
    except subprocess.TimeoutExpired:
        raise TokenError(f"azd auth token did not finish within timeout = "
                         f"{profile.timeout:g} s", profile=profile.name,
                         error="azd_failed") from None
    except OSError as exc:
        raise TokenError(f"azd could not run: {exc.strerror}", profile=profile.name,
                         error="azd_failed") from None
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    if status != 0:
        both = f"{stderr}\n{stdout}"
        if _NOT_SIGNED_IN in both and "AADSTS" not in both:
            raise TokenError("azd is not signed in", profile=profile.name,
                             error="azd_not_signed_in",
                             hint=f"sign in with: {_login(profile.tenant)}")
        if "unknown flag: --claims" in both:
            raise TokenError("this azd cannot answer a claims challenge (--claims)",
                             profile=profile.name, error="azd_failed",
                             hint="update the Azure Developer CLI to 1.18.1 or later")
        said = _said(stderr) or _said(stdout)
        raise TokenError(
            f"azd auth token failed with exit status {status}" + (f": {said}" if said else ""),
            profile=profile.name, error="azd_failed",
            hint=f"is azd signed in? run: {_login(profile.tenant)}",
        )
    try:
        answer = json.loads(stdout)
    except (ValueError, RecursionError):
        answer = None
    if not isinstance(answer, dict):
        raise TokenError("azd auth token printed something that is not a JSON object",
                         profile=profile.name, error="malformed_response")
    return answer


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """A token for the profile's scopes from azd's sign-in."""
    profile = ctx.profile
    _arguments(profile, ctx.claims)  # a bad scope is a ConfigError before anything runs
    now = ctx.clock()  # before asking: the token's refresh counts from then
    answer = yield from call(lambda: run_azd(profile, ctx.claims))
    token = answer.get("token")
    expires_on = _expiry(answer.get("expiresOn"))
    if not isinstance(token, str) or not token or expires_on is None:
        raise TokenError("azd auth token answered without token or a readable expiresOn",
                         profile=profile.name, error="malformed_response")
    return tool_result(token, expires_on, now=now, profile=profile.name, said="azd auth token")


def available(profile: Profile) -> Optional[str]:
    """``None`` when ``azd`` is on ``PATH``, else why not (whether it is signed in shows only
    by running it, which takes seconds: a chain asks it then)."""
    return None if which("azd") else "azd (the Azure Developer CLI) is not on PATH"


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import FlowSpec  # noqa: E402 - kept next to the entry it declares

FLOW = FlowSpec(
    name="azd",
    acquire=acquire,
    # azd signs in at its own authority: authority and cloud do not apply.
    keys=frozenset({"flow", "scope", "tenant", "allowed_hosts", "cache", "timeout",
                    "additionally_allowed_tenants"}),
    summary="the Azure Developer CLI's sign-in (azd auth login)",
    available=available,
)
