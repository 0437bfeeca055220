"""The sans-I/O core of the identity-service client: retries and answer parsing, no sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authlayer import _http
from authlayer._http import (
    ConnectionFailed,
    HttpRequest,
    HttpResponse,
    Send,
    Sleep,
    send,
)
from authlayer.errors import TokenError
from authlayer.oauth import parse_token as token_response
from authlayer.oauth import refresh_time

REQ = HttpRequest("POST", "https://login.example/t/oauth2/v2.0/token", form={"a": "b"})


def drive(answers: list[Any]) -> tuple[list[Any], Any]:
    """Run `send` feeding it `answers` for each Send; return the actions seen and the result."""
    gen = send(REQ, profile="p")
    actions: list[Any] = []
    answers = list(answers)
    try:
        action = next(gen)
        while True:
            actions.append(action)
            action = gen.send(answers.pop(0) if isinstance(action, Send) else None)
    except StopIteration as stop:
        return actions, stop.value


def resp(status: int, body: Any = None, **headers: str) -> HttpResponse:
    content = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    return HttpResponse(status, {k.replace("_", "-"): v for k, v in headers.items()}, content)


def test_success_is_returned_after_one_attempt() -> None:
    actions, result = drive([resp(200)])
    assert [type(a) for a in actions] == [Send]
    assert result.status == 200


def test_429_honours_retry_after_then_succeeds() -> None:
    actions, result = drive([resp(429, retry_after="7"), resp(200)])
    assert [type(a) for a in actions] == [Send, Sleep, Send]
    assert actions[1].seconds == 7.0
    assert result.status == 200


def test_5xx_is_retried_with_backoff_and_bounded() -> None:
    actions, result = drive([resp(503)] * _http.MAX_ATTEMPTS)
    sends = [a for a in actions if isinstance(a, Send)]
    sleeps = [a for a in actions if isinstance(a, Sleep)]
    assert len(sends) == _http.MAX_ATTEMPTS
    assert len(sleeps) == _http.MAX_ATTEMPTS - 1
    assert sleeps[1].seconds > sleeps[0].seconds * 1.1  # grows
    assert result.status == 503


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_4xx_is_not_retried(status: int) -> None:
    actions, result = drive([resp(status, {"error": "invalid_grant"})])
    assert len(actions) == 1
    assert result.status == status


def test_retry_after_beyond_the_cap_is_not_waited_for() -> None:
    actions, result = drive([resp(429, retry_after="3600")])
    assert len(actions) == 1
    assert result.status == 429


def test_retry_after_as_http_date() -> None:
    actions, _ = drive([resp(503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"), resp(200)])
    assert actions[1].seconds == 0.0  # a date in the past: go at once


def test_dropped_connections_are_retried_then_reported() -> None:
    with pytest.raises(TokenError) as info:
        drive([ConnectionFailed("ConnectError: refused")] * _http.MAX_ATTEMPTS)
    assert "failed after 4 attempts" in str(info.value)
    assert info.value.profile == "p"
    assert info.value.status is None


def test_token_response_reads_numbers_as_strings() -> None:
    r = token_response(resp(200, {"access_token": "x", "expires_in": "3599",
                                  "token_type": "Bearer", "refresh_in": "1800"}),
                       profile="p", now=1000)
    assert r.expires_on == 4599
    assert r.refresh_on == 2800


def test_absurd_numbers_are_malformed_not_overflows() -> None:
    for value in (10**400, "1e400", 10**300, float("inf"), "NaN"):
        body = {"access_token": "x", "expires_in": value}
        with pytest.raises(TokenError):
            token_response(resp(200, body), profile="p", now=1000.5)


def test_token_response_accepts_expires_on_only() -> None:
    r = token_response(resp(200, {"access_token": "x", "expires_on": "5000"}), profile="p",
                       now=1000)
    assert r.expires_on == 5000
    assert r.refresh_on == 4700


def test_refresh_time_for_short_lived_tokens_is_half_way() -> None:
    assert refresh_time(1000, 1400) == 1200
    assert refresh_time(0, 3600) == 3300
    assert refresh_time(0, 3600, refresh_in=1800) == 1800
    assert refresh_time(0, 3600, refresh_in=99999) == 3300


ENTRA_ERROR = {
    "error": "invalid_client",
    "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being "
    "sent in the request is the client secret value.\r\nTrace ID: 0f1e\r\nCorrelation ID: "
    "2a1b7c9e-1111-2222-3333-444455556666\r\nTimestamp: 2026-01-09 02:02:12Z",
    "error_codes": [7000215],
    "timestamp": "2026-01-09 02:02:12Z",
    "trace_id": "0f1e",
    "correlation_id": "2a1b7c9e-1111-2222-3333-444455556666",
}


def test_entra_error_becomes_token_error_with_codes_and_hint() -> None:
    with pytest.raises(TokenError) as info:
        token_response(resp(401, ENTRA_ERROR), profile="prod")
    err = info.value
    assert err.error == "invalid_client"
    assert err.error_codes == (7000215,)
    assert err.status == 401
    assert err.correlation_id == "2a1b7c9e-1111-2222-3333-444455556666"
    assert err.description is not None
    assert err.description.startswith("AADSTS7000215")
    assert "Trace ID" not in err.description
    assert "secret's value, not its id" in str(err)
    assert "profile 'prod'" in str(err)


def test_aadsts_code_is_found_in_the_description_when_codes_are_missing() -> None:
    body = {"error": "invalid_grant", "error_description": "AADSTS70008: expired"}
    with pytest.raises(TokenError) as info:
        token_response(resp(400, body), profile=None)
    assert info.value.error_codes == (70008,)
    assert "sign in again" in str(info.value)


@pytest.mark.parametrize(
    "body",
    [b"<html><body>Bad gateway</body></html>", b'{"access_token": "abc', b"", b"[1, 2]",
     b'{"token_type": "Bearer"}', b'{"access_token": "x"}', b'{"access_token": 5}'],
)
def test_malformed_answers_become_token_errors(body: bytes) -> None:
    with pytest.raises(TokenError) as info:
        token_response(HttpResponse(200, {"content-type": "text/html"}, body), profile="p")
    assert info.value.status == 200


def test_html_error_page_becomes_token_error() -> None:
    with pytest.raises(TokenError) as info:
        token_response(HttpResponse(502, {"content-type": "text/html"}, b"<html>oops</html>"),
                       profile="p")
    assert "HTTP 502" in str(info.value)
    assert "text/html" in str(info.value)


def test_error_description_tokens_are_redacted() -> None:
    body = {"error": "invalid_grant",
            "error_description": "bad assertion eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"}
    with pytest.raises(TokenError) as info:
        token_response(resp(400, body), profile="p")
    assert "eyJ" not in str(info.value)


@settings(max_examples=300, deadline=None)
@given(status=st.sampled_from([200, 400, 401, 429, 500]),
       body=st.one_of(st.binary(max_size=200),
                      st.dictionaries(st.sampled_from(["access_token", "expires_in", "expires_on",
                                                       "error", "error_codes", "refresh_in",
                                                       "error_description", "token_type"]),
                                      st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                                st.sampled_from(["inf", "-inf", "NaN", "1e999",
                                                                 "3599", " 60 ", "0", "-5"]),
                                                st.lists(st.one_of(st.integers(), st.floats()),
                                                         max_size=3),
                                                st.booleans(), st.floats(),
                                                st.integers(min_value=10**300,
                                                            max_value=10**400)))
                      .map(lambda d: json.dumps(d).encode())))
def test_any_answer_is_a_result_or_a_token_error(status: int, body: bytes) -> None:
    try:
        result = token_response(HttpResponse(status, {}, body), profile="p", now=1000.5)
    except TokenError:
        return
    assert status == 200
    assert isinstance(result.access_token, str)
    assert result.access_token
    assert isinstance(result.expires_on, int)
