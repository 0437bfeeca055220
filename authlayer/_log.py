"""The ``authlayer`` logger, with :mod:`logging` imported when something is first logged.

Importing :mod:`logging` costs a few milliseconds of start-up (it brings ``traceback``,
``textwrap`` and ``string``), and a token served from a cache logs nothing:
``authlayer token`` must not pay for it. ``log.debug(...)`` and the rest are the real
:class:`logging.Logger`'s methods, looked up at each use, so records name the caller's module
and line as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from logging import Logger

__all__ = ["log"]


class _Logger:
    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        import logging

        return getattr(logging.getLogger("authlayer"), name)

    def __repr__(self) -> str:
        return "<authlayer's logger, imported at first use>"


log = cast("Logger", _Logger())
