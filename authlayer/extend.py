"""The surface a plugin package builds on (CONTRACT §10, ``docs/extending.md``).

A plugin adds a secret source (entry point group ``authlayer.secret_sources``), a flow
(``authlayer.flows``) or a token store (``authlayer.stores``: :class:`TokenStore`, optionally
:class:`FleetLock`). What it may use from authlayer is re-exported here, and only here is it
promised to stay: the declarations (:class:`FlowSpec`, :class:`Key`, :class:`SecretSourceSpec`),
what an acquisition gets (:class:`FlowContext`) and the actions a sans-I/O flow yields
(:class:`Send`, :class:`Sleep`, :class:`Call`, with :func:`send` for the retry policy), and the
one token-endpoint exchange (:func:`exchange`, :func:`refresh_grant`): form, client
authentication, claims, the clock read before sending, the answer or Entra's error parsed.
"""

from __future__ import annotations

from ._http import Call, ConnectionFailed, HttpRequest, HttpResponse, Send, Sleep, send
from .errors import AuthLayerError, ConfigError, TokenError
from .oauth import exchange, refresh_grant
from .profile import Profile, Secret, SecretSource
from .schema import (
    CLIENT,
    COMMON,
    AtMostOne,
    FlowContext,
    FlowSpec,
    Key,
    ReadContext,
    SecretSourceSpec,
    endpoint,
)
from .store import FleetLock, MemoryStore, TokenStore
from .token import TokenResult

__all__ = [
    "CLIENT",
    "COMMON",
    "AtMostOne",
    "AuthLayerError",
    "Call",
    "ConfigError",
    "ConnectionFailed",
    "FleetLock",
    "FlowContext",
    "FlowSpec",
    "HttpRequest",
    "HttpResponse",
    "Key",
    "MemoryStore",
    "Profile",
    "ReadContext",
    "Secret",
    "SecretSource",
    "SecretSourceSpec",
    "Send",
    "Sleep",
    "TokenError",
    "TokenResult",
    "TokenStore",
    "endpoint",
    "exchange",
    "refresh_grant",
    "send",
]
