"""Managed identity: a token from the Azure host the script runs on, with no secret at all.

The source is chosen from the environment the way azure-identity chooses it: App Service and
Functions (``IDENTITY_ENDPOINT`` with ``IDENTITY_HEADER``), Cloud Shell (``MSI_ENDPOINT``
alone), Kubernetes workload identity (``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID`` and
``AZURE_FEDERATED_TOKEN_FILE`` all set: the federated token is exchanged, as flow
``workload_identity`` does), else the instance metadata service (IMDS) of VMs, scale sets and
most other hosts, at ``http://169.254.169.254`` or ``$AZURE_POD_IDENTITY_AUTHORITY_HOST``. A
profile's ``client_id``, ``object_id`` or ``resource_id`` picks a user-assigned identity. The
resource is the profile's one scope without ``/.default``. Requests to a managed identity
endpoint never go through a proxy. This module only builds requests and reads answers;
:mod:`authlayer._http` sends them. It does not support the Azure Arc, Service Fabric or Azure
Machine Learning endpoints: there it says so instead of asking IMDS.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Optional
from urllib.parse import urlsplit

from .._http import (
    Action,
    ConnectionFailed,
    HttpRequest,
    HttpResponse,
    Send,
    Sleep,
    backoff,
    retry_after,
    send,
)
from ..errors import ConfigError, TokenError, redact
from ..oauth import parse_error, parse_token
from ..profile import Profile
from ..token import TokenResult
from . import FlowContext
from ._workload_env import (
    ENV_CLIENT_ID,
    ENV_FEDERATED_TOKEN_FILE,
    ENV_TENANT_ID,
    workload_identity_for,
)

__all__ = ["IMDS_HOST", "Source", "acquire", "cache_identity", "choose_source", "resource_of"]

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
MIN_STARTING_WAIT = 1.0  # shortest: a "Retry-After: 0" (or a date in the past) must not spin
# 410 is retried too, for up to STARTING_WINDOW (see _imds), not within send()'s budget.
IMDS_RETRY_STATUSES = frozenset({404, 429, *range(500, 600)})
IMDS_MAX_ATTEMPTS = 5
ENV_POD_IDENTITY_HOST = "AZURE_POD_IDENTITY_AUTHORITY_HOST"
_WORKLOAD_VARIABLES = (ENV_TENANT_ID, ENV_CLIENT_ID, ENV_FEDERATED_TOKEN_FILE)

_ENV_CONSULTED = (
    "IDENTITY_ENDPOINT and IDENTITY_HEADER (App Service, Functions), MSI_ENDPOINT (Cloud Shell), "
    "AZURE_TENANT_ID with AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE (workload identity), "
    "AZURE_POD_IDENTITY_AUTHORITY_HOST (another IMDS host)"
)
WHAT = "managed identity token request"

log = logging.getLogger("authlayer")

# IMDS hosts that answered once in this process: no more probing them.
_answered: set[str] = set()


@dataclass(frozen=True)
class Source:
    """Where managed identity tokens come from: ``kind`` is ``"app_service"``,
    ``"cloud_shell"``, ``"workload_identity"`` or ``"imds"``; ``url`` the endpoint (for workload
    identity, the federated token file); ``secret`` App Service's ``IDENTITY_HEADER``."""

    kind: str
    url: str
    secret: Optional[str] = None

    def __repr__(self) -> str:
        return f"Source({self.kind!r}, {self.url!r})"


def _pod_identity_host(raw: str) -> str:
    """``$AZURE_POD_IDENTITY_AUTHORITY_HOST`` as a base URL; a bare host (``host:port``) gets
    ``http://``. Raises :class:`ConfigError` naming the variable for anything unusable."""
    url = raw.strip()
    if "://" not in url:
        url = "http://" + url
    shown = "its value" if "@" in raw else repr(raw[:80])
    problem = None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        problem = "is not a valid URL"
    else:
        if any(c.isspace() for c in url) or "@" in parts.netloc:
            problem = "is not a valid URL"
        elif parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            problem = "is not an http:// URL"
        elif parts.query or parts.fragment:
            problem = "must not have a query (?) or fragment (#)"
    if problem:
        raise ConfigError(
            f"${ENV_POD_IDENTITY_HOST} ({shown}) {problem}: give the IMDS host's base URL, "
            "like http://169.254.169.254, or a host name and port"
        )
    return url.rstrip("/")


def choose_source(env: Optional[Mapping[str, str]] = None) -> Source:
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
    if all(env.get(name, "").strip() for name in _WORKLOAD_VARIABLES):
        # AKS with workload identity: the pod's identity, not the node's (IMDS)
        return Source("workload_identity", env[ENV_FEDERATED_TOKEN_FILE].strip())
    raw = env.get(ENV_POD_IDENTITY_HOST, "").strip()
    host = _pod_identity_host(raw) if raw else IMDS_HOST
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
            timeout=timeout, what=WHAT, proxy=False,
        )
    if source.kind == "cloud_shell":
        return HttpRequest(
            "POST", source.url, form={"resource": resource}, headers={"Metadata": "true"},
            timeout=timeout, what=WHAT, proxy=False,
        )
    return HttpRequest(
        "GET", source.url,
        params={"api-version": IMDS_API_VERSION, "resource": resource, **selector},
        headers={"Metadata": "true"},
        timeout=timeout, retry_statuses=IMDS_RETRY_STATUSES, max_attempts=IMDS_MAX_ATTEMPTS,
        what=WHAT, proxy=False,
    )


def _no_endpoint(profile: Profile, url: str, reason: str) -> TokenError:
    return TokenError(
        f"no managed identity endpoint was found: nothing answers like IMDS at {url} "
        f"({reason}). Is this running on Azure, on a host with a managed identity? authlayer "
        f"looks at {_ENV_CONSULTED}; without any of them it asks IMDS",
        profile=profile.name,
        error="managed_identity_unavailable",
    )


def _imds_shaped(response: HttpResponse) -> bool:
    """Whether an answer can come from IMDS: a token or ``{"error": ...}`` JSON. Metadata
    services of other clouds at 169.254.169.254 answer HTML or text (AWS 404, GCP 403/404).
    Throttling and 5xx answers, and empty bodies, are given the benefit of the doubt."""
    if response.status == 200 or response.status == 429 or response.status >= 500:
        return True
    if not response.content.strip():
        return True
    body = response.json_object()
    return body is not None and isinstance(body.get("error"), str)


def _excerpt(response: HttpResponse) -> str:
    text = response.content[:200].decode("utf-8", "replace")
    text = " ".join(text.split())[:80]
    kind = response.content_type or "no content type"
    return f"HTTP {response.status}, {kind}" + (f": {redact(text)!r}" if text else "")


def _probe(profile: Profile, request: HttpRequest
           ) -> Generator[Action, Any, tuple[Optional[HttpResponse], int]]:
    """The first request to an IMDS host in this process, with a short timeout: the answer
    (``None`` when the connection broke: retry as usual) and how many attempts it took.

    A connection that cannot be made means "no IMDS here", at once. A connection that opens but
    does not answer in time gets one more attempt with the profile's timeout, not the whole
    retry budget. An answer that is not shaped like IMDS's is another metadata service."""
    first = yield Send(replace(request, timeout=min(PROBE_TIMEOUT, request.timeout)))
    attempts = 1
    if isinstance(first, ConnectionFailed) and first.kind == "timeout":
        second = yield Send(request)
        attempts = 2
        if isinstance(second, ConnectionFailed):
            raise TokenError(
                f"IMDS at {request.host} accepted the connection but did not answer within "
                f"{min(PROBE_TIMEOUT, request.timeout):g} s, nor on a second attempt "
                f"({second.reason})",
                profile=profile.name, error="managed_identity_unavailable",
                hint="is this running on Azure, on a host with a managed identity? Is "
                     f"${ENV_POD_IDENTITY_HOST} right, if set?",
            )
        first = second
    if isinstance(first, ConnectionFailed):
        if first.kind == "connect":
            raise _no_endpoint(profile, request.url, first.reason)
        if not first.retry:
            raise TokenError(f"{request.what} to {request.host} failed: {first.reason}",
                             profile=profile.name, error="connection_failed")
        return None, attempts  # dropped: something is there; retry as usual
    if not _imds_shaped(first):
        raise _no_endpoint(profile, request.url,
                           f"it answered {_excerpt(first)}, which is not IMDS")
    _answered.add(request.host)
    return first, attempts


def _imds(profile: Profile, request: HttpRequest) -> Generator[Action, Any, HttpResponse]:
    """Ask IMDS: probe first when this host never answered, then retry 404, 429 and 5xx, and
    410 for up to :data:`STARTING_WINDOW` seconds while the VM starts, honouring
    ``Retry-After``."""
    host = request.host
    response: Optional[HttpResponse] = None
    budget = request.max_attempts
    if host not in _answered:
        response, used = yield from _probe(profile, request)
        budget -= used
        if response is not None and response.status in request.retry_statuses:
            # The probe was the first attempt of the usual bounded retries.
            wait = retry_after(response)
            if (wait is not None and wait > request.max_retry_after) or budget < 1:
                return response
            log.info("%s to %s: HTTP %d; retrying", WHAT, host, response.status)
            yield Sleep(backoff(used) if wait is None else wait)
            response = None
    waited = 0.0
    attempt = 0
    while True:
        if response is None:
            response = yield from send(replace(request, max_attempts=max(1, budget)),
                                       profile=profile.name)
            budget = request.max_attempts
            _answered.add(host)
        if response.status != 410 or waited >= STARTING_WINDOW:
            return response
        attempt += 1
        wait = retry_after(response)
        delay = min(max(backoff(attempt) if wait is None else wait, MIN_STARTING_WAIT),
                    MAX_STARTING_WAIT, STARTING_WINDOW - waited)
        waited += max(delay, MIN_STARTING_WAIT)  # the window always moves on
        if delay <= 0:
            return response
        yield Sleep(delay)
        response = None


def _error(profile: Profile, source: Source, response: HttpResponse) -> TokenError:
    """A refusal, with what to check. IMDS answers like Entra (``error``,
    ``error_description``); App Service with ``{"statusCode", "message", "correlationId"}``."""
    body = response.json_object() or {}
    entra_shaped = isinstance(body.get("error"), str)
    base = parse_error(response, profile=profile.name, what=WHAT) if entra_shaped \
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


def _workload_identity(ctx: FlowContext, resource: str) -> Generator[Action, Any, TokenResult]:
    """On AKS with workload identity, what azure-identity's ManagedIdentityCredential does: the
    pod's federated token exchanged for a token, as flow ``workload_identity`` does (tenant and
    client id from the environment; a ``client_id`` in the profile wins)."""
    from . import workload_identity

    profile = ctx.profile
    for key in ("object_id", "resource_id"):
        if getattr(profile, key):
            raise profile.config_error(
                f"{key} cannot pick the identity here: with workload identity "
                f"(${ENV_TENANT_ID}, ${ENV_CLIENT_ID} and ${ENV_FEDERATED_TOKEN_FILE} are set), "
                "the identity is an app registration or user-assigned identity named by its "
                f"client id: set client_id instead, or leave it to ${ENV_CLIENT_ID}",
                key=key,
            )
    exchange = workload_identity_for(replace(profile, scopes=(f"{resource}/.default",)))
    return (yield from workload_identity.acquire(replace(ctx, profile=exchange)))


def cache_identity(profile: Profile) -> str:
    """What the cache key needs beyond the profile: with workload identity, whose tokens they
    are (the environment names the tenant, client and token file); otherwise nothing. Never
    raises."""
    try:
        if choose_source().kind != "workload_identity":
            return ""
        exchange = workload_identity_for(profile)
        assert exchange.client_assertion is not None
        return (f"workload:{exchange.authority}|{exchange.tenant}|{exchange.client_id}|"
                f"{exchange.client_assertion.identity}")
    except Exception:  # a cache key never fails; acquire() reports the problem
        return ""


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Ask the host's managed identity endpoint for a token for the profile's resource."""
    profile = ctx.profile
    resource = resource_of(profile)
    try:
        source = choose_source()
    except TokenError as exc:
        raise TokenError(str(exc), profile=profile.name, error=exc.error) from None
    except ConfigError as exc:
        raise ConfigError(exc.reason, path=profile.config_path, profile=profile.name) from None
    if source.kind == "workload_identity":
        return (yield from _workload_identity(ctx, resource))
    request = _request(profile, source, resource, profile.timeout)
    sent = ctx.clock()  # before asking: the token's lifetime counts from then
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
    result = parse_token(response, profile=profile.name, now=sent, what=WHAT)
    # Managed identity tokens live up to 24 h: refresh at half their life, as the SDKs do.
    return replace(result, refresh_on=int(sent + max(0.0, result.expires_on - sent) / 2))


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import AtMostOne, FlowSpec  # noqa: E402 - kept next to the entry it declares

FLOW = FlowSpec(
    name="managed_identity",
    acquire=acquire,
    keys=frozenset({"flow", "scope", "allowed_hosts", "cache", "timeout",
                    "client_id", "object_id", "resource_id"}),
    at_most_one=(AtMostOne(("client_id", "object_id", "resource_id"),
                           "pick the user-assigned identity"),),
    # client_id names the identity here, not the app registration [defaults] is about.
    not_from_defaults=frozenset({"client_id"}),
    ignores_requested_tenant=True,
    identity=cache_identity,
    summary="the Azure host's identity (VM, App Service, Kubernetes, ...), no secret",
)
