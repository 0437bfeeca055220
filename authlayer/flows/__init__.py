"""The grants, one module per flow, named as on the wire.

Each module exposes ``acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]``: a
generator that yields :mod:`authlayer._http` actions and never does I/O itself, so one driver can
run it with blocking calls and another with ``await``. Modules are imported only when a profile
uses them.
"""

from __future__ import annotations

import importlib
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..schema import FlowContext, FlowSpec, default_prompt, endpoint

if TYPE_CHECKING:  # importing the package of flows stays light: config needs its leaf modules
    from .._http import Action
    from ..token import TokenResult

__all__ = ["FlowContext", "FlowModule", "FlowSpec", "default_prompt", "endpoint", "load_flow"]


class FlowModule(Protocol):
    def acquire(self, ctx: FlowContext) -> Generator[Action, Any, TokenResult]: ...


def load_flow(name: str) -> FlowModule:
    """The module for flow ``name`` (validated by the config loader)."""
    return cast(FlowModule, importlib.import_module(f"{__name__}.{name}"))
