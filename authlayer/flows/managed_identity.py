"""Managed identity: a token from the Azure host the script runs on, with no secret at all.

The source is chosen from the environment the way azure-identity chooses it: App Service and
Functions (``IDENTITY_ENDPOINT`` with ``IDENTITY_HEADER``), Cloud Shell (``MSI_ENDPOINT``
alone), else the instance metadata service (IMDS) of VMs, scale sets and most other hosts, at
``http://169.254.169.254`` or ``$AZURE_POD_IDENTITY_AUTHORITY_HOST``. A profile's
``client_id``, ``object_id`` or ``resource_id`` picks a user-assigned identity. The resource is
the profile's one scope without ``/.default``. This module only builds requests and reads
answers; :mod:`authlayer._http` sends them. It does not support the Azure Arc, Service Fabric or
Azure Machine Learning endpoints: there it says so instead of asking IMDS.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any, Optional

from .._http import (
    Action,
    ConnectionFailed,
    HttpRequest,
    HttpResponse,
    Send,
    Sleep,
    backoff,
    error_from_response,
    send,
    token_response,
)
from ..errors import TokenError, redact
from ..profile import Profile
from ..token import TokenResult
from . import FlowContext

__all__ = ["IMDS_HOST", "Source", "acquire", "choose_source", "resource_of"]

IMDS_HOST = "http://169.254.169.254"
IMDS_PATH = "/metadata/identity/oauth2/token"
IMDS_API_VERSION = "2018-02-01"
APP_SERVICE_API_VERSION = "2019-08-01"

# The first request to IMDS in a process is a probe: off Azure, 169.254.169.254 often drops
# packets, so waiting the profile's whole timeout (and retrying) would hang a script for minutes.
PROBE_TIMEOUT = 2.0
# IMDS answers 410 for up to about 70 s while the VM starts; keep asking that long.
STARTING_WINDOW = 70.0
MAX_STARTING_WAIT = 10.0  # longest single wait between two 410 answers
IMDS_RETRY_STATUSES = frozenset({404, 429, 500, 502, 503, 504})
IMDS_MAX_ATTEMPTS = 5

_ENV_CONSULTED = (
    "IDENTITY_ENDPOINT and IDENTITY_HEADER (App Service, Functions), MSI_ENDPOINT (Cloud Shell), "
    "AZURE_POD_IDENTITY_AUTHORITY_HOST (another IMDS host)"
)
WHAT = "managed identity token request"

# IMDS hosts that answered once in this process: no more probing them.
_answered: set[str] = set()


@dataclass(frozen=True)
class Source:
    """Where managed identity tokens come from: ``kind`` is ``"app_service"``,
    ``"cloud_shell"`` or ``"imds"``; ``url`` the endpoint; ``secret`` App Service's
    ``IDENTITY_HEADER``."""

    kind: str
    url: str
    secret: Optional[str] = None

    def __repr__(self) -> str:
        return f"Source({self.kind!r}, {self.url!r})"


def choose_source(env: Optional[dict[str, str]] = None) -> Source:
    """The managed identity endpoint this environment offers (azure-identity's order)."""
    env = dict(os.environ if env is None else env)
    endpoint = env.get("IDENTITY_ENDPOINT", "").strip()
    header = env.get("IDENTITY_HEADER", "").strip()
    msi = env.get("MSI_ENDPOINT", "").strip()
    unsupported = None
    if endpoint and header and env.get("IDENTITY_SERVER_THUMBPRINT"):
        unsupported = "Service Fabric (IDENTITY_SERVER_THUMBPRINT is set)"
    elif endpoint and header:
        return Source("app_service", endpoint, header)
    elif msi and env.get("MSI_SECRET"):
        unsupported = "Azure Machine Learning or old App Service (MSI_ENDPOINT with MSI_SECRET)"
    elif endpoint and env.get("IMDS_ENDPOINT"):
        unsupported = "Azure Arc (IDENTITY_ENDPOINT with IMDS_ENDPOINT)"
    elif msi:
        return Source("cloud_shell", msi)
    if unsupported:
        raise TokenError(
            f"the managed identity endpoint of {unsupported} is not supported by authlayer",
            error="unsupported_source",
        )
    host = env.get("AZURE_POD_IDENTITY_AUTHORITY_HOST", "").strip().rstrip("/") or IMDS_HOST
    return Source("imds", host + IMDS_PATH)


def resource_of(profile: Profile) -> str:
    """The resource to ask for: the profile's one scope without ``/.default``."""
    if len(profile.scopes) != 1:
        raise profile.config_error(
            f"flow 'managed_identity' asks for one resource at a time, but scope has "
            f"{len(profile.scopes)} scopes: give one, like "
            '"https://management.azure.com/.default"',
            key="scope",
        )
    scope = profile.scopes[0]
    resource = scope[: -len("/.default")] if scope.endswith("/.default") else scope
    if not resource:
        raise profile.config_error(f"scope {scope!r} names no resource", key="scope")
    return resource


def _selector(profile: Profile, source: Source) -> dict[str, str]:
    """The query field that picks a user-assigned identity (none: system-assigned)."""
    names = {
        "imds": ("client_id", "object_id", "msi_res_id"),
        "app_service": ("client_id", "principal_id", "mi_res_id"),
    }
    chosen = [
        (key, value)
        for key, value in (("client_id", profile.client_id), ("object_id", profile.object_id),
                           ("resource_id", profile.resource_id))
        if value
    ]
    if not chosen:
        return {}
    key, value = chosen[0]
    if source.kind == "cloud_shell":
        raise profile.config_error(
            "Cloud Shell (MSI_ENDPOINT) has no user-assigned identities: remove "
            f"{key} to use Cloud Shell's own identity",
            key=key,
        )
    field = names[source.kind][("client_id", "object_id", "resource_id").index(key)]
    return {field: value}


def _request(profile: Profile, source: Source, resource: str, timeout: float) -> HttpRequest:
    selector = _selector(profile, source)
    if source.kind == "app_service":
        return HttpRequest(
            "GET", source.url,
            params={"api-version": APP_SERVICE_API_VERSION, "resource": resource, **selector},
            headers={"X-IDENTITY-HEADER": source.secret or ""},
            timeout=timeout, what=WHAT,
        )
    if source.kind == "cloud_shell":
        return HttpRequest(
            "POST", source.url, form={"resource": resource}, headers={"Metadata": "true"},
            timeout=timeout, what=WHAT,
        )
    return HttpRequest(
        "GET", source.url,
        params={"api-version": IMDS_API_VERSION, "resource": resource, **selector},
        headers={"Metadata": "true"},
        timeout=timeout, retry_statuses=IMDS_RETRY_STATUSES, max_attempts=IMDS_MAX_ATTEMPTS,
        what=WHAT,
    )


def _no_endpoint(profile: Profile, source: Source, reason: str) -> TokenError:
    return TokenError(
        f"no managed identity endpoint was found: nothing answers at IMDS, {source.url} "
        f"({reason}). Is this running on Azure, on a host with a managed identity? authlayer "
        f"looks at {_ENV_CONSULTED}; without the first two it asks IMDS",
        profile=profile.name,
        error="managed_identity_unavailable",
    )


def _imds(profile: Profile, request: HttpRequest) -> Generator[Action, Any, HttpResponse]:
    """Ask IMDS: probe first when this host never answered, then retry 404, 429 and 5xx, and
    410 for up to :data:`STARTING_WINDOW` seconds while the VM starts."""
    host = request.host
    if host not in _answered:
        first = yield Send(replace(request, timeout=min(PROBE_TIMEOUT, request.timeout)))
        if isinstance(first, ConnectionFailed):
            # Only a connection that never opened means "no IMDS" (the reason starts with the
            # httpx exception's name, see _http._failure); a slow or broken answer means one.
            if first.reason.startswith(("ConnectError", "ConnectTimeout")):
                raise _no_endpoint(profile, Source("imds", request.url), first.reason)
            response: Optional[HttpResponse] = None
        else:
            _answered.add(host)
            response = first
    else:
        response = None
    if response is not None and response.status in request.retry_statuses:
        # The probe was the first attempt of the usual bounded retries.
        yield Sleep(backoff(1))
        response = yield from send(replace(request, max_attempts=request.max_attempts - 1),
                                   profile=profile.name)
    waited = 0.0
    attempt = 0
    while True:
        if response is None:
            response = yield from send(request, profile=profile.name)
            _answered.add(host)
        if response.status != 410 or waited >= STARTING_WINDOW:
            return response
        attempt += 1
        delay = min(backoff(attempt), MAX_STARTING_WAIT, STARTING_WINDOW - waited)
        waited += delay
        yield Sleep(delay)
        response = None


def _error(profile: Profile, source: Source, response: HttpResponse) -> TokenError:
    """A refusal, with what to check. IMDS answers like Entra (``error``,
    ``error_description``); App Service with ``{"statusCode", "message", "correlationId"}``."""
    body = response.json_object() or {}
    entra_shaped = isinstance(body.get("error"), str)
    base = error_from_response(response, profile=profile.name, what=WHAT) if entra_shaped \
        else None
    message = body.get("message") or body.get("Message")
    description = base.description if base is not None else (
        message if isinstance(message, str) else None
    )
    hint = base.hint if base is not None else None
    text = (description or "").lower()
    if "identity not found" in text or "managed identity" in text:
        selector = _selector(profile, source)
        where = "this app" if source.kind == "app_service" else "this VM or scale set"
        if selector:
            hint = (
                f"the user-assigned identity {next(iter(selector.values()))!r} is not assigned "
                f"to {where}: check its identities, and client_id, object_id or resource_id in "
                "the profile"
            )
        else:
            hint = (
                f"{where} has no system-assigned identity: turn it on, or pick a user-assigned "
                "identity with client_id, object_id or resource_id in the profile"
            )
    elif source.kind == "imds" and response.status == 410:
        hint = f"IMDS was still starting after {STARTING_WINDOW:g} s: try again"
    correlation = body.get("correlationId")
    return TokenError(
        None if base is not None else f"{WHAT} failed: HTTP {response.status}"
        + (f" - {redact(description)}" if description else ""),
        profile=profile.name,
        error=base.error if base is not None else "managed_identity_error",
        error_codes=base.error_codes if base is not None else (),
        description=description,
        correlation_id=base.correlation_id if base is not None else (
            correlation if isinstance(correlation, str) else None
        ),
        status=response.status,
        hint=hint,
    )


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Ask the host's managed identity endpoint for a token for the profile's resource."""
    profile = ctx.profile
    resource = resource_of(profile)
    try:
        source = choose_source()
    except TokenError as exc:
        raise TokenError(str(exc), profile=profile.name, error=exc.error) from None
    request = _request(profile, source, resource, profile.timeout)
    if source.kind == "imds":
        response = yield from _imds(profile, request)
    else:
        try:
            response = yield from send(request, profile=profile.name)
        except TokenError as exc:
            variable = "IDENTITY_ENDPOINT" if source.kind == "app_service" else "MSI_ENDPOINT"
            raise TokenError(
                f"nothing answered at the managed identity endpoint {request.host} "
                f"(from ${variable})",
                profile=profile.name, error=exc.error,
                hint=f"is ${variable} right? it is set by the host, not by you",
            ) from exc
    if response.status != 200:
        raise _error(profile, source, response)
    now = ctx.clock()
    result = token_response(response, profile=profile.name, now=now, what=WHAT)
    # Managed identity tokens live up to 24 h: refresh at half their life, as the SDKs do.
    return replace(result, refresh_on=int(now + max(0.0, result.expires_on - now) / 2))
