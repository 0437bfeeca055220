"""The emulator's plain values for one HTTP exchange, and Entra-shaped error answers.

A handler receives a :class:`Request` (already read in full: headers, body, decoded form and
query) and returns a :class:`Response`; neither touches a socket, so handlers are easy to write
and to read. :class:`EntraError` is what a handler raises to refuse a request the way Entra ID
does; :func:`entra_error_response` turns it into the documented JSON body (``error``,
``error_description`` with the ``AADSTS<code>:`` prefix and the trace lines, ``error_codes``,
``timestamp``, ``trace_id``, ``correlation_id``, ``error_uri``).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Union, overload

__all__ = [
    "EntraError",
    "Headers",
    "Request",
    "RequestRecord",
    "Response",
    "entra_error_body",
    "entra_error_response",
    "json_response",
    "text_response",
]


class Headers(dict[str, str]):
    """A plain ``dict`` of header names to values whose keys are case-insensitive.

    Keys are stored in lower case; ``headers["Authorization"]`` and ``headers["authorization"]``
    are the same entry. When a header is repeated, the values are joined with ``", "``.
    """

    def __init__(self, items: Union[Iterable[tuple[str, str]], Mapping[str, str]] = ()) -> None:
        super().__init__()
        pairs = items.items() if isinstance(items, Mapping) else items
        for name, value in pairs:
            key = name.lower()
            if key in self:
                super().__setitem__(key, f"{dict.__getitem__(self, key)}, {value}")
            else:
                super().__setitem__(key, value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass(frozen=True)
class Request:
    """One request as a handler sees it, read in full.

    ``params`` holds the values the route pattern captured (``{"tenant": "contoso..."}``);
    ``form`` the ``application/x-www-form-urlencoded`` body (first value of each field);
    ``url`` the absolute URL the client called, rebuilt from the ``Host`` header.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: bytes
    form: dict[str, str]
    url: str
    base_url: str
    endpoint: str = "unknown"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def correlation_id(self) -> str:
        """The client's ``client-request-id`` (MSAL sends one; Entra echoes it), else a new one."""
        value = self.headers.get("client-request-id")
        return value if value else str(uuid.uuid4())


@dataclass
class Response:
    """An answer to send: status, headers, body. ``Content-Length`` is added by the server."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: Optional[str] = "application/json; charset=utf-8"

    def header(self, name: str) -> Optional[str]:
        """The first value of a header set on this response, or ``None``."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class RequestRecord(NamedTuple):
    """What the emulator remembers of one request (``Emulator.requests``).

    A named tuple: read it by attribute (``rec.form["client_id"]``), by position, or by field
    name (``rec["form"]``). ``form`` keeps every field, assertions included, so tests can
    inspect what a client sent.
    """

    endpoint: str
    method: str
    path: str
    headers: Headers
    form: dict[str, str]
    query: dict[str, str]
    time: float
    body: bytes = b""

    @overload  # type: ignore[override]
    def __getitem__(self, key: str) -> Any: ...
    @overload
    def __getitem__(self, key: int) -> Any: ...
    @overload
    def __getitem__(self, key: slice) -> tuple[Any, ...]: ...

    def __getitem__(self, key: Union[str, int, slice]) -> Any:
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            return getattr(self, key)
        return tuple.__getitem__(self, key)


def json_response(
    obj: Any, status: int = 200, headers: Optional[Iterable[tuple[str, str]]] = None
) -> Response:
    """A JSON answer."""
    body = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    return Response(status=status, body=body, headers=list(headers or ()))


def text_response(
    text: str,
    status: int = 200,
    content_type: str = "text/plain; charset=utf-8",
    headers: Optional[Iterable[tuple[str, str]]] = None,
) -> Response:
    """A text (or HTML) answer."""
    return Response(
        status=status, body=text.encode("utf-8"), headers=list(headers or ()),
        content_type=content_type,
    )


class EntraError(Exception):
    """Raised by a handler to refuse a request with an Entra-shaped error answer.

    ``status`` defaults to 401 for ``invalid_client`` and 400 otherwise, as Entra does.
    ``suberror`` and ``claims`` are added to the body when given; ``headers`` to the answer.
    """

    def __init__(
        self,
        error: str,
        code: int,
        message: str,
        *,
        status: Optional[int] = None,
        suberror: Optional[str] = None,
        claims: Optional[str] = None,
        headers: Optional[Iterable[tuple[str, str]]] = None,
    ) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.error = error
        self.code = code
        self.message = message
        self.status = status if status is not None else (401 if error == "invalid_client" else 400)
        self.suberror = suberror
        self.claims = claims
        self.headers = list(headers or ())


def entra_error_body(
    error: str,
    code: int,
    message: str,
    *,
    base_url: str,
    correlation_id: Optional[str] = None,
    suberror: Optional[str] = None,
    claims: Optional[str] = None,
) -> dict[str, Any]:
    """The JSON object Entra answers with when it refuses a request."""
    now = dt.datetime.now(dt.timezone.utc)
    timestamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    trace_id = str(uuid.uuid4())
    correlation_id = correlation_id or str(uuid.uuid4())
    description = (
        f"AADSTS{code}: {message}\r\nTrace ID: {trace_id}\r\n"
        f"Correlation ID: {correlation_id}\r\nTimestamp: {now.strftime('%Y-%m-%d %H:%M:%S')}Z"
    )
    body: dict[str, Any] = {
        "error": error,
        "error_description": description,
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"{base_url}/error?code={code}",
    }
    if suberror:
        body["suberror"] = suberror
    if claims:
        body["claims"] = claims
    return body


def entra_error_response(req: Request, err: EntraError) -> Response:
    """The answer for an :class:`EntraError` raised while handling ``req``."""
    body = entra_error_body(
        err.error,
        err.code,
        err.message,
        base_url=req.base_url,
        correlation_id=req.correlation_id,
        suberror=err.suberror,
        claims=err.claims,
    )
    headers = [
        ("Cache-Control", "no-store, no-cache"),
        ("Pragma", "no-cache"),
        ("x-ms-request-id", body["trace_id"]),
        ("client-request-id", body["correlation_id"]),
        *err.headers,
    ]
    return json_response(body, status=err.status, headers=headers)
