"""An azure-core ``TokenCredential`` backed by a profile, so Azure SDK clients can use it.

``credential("prod")`` follows the protocol azure-core's clients call: ``get_token(*scopes,
claims=None, tenant_id=None, **kwargs)`` and ``get_token_info(*scopes, options=None)``. The scopes
come from the SDK client; the profile supplies everything else. azure-core itself is not needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from . import registry
from .errors import TokenError
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
                           int(entry.refresh_on))


class _Base:
    def __init__(self, profile: Optional[str], config: PathArg) -> None:
        self._profile = profile
        self._config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._profile!r})"

    def _bind(self, scopes: tuple[str, ...], tenant_id: Optional[str],
              claims: Optional[str], cae: bool) -> Binding:
        binding = PROVIDER.bind(self._profile, config=self._config, scope=scopes or None)
        if self._other_tenant(binding, tenant_id):
            binding = PROVIDER.bind(self._profile, config=self._config, scope=scopes or None,
                                    tenant=tenant_id)
        return self._finish(binding, claims, cae)

    @staticmethod
    def _finish(binding: Binding, claims: Optional[str], cae: bool) -> Binding:
        if cae:
            binding = PROVIDER.with_cae(binding)
        if claims:
            # The SDK asks with claims after a claims challenge: the plain token was refused.
            PROVIDER.forget(binding, Forget.TOKEN)
        return binding

    @staticmethod
    def _other_tenant(binding: Binding, tenant_id: Optional[str]) -> bool:
        """Whether the SDK's ``tenant_id`` asks for another tenant than the profile's; raises
        :class:`TokenError` when the profile does not allow that tenant (azure-identity's
        rules since 1.11: ``additionally_allowed_tenants``, ``"*"`` for any)."""
        profile = binding.base
        # A flow with no tenant to choose ignores an SDK's tenant_id, as azure-identity does.
        if not tenant_id or registry.flow(profile.flow).ignores_requested_tenant:
            return False
        wanted = str(tenant_id).lower()
        mine = (profile.tenant or "").lower()
        if wanted == mine:
            return False
        allowed = profile.additionally_allowed_tenants
        if (not mine or "*" in allowed or wanted in allowed
                or (not allowed and mine in ("organizations", "common"))):
            return True
        raise TokenError(
            f"an Azure SDK asked for a token of tenant {str(tenant_id)[:80]!r}, but the profile "
            f"is for tenant {profile.tenant!r} and does not allow others",
            profile=profile.name, error="tenant_not_allowed",
            hint=f'add the tenant to additionally_allowed_tenants = ["{wanted[:80]}"] in the '
                 'profile, or "*" for any tenant (a tenant= passed by your own code is '
                 "always allowed)")

    @staticmethod
    def _options(options: Optional[dict[str, Any]]) -> tuple[Optional[str], Optional[str], bool]:
        options = options or {}
        return (options.get("claims") or None, options.get("tenant_id"),
                bool(options.get("enable_cae")))


class ProfileCredential(_Base):
    """A synchronous azure-core ``TokenCredential`` for one profile."""

    def _get(self, scopes: tuple[str, ...], claims: Optional[str],
             tenant_id: Optional[str], cae: bool = False) -> CachedToken:
        PROVIDER.check_files()  # as get_token does: a rewritten profiles file is read again
        return PROVIDER.get(self._bind(scopes, tenant_id, claims, cae),
                            for_claims(claims) if claims else PLAIN)

    def get_token(self, *scopes: str, claims: Optional[str] = None,
                  tenant_id: Optional[str] = None, enable_cae: bool = False,
                  **kwargs: Any) -> AccessToken:
        """A token for ``scopes`` (the profile's scope when none is given); ``enable_cae``
        (azure-core sets it for clients that handle CAE challenges) asks for a CAE token."""
        return self._get(scopes, claims or None, tenant_id, enable_cae).token

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
                   tenant_id: Optional[str], cae: bool = False) -> CachedToken:
        if not claims and not tenant_id and not cae:  # get_token_async's fast path
            entry = PROVIDER.cached(self._profile, self._config, scopes or None, None, None)
            if entry is not None:
                return entry
        PROVIDER.check_files()  # as get_token_async does; it also opens the fast path above
        # Bound once (the first time off the event loop, in one worker thread however many
        # tasks ask); after that a cached token costs no thread hop.
        binding = await PROVIDER.bind_async(self._profile, config=self._config,
                                            scope=scopes or None)
        if self._other_tenant(binding, tenant_id):
            binding = await PROVIDER.bind_async(self._profile, config=self._config,
                                                scope=scopes or None, tenant=tenant_id)
        binding = self._finish(binding, claims, cae)
        return await PROVIDER.get_async(binding, for_claims(claims) if claims else PLAIN)

    async def get_token(self, *scopes: str, claims: Optional[str] = None,
                        tenant_id: Optional[str] = None, enable_cae: bool = False,
                        **kwargs: Any) -> AccessToken:
        """A token for ``scopes``, without blocking the event loop."""
        return (await self._get(scopes, claims or None, tenant_id, enable_cae)).token

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
