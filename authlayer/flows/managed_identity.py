"""Managed identity: a token from the Azure host the script runs on, with no secret at all.

The source is chosen from the environment the way the Azure tools choose it (azure-identity and
MSAL): Service Fabric (``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER`` and
``IDENTITY_SERVER_THUMBPRINT``: TLS pinned to that certificate), App Service and Functions
(``IDENTITY_ENDPOINT`` with ``IDENTITY_HEADER``), Azure Machine Learning (``MSI_ENDPOINT`` with
``MSI_SECRET``), Azure Arc (``IDENTITY_ENDPOINT`` with ``IMDS_ENDPOINT``, or the Arc agent
installed: a key-file challenge proves the caller may read the agent's folder), Cloud Shell
(``MSI_ENDPOINT`` alone), Kubernetes workload identity (``AZURE_TENANT_ID``,
``AZURE_CLIENT_ID`` and ``AZURE_FEDERATED_TOKEN_FILE`` all set: the federated token is
exchanged, as flow ``workload_identity`` does), else the instance metadata service (IMDS) of
VMs, scale sets and most other hosts, at ``http://169.254.169.254`` or
``$AZURE_POD_IDENTITY_AUTHORITY_HOST``. A profile's ``client_id``, ``object_id`` or
``resource_id`` picks a user-assigned identity where the source has them. The resource is the
profile's one scope without ``/.default``. Requests to a managed identity endpoint never go
through a proxy. This module only builds requests and reads answers; :mod:`authlayer._http`
sends them (and reads Arc's key file through a :class:`~authlayer._actions.Call`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import stat
import sys
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union
from urllib.parse import urlsplit

from .._http import (
    Action,
    ConnectionFailed,
    HttpRequest,
    HttpResponse,
    Send,
    Sleep,
    backoff,
    call,
    retry_after,
    run_sync,
    send,
)
from .._record import replace
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

__all__ = ["IMDS_HOST", "Source", "acquire", "arc_key_folder", "available", "cache_identity",
           "choose_source", "resource_of"]

IMDS_HOST = "http://169.254.169.254"
IMDS_PATH = "/metadata/identity/oauth2/token"
IMDS_API_VERSION = "2018-02-01"
APP_SERVICE_API_VERSION = "2019-08-01"
ARC_API_VERSION = "2020-06-01"
SERVICE_FABRIC_API_VERSION = "2019-07-01-preview"
AZURE_ML_API_VERSION = "2017-09-01"
# Where the Arc agent lives when it set no variables (MSAL's check), and its default endpoint.
HIMDS_PATHS = {"linux": "/opt/azcmagent/bin/himds",
               "win32": "%ProgramFiles%\\AzureConnectedMachineAgent\\himds.exe"}
ARC_DEFAULT_ENDPOINT = "http://127.0.0.1:40342/metadata/identity/oauth2/token"
ARC_MAX_KEY_BYTES = 4096  # the reference libraries refuse larger key files
# "Is there an IMDS here?" (available()): the Azure tools decide within a second, in a chain.
AVAILABLE_PROBE_TIMEOUT = 1.0

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
    "IDENTITY_ENDPOINT with IDENTITY_HEADER (App Service, Functions; with "
    "IDENTITY_SERVER_THUMBPRINT: Service Fabric) or with IMDS_ENDPOINT (Azure Arc), "
    "MSI_ENDPOINT (Cloud Shell; with MSI_SECRET: Azure Machine Learning), "
    "AZURE_TENANT_ID with AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE (workload identity), "
    "AZURE_POD_IDENTITY_AUTHORITY_HOST (another IMDS host)"
)
# The variable that names each source's endpoint, for messages.
_VARIABLE = {"app_service": "IDENTITY_ENDPOINT", "service_fabric": "IDENTITY_ENDPOINT",
             "azure_arc": "IDENTITY_ENDPOINT", "azure_ml": "MSI_ENDPOINT",
             "cloud_shell": "MSI_ENDPOINT"}
_NAMES = {"app_service": "App Service", "service_fabric": "Service Fabric",
          "azure_arc": "Azure Arc", "azure_ml": "Azure Machine Learning",
          "cloud_shell": "Cloud Shell"}
WHAT = "managed identity token request"

log = logging.getLogger("authlayer")

# IMDS hosts that answered once in this process: no more probing them.
_answered: set[str] = set()


@dataclass(frozen=True)
class Source:
    """Where managed identity tokens come from: ``kind`` is ``"service_fabric"``,
    ``"app_service"``, ``"azure_ml"``, ``"azure_arc"``, ``"cloud_shell"``,
    ``"workload_identity"`` or ``"imds"``; ``url`` the endpoint (for workload identity, the
    federated token file); ``secret`` the header value the host set (``IDENTITY_HEADER``,
    ``MSI_SECRET``); ``thumbprint`` Service Fabric's pinned certificate."""

    kind: str
    url: str
    secret: Optional[str] = None
    thumbprint: Optional[str] = None

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


def _thumbprint(raw: str) -> str:
    """``$IDENTITY_SERVER_THUMBPRINT`` as 40 lower-case hex digits (spaces and colons, as
    certificate tools print them, removed). Raises :class:`ConfigError` naming the variable."""
    text = "".join(c for c in raw if c not in " \t\r\n:").lower()
    if len(text) != 40 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError(
            "$IDENTITY_SERVER_THUMBPRINT is not a certificate's SHA-1 thumbprint (40 hex "
            "digits): Service Fabric sets it to its managed identity endpoint's certificate"
        )
    return text


def _himds_installed() -> bool:
    """Whether the Azure Arc agent is installed here (MSAL looks for its program)."""
    path = HIMDS_PATHS.get(sys.platform)
    return path is not None and os.path.isfile(os.path.expandvars(path))


def choose_source(env: Optional[Mapping[str, str]] = None) -> Source:
    """The managed identity endpoint this environment offers (the Azure tools' order)."""
    env = dict(os.environ if env is None else env)
    endpoint = env.get("IDENTITY_ENDPOINT", "").strip()
    header = env.get("IDENTITY_HEADER", "").strip()
    msi = env.get("MSI_ENDPOINT", "").strip()
    thumbprint = env.get("IDENTITY_SERVER_THUMBPRINT", "").strip()
    if endpoint and header and thumbprint:
        if urlsplit(endpoint).scheme.lower() != "https":
            raise ConfigError("$IDENTITY_ENDPOINT must be an https:// URL for Service Fabric "
                              "(IDENTITY_SERVER_THUMBPRINT is set): its certificate is pinned")
        return Source("service_fabric", endpoint, header, _thumbprint(thumbprint))
    if endpoint and header:
        return Source("app_service", endpoint, header)
    secret = env.get("MSI_SECRET", "").strip()
    if msi and secret:
        return Source("azure_ml", msi, secret)
    if endpoint and env.get("IMDS_ENDPOINT", "").strip():
        return Source("azure_arc", endpoint)
    if msi:
        return Source("cloud_shell", msi)
    if all(env.get(name, "").strip() for name in _WORKLOAD_VARIABLES):
        # AKS with workload identity: the pod's identity, not the node's (IMDS)
        return Source("workload_identity", env[ENV_FEDERATED_TOKEN_FILE].strip())
    raw = env.get(ENV_POD_IDENTITY_HOST, "").strip()
    if raw:
        return Source("imds", _pod_identity_host(raw) + IMDS_PATH)
    if _himds_installed():
        return Source("azure_arc", ARC_DEFAULT_ENDPOINT)
    return Source("imds", IMDS_HOST + IMDS_PATH)


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
    if source.kind == "azure_ml" and key == "client_id":
        return {"clientid": value}  # Azure ML's 2017 API spells it so
    why = {
        "cloud_shell": "Cloud Shell (MSI_ENDPOINT) has no user-assigned identities",
        "azure_arc": "Azure Arc offers only the machine's own (system-assigned) identity",
        "service_fabric": "Service Fabric gives the identity its application's manifest names",
        "azure_ml": "Azure Machine Learning picks a user-assigned identity by client_id only",
    }.get(source.kind)
    if why is not None:
        raise profile.config_error(f"{why}: remove {key} from the profile", key=key)
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
    if source.kind == "service_fabric":
        return HttpRequest(
            "GET", source.url,
            params={"api-version": SERVICE_FABRIC_API_VERSION, "resource": resource},
            headers={"Secret": source.secret or ""},
            timeout=timeout, what=WHAT, proxy=False, pin=source.thumbprint,
        )
    if source.kind == "azure_ml":
        return HttpRequest(
            "GET", source.url,
            params={"api-version": AZURE_ML_API_VERSION, "resource": resource, **selector},
            headers={"secret": source.secret or ""},
            timeout=timeout, what=WHAT, proxy=False,
        )
    if source.kind == "azure_arc":
        return HttpRequest(
            "GET", source.url, params={"api-version": ARC_API_VERSION, "resource": resource},
            headers={"Metadata": "true"}, timeout=timeout, what=WHAT, proxy=False,
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
    ``error_description``); App Service with ``{"statusCode", "message", "correlationId"}``;
    Service Fabric with ``{"error": {"code", "message", "correlationId"}}``."""
    body = response.json_object() or {}
    nested = body.get("error")
    if isinstance(nested, dict):
        body = {k: v for k, v in nested.items() if k != "error"}
    entra_shaped = isinstance(body.get("error"), str)
    base = parse_error(response, profile=profile.name, what=WHAT) if entra_shaped \
        else None
    message = body.get("message") or body.get("Message")
    description = base.description if base is not None else (
        message if isinstance(message, str) else None
    )
    hint = base.hint if base is not None else None
    text = (description or "").lower()
    if "identity not found" in text or "managed identity" in text \
            or body.get("code") == "ManagedIdentityNotFound":
        selector = _selector(profile, source)
        where = {"app_service": "this app", "service_fabric": "this application",
                 "azure_arc": "this machine", "azure_ml": "this compute"
                 }.get(source.kind, "this VM or scale set")
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
    elif source.kind in ("service_fabric", "azure_ml") and response.status == 401:
        variable = "IDENTITY_HEADER" if source.kind == "service_fabric" else "MSI_SECRET"
        hint = f"the endpoint refused ${variable}: it is set by the host, not by you"
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


# --------------------------------------------------------------------------- Azure Arc


def arc_key_folder() -> Optional[str]:
    """The only folder the Arc agent writes its key files to (``None``: Arc has no managed
    identity on this platform)."""
    if sys.platform == "linux":
        return "/var/opt/azcmagent/tokens"
    if sys.platform == "win32":
        data = os.environ.get("PROGRAMDATA", "").strip()
        return os.path.join(data, "AzureConnectedMachineAgent", "Tokens") if data else None
    return None


def _arc_refusal(profile: Profile, path: str, why: str, hint: Optional[str] = None) -> TokenError:
    folder = arc_key_folder()
    return TokenError(
        f"Azure Arc's key file challenge names {path!r}, which {why}",
        profile=profile.name, error="arc_key_file_invalid",
        hint=hint or f"the Arc agent writes its key files to {folder}: is $IDENTITY_ENDPOINT "
                     "the agent's (http://localhost:40342/...)?",
    )


def _arc_realm(profile: Profile, response: HttpResponse) -> str:
    """The key file path in Arc's challenge, ``WWW-Authenticate: Basic realm=<path>``."""
    header = response.headers.get("www-authenticate", "")
    scheme, _, rest = header.strip().partition(" ")
    name, equals, path = rest.strip().partition("=")
    if scheme.lower() != "basic" or name.strip().lower() != "realm" or not equals \
            or not path.strip():
        raise TokenError(
            "Azure Arc's endpoint answered HTTP 401 without a key file challenge "
            "(WWW-Authenticate: Basic realm=<path>)",
            profile=profile.name, error="arc_challenge_invalid", status=response.status,
            hint="is $IDENTITY_ENDPOINT the Arc agent's (http://localhost:40342/...)?",
        )
    return path.strip().strip('"')


def _arc_key(profile: Profile, path: str) -> str:
    """The key file's contents, after every check the reference libraries make: in the agent's
    folder, named ``*.key``, a regular file of at most 4 KB (blocking)."""
    folder = arc_key_folder()
    if folder is None:
        raise TokenError(f"Azure Arc's managed identity is available on Linux and Windows "
                         f"only, not on {sys.platform}", profile=profile.name,
                         error="unsupported_platform")
    real = os.path.realpath
    if os.path.normcase(real(os.path.dirname(os.path.abspath(path)))) \
            != os.path.normcase(real(folder)):
        raise _arc_refusal(profile, path, f"is not in the Arc agent's folder {folder}")
    if not path.lower().endswith(".key"):
        raise _arc_refusal(profile, path, "is not a .key file")
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _arc_refusal(profile, path, "is not a regular file")
        if st.st_size > ARC_MAX_KEY_BYTES:
            raise _arc_refusal(profile, path, f"is larger than {ARC_MAX_KEY_BYTES} bytes")
        with open(path, "rb") as file:
            data = file.read(ARC_MAX_KEY_BYTES + 1)
    except FileNotFoundError:
        raise _arc_refusal(profile, path, "does not exist") from None
    except PermissionError:
        raise _arc_refusal(
            profile, path, "cannot be read (permission denied)",
            hint="only members of the 'himds' group (Linux) or administrators (Windows) may "
                 "use the Arc machine's identity",
        ) from None
    except OSError as exc:
        raise _arc_refusal(profile, path, f"cannot be read ({exc.strerror})") from None
    if len(data) > ARC_MAX_KEY_BYTES:
        raise _arc_refusal(profile, path, f"is larger than {ARC_MAX_KEY_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _arc_refusal(profile, path, "is not text") from None


def _arc(profile: Profile, request: HttpRequest) -> Generator[Action, Any, HttpResponse]:
    """Arc's two requests: the first is answered 401 with the path of a key file only a
    privileged user can read; the second sends its contents (``Authorization: Basic``)."""
    first = yield from send(request, profile=profile.name)
    if first.status != 401:
        if first.status == 200:
            raise TokenError("Azure Arc's endpoint gave a token without its key file "
                             "challenge: it is not the Arc agent", profile=profile.name,
                             error="arc_challenge_invalid", status=200,
                             hint="is $IDENTITY_ENDPOINT the Arc agent's?")
        return first
    path = _arc_realm(profile, first)
    key = yield from call(lambda: _arc_key(profile, path))
    answered = yield from send(replace(request, headers={**request.headers,
                                                         "Authorization": f"Basic {key}"}),
                               profile=profile.name)
    return answered


# --------------------------------------------------------------------------- Azure ML

_ML_DATES = ("%m/%d/%Y %H:%M:%S +00:00", "%m/%d/%Y %I:%M:%S %p +00:00")


def _ml_expiry(response: HttpResponse) -> HttpResponse:
    """Azure ML's (and old App Service's) ``expires_on`` may be a date like ``"11/30/2026
    20:00:00 +00:00"``: made the Unix seconds :func:`token_response` reads."""
    body = response.json_object()
    value = body.get("expires_on") if body is not None else None
    if body is None or not isinstance(value, str) or value.strip().isdigit():
        return response
    for pattern in _ML_DATES:
        try:
            when = dt.datetime.strptime(value.strip(), pattern).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
        body["expires_on"] = int(when.timestamp())
        return replace(response, content=json.dumps(body).encode())
    return response


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


def _source(profile: Profile) -> Source:
    """:func:`choose_source`, its errors naming the profile."""
    try:
        return choose_source()
    except ConfigError as exc:
        raise ConfigError(exc.reason, path=profile.config_path, profile=profile.name) from None


def _one_attempt(request: HttpRequest
                 ) -> Generator[Action, Any, Union[HttpResponse, ConnectionFailed]]:
    result: Union[HttpResponse, ConnectionFailed] = yield Send(request)
    return result


def available(profile: Profile) -> Optional[str]:
    """Whether a managed identity can be asked here (``None``) or why not. A source the host
    announces in the environment is there; a federated token file must exist; IMDS is asked
    once, within :data:`AVAILABLE_PROBE_TIMEOUT` seconds, as the Azure tools do in a chain:
    no answer, an answer not shaped like IMDS's, or "no identity" (HTTP 400) mean absent.
    Blocking. Raises :class:`ConfigError` for a variable or profile that is wrong."""
    source = _source(profile)
    if source.kind == "workload_identity":
        if not os.path.isfile(source.url):
            return (f"the federated token file {source.url} (${ENV_FEDERATED_TOKEN_FILE}) "
                    "does not exist")
        return None
    if source.kind != "imds":
        return None
    request = _request(profile, source, resource_of(profile), AVAILABLE_PROBE_TIMEOUT)
    if request.host in _answered:
        return None
    result = run_sync(_one_attempt(replace(request, max_attempts=1)))
    if isinstance(result, ConnectionFailed):
        return f"no managed identity endpoint: IMDS at {request.host} did not answer " \
               f"({result.reason})"
    if not _imds_shaped(result):
        return f"no managed identity endpoint: {request.host} answered {_excerpt(result)}, " \
               "which is not IMDS"
    body = result.json_object() or {}
    said = body.get("error_description") or body.get("error") or ""
    if result.status == 400 or (result.status == 403 and "unreachable" in str(said).lower()):
        return f"IMDS at {request.host} has no identity for this host: " \
               f"{redact(str(said))[:120] or f'HTTP {result.status}'}"
    _answered.add(request.host)
    return None


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Ask the host's managed identity endpoint for a token for the profile's resource."""
    profile = ctx.profile
    resource = resource_of(profile)
    source = _source(profile)
    if source.kind == "workload_identity":
        return (yield from _workload_identity(ctx, resource))
    request = _request(profile, source, resource, profile.timeout)
    sent = ctx.clock()  # before asking: the token's lifetime counts from then
    if source.kind == "imds":
        response = yield from _imds(profile, request)
    else:
        variable = _VARIABLE[source.kind]
        try:
            if source.kind == "azure_arc":
                response = yield from _arc(profile, request)
            else:
                response = yield from send(request, profile=profile.name)
        except TokenError as exc:
            if exc.error != "connection_failed":
                raise
            said = str(exc)
            said = said[len(f"profile {profile.name!r}: "):] if profile.name else said
            pinned = source.kind == "service_fabric" and "thumbprint" in said
            raise TokenError(
                f"the {_NAMES[source.kind]} managed identity endpoint {request.host} (from "
                f"${variable}) " + ("does not have the certificate $IDENTITY_SERVER_THUMBPRINT "
                                    "pins" if pinned else "did not answer") + f": {said}",
                profile=profile.name, error=exc.error,
                hint=f"is ${variable} right? it is set by the host, not by you",
            ) from None
    if response.status != 200:
        raise _error(profile, source, response)
    if source.kind == "azure_ml":
        response = _ml_expiry(response)
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
    summary="the Azure host's identity (VM, App Service, Arc, Kubernetes, ...), no secret",
    available=available,
)
