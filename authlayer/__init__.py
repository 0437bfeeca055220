"""authlayer: Entra ID tokens for ``requests`` and ``httpx``, from a named profile.

>>> import requests
>>> from authlayer import EntraAuth
>>> session = requests.Session()
>>> session.auth = EntraAuth("prod-graph")

Names are imported lazily, so ``import authlayer`` pays only for what a script uses.
"""

from __future__ import annotations

from ._version import __version__

# Not imported from typing: `import authlayer` would pay for typing, which a script that only
# needs one name may never import (type checkers know this constant by its name).
TYPE_CHECKING = False

__all__ = [
    "AccessToken",
    "AuthLayerError",
    "ConfigError",
    "EntraAuth",
    "TokenError",
    "__version__",
    "credential",
    "get_token",
    "get_token_async",
    "reset",
]

if TYPE_CHECKING:
    from typing import Any

    from .auth import EntraAuth
    from .azure_credential import credential
    from .errors import AuthLayerError, ConfigError, TokenError
    from .provider import get_token, get_token_async, reset
    from .token import AccessToken

_LAZY = {
    "AccessToken": "token",
    "AuthLayerError": "errors",
    "ConfigError": "errors",
    "TokenError": "errors",
    "EntraAuth": "auth",
    "get_token": "provider",
    "get_token_async": "provider",
    "reset": "provider",
    "credential": "azure_credential",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'authlayer' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
