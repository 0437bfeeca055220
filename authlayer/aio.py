"""Async counterparts for azure-core's async clients: ``authlayer.aio.credential(profile)``."""

from __future__ import annotations

from typing import Optional

from .azure_credential import AsyncProfileCredential
from .provider import PathArg, get_token_async

__all__ = ["credential", "get_token_async"]


def credential(profile: Optional[str] = None, *, config: PathArg = None) -> AsyncProfileCredential:
    """An azure-core ``AsyncTokenCredential`` for ``profile`` (default ``$AUTHLAYER_PROFILE``)."""
    return AsyncProfileCredential(profile, config)
