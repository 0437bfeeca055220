"""CAE opt-in (``cae = true``: the client capabilities sent up front, CAE tokens kept apart from
others; the Azure SDK adapter's ``enable_cae``) and the tenant allow-list (an Azure SDK's
``tenant_id`` for another tenant refused unless ``additionally_allowed_tenants`` lists it),
end to end against the emulator."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import pytest

from authlayer import ConfigError, EntraAuth, TokenError, aio, credential, get_token
from authlayer import config as configlib
from authlayer import jwt as jwtlib
from authlayer.azure_credential import ProfileCredential
from authlayer.emulator import Emulator
from authlayer.provider import PROVIDER, store_key

from .conftest import Client, Profiles

CP1 = {"access_token": {"xms_cc": {"values": ["cp1"]}}}


def _claims(token: str) -> dict[str, Any]:
    return jwtlib.decode(token)[1]


def _token_forms(emu: Emulator) -> list[dict[str, str]]:
    return [r.form for r in emu.requests if r.endpoint == "token"]


# ------------------------------------------------------------------ CAE


def test_cae_profile_asks_for_cae_tokens(emu: Emulator, app_profile: Callable[..., str],
                                         client: Client) -> None:
    answer = client.get(f"{emu.api_url}/x", EntraAuth(app_profile("cae", cae=True)))
    assert answer.status == 200
    assert answer.json()["claims"]["xms_cc"] == ["cp1"]  # the emulator marks CAE tokens
    (form,) = _token_forms(emu)
    assert json.loads(form["claims"]) == CP1


def test_plain_profile_sends_no_capabilities(emu: Emulator, app_profile: Callable[..., str],
                                             client: Client) -> None:
    answer = client.get(f"{emu.api_url}/x", EntraAuth(app_profile("plain")))
    assert answer.status == 200
    assert "xms_cc" not in answer.json()["claims"]
    (form,) = _token_forms(emu)
    assert "claims" not in form


def test_cae_and_plain_tokens_never_share_an_entry(emu: Emulator,
                                                   app_profile: Callable[..., str]) -> None:
    app_profile("plain")
    app_profile("cae", cae=True)
    plain, cae = get_token("plain"), get_token("cae")
    assert plain.token != cae.token
    assert "xms_cc" not in _claims(plain.token)
    assert _claims(cae.token)["xms_cc"] == ["cp1"]
    assert emu.count("token") == 2
    plain_key, cae_key = PROVIDER.bind("plain").key, PROVIDER.bind("cae").key
    assert plain_key != cae_key
    # Non-CAE store keys keep their form (tests/test_store_keys.py); CAE ones end so.
    assert store_key(cae_key) == store_key(plain_key).replace(
        f"|{' '.join(plain_key.scopes)}", f"|cae|{' '.join(plain_key.scopes)}")
    assert "cae" not in store_key(plain_key)
    assert get_token("plain") == plain  # each from its own entry
    assert get_token("cae") == cae
    assert emu.count("token") == 2


def test_cae_tokens_kept_apart_in_the_file_cache(emu: Emulator,
                                                 app_profile: Callable[..., str]) -> None:
    app_profile("plain", cache="file")
    app_profile("cae", cache="file", cae=True)
    cae = get_token("cae")
    PROVIDER.reset()  # a new process: the file cache is all there is
    assert "xms_cc" not in _claims(get_token("plain").token)
    assert get_token("cae") == cae
    assert emu.count("token") == 2


def test_cae_claims_challenge_keeps_the_capabilities(emu: Emulator,
                                                     app_profile: Callable[..., str],
                                                     client: Client) -> None:
    auth = EntraAuth(app_profile("cae", cae=True))
    assert client.get(f"{emu.api_url}/x", auth).status == 200
    emu.claims_challenge(1)
    answer = client.get(f"{emu.api_url}/x", auth)
    assert answer.status == 200
    claims = answer.json()["claims"]
    assert claims["xms_cc"] == ["cp1"]
    assert claims["acrs"] == ["c1"]
    asked = json.loads(_token_forms(emu)[-1]["claims"])
    assert asked["access_token"]["xms_cc"] == CP1["access_token"]["xms_cc"]


@pytest.mark.parametrize("value", ['"yes"', "1"])
def test_cae_must_be_a_boolean(profiles: Profiles, value: str) -> None:
    profiles.write(f"""
        [profiles.p]
        flow = "azure_cli"
        scope = "https://graph.microsoft.com/.default"
        cae = {value}
    """)
    with pytest.raises(ConfigError) as info:
        configlib.load_profile("p")
    assert info.value.key == "cae"
    assert "true or false" in str(info.value)


def test_cae_does_not_apply_to_managed_identity(profiles: Profiles) -> None:
    profiles.write("""
        [profiles.p]
        flow = "managed_identity"
        scope = "https://graph.microsoft.com/.default"
        cae = true
    """)
    with pytest.raises(ConfigError) as info:
        configlib.load_profile("p")
    assert info.value.key == "cae"


def test_azure_sdk_enable_cae_gets_a_cae_token(emu: Emulator,
                                               app_profile: Callable[..., str]) -> None:
    cred = credential(app_profile("plain"))
    cae = cred.get_token(emu.api_scope, enable_cae=True)
    assert _claims(cae.token)["xms_cc"] == ["cp1"]
    plain = cred.get_token(emu.api_scope)
    assert "xms_cc" not in _claims(plain.token)
    assert cred.get_token(emu.api_scope, enable_cae=True) == cae  # cached, apart
    info = cred.get_token_info(emu.api_scope, options={"enable_cae": True})
    assert info.token == cae.token
    assert emu.count("token") == 2


def test_async_azure_sdk_enable_cae(emu: Emulator, app_profile: Callable[..., str]) -> None:
    name = app_profile("plain")

    async def main() -> tuple[str, str, str]:
        async with aio.credential(name) as cred:
            cae = await cred.get_token(emu.api_scope, enable_cae=True)
            plain = await cred.get_token(emu.api_scope)
            info = await cred.get_token_info(emu.api_scope, options={"enable_cae": True})
            return cae.token, plain.token, info.token

    cae, plain, info = asyncio.run(main())
    assert _claims(cae)["xms_cc"] == ["cp1"]
    assert "xms_cc" not in _claims(plain)
    assert info == cae
    assert emu.count("token") == 2


# ------------------------------------------------------------------ tenant allow-list


def test_sdk_tenant_outside_the_allow_list_is_refused(emu: Emulator,
                                                      app_profile: Callable[..., str]) -> None:
    other = emu.add_tenant()
    name = app_profile("p")
    with pytest.raises(TokenError) as info:
        credential(name).get_token(emu.api_scope, tenant_id=other)
    error = info.value
    assert error.error == "tenant_not_allowed"
    assert error.profile == "p"
    assert other in str(error)
    assert "additionally_allowed_tenants" in str(error)
    assert emu.count("token") == 0  # the profile's credential went nowhere
    with pytest.raises(TokenError):
        credential(name).get_token_info(emu.api_scope, options={"tenant_id": other})


def test_async_sdk_tenant_outside_the_allow_list_is_refused(
        emu: Emulator, app_profile: Callable[..., str]) -> None:
    other = emu.add_tenant()
    name = app_profile("p")

    async def main() -> None:
        async with aio.credential(name) as cred:
            await cred.get_token(emu.api_scope, tenant_id=other)

    with pytest.raises(TokenError) as info:
        asyncio.run(main())
    assert info.value.error == "tenant_not_allowed"
    assert emu.count("token") == 0


@pytest.mark.parametrize("listed", ["other", "*"])
def test_sdk_tenant_in_the_allow_list_is_used(emu: Emulator, app_profile: Callable[..., str],
                                              listed: str) -> None:
    other = emu.add_tenant()
    name = app_profile("p", additionally_allowed_tenants=[other if listed == "other" else "*"])
    token = credential(name).get_token(emu.api_scope, tenant_id=other.upper())
    assert _claims(token.token)["tid"] == other


def test_sdk_asking_for_the_profiles_own_tenant_is_fine(
        emu: Emulator, app_profile: Callable[..., str]) -> None:
    token = credential(app_profile("p")).get_token(emu.api_scope,
                                                   tenant_id=emu.tenant_id.upper())
    assert _claims(token.token)["tid"] == emu.tenant_id


def test_tenant_passed_by_the_scripts_own_code_is_allowed(
        emu: Emulator, app_profile: Callable[..., str], client: Client) -> None:
    other = emu.add_tenant()
    name = app_profile("p")
    assert _claims(get_token(name, tenant=other).token)["tid"] == other
    answer = client.get(f"{emu.api_url}/x", EntraAuth(name, tenant=other))
    assert answer.status == 200
    assert answer.json()["claims"]["tid"] == other


def test_chain_members_inherit_the_allow_list(emu: Emulator, app: Any, secret: str,
                                              profiles: Profiles) -> None:
    other = emu.add_tenant()
    profiles.write(f"""
        [profiles.c]
        flow = "chain"
        chain = ["p"]
        scope = "{emu.api_scope}"
        additionally_allowed_tenants = ["{other}"]

        [profiles.p]
        flow = "client_credentials"
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        client_id = "{app.client_id}"
        client_secret = "{secret}"
    """)
    token = credential("c").get_token(emu.api_scope, tenant_id=other)
    assert _claims(token.token)["tid"] == other
    with pytest.raises(TokenError):  # the member by its own name has no allow-list
        credential("p").get_token(emu.api_scope, tenant_id=other)


def _binding(profiles: Profiles, body: str) -> Any:
    profiles.write("[profiles.p]\n" + body + '\nscope = "https://graph.microsoft.com/.default"\n')
    return PROVIDER.bind("p")


@pytest.mark.parametrize(("body", "other"), [
    ('flow = "azd"', True),  # no tenant of its own: any tenant, as azure-identity's tools
    ('flow = "azd"\ntenant = "contoso.onmicrosoft.com"\nadditionally_allowed_tenants = ["*"]',
     True),
    ('flow = "managed_identity"', False),  # ignores tenant_id
    ('flow = "device_code"\nclient_id = "x"\ntenant = "organizations"', True),
])
def test_tenant_rules_per_flow(profiles: Profiles, body: str, other: bool) -> None:
    binding = _binding(profiles, body)
    assert ProfileCredential._other_tenant(binding, "fabrikam.onmicrosoft.com") is other


def test_organizations_with_an_allow_list_allows_only_the_list(profiles: Profiles) -> None:
    binding = _binding(profiles, 'flow = "device_code"\nclient_id = "x"\n'
                                 'tenant = "organizations"\n'
                                 'additionally_allowed_tenants = ["contoso.onmicrosoft.com"]')
    assert ProfileCredential._other_tenant(binding, "contoso.onmicrosoft.com")
    with pytest.raises(TokenError):
        ProfileCredential._other_tenant(binding, "fabrikam.onmicrosoft.com")


@pytest.mark.parametrize(("value", "said"), [
    ('"*"', "must be a list"),
    ('["not a tenant"]', "item 1"),
    ("[3]", "item 1 must be a tenant"),
])
def test_bad_allow_list_is_a_config_error(profiles: Profiles, value: str, said: str) -> None:
    profiles.write(f"""
        [profiles.p]
        flow = "azure_cli"
        scope = "https://graph.microsoft.com/.default"
        additionally_allowed_tenants = {value}
    """)
    with pytest.raises(ConfigError) as info:
        configlib.load_profile("p")
    assert info.value.key == "additionally_allowed_tenants"
    assert said in str(info.value)
