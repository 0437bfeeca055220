"""Managed identity endpoints: the instance metadata service (IMDS), App Service's and Cloud
Shell's, shaped like the real ones, with the identities a test gives the emulated host.

- IMDS: ``GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...`` with
  ``Metadata: true`` (point ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` at ``emu.url``). A
  user-assigned identity is picked by ``client_id``, ``object_id`` or ``msi_res_id``. Numbers
  are strings in the answer, as IMDS sends them. Endpoint name ``"imds"``.
- App Service and Functions: ``GET /msi/token?api-version=2019-08-01&resource=...`` with
  ``X-IDENTITY-HEADER`` (``IDENTITY_ENDPOINT`` = :attr:`ManagedIdentities.app_service_endpoint`,
  ``IDENTITY_HEADER`` = :attr:`ManagedIdentities.identity_header`); ``client_id``,
  ``principal_id`` or ``mi_res_id``; the answer has ``expires_on`` only. Endpoint
  ``"app_service"``.
- Cloud Shell: ``POST /oauth2/token`` with the form ``resource=...`` and ``Metadata: true``
  (``MSI_ENDPOINT`` = :attr:`ManagedIdentities.cloud_shell_endpoint`). Endpoint
  ``"cloud_shell"``.
- Azure Arc: ``GET /arc/metadata/identity/oauth2/token?api-version=2020-06-01&resource=...``
  with ``Metadata: true`` (``IDENTITY_ENDPOINT`` = :attr:`ManagedIdentities.arc_endpoint`,
  ``IMDS_ENDPOINT`` = :attr:`ManagedIdentities.imds_host`). Without a key it answers 401 with
  ``WWW-Authenticate: Basic realm=<path>`` after writing a new key file into
  :attr:`ManagedIdentities.arc_key_folder` (a test sets it); the second request sends the
  file's contents as ``Authorization: Basic <contents>``. :attr:`ManagedIdentities.arc_realm`
  makes the challenge name another path (bad key files). System-assigned only. Endpoint
  ``"azure_arc"``.
- Service Fabric: ``GET /sf/token?api-version=2019-07-01-preview&resource=...`` with
  ``Secret: <IDENTITY_HEADER>``; errors are ``{"error": {"code", "message",
  "correlationId"}}``. Meant for ``Emulator(tls=True)``: :attr:`ManagedIdentities.thumbprint`
  is the server certificate's SHA-1 thumbprint (``IDENTITY_SERVER_THUMBPRINT``). Endpoint
  ``"service_fabric"``.
- Azure Machine Learning: ``GET /ml/token?api-version=2017-09-01&resource=...[&clientid=...]``
  with ``secret: <MSI_SECRET>`` (:attr:`ManagedIdentities.msi_secret`); ``expires_on`` is a
  string (a date, as in the 2017 API, with :attr:`ManagedIdentities.dated_expiry`). Endpoint
  ``"azure_ml"``.

Tests drive it through :func:`managed_identities`::

    mi = managed_identities(emu)
    user = mi.add(roles=["Data.Read"])    # a user-assigned identity; mi.system is on by default
    mi.starting(3)                        # the next 3 IMDS requests get 410, as while a VM boots

Fault injection (``emu.inject(..., endpoint="imds")``) and counters work as for the token
endpoint. ``emu.reset()`` drops pending 410s and turns the system-assigned identity back on;
user-assigned identities stay, like registered apps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import secrets
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .routes import route
from .state import App
from .wire import Request, Response, json_response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = [
    "APP_SERVICE_API_VERSION",
    "ARC_API_VERSION",
    "AZURE_ML_API_VERSION",
    "IMDS_API_VERSIONS",
    "SERVICE_FABRIC_API_VERSION",
    "ManagedIdentities",
    "ManagedIdentity",
    "managed_identities",
]

IMDS_API_VERSIONS = frozenset({"2018-02-01", "2019-08-01", "2019-11-01", "2020-06-01"})
APP_SERVICE_API_VERSION = "2019-08-01"
ARC_API_VERSION = "2020-06-01"
SERVICE_FABRIC_API_VERSION = "2019-07-01-preview"
AZURE_ML_API_VERSION = "2017-09-01"


@dataclass(frozen=True)
class ManagedIdentity:
    """An identity of the emulated host. ``resource_id`` is ``None`` for the system-assigned
    one."""

    client_id: str
    object_id: str
    tenant_id: str
    resource_id: Optional[str] = None
    roles: tuple[str, ...] = ("Data.Read",)

    @property
    def system_assigned(self) -> bool:
        return self.resource_id is None


class ManagedIdentities:
    """The identities and the state of the emulated host (one per emulator)."""

    def __init__(self, emu: Emulator) -> None:
        self._emu = emu
        self._lock = threading.Lock()
        self._user: list[ManagedIdentity] = []
        self._system_default = self._new(None, None, None, ("Data.Read",), None)
        self._system: Optional[ManagedIdentity] = self._system_default
        self._starting = 0
        self.identity_header = secrets.token_urlsafe(24)
        """What App Service puts in ``IDENTITY_HEADER``: requests must send it back."""
        self.lifetime: Optional[int] = None
        """Seconds managed identity tokens live; ``None``: ``emu.token_lifetime``."""
        self.msi_secret = secrets.token_urlsafe(24)
        """What Azure ML puts in ``MSI_SECRET``: requests must send it back."""
        self.arc_key_folder: Optional[Path] = None
        """Where Arc's challenge writes its key files (the test's stand-in for
        ``/var/opt/azcmagent/tokens``); ``None``: Arc answers 500."""
        self.arc_realm: Optional[str] = None
        """When set, Arc's challenge names this path instead of a key file it wrote."""
        self.dated_expiry = False
        """Azure ML answers ``expires_on`` as a date (``"11/30/2026 20:00:00 +00:00"``)."""
        self._arc_keys: set[str] = set()

    def _new(
        self, client_id: Optional[str], object_id: Optional[str], resource_id: Optional[str],
        roles: Sequence[str], tenant: Optional[str],
    ) -> ManagedIdentity:
        tid = self._emu.state.tenant_id_of(tenant) if tenant else self._emu.tenant_id
        return ManagedIdentity(
            client_id=client_id or str(uuid.uuid4()),
            object_id=object_id or str(uuid.uuid4()),
            tenant_id=tid,
            resource_id=resource_id,
            roles=tuple(roles),
        )

    # --- control ---------------------------------------------------------------------------

    def add(
        self,
        *,
        client_id: Optional[str] = None,
        object_id: Optional[str] = None,
        resource_id: Optional[str] = None,
        name: Optional[str] = None,
        roles: Sequence[str] = ("Data.Read",),
        tenant: Optional[str] = None,
    ) -> ManagedIdentity:
        """Assign a user-assigned identity to the host (random ids unless given; the resource
        id is built from ``name``)."""
        if resource_id is None:
            label = name or f"identity-{uuid.uuid4().hex[:8]}"
            resource_id = (
                f"/subscriptions/{uuid.uuid4()}/resourceGroups/emulator/providers/"
                f"Microsoft.ManagedIdentity/userAssignedIdentities/{label}"
            )
        identity = self._new(client_id, object_id, resource_id, roles, tenant)
        with self._lock:
            self._user.append(identity)
        return identity

    @property
    def system(self) -> Optional[ManagedIdentity]:
        """The system-assigned identity, ``None`` when turned off."""
        return self._system

    def enable_system(self, enabled: bool = True) -> Optional[ManagedIdentity]:
        """Turn the system-assigned identity on or off."""
        with self._lock:
            self._system = self._system_default if enabled else None
        return self._system

    def starting(self, count: int) -> None:
        """The next ``count`` IMDS requests get ``410 Gone``, as while the VM starts."""
        with self._lock:
            self._starting = max(0, int(count))

    def reset(self) -> None:
        with self._lock:
            self._starting = 0
            self._system = self._system_default
            self._arc_keys.clear()
            self.arc_key_folder = None
            self.arc_realm = None
            self.dated_expiry = False

    # --- addresses -------------------------------------------------------------------------

    @property
    def imds_host(self) -> str:
        """The value for ``AZURE_POD_IDENTITY_AUTHORITY_HOST``."""
        return self._emu.url

    @property
    def app_service_endpoint(self) -> str:
        """The value for ``IDENTITY_ENDPOINT``."""
        return f"{self._emu.url}/msi/token"

    @property
    def cloud_shell_endpoint(self) -> str:
        """The value for ``MSI_ENDPOINT`` on Cloud Shell."""
        return f"{self._emu.url}/oauth2/token"

    @property
    def arc_endpoint(self) -> str:
        """The value for ``IDENTITY_ENDPOINT`` on an Arc machine."""
        return f"{self._emu.url}/arc/metadata/identity/oauth2/token"

    @property
    def service_fabric_endpoint(self) -> str:
        """The value for ``IDENTITY_ENDPOINT`` on Service Fabric."""
        return f"{self._emu.url}/sf/token"

    @property
    def azure_ml_endpoint(self) -> str:
        """The value for ``MSI_ENDPOINT`` on Azure Machine Learning."""
        return f"{self._emu.url}/ml/token"

    @property
    def thumbprint(self) -> str:
        """The SHA-1 thumbprint of the server's certificate (``Emulator(tls=True)``): the value
        for ``IDENTITY_SERVER_THUMBPRINT``."""
        import ssl

        if self._emu.ca_file is None:
            raise RuntimeError("Service Fabric's endpoint is pinned by its certificate: start "
                               "the emulator with tls=True")
        pem = (Path(self._emu.ca_file).parent / "server.pem").read_text()
        return hashlib.sha1(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()  # noqa: S324

    # --- Azure Arc's key files ---------------------------------------------------------------

    def arc_challenge(self) -> Optional[str]:
        """Write a new key file, as the Arc agent does for each challenge; its path, or
        :attr:`arc_realm`; ``None`` when no key folder is set."""
        if self.arc_realm is not None:
            return self.arc_realm
        folder = self.arc_key_folder
        if folder is None:
            return None
        key = secrets.token_urlsafe(32)
        path = folder / f"{uuid.uuid4().hex}.key"
        path.write_text(key)
        with self._lock:
            self._arc_keys.add(key)
        return str(path)

    def arc_key_ok(self, key: str) -> bool:
        """Whether ``key`` is the contents of a key file of a challenge."""
        with self._lock:
            known = set(self._arc_keys)
        if self.arc_realm is not None:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                known.add(Path(self.arc_realm).read_text())
        return any(secrets.compare_digest(key.encode(), k.encode()) for k in known)

    # --- used by the handlers --------------------------------------------------------------

    def take_starting(self) -> bool:
        with self._lock:
            if self._starting <= 0:
                return False
            self._starting -= 1
            return True

    def find(self, field: Optional[str], value: Optional[str]) -> Optional[ManagedIdentity]:
        """The identity a selector names (``client_id``, ``object_id``, ``resource_id``), or
        the system-assigned one when ``field`` is ``None``."""
        if field is None:
            return self._system
        wanted = (value or "").strip().lower()
        with self._lock:
            candidates = list(self._user)
        for identity in candidates:
            if str(getattr(identity, field) or "").lower() == wanted:
                return identity
        return None

    def issue(self, identity: ManagedIdentity, resource: str) -> dict[str, Any]:
        """A signed token for ``identity`` and the fields every answer shares."""
        app = App(client_id=identity.client_id, roles=identity.roles, public=False)
        claims: dict[str, Any] = {"oid": identity.object_id, "sub": identity.object_id}
        if identity.resource_id:
            claims["xms_mirid"] = identity.resource_id
        issued = self._emu.state.issue_access_token(
            tenant_id=identity.tenant_id,
            audience=resource,
            app=app,
            auth_method="2",
            lifetime=self.lifetime,
            extra_claims=claims,
        )
        return {
            "access_token": issued.token,
            "expires_on": str(issued.claims["exp"]),
            "not_before": str(issued.claims["nbf"]),
            "expires_in": str(issued.expires_in),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }


def managed_identities(emu: Emulator) -> ManagedIdentities:
    """The managed identity control of ``emu``."""
    return emu.extension("managed_identity", ManagedIdentities)


# --- handlers ----------------------------------------------------------------------------------


def _imds_error(description: str, status: int = 400, error: str = "invalid_request") -> Response:
    return json_response({"error": error, "error_description": description}, status=status)


def _selector(source: dict[str, str], names: Sequence[str]) -> tuple[Optional[str], Optional[str],
                                                                      int]:
    """``(field, value, how many selectors)``: the identity selector a request used."""
    fields = ("client_id", "object_id", "resource_id")
    given = [(fields[i], source[n]) for i, n in enumerate(names) if source.get(n)]
    if not given:
        return None, None, 0
    return given[0][0], given[0][1], len(given)


def _metadata_ok(req: Request) -> bool:
    return str(req.headers.get("metadata") or "").lower() == "true"


@route("GET", "/metadata/identity/oauth2/token", endpoint="imds")
def imds_token(emu: Emulator, req: Request) -> Response:
    """IMDS's token endpoint."""
    mi = managed_identities(emu)
    if "x-forwarded-for" in req.headers:
        return _imds_error("Request contains an X-Forwarded-For header: IMDS does not accept "
                           "requests through a proxy")
    if not _metadata_ok(req):
        return _imds_error("Required metadata header not specified")
    version = req.query.get("api-version")
    if not version:
        return _imds_error("Required query variable 'api-version' is missing")
    if version not in IMDS_API_VERSIONS:
        return _imds_error(f"Invalid api-version '{version}'")
    if mi.take_starting():
        return _imds_error("The instance metadata service is starting: try again", status=410,
                           error="service_unavailable")
    resource = req.query.get("resource", "").strip()
    if not resource:
        return _imds_error("Required audience parameter not specified")
    field, value, count = _selector(req.query, ("client_id", "object_id", "msi_res_id"))
    if count > 1:
        return _imds_error("Multiple user assigned identities were specified: give one of "
                           "client_id, object_id or msi_res_id")
    identity = mi.find(field, value)
    if identity is None:
        return _imds_error("Identity not found")
    body = mi.issue(identity, resource)
    body["ext_expires_in"] = body["expires_in"]
    return json_response(body)


def _app_service_error(status: int, message: str) -> Response:
    return json_response(
        {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())},
        status=status,
    )


@route("GET", "/msi/token", endpoint="app_service")
def app_service_token(emu: Emulator, req: Request) -> Response:
    """App Service's (and Functions') managed identity endpoint, API version 2019-08-01."""
    mi = managed_identities(emu)
    header = str(req.headers.get("x-identity-header") or "")
    if not header or not secrets.compare_digest(header.encode(), mi.identity_header.encode()):
        return _app_service_error(401, "The X-IDENTITY-HEADER is missing or wrong: send the "
                                       "value of IDENTITY_HEADER.")
    version = req.query.get("api-version", "")
    if version != APP_SERVICE_API_VERSION:
        return _app_service_error(400, f"Unsupported api-version '{version}': use "
                                       f"{APP_SERVICE_API_VERSION}.")
    resource = req.query.get("resource", "").strip()
    if not resource:
        return _app_service_error(400, "The resource parameter is missing.")
    field, value, count = _selector(req.query, ("client_id", "principal_id", "mi_res_id"))
    if count > 1:
        return _app_service_error(400, "Give only one of client_id, principal_id or mi_res_id.")
    identity = mi.find(field, value)
    if identity is None:
        return _app_service_error(400, "Unable to load the proper Managed Identity.")
    body = mi.issue(identity, resource)
    return json_response({k: body[k] for k in
                          ("access_token", "expires_on", "resource", "token_type", "client_id")})


@route("POST", "/oauth2/token", endpoint="cloud_shell")
def cloud_shell_token(emu: Emulator, req: Request) -> Response:
    """Cloud Shell's token endpoint (``MSI_ENDPOINT``): the host's own identity only."""
    mi = managed_identities(emu)
    if not _metadata_ok(req):
        return _imds_error("Required metadata header not specified")
    resource = req.form.get("resource", "").strip()
    if not resource:
        return _imds_error("Required audience parameter not specified")
    if any(req.form.get(n) for n in ("client_id", "object_id", "msi_res_id")):
        return _imds_error("Cloud Shell does not support user-assigned identities")
    identity = mi.find(None, None)
    if identity is None:
        return _imds_error("Identity not found")
    body = mi.issue(identity, resource)
    body.pop("client_id")
    return json_response(body)


@route("GET", "/arc/metadata/identity/oauth2/token", endpoint="azure_arc")
def arc_token(emu: Emulator, req: Request) -> Response:
    """Azure Arc's endpoint (the agent, himds): a key file challenge, then the token."""
    mi = managed_identities(emu)
    if not _metadata_ok(req):
        return _imds_error("Required metadata header not specified")
    version = req.query.get("api-version", "")
    if version != ARC_API_VERSION:
        return _imds_error(f"Invalid api-version '{version}'")
    resource = req.query.get("resource", "").strip()
    if not resource:
        return _imds_error("Required audience parameter not specified")
    if any(req.query.get(n) for n in ("client_id", "object_id", "msi_res_id", "mi_res_id")):
        return _imds_error("User assigned identities are not supported on Azure Arc")
    scheme, _, key = str(req.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "basic" or not mi.arc_key_ok(key):
        realm = mi.arc_challenge()
        if realm is None:
            return _imds_error("the emulated Arc agent has no key folder (arc_key_folder)",
                               status=500, error="server_error")
        response = _imds_error("Unauthorized: read the key file named in WWW-Authenticate",
                               status=401, error="unauthorized")
        response.headers.append(("WWW-Authenticate", f"Basic realm={realm}"))
        return response
    identity = mi.find(None, None)
    if identity is None:
        return _imds_error("Identity not found")
    body = mi.issue(identity, resource)
    body.pop("client_id")
    return json_response(body)


def _service_fabric_error(status: int, code: str, message: str) -> Response:
    return json_response({"error": {"correlationId": str(uuid.uuid4()), "code": code,
                                    "message": message}}, status=status)


@route("GET", "/sf/token", endpoint="service_fabric")
def service_fabric_token(emu: Emulator, req: Request) -> Response:
    """Service Fabric's managed identity endpoint (its certificate is what clients pin)."""
    mi = managed_identities(emu)
    header = str(req.headers.get("secret") or "")
    if not header or not secrets.compare_digest(header.encode(), mi.identity_header.encode()):
        return _service_fabric_error(401, "SecretHeaderNotFound",
                                     "Secret is not found in the request headers.")
    version = req.query.get("api-version", "")
    if version != SERVICE_FABRIC_API_VERSION:
        return _service_fabric_error(400, "InvalidApiVersion",
                                     f"The api-version '{version}' could not be found.")
    resource = req.query.get("resource", "").strip()
    if not resource:
        return _service_fabric_error(400, "ArgumentNullOrEmpty",
                                     "Value cannot be null or empty: resource.")
    identity = mi.find(None, None)
    if identity is None:
        return _service_fabric_error(404, "ManagedIdentityNotFound",
                                     "Managed Identity not found for the application.")
    body = mi.issue(identity, resource)
    return json_response({"token_type": "Bearer", "access_token": body["access_token"],
                          "expires_on": int(body["expires_on"]), "resource": resource})


@route("GET", "/ml/token", endpoint="azure_ml")
def azure_ml_token(emu: Emulator, req: Request) -> Response:
    """Azure Machine Learning's endpoint (``MSI_ENDPOINT`` with ``MSI_SECRET``, API 2017)."""
    mi = managed_identities(emu)
    header = str(req.headers.get("secret") or "")
    if not header or not secrets.compare_digest(header.encode(), mi.msi_secret.encode()):
        return _app_service_error(401, "The secret header is missing or wrong: send the value "
                                       "of MSI_SECRET.")
    version = req.query.get("api-version", "")
    if version != AZURE_ML_API_VERSION:
        return _app_service_error(400, f"Unsupported api-version '{version}'.")
    resource = req.query.get("resource", "").strip()
    if not resource:
        return _app_service_error(400, "The resource parameter is missing.")
    client_id = req.query.get("clientid")
    identity = mi.find("client_id" if client_id else None, client_id)
    if identity is None:
        return _app_service_error(400, "Unable to load the proper Managed Identity.")
    body = mi.issue(identity, resource)
    expires_on = body["expires_on"]
    if mi.dated_expiry:
        when = dt.datetime.fromtimestamp(int(expires_on), dt.timezone.utc)
        expires_on = when.strftime("%m/%d/%Y %H:%M:%S +00:00")
    return json_response({"access_token": body["access_token"], "expires_on": expires_on,
                          "resource": resource, "token_type": "Bearer"})
