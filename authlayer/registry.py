"""Where flows and secret sources are looked up by name.

The built-in flows are the modules of :mod:`authlayer.flows`; each declares itself with
``FLOW = FlowSpec(...)`` at its end. A flow module is imported only when a profile uses that
flow, so ``import authlayer.config`` imports none of them; only error messages that list every
flow taking a key load every spec.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from .schema import FlowSpec

__all__ = ["BUILTIN_FLOWS", "flow", "flow_names", "flows_taking"]

# The built-in flows, in the order they are listed to people.
BUILTIN_FLOWS = (
    "client_credentials",
    "device_code",
    "authorization_code",
    "refresh_token",
    "on_behalf_of",
    "password",
    "managed_identity",
    "workload_identity",
    "azure_cli",
)

_lock = threading.Lock()
_flows: dict[str, FlowSpec] = {}


def flow(name: str) -> FlowSpec:
    """The spec of flow ``name``. Raises :class:`LookupError` for a name that is no flow."""
    spec = _flows.get(name)
    if spec is not None:
        return spec
    if name not in BUILTIN_FLOWS:
        raise LookupError(name)
    module = importlib.import_module(f"{__package__}.flows.{name}")
    spec = cast("FlowSpec", module.FLOW)
    with _lock:
        _flows[name] = spec
    return spec


def flow_names() -> tuple[str, ...]:
    """Every flow's name: the built-ins first."""
    return BUILTIN_FLOWS


def flows_taking(key: str) -> list[str]:
    """The flows whose profiles may set ``key``, in :func:`flow_names` order. Loads every spec:
    for error messages only."""
    return [name for name in flow_names() if flow(name).takes(key)]
