"""Azure PowerShell's sign-in: reuse ``Connect-AzAccount`` by asking ``Get-AzAccessToken``.

``pwsh`` (on Windows, else ``powershell``) is found on ``PATH`` only and run without a shell —
``pwsh -NoProfile -NonInteractive -EncodedCommand <script>`` — from a system folder, with
standard input closed, for at most the profile's ``timeout`` seconds, after which its whole
process tree is stopped (:mod:`authlayer._process`). The script is azure-identity's in
substance: it needs the ``Az.Accounts`` module (2.2.0 or later), asks ``Get-AzAccessToken`` for
the profile's resource (and tenant), turns a ``SecureString`` token into text, and prints one
line ``azsdk%<token>%<expires on, Unix seconds>``, which is what is read back. Its failures are
read as azure-identity reads them ("run ``Connect-AzAccount``", module missing, execution
policy). Running PowerShell is a :class:`~authlayer._actions.Call` action.
"""

from __future__ import annotations

import base64
import os
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

__all__ = ["SCRIPT", "acquire", "available", "find_powershell", "run_powershell"]

NO_MODULE = "NO_AZ_ACCOUNT_MODULE"
MARKER = "azsdk%"

# Formatted with the resource and the tenant (both checked by safe_argument: no quotes).
SCRIPT = """\
$ErrorActionPreference = 'Stop'
$module = Import-Module Az.Accounts -MinimumVersion 2.2.0 -PassThru -ErrorAction SilentlyContinue
if (-not $module) {{ Write-Output '""" + NO_MODULE + """'; exit }}
$params = @{{ ResourceUrl = '{resource}'; WarningAction = 'Ignore' }}
if ('{tenant}') {{ $params['TenantId'] = '{tenant}' }}
if ($module.Version -ge [version]'2.17.0' -and $module.Version -lt [version]'5.0.0') {{
    $params['AsSecureString'] = $true
}}
$answer = Get-AzAccessToken @params
$token = $answer.Token
if ($token -is [System.Security.SecureString]) {{
    if ($PSVersionTable.PSVersion.Major -lt 7) {{
        $bstr = [System.Runtime.InteropServices.Marshal]::SecureStringToBSTR($token)
        try {{ $token = [System.Runtime.InteropServices.Marshal]::PtrToStringBSTR($bstr) }}
        finally {{ [System.Runtime.InteropServices.Marshal]::ZeroFreeBSTR($bstr) }}
    }} else {{
        $token = ConvertFrom-SecureString -SecureString $token -AsPlainText
    }}
}}
Write-Output "`n""" + MARKER + """$token%$($answer.ExpiresOn.ToUnixTimeSeconds())`n"
"""


def _connect(tenant: Optional[str]) -> str:
    return f"Connect-AzAccount -Tenant {tenant}" if tenant else "Connect-AzAccount"


def find_powershell() -> Optional[str]:
    """``pwsh`` on ``PATH``; on Windows also Windows PowerShell's ``powershell``."""
    found = which("pwsh")
    if found is None and os.name == "nt":
        found = which("powershell")
    return found


def _resource(profile: Profile) -> str:
    if len(profile.scopes) != 1:
        raise profile.config_error(
            "flow 'azure_powershell' asks for one resource at a time, but scope has "
            f"{len(profile.scopes)} scopes: give one, like "
            '"https://management.azure.com/.default"', key="scope")
    scope = profile.scopes[0]
    resource = scope[: -len("/.default")] if scope.endswith("/.default") else scope
    if not resource or not safe_argument(resource):
        raise profile.config_error(
            f"scope {scope[:80]!r} cannot be passed to Azure PowerShell: it may hold only "
            "letters, digits and _ . : / - and must not start with -", key="scope")
    if profile.tenant and not safe_argument(profile.tenant):
        raise profile.config_error(
            f"tenant {profile.tenant[:80]!r} cannot be passed to Azure PowerShell", key="tenant")
    return resource


def run_powershell(profile: Profile, resource: str) -> str:
    """Run the script for the profile (blocking): its standard output."""
    exe = find_powershell()
    if exe is None:
        raise TokenError("PowerShell (pwsh) is not on PATH", profile=profile.name,
                         error="powershell_not_found",
                         hint="install PowerShell and the Az.Accounts module, then sign in "
                              f"with: {_connect(profile.tenant)}")
    script = SCRIPT.format(resource=resource, tenant=profile.tenant or "")
    encoded = base64.b64encode(script.encode("utf-16-le")).decode()
    try:
        status, out, err = run([exe, "-NoProfile", "-NonInteractive", "-EncodedCommand",
                                encoded], timeout=profile.timeout)
    except subprocess.TimeoutExpired:
        raise TokenError(f"PowerShell did not finish within timeout = {profile.timeout:g} s",
                         profile=profile.name, error="powershell_failed") from None
    except OSError as exc:
        raise TokenError(f"PowerShell could not run: {exc.strerror}", profile=profile.name,
                         error="powershell_failed") from None
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    if status == 0 and NO_MODULE in stdout:
        raise TokenError("the Az.Accounts module (2.2.0 or later) is not installed",
                         profile=profile.name, error="powershell_no_az_module",
                         hint="Install-Module Az.Accounts, then sign in with: "
                              + _connect(profile.tenant))
    if "Run Connect-AzAccount to login" in stderr:
        raise TokenError("Azure PowerShell is not signed in", profile=profile.name,
                         error="powershell_not_signed_in",
                         hint=f"sign in with: {_connect(profile.tenant)}")
    if "AuthorizationManager check failed" in stderr:
        raise TokenError("the execution policy kept PowerShell from running Az.Accounts",
                         profile=profile.name, error="powershell_failed",
                         hint="allow it with Set-ExecutionPolicy RemoteSigned -Scope CurrentUser")
    if status != 0:
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        said = redact(lines[0])[:300] if lines else ""
        raise TokenError(
            f"PowerShell failed with exit status {status}" + (f": {said}" if said else ""),
            profile=profile.name, error="powershell_failed",
            hint=f"is Azure PowerShell signed in? run: {_connect(profile.tenant)}")
    return stdout


def _parse(profile: Profile, stdout: str) -> tuple[str, int]:
    """The token and its expiry from the script's ``azsdk%<token>%<expires on>`` line."""
    for word in stdout.split():
        if word.startswith(MARKER):
            parts = word[len(MARKER):].split("%")
            if len(parts) == 2 and parts[0] and parts[1].isdigit():
                return parts[0], int(parts[1])
    raise TokenError("Get-AzAccessToken's output has no token in it", profile=profile.name,
                     error="malformed_response")


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """A token for the profile's resource from Azure PowerShell's sign-in."""
    profile = ctx.profile
    resource = _resource(profile)
    if ctx.claims:
        encoded = base64.b64encode(ctx.claims.encode()).decode()
        raise TokenError(
            "Azure PowerShell cannot answer a claims challenge by itself",
            profile=profile.name, error="interaction_required",
            hint=f"sign in again with: Connect-AzAccount -ClaimsChallenge {encoded} "
                 "(Az.Accounts 5.2.0 or later)")
    now = ctx.clock()  # before asking: the token's refresh counts from then
    stdout = yield from call(lambda: run_powershell(profile, resource))
    token, expires_on = _parse(profile, stdout)
    return tool_result(token, expires_on, now=now, profile=profile.name,
                       said="Get-AzAccessToken")


def available(profile: Profile) -> Optional[str]:
    """``None`` when PowerShell is on ``PATH``, else why not."""
    return None if find_powershell() else "PowerShell (pwsh) is not on PATH"


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import FlowSpec  # noqa: E402 - kept next to the entry it declares

FLOW = FlowSpec(
    name="azure_powershell",
    acquire=acquire,
    # Azure PowerShell signs in at its own environment: authority and cloud do not apply.
    keys=frozenset({"flow", "scope", "tenant", "allowed_hosts", "cache", "timeout",
                    "additionally_allowed_tenants"}),
    summary="Azure PowerShell's sign-in (Connect-AzAccount)",
    available=available,
)
