"""CI identity providers: GitHub Actions' and Azure Pipelines' OIDC token endpoints, shaped like
the real ones, issuing tokens that the emulator's federated credentials accept.

- GitHub Actions: ``GET /github/oidc/token?api-version=2.0&audience=...`` with
  ``Authorization: Bearer <ACTIONS_ID_TOKEN_REQUEST_TOKEN>`` answers ``{"value": "<JWT>"}``
  (issuer ``https://token.actions.githubusercontent.com``, subject
  :attr:`CiProviders.github_subject`, audience as asked, default
  ``https://github.com/<owner>``). ``ACTIONS_ID_TOKEN_REQUEST_URL`` =
  :attr:`CiProviders.github_request_url` (it has a query already, as the real one does).
  Endpoint ``"github_oidc"``.
- Azure Pipelines: ``POST /azure-pipelines/oidctoken?api-version=7.1&serviceConnectionId=...``
  with ``Authorization: Bearer <System.AccessToken>`` answers ``{"oidcToken": "<JWT>"}`` for a
  service connection added with :meth:`CiProviders.add_service_connection` (issuer
  ``https://vstoken.dev.azure.com/<organization id>``, subject ``sc://<org>/<project>/<name>``,
  audience ``api://AzureADTokenExchange``). ``SYSTEM_OIDCREQUESTURI`` =
  :attr:`CiProviders.pipelines_request_uri`. Refusals carry ``X-VSS-E2EID`` and
  ``X-MSEdge-Ref``, as Azure DevOps' do. Endpoint ``"azure_pipelines_oidc"``.

Tests drive it through :func:`ci_providers`::

    ci = ci_providers(emu)
    app = emu.register_app(federated=[ci.github_credential()])
"""

from __future__ import annotations

import secrets
import threading
import uuid
from typing import TYPE_CHECKING, Optional

from .federated import DEFAULT_AUDIENCE, FederatedIssuers, Issuer, federated_issuers
from .routes import route
from .wire import Request, Response, json_response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["GITHUB_ISSUER", "CiProviders", "ci_providers"]

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"


class CiProviders:
    """The CI identity providers of one emulator (``ci_providers(emu)``)."""

    def __init__(self, emu: Emulator, issuers: FederatedIssuers) -> None:
        self._emu = emu
        self._lock = threading.Lock()
        self.github = issuers.add(GITHUB_ISSUER)
        self.github_request_token = secrets.token_urlsafe(24)
        """``ACTIONS_ID_TOKEN_REQUEST_TOKEN``: requests must send it back."""
        self.github_subject = "repo:contoso/app:ref:refs/heads/main"
        self.organization_id = str(uuid.uuid4())
        self.pipelines = issuers.add(
            f"https://vstoken.dev.azure.com/{self.organization_id}")
        self.system_access_token = secrets.token_urlsafe(24)
        """``$(System.AccessToken)``: requests must send it back."""
        self._connections: dict[str, str] = {}

    @property
    def github_request_url(self) -> str:
        """The value for ``ACTIONS_ID_TOKEN_REQUEST_URL``."""
        return f"{self._emu.url}/github/oidc/token?api-version=2.0"

    @property
    def pipelines_request_uri(self) -> str:
        """The value for ``SYSTEM_OIDCREQUESTURI``."""
        return f"{self._emu.url}/azure-pipelines/oidctoken"

    def github_credential(self, audience: str = DEFAULT_AUDIENCE) -> dict[str, str]:
        """The federated credential an app needs to trust this repository's workflows."""
        return {"issuer": self.github.url, "subject": self.github_subject, "audience": audience}

    def add_service_connection(self, name: str = "deploy") -> tuple[str, dict[str, str]]:
        """A service connection: its id and the federated credential an app needs for it."""
        connection_id = str(uuid.uuid4())
        subject = f"sc://contoso/project/{name}"
        with self._lock:
            self._connections[connection_id] = subject
        return connection_id, {"issuer": self.pipelines.url, "subject": subject,
                               "audience": DEFAULT_AUDIENCE}

    def subject_of(self, connection_id: str) -> Optional[str]:
        with self._lock:
            return self._connections.get(connection_id.lower())


def ci_providers(emu: Emulator) -> CiProviders:
    """The CI identity providers of ``emu``."""
    issuers = federated_issuers(emu)  # not inside the factory: extensions are made under a lock
    return emu.extension("ci_providers", lambda e: CiProviders(e, issuers))


def _bearer(req: Request, expected: str) -> bool:
    scheme, _, token = str(req.headers.get("authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(token.encode(), expected.encode())


def _mint(issuer: Issuer, subject: str, audience: str) -> str:
    return issuer.mint(subject, audience, lifetime=300)  # GitHub's are short-lived


@route("GET", "/github/oidc/token", endpoint="github_oidc")
def github_oidc_token(emu: Emulator, req: Request) -> Response:
    ci = ci_providers(emu)
    if not _bearer(req, ci.github_request_token):
        return json_response({"message": "Bad credentials"}, status=401)
    owner = ci.github_subject.split(":", 2)[1].split("/", 1)[0]
    audience = req.query.get("audience") or f"https://github.com/{owner}"
    return json_response({"count": 1, "value": _mint(ci.github, ci.github_subject, audience)})


def _devops_error(status: int, message: str) -> Response:
    response = json_response({"$id": "1", "message": message, "typeKey": "VssServiceException"},
                             status=status)
    response.headers += [("X-VSS-E2EID", str(uuid.uuid4())), ("X-MSEdge-Ref", "Ref A: emulator")]
    return response


@route("POST", "/azure-pipelines/oidctoken", endpoint="azure_pipelines_oidc")
def pipelines_oidc_token(emu: Emulator, req: Request) -> Response:
    ci = ci_providers(emu)
    if not _bearer(req, ci.system_access_token):
        return _devops_error(401, "TF400813: The user is not authorized to access this "
                                  "resource.")
    if req.query.get("api-version") != "7.1":
        return _devops_error(400, f"Invalid api-version '{req.query.get('api-version')}'.")
    subject = ci.subject_of(req.query.get("serviceConnectionId", ""))
    if subject is None:
        return _devops_error(404, "Service connection "
                                  f"'{req.query.get('serviceConnectionId', '')}' was not found.")
    return json_response({"oidcToken": _mint(ci.pipelines, subject, DEFAULT_AUDIENCE)})
