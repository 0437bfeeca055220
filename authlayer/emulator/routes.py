"""The emulator's routing table: which handler answers which (method, path).

A route is a method (or ``"*"`` for any), a path pattern and a handler. Patterns are paths with
``{name}`` placeholders that match one path segment and ``{name:path}`` placeholders that match
the rest of the path (slashes included); the captured values arrive in ``Request.params``. Each
route also names its *endpoint* (``"token"``, ``"devicecode"``, ``"authorize"``, ``"api"``,
``"imds"``, ...): the name that request counters and fault injection use.

Adding an endpoint in a new module::

    from authlayer.emulator.routes import route
    from authlayer.emulator.wire import Request, Response, json_response

    @route("POST", "/{tenant}/oauth2/v2.0/devicecode", endpoint="devicecode")
    def devicecode(emu: Emulator, req: Request) -> Response:
        tenant = emu.state.resolve_tenant(req.params["tenant"])
        ...
        return json_response({...})

and import that module from ``authlayer/emulator/__init__.py`` so the route is registered
whenever the package is imported. Routes registered at import time serve every emulator; a test
can also add a route to one emulator with ``Emulator.add_route``. Earlier registrations win
when two patterns match the same path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from .wire import Request, Response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["ROUTES", "Handler", "Route", "RouteTable", "route"]

Handler = Callable[["Emulator", Request], Response]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")


def _compile(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>.*)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out))


@dataclass(frozen=True)
class Route:
    """One entry of the routing table."""

    method: str
    pattern: str
    handler: Handler
    endpoint: str
    regex: re.Pattern[str]

    def match(self, path: str) -> Optional[dict[str, str]]:
        """The captured placeholders when ``path`` fits the pattern, else ``None``."""
        m = self.regex.fullmatch(path)
        return None if m is None else m.groupdict()


class RouteTable:
    """An ordered list of routes, looked up by method and path."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(self, method: str, pattern: str, handler: Handler, *, endpoint: str) -> Route:
        """Register ``handler`` for ``method`` (``"*"`` for any) and ``pattern``."""
        entry = Route(method.upper(), pattern, handler, endpoint, _compile(pattern))
        self._routes.append(entry)
        return entry

    def find(self, method: str, path: str) -> tuple[Optional[Route], dict[str, str], list[str]]:
        """The route for ``method`` and ``path`` and its captures (``GET`` routes answer
        ``HEAD`` too; the server leaves the body out).

        When the path matches only routes for other methods, the route is ``None`` and the third
        item lists the methods that would have been accepted (for a 405 answer).
        """
        allowed: list[str] = []
        for entry in self._routes:
            params = entry.match(path)
            if params is None:
                continue
            wanted = method.upper()
            if entry.method in ("*", wanted) or (wanted == "HEAD" and entry.method == "GET"):
                return entry, params, []
            allowed.append(entry.method)
        return None, {}, allowed

    def __iter__(self) -> Iterator[Route]:
        return iter(list(self._routes))

    def __len__(self) -> int:
        return len(self._routes)


ROUTES = RouteTable()
"""The routes every emulator serves; filled by the modules that ``route()`` at import time."""


def route(method: str, pattern: str, *, endpoint: str) -> Callable[[Handler], Handler]:
    """Decorator: register a handler in :data:`ROUTES` (see the module docstring)."""

    def register(handler: Handler) -> Handler:
        ROUTES.add(method, pattern, handler, endpoint=endpoint)
        return handler

    return register
