"""An azure-core ``TokenCredential`` backed by a profile, so Azure SDK clients can use it.

``credential("prod")`` follows the protocol azure-core's clients call: ``get_token(*scopes,
claims=None, tenant_id=None, **kwargs)`` and ``get_token_info(*scopes, options=None)``. The scopes
come from the SDK client; the profile supplies everything else. azure-core itself is not needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from . import registry
from .provider import PLAIN, PROVIDER, Binding, CachedToken, Forget, PathArg, for_claims
from .token import AccessToken

__all__ = ["AccessTokenInfo", "ProfileCredential", "credential"]


@dataclass(frozen=True)
class AccessTokenInfo:
    """azure-core's ``AccessTokenInfo`` shape: the token, its expiry and when to refresh."""

    token: str = field(repr=False)
    expires_on: int
    token_type: str = "Bearer"
    refresh_on: Optional[int] = None




def _info(entry: CachedToken) -> AccessTokenInfo:
    return AccessTokenInfo(entry.token.token, entry.token.expires_on, entry.token.token_type,
                           entry.refresh_on)


class _Base:
    def __init__(self, profile: Optional[str], config: PathArg) -> None:
        self._profile = profile
        self._config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._profile!r})"

    def _bind(self, scopes: tuple[str, ...], tenant_id: Optional[str],
              claims: Optional[str]) -> Binding:
        binding = PROVIDER.bind(self._profile, config=self._config, scope=scopes or None)
        if self._other_tenant(binding, tenant_id):
            binding = PROVIDER.bind(self._profile, config=self._config, scope=scopes or None,
                                    tenant=tenant_id)
        if claims:
            # The SDK asks with claims after a claims challenge: the plain token was refused.
            PROVIDER.forget(binding, Forget.TOKEN)
        return binding

    @staticmethod
    def _other_tenant(binding: Binding, tenant_id: Optional[str]) -> bool:
        profile = binding.base
        # A flow with no tenant to choose ignores an SDK's tenant_id, as azure-identity does.
        return bool(tenant_id) and not registry.flow(profile.flow).ignores_requested_tenant and (
            str(tenant_id).lower() != (profile.tenant or "").lower())

    @staticmethod
    def _options(options: Optional[dict[str, Any]]) -> tuple[Optional[str], Optional[str]]:
        options = options or {}
        return options.get("claims") or None, options.get("tenant_id")


class ProfileCredential(_Base):
    """A synchronous azure-core ``TokenCredential`` for one profile."""

    def _get(self, scopes: tuple[str, ...], claims: Optional[str],
             tenant_id: Optional[str]) -> CachedToken:
        return PROVIDER.get(self._bind(scopes, tenant_id, claims),
                            for_claims(claims) if claims else PLAIN)

    def get_token(self, *scopes: str, claims: Optional[str] = None,
                  tenant_id: Optional[str] = None, **kwargs: Any) -> AccessToken:
        """A token for ``scopes`` (the profile's scope when none is given)."""
        return self._get(scopes, claims or None, tenant_id).token

    def get_token_info(self, *scopes: str,
                       options: Optional[dict[str, Any]] = None) -> AccessTokenInfo:
        """The same, as azure-core's newer ``SupportsTokenInfo`` protocol wants it."""
        return _info(self._get(scopes, *self._options(options)))

    def close(self) -> None:
        """Nothing to release; present because azure-core clients call it."""

    def __enter__(self) -> ProfileCredential:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncProfileCredential(_Base):
    """An async azure-core ``AsyncTokenCredential`` for one profile (asyncio or trio)."""

    async def _get(self, scopes: tuple[str, ...], claims: Optional[str],
                   tenant_id: Optional[str]) -> CachedToken:
        if not claims and not tenant_id:  # the cached token: get_token_async's fast path
            entry = PROVIDER.cached(self._profile, self._config, scopes or None, None, None)
            if entry is not None:
                return entry
        # Bound once (the first time off the event loop, in one worker thread however many
        # tasks ask); after that a cached token costs no thread hop.
        binding = await PROVIDER.bind_async(self._profile, config=self._config,
                                            scope=scopes or None)
        if self._other_tenant(binding, tenant_id):
            binding = await PROVIDER.bind_async(self._profile, config=self._config,
                                                scope=scopes or None, tenant=tenant_id)
        if claims:
            # The SDK asks with claims after a claims challenge: the plain token was refused.
            PROVIDER.forget(binding, Forget.TOKEN)
        return await PROVIDER.get_async(binding, for_claims(claims) if claims else PLAIN)

    async def get_token(self, *scopes: str, claims: Optional[str] = None,
                        tenant_id: Optional[str] = None, **kwargs: Any) -> AccessToken:
        """A token for ``scopes``, without blocking the event loop."""
        return (await self._get(scopes, claims or None, tenant_id)).token

    async def get_token_info(self, *scopes: str,
                             options: Optional[dict[str, Any]] = None) -> AccessTokenInfo:
        """The same, as azure-core's newer ``AsyncSupportsTokenInfo`` protocol wants it."""
        return _info(await self._get(scopes, *self._options(options)))

    async def close(self) -> None:
        """Nothing to release; present because azure-core clients call it."""

    async def __aenter__(self) -> AsyncProfileCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def credential(profile: Optional[str] = None, *, config: PathArg = None) -> ProfileCredential:
    """An azure-core ``TokenCredential`` for ``profile`` (default ``$AUTHLAYER_PROFILE``).

    >>> from azure.keyvault.secrets import SecretClient
    >>> SecretClient(vault_url, credential=authlayer.credential("prod"))
    """
    return ProfileCredential(profile, config)
