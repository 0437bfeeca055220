"""Issue 11, the request side: challenge parsing and redaction in linear time on bounded input,
no token through a proxy for plain-http loopback, pickles without secrets, public suffixes
and malformed hosts in the allow-list, and a DEBUG line saying why a host got no token."""

from __future__ import annotations

import copy
import json
import logging
import pickle
from http.server import ThreadingHTTPServer
from typing import Callable

import httpx
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from authlayer import ConfigError, EntraAuth, errors
from authlayer.auth import MAX_CHALLENGE, challenge_params, claims_from_challenge
from authlayer.config import load_profile
from authlayer.emulator import Emulator
from authlayer.errors import TokenError, redact
from authlayer.hosts import HostPolicy
from authlayer.jwt import b64url_encode
from authlayer.provider import PROVIDER

from .conftest import Client, Profiles

CLAIMS = b64url_encode(b'{"access_token":{"nbf":{"essential":true,"value":"1603742800"}}}')
CHALLENGE = f'Bearer realm="", error="insufficient_claims", claims="{CLAIMS}"'

# Big enough that the old quadratic regexes ran far past pytest's 120 s timeout (their time
# grows with the square of the size: 120 KB of "eyJ" took 6.5 s in redact, 20 KB took 3.4 s in
# the challenge parser); small enough for a linear scan to take well under a second.
ADVERSARIAL_SIZE = 1_000_000


# ------------------------------------------------------------------ item 1: WWW-Authenticate


def test_a_claims_challenge_is_still_understood() -> None:
    merged = claims_from_challenge(CHALLENGE)
    assert merged is not None
    assert '"nbf":{"essential":true,"value":"1603742800"}' in merged


def test_a_header_over_the_limit_is_not_a_claims_challenge() -> None:
    padded = CHALLENGE + ', realm2="' + "x" * MAX_CHALLENGE + '"'
    assert claims_from_challenge(padded) is None
    just_under = CHALLENGE + ', realm2="' + "x" * (MAX_CHALLENGE - len(CHALLENGE) - 20) + '"'
    assert len(just_under) <= MAX_CHALLENGE
    assert claims_from_challenge(just_under) is not None


@pytest.mark.parametrize("encode", [lambda text: b64url_encode(text.encode()), lambda text: text],
                         ids=["base64url", "plain JSON"])
def test_a_claims_request_nested_too_deeply_is_not_a_claims_challenge(
        encode: Callable[[str], str]) -> None:
    deep = "[" * 3000 + "]" * 3000  # fits in the header limit, too deep for the JSON parser
    header = f'Bearer error="insufficient_claims", claims="{encode(deep)}"'
    assert len(header) <= MAX_CHALLENGE
    assert claims_from_challenge(header) is None


@pytest.mark.parametrize("piece", ["a", "a ", "a=", 'a="', 'a="\\"', "a=b,", "claims", "9a-",
                                   'error="insufficient_claims", claims'])
def test_the_challenge_parser_is_linear_on_adversarial_headers(piece: str) -> None:
    header = piece * (ADVERSARIAL_SIZE // len(piece))
    params = challenge_params(header)
    assert all(isinstance(v, str) for v in params.values())
    # Through the public function the size cap answers at once.
    assert claims_from_challenge(header) is None


def test_quoted_values_are_unescaped_and_unterminated_ones_end_the_parse() -> None:
    assert challenge_params('Bearer realm="a \\"b\\" c", error=invalid_token') == {
        "realm": 'a "b" c', "error": "invalid_token"}
    assert challenge_params('Bearer error="insufficient_claims", claims="abc') == {
        "error": "insufficient_claims"}


_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,10}", fullmatch=True)
_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_names, _values), max_size=6), st.sampled_from(["Bearer ", "PoP ", ""]))
def test_rendered_parameters_parse_back(pairs: list[tuple[str, str]], scheme: str) -> None:
    header = scheme + ", ".join(f"{name}={_quote(value)}" for name, value in pairs)
    expected: dict[str, str] = {}
    for name, value in pairs:
        expected[name.lower()] = value
    assert challenge_params(header) == expected


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_any_header_parses_without_error(header: str) -> None:
    params = challenge_params(header)
    assert all(name == name.lower() for name in params)
    result = claims_from_challenge(header)
    assert result is None or json.loads(result)["access_token"]["xms_cc"] == {"values": ["cp1"]}


# ------------------------------------------------------------------ item 1: errors.redact

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


def test_redact_still_hides_tokens_and_long_secrets() -> None:
    said = redact(f"bad assertion {JWT} and secret {'Ab1' * 20}== for client x")
    assert said == "bad assertion [redacted] and secret [redacted] for client x"
    assert redact("short eyJabcd.ef words") == "short [redacted] words"


def test_redact_bounds_what_it_keeps_and_leaves_no_head_of_a_cut_token() -> None:
    text = "x " * (errors.REDACT_LIMIT // 2 - 5) + JWT * 40
    said = redact(text)
    assert len(said) <= errors.REDACT_LIMIT + 40
    assert "eyJ" not in said
    assert said.endswith(f"(cut from {len(text)} characters)")


@pytest.mark.parametrize("piece", ["eyJ", "eyJa", "eyJaaaa.", "eyJaaaa..", "a", "a "])
def test_redact_is_linear_on_adversarial_text(piece: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Lift the cap: the scan itself must be linear, not only the cap keep it cheap.
    monkeypatch.setattr(errors, "REDACT_LIMIT", 10 * ADVERSARIAL_SIZE, raising=False)
    text = piece * (ADVERSARIAL_SIZE // len(piece))
    said = redact(text)
    assert "eyJa" not in said


def test_a_huge_error_description_gives_a_short_message() -> None:
    description = "AADSTS7000215: " + "word " * 40_000 + JWT
    error = TokenError(profile="p", error="invalid_client", error_codes=[7000215],
                       description=description)
    assert len(str(error)) < errors.REDACT_LIMIT + 300
    assert "eyJ" not in str(error)


# ------------------------------------------------------------------ item 2: proxies


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_no_token_through_a_proxy_for_loopback_http(
        emu: Emulator, cc_profile: str, client: Client, proxy: ThreadingHTTPServer,
        monkeypatch: pytest.MonkeyPatch, variable: str, caplog: pytest.LogCaptureFixture) -> None:
    if client.kind == "aiohttp" and variable == "ALL_PROXY":
        pytest.skip("aiohttp does not read ALL_PROXY: the request goes straight to the API, "
                    "token and all (test_aiohttp.py checks that)")
    monkeypatch.setenv(variable, f"http://127.0.0.1:{proxy.server_address[1]}")
    caplog.set_level(logging.DEBUG, "authlayer")
    answer = client.get(f"{emu.api_url}/things", EntraAuth(cc_profile))
    seen = proxy.seen  # type: ignore[attr-defined]
    assert answer.status == 200
    assert answer.body == b"from the proxy"
    assert len(seen) == 1
    assert "/things" in seen[0]["target"]
    assert "authorization" not in seen[0]
    assert emu.count("token") == 0  # nothing to attach, so no token was even fetched
    assert "NO_PROXY" in caplog.text
    assert "no token for http host '127.0.0.1'" in caplog.text


@pytest.mark.parametrize("exempt", ["127.0.0.1", "*", "localhost,127.0.0.1,::1"])
def test_no_proxy_naming_the_loopback_host_keeps_the_token(
        emu: Emulator, cc_profile: str, client: Client, proxy: ThreadingHTTPServer,
        monkeypatch: pytest.MonkeyPatch, exempt: str) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("NO_PROXY", exempt)
    answer = client.get(f"{emu.api_url}/things", EntraAuth(cc_profile))
    assert answer.status == 200
    assert proxy.seen == []  # type: ignore[attr-defined]
    assert emu.count("token") == 1


def test_an_https_proxy_setting_does_not_touch_loopback_http(
        emu: Emulator, cc_profile: str, client: Client, proxy: ThreadingHTTPServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    assert client.get(f"{emu.api_url}/things", EntraAuth(cc_profile)).status == 200
    assert proxy.seen == []  # type: ignore[attr-defined]


# ------------------------------------------------------------------ item 7: pickles


def test_a_pickled_session_holds_no_secret_and_no_token_and_still_works(
        emu: Emulator, app_profile: Callable[..., str], secret: str) -> None:
    name = app_profile("inline")  # the client secret is written in the profiles file itself
    session = requests.Session()
    session.auth = EntraAuth(name)
    assert session.get(f"{emu.api_url}/things", timeout=10).status_code == 200
    token = PROVIDER.entries[session.auth.binding.key].token.token
    for thing in (session, session.auth):
        data = pickle.dumps(thing)
        assert secret.encode() not in data
        assert token.encode() not in data
        assert token.split(".")[2].encode() not in data
    again = pickle.loads(pickle.dumps(session))  # noqa: S301 - our own bytes
    assert again.get(f"{emu.api_url}/things", timeout=10).status_code == 200
    # After the profile was forgotten too, it is read again from its file.
    PROVIDER.reset()
    with httpx.Client(auth=pickle.loads(pickle.dumps(session.auth)),  # noqa: S301
                      timeout=10) as h:
        assert h.get(f"{emu.api_url}/things").status_code == 200


def test_a_pickled_entra_auth_keeps_its_arguments(emu: Emulator,
                                                  app_profile: Callable[..., str]) -> None:
    auth = EntraAuth(app_profile("p"), scope=emu.api_scope, tenant=emu.tenant_id)
    again = pickle.loads(pickle.dumps(auth))  # noqa: S301 - our own bytes
    assert repr(again) == repr(auth)
    assert again.binding.key == auth.binding.key


def test_an_entra_auth_with_a_user_assertion_is_not_pickled() -> None:
    auth = EntraAuth("obo", user_assertion=JWT)
    with pytest.raises(ConfigError) as info:
        pickle.dumps(auth)
    assert "user_assertion" in str(info.value)
    assert JWT not in str(info.value)


def test_an_entra_auth_with_a_user_assertion_can_still_be_copied() -> None:
    auth = EntraAuth("obo", scope="api://x/.default", user_assertion=JWT)
    for again in (copy.copy(auth), copy.deepcopy(auth), copy.deepcopy([auth])[0]):
        assert isinstance(again, EntraAuth)
        assert repr(again) == repr(auth)
        assert again._user_assertion == JWT


# ------------------------------------------------------------------ item 9: the allow-list


def _with_allowed_hosts(profiles: Profiles, *patterns: str) -> None:
    profiles.write(f"""
        [profiles.p]
        flow = "client_credentials"
        tenant = "contoso.onmicrosoft.com"
        client_id = "6731de76-14a6-49ae-97bc-6eba6914391e"
        client_secret = "x"
        scope = "api://app/.default"
        allowed_hosts = {json.dumps(list(patterns))}
    """)


@pytest.mark.parametrize("pattern", [".com", ".co.uk", ".azurewebsites.net", "com",
                                     ".com.au", ".github.io", ".corp", ".COM."])
def test_allowed_hosts_refuses_public_suffixes(profiles: Profiles, pattern: str) -> None:
    _with_allowed_hosts(profiles, "api.example.com", pattern)
    with pytest.raises(ConfigError) as info:
        load_profile("p")
    assert info.value.key == "allowed_hosts"
    assert "allowed_hosts item 2" in str(info.value)


@pytest.mark.parametrize("pattern", [".example.com", "myapp.azurewebsites.net", "example.co.uk",
                                     ".blob.core.windows.net", "intranet", ".contoso.corp"])
def test_allowed_hosts_accepts_names_below_a_public_suffix(profiles: Profiles,
                                                           pattern: str) -> None:
    _with_allowed_hosts(profiles, pattern)
    assert load_profile("p").hosts.patterns == (pattern,)


@pytest.mark.parametrize("host", ["evil\\.example.com", "evil..example.com", "a%2f.example.com",
                                  ".example.com", "evil.example.com\\", "ex ample.example.com",
                                  "a" * 64 + ".example.com", "ünï.example.com"])
def test_hosts_that_are_not_dns_names_never_match(host: str) -> None:
    policy = HostPolicy([".example.com"])
    assert policy.allows("https", "api.example.com")
    assert not policy.allows("https", host)


@pytest.mark.parametrize("url", ["https://evil\\.example.com/x", "https://evil..example.com/x"])
def test_httpx_sends_no_token_to_a_malformed_host(emu: Emulator,
                                                  app_profile: Callable[..., str],
                                                  url: str) -> None:
    app_profile("p", allowed_hosts=[".example.com"])
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    # The API is a stand-in; a token, if one were wanted, would come from the emulator.
    with httpx.Client(auth=EntraAuth("p"), transport=httpx.MockTransport(answer)) as h:
        assert h.get(url).status_code == 200
    assert len(seen) == 1
    assert "authorization" not in seen[0].headers


def test_an_idn_host_below_an_allowed_suffix_is_matched_in_its_ascii_form() -> None:
    policy = HostPolicy([".example.com"])
    host = httpx.URL("https://bücher.example.com/").raw_host.decode("ascii")
    assert policy.allows("https", host)


# ------------------------------------------------------------------ item 11: why no token


def test_a_host_that_is_not_allowed_is_logged_once(emu: Emulator, cc_profile: str,
                                                   client: Client,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "authlayer")
    auth = EntraAuth(cc_profile)
    port = emu.api_url.split(":")[2].split("/")[0]
    for _ in range(3):
        answer = client.get(f"http://localhost:{port}/api/things?sig=s3cr3t", auth)
        assert answer.status == 401  # the API wanted a token it was not given
    lines = [r.getMessage() for r in caplog.records if "no token for" in r.getMessage()]
    assert lines == ["profile 'app': no token for http host 'localhost': host not allowed for "
                     "the profile (allowed_hosts, or the scope's host)"]
    assert emu.count("token") == 0
