"""The keys under which the persistent token cache keeps records are pinned byte for byte: a
change to them would make every user sign in again after an upgrade (their refresh tokens would
sit under keys nobody looks up). The in-memory cache may key however it likes; these may not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from authlayer.provider import PROVIDER, Binding, store_key

from .conftest import Profiles

CLIENT = "11111111-2222-3333-4444-555555555555"
OID = "99999999-8888-7777-6666-555555555555"
SALT = "ab" * 32  # a fixed installation salt: inline secrets hash the same on every run

PROFILES = f"""
[defaults]
client_id = "{CLIENT}"
tenant = "contoso.onmicrosoft.com"

[profiles.app]
flow = "client_credentials"
client_secret = {{ env = "APP_SECRET" }}
scope = "https://graph.microsoft.com/.default"

[profiles.inline]
flow = "client_credentials"
client_secret = "not-a-real-secret"
scope = "api://app/.default"
cloud = "usgov"

[profiles."me|x%y"]
flow = "device_code"
tenant = "organizations"
scope = ["https://graph.microsoft.com/User.Read", "offline_access", "Mail.Read"]

[profiles.pw]
flow = "password"
username = "alice@contoso.com"
password = {{ env = "PW" }}
scope = "https://graph.microsoft.com/.default"

[profiles.mi]
flow = "managed_identity"
object_id = "{OID}"
scope = "https://vault.azure.net/.default"

[profiles.rt]
flow = "refresh_token"
refresh_token = {{ env = "RT" }}
scope = "https://graph.microsoft.com/.default"

[profiles.obo]
flow = "on_behalf_of"
client_secret = {{ file = "/nonexistent/secret" }}
scope = "https://graph.microsoft.com/.default"
"""

AUTH = "https://login.microsoftonline.com"
APP = (f"client_credentials|{AUTH}|contoso.onmicrosoft.com|{CLIENT}|secret:env:APP_SECRET"
       "||||")

GOLDEN = {
    # (profile, tenant override, user assertion): (store key, account key)
    ("app", None, None): (
        f"{APP}|https://graph.microsoft.com/.default", APP),
    ("app", "fabrikam.onmicrosoft.com", None): (
        f"client_credentials|{AUTH}|fabrikam.onmicrosoft.com|{CLIENT}|secret:env:APP_SECRET"
        "|||||https://graph.microsoft.com/.default",
        f"client_credentials|{AUTH}|fabrikam.onmicrosoft.com|{CLIENT}|secret:env:APP_SECRET"
        "||||"),
    ("inline", None, None): (
        f"client_credentials|https://login.microsoftonline.us|contoso.onmicrosoft.com|{CLIENT}"
        "|secret:value:@INLINE@|||||api://app/.default",
        f"client_credentials|https://login.microsoftonline.us|contoso.onmicrosoft.com|{CLIENT}"
        "|secret:value:@INLINE@||||"),
    ("me|x%y", None, None): (
        f"device_code|{AUTH}|organizations|{CLIENT}|public|||||profile:me%7Cx%25y"
        "|Mail.Read https://graph.microsoft.com/User.Read offline_access",
        f"device_code|{AUTH}|organizations|{CLIENT}|public|||||profile:me%7Cx%25y"),
    ("pw", None, None): (
        f"password|{AUTH}|contoso.onmicrosoft.com|{CLIENT}|public|alice@contoso.com||||"
        "password:env:PW|https://graph.microsoft.com/.default",
        f"password|{AUTH}|contoso.onmicrosoft.com|{CLIENT}|public|alice@contoso.com||||"
        "password:env:PW"),
    ("mi", None, None): (
        f"managed_identity|{AUTH}|||public|||{OID}|||https://vault.azure.net/.default",
        f"managed_identity|{AUTH}|||public|||{OID}||"),
    ("rt", None, None): (
        f"refresh_token|{AUTH}|contoso.onmicrosoft.com|{CLIENT}|public|||||profile:rt|@RT@"
        "|https://graph.microsoft.com/.default",
        f"refresh_token|{AUTH}|contoso.onmicrosoft.com|{CLIENT}|public|||||profile:rt|@RT@"),
    ("obo", None, "incoming-token"): (
        f"on_behalf_of|{AUTH}|contoso.onmicrosoft.com|{CLIENT}|secret:file:/nonexistent/secret"
        "|||||@OBO@|https://graph.microsoft.com/.default",
        f"on_behalf_of|{AUTH}|contoso.onmicrosoft.com|{CLIENT}|secret:file:/nonexistent/secret"
        "|||||@OBO@"),
}

CLAIMS = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}'
CLAIMS_SUFFIX = "|claims:@CLAIMS@"


def _store_keys(binding: Binding) -> tuple[str, str]:
    """What the binding hands to its store: the token's key and the account's key."""
    return binding.store_key, binding.store_account_key


def _claims_store_key(binding: Binding, claims: str) -> str:
    return store_key(PROVIDER.claims_key(binding, claims))


@pytest.fixture
def golden(profiles: Profiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = Path(os.environ["AUTHLAYER_CACHE_DIR"])
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "key-salt").write_text(SALT, encoding="ascii")
    os.chmod(cache / "key-salt", 0o600)
    for name in ("APP_SECRET", "PW", "RT"):
        monkeypatch.setenv(name, "x")
    profiles.write(PROFILES)


def _expected(text: str) -> str:
    # Digests, spelt out once here: sha256 (first 32 hex digits) of the refresh token's
    # identity, of the user assertion, of the claims; the inline secret's keyed hash.
    return (text.replace("@INLINE@", "969449613a5493866115f45c9b915e35")
            .replace("@RT@", "rt:d5b7605565ef842e647ab74dc808d78d")
            .replace("@OBO@", "obo:86a7a128131b49ab4fd2bcd6db3d3768")
            .replace("@CLAIMS@", "cda6818685fa01a93a3f79c2269e2f6b"))


@pytest.mark.parametrize("call", list(GOLDEN), ids=lambda c: "-".join(str(p) for p in c))
def test_store_keys_stay_as_they_were(golden: None, call: tuple[str, str, str]) -> None:
    profile, tenant, assertion = call
    binding = PROVIDER.bind(profile, tenant=tenant, user_assertion=assertion)
    key, account = GOLDEN[call]
    assert _store_keys(binding) == (_expected(key), _expected(account))


def test_a_claims_tokens_store_key_stays_as_it_was(golden: None) -> None:
    binding = PROVIDER.bind("app")
    assert _claims_store_key(binding, CLAIMS) == _expected(GOLDEN["app", None, None][0]
                                                           + CLAIMS_SUFFIX)
