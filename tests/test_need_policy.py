"""What a caller needs is one value (``Need``), and what the provider does for it is one table
(``POLICY``): the needs, and the provider serving each of them against the emulator."""

from __future__ import annotations

import asyncio
from typing import Callable

import pytest

from authlayer.emulator import Emulator
from authlayer.provider import (
    FORCED,
    LOGIN,
    PLAIN,
    POLICY,
    PROVIDER,
    CachedToken,
    Forget,
    Need,
    Want,
    after_401,
    for_claims,
)
from authlayer.token import AccessToken

CLAIMS = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}'
SECRET_TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.c2ln"


def _entry(token: str = SECRET_TOKEN) -> CachedToken:
    return CachedToken(AccessToken(token, 2_000_000_000), 1_999_999_000)


def test_every_want_has_exactly_one_policy() -> None:
    assert set(POLICY) == set(Want)


def test_the_constructors_say_what_is_needed() -> None:
    rejected = _entry()
    assert (PLAIN.want, FORCED.want, LOGIN.want) == (Want.PLAIN, Want.FORCED, Want.LOGIN)
    assert after_401(rejected) == Need(Want.AFTER_401, rejected=rejected)
    assert after_401(rejected, CLAIMS) == Need(Want.CLAIMS, CLAIMS, rejected)
    assert after_401(rejected, "") == Need(Want.AFTER_401, rejected=rejected)
    assert for_claims(CLAIMS) == Need(Want.CLAIMS, CLAIMS)


def test_but_changes_only_whether_a_person_may_be_asked() -> None:
    quiet = FORCED.but(interactive=False)
    assert (quiet.want, quiet.interactive) == (Want.FORCED, False)
    assert FORCED.interactive  # the constants are not changed
    assert quiet.but(interactive=True) == FORCED


def test_a_need_never_shows_the_rejected_token() -> None:
    assert SECRET_TOKEN not in repr(after_401(_entry(), CLAIMS))
    assert SECRET_TOKEN not in str(after_401(_entry()))


def test_the_table_holds_what_each_need_may_do() -> None:
    # Only a plain need lets the current token do (stored, fallback, no prompt while valid).
    assert [w for w in Want if POLICY[w].current_ok] == [Want.PLAIN]
    # A forced refresh and a login never take less than they asked for.
    assert POLICY[Want.FORCED].takes == frozenset({Want.FORCED, Want.LOGIN})
    assert POLICY[Want.LOGIN].takes == frozenset({Want.LOGIN})
    assert [w for w in Want if POLICY[w].fresh_sign_in] == [Want.LOGIN]
    # Only the needs that come with a rejected token meet the 401 cooldown.
    assert {w for w in Want if POLICY[w].cooldown} == {Want.AFTER_401, Want.CLAIMS}


# ---------------------------------------------------------------------- served


def test_plain_is_served_from_the_cache(emu: Emulator, cc_profile: str) -> None:
    binding = PROVIDER.bind(cc_profile)
    first = PROVIDER.get(binding, PLAIN)
    assert PROVIDER.get(binding) == first  # PLAIN is the default
    assert emu.count("token") == 1


def test_forced_fetches_a_new_token(emu: Emulator, cc_profile: str) -> None:
    binding = PROVIDER.bind(cc_profile)
    first = PROVIDER.get(binding, PLAIN)
    forced = PROVIDER.get(binding, FORCED)
    assert forced.token.token != first.token.token
    assert PROVIDER.get(binding) == forced
    assert emu.count("token") == 2


def test_after_401_replaces_the_rejected_token_once(emu: Emulator, cc_profile: str) -> None:
    binding = PROVIDER.bind(cc_profile)
    first = PROVIDER.get(binding)
    second = PROVIDER.get(binding, after_401(first))
    assert second.token.token != first.token.token
    # Another request that saw the same 401 gets the replacement: no new token request.
    assert PROVIDER.get(binding, after_401(first)) == second
    assert emu.count("token") == 2


def test_after_401_async_replaces_the_rejected_token_once(emu: Emulator,
                                                          cc_profile: str) -> None:
    async def main() -> tuple[CachedToken, CachedToken, CachedToken]:
        binding = await PROVIDER.bind_async(cc_profile)
        first = await PROVIDER.get_async(binding)
        second = await PROVIDER.get_async(binding, after_401(first))
        return first, second, await PROVIDER.get_async(binding, after_401(first))

    first, second, again = asyncio.run(main())
    assert second.token.token != first.token.token
    assert again == second
    assert emu.count("token") == 2


def test_a_claims_token_never_serves_a_plain_need(emu: Emulator, cc_profile: str) -> None:
    binding = PROVIDER.bind(cc_profile)
    plain = PROVIDER.get(binding)
    claims = PROVIDER.get(binding, for_claims(CLAIMS))
    assert claims.token.token != plain.token.token
    assert PROVIDER.get(binding) == plain
    assert PROVIDER.get(binding, for_claims(CLAIMS)) == claims  # kept under its own key
    assert emu.count("token") == 2


def test_a_claims_challenge_after_a_401_drops_the_plain_token(emu: Emulator,
                                                             cc_profile: str) -> None:
    binding = PROVIDER.bind(cc_profile)
    plain = PROVIDER.get(binding)
    claims = PROVIDER.get(binding, after_401(plain, CLAIMS))
    assert claims.token.token != plain.token.token
    assert PROVIDER.get(binding).token.token not in (plain.token.token, claims.token.token)
    assert emu.count("token") == 3


@pytest.mark.parametrize("need", [PLAIN, FORCED, LOGIN], ids=lambda n: n.want.name)
def test_an_app_gets_a_token_whatever_it_needs(emu: Emulator, cc_profile: str,
                                              need: Need) -> None:
    assert PROVIDER.get(PROVIDER.bind(cc_profile), need).token.expires_on > 0


# ---------------------------------------------------------------------- forgetting


def test_forgetting_a_token_that_was_replaced_returns_the_replacement(
    emu: Emulator, cc_profile: str
) -> None:
    binding = PROVIDER.bind(cc_profile)
    first = PROVIDER.get(binding)
    assert PROVIDER.forget(binding, Forget.TOKEN, token=first) is None
    second = PROVIDER.get(binding)
    assert second.token.token != first.token.token
    assert PROVIDER.forget(binding, Forget.TOKEN, token=first) == second
    assert PROVIDER.get(binding) == second  # the replacement was not forgotten
    assert emu.count("token") == 2


def test_forgetting_the_token_whatever_it_is(emu: Emulator, cc_profile: str) -> None:
    binding = PROVIDER.bind(cc_profile)
    first = PROVIDER.get(binding)
    PROVIDER.forget(binding, Forget.TOKEN)
    assert PROVIDER.get(binding).token.token != first.token.token
    assert emu.count("token") == 2


def test_forgetting_a_claims_token_leaves_the_plain_one(emu: Emulator, cc_profile: str) -> None:
    binding = PROVIDER.bind(cc_profile)
    plain = PROVIDER.get(binding)
    claims = PROVIDER.get(binding, for_claims(CLAIMS))
    PROVIDER.forget(binding, Forget.TOKEN, claims=CLAIMS, token=claims)
    assert PROVIDER.get(binding) == plain
    assert emu.count("token") == 2


def test_forgetting_the_sign_in_forgets_its_claims_tokens_too(emu: Emulator,
                                                              cc_profile: str) -> None:
    binding = PROVIDER.bind(cc_profile)
    PROVIDER.get(binding)
    PROVIDER.get(binding, for_claims(CLAIMS))
    PROVIDER.forget(binding, Forget.SIGN_IN)
    PROVIDER.get(binding)
    PROVIDER.get(binding, for_claims(CLAIMS))
    assert emu.count("token") == 4


def test_signing_out_forgets_the_stored_records(emu: Emulator,
                                                app_profile: Callable[..., str]) -> None:
    binding = PROVIDER.bind(app_profile("filed", cache="file"))
    PROVIDER.get(binding)
    store = PROVIDER.store_for(binding.profile)
    PROVIDER.forget(binding, Forget.SIGN_IN)
    assert store.load(binding.store_key, binding.store_account_key) is not None  # memory only
    PROVIDER.forget(binding)  # SIGN_OUT is the default
    assert store.load(binding.store_key, binding.store_account_key) is None
