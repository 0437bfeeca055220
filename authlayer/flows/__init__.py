"""The grants, one module per flow, named as on the wire.

Each module exposes ``acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]``: a
generator that yields :mod:`authlayer._actions` actions and never does I/O itself, so one driver can
run it with blocking calls and another with ``await``; its token requests go through
:mod:`authlayer.oauth`. Each module ends with ``FLOW = FlowSpec(...)``, which
:mod:`authlayer.registry` reads; modules are imported only when a profile uses them. Helpers
shared by several flows have a leading underscore (:mod:`._person`, :mod:`._workload_env`).
"""

from __future__ import annotations

from ..schema import FlowContext, FlowSpec, default_prompt

__all__ = ["FlowContext", "FlowSpec", "default_prompt"]
