"""authlayer.credential / authlayer.aio.credential follow azure-core's TokenCredential protocol."""

from __future__ import annotations

import asyncio
from typing import Callable

from authlayer import aio, credential, get_token
from authlayer import jwt as jwtlib
from authlayer.emulator import Emulator


def test_sync_credential_gets_tokens_for_the_sdk_scopes(emu: Emulator, cc_profile: str) -> None:
    cred = credential(cc_profile)
    token = cred.get_token("https://vault.azure.net/.default")
    assert jwtlib.decode(token.token)[1]["aud"] == "https://vault.azure.net"
    token_value, expires_on = token[:2]  # unpacks like azure-core's AccessToken
    assert token_value == token.token
    assert expires_on == token.expires_on
    assert cred.get_token("https://vault.azure.net/.default") == token  # cached
    assert emu.count("token") == 1
    assert repr(cred) == f"ProfileCredential({cc_profile!r})"


def test_no_scopes_means_the_profile_scope(emu: Emulator, cc_profile: str) -> None:
    assert credential(cc_profile).get_token() == get_token(cc_profile)


def test_get_token_info_and_tenant(emu: Emulator, app_profile: Callable[..., str]) -> None:
    other = emu.add_tenant()
    # Another tenant only when the profile allows it (test_chains.py: refused otherwise).
    with credential(app_profile("app", additionally_allowed_tenants=[other])) as cred:
        info = cred.get_token_info(emu.api_scope, options={"tenant_id": other})
    assert jwtlib.decode(info.token)[1]["tid"] == other
    assert info.refresh_on is not None
    assert info.refresh_on < info.expires_on
    assert info.token not in repr(info)


def test_claims_are_passed_to_the_token_request(emu: Emulator, cc_profile: str) -> None:
    cred = credential(cc_profile)
    cred.get_token(emu.api_scope, claims='{"access_token":{"acrs":{"essential":true}}}')
    assert "claims" in emu.requests[-1].form


def test_async_credential(emu: Emulator, cc_profile: str) -> None:
    async def main() -> tuple[str, str]:
        async with aio.credential(cc_profile) as cred:
            token = await cred.get_token(emu.api_scope)
            info = await cred.get_token_info(emu.api_scope)
            return token.token, info.token

    token, info = asyncio.run(main())
    assert token == info
    assert emu.count("token") == 1
