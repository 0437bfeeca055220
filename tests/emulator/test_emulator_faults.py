"""Fault injection, latency and the request counters of the emulator, over real loopback HTTP."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import requests

from authlayer.emulator import Emulator

from .emulator_helpers import assert_entra_error, cc_form


def _data(em: Emulator) -> dict[str, str]:
    app = em.app("fault-client") or em.register_app("fault-client")
    return cc_form(app.client_id, em.api_scope, client_secret=str(app.secret))


@pytest.mark.parametrize(("status", "error", "code"), [
    (429, "temporarily_unavailable", 90055),
    (500, "temporarily_unavailable", 90033),
    (503, "temporarily_unavailable", 90033),
    (400, "invalid_request", 90023),
])
def test_status_fault(em: Emulator, http: httpx.Client, status: int, error: str,
                      code: int) -> None:
    em.inject("status", count=2, status=status, retry_after=7)
    for _ in range(2):
        r = http.post(em.token_url(), data=_data(em))
        assert_entra_error(r, status, error, code)
        assert r.headers["retry-after"] == "7"
    assert http.post(em.token_url(), data=_data(em)).status_code == 200
    assert em.count("token") == 3


def test_status_fault_defaults_to_503_and_fractional_retry_after(em: Emulator,
                                                                 http: httpx.Client) -> None:
    em.inject("status")
    r = http.post(em.token_url(), data=_data(em))
    assert r.status_code == 503
    assert "retry-after" not in r.headers
    em.inject("status", status=429, retry_after=0.25)
    assert http.post(em.token_url(), data=_data(em)).headers["retry-after"] == "0.25"


@pytest.mark.parametrize("client", ["httpx", "requests"])
def test_drop_closes_the_connection_without_an_answer(em: Emulator, client: str) -> None:
    em.inject("drop")
    if client == "httpx":
        with httpx.Client() as c, pytest.raises(httpx.RemoteProtocolError):
            c.post(em.token_url(), data=_data(em))
    else:
        with pytest.raises(requests.ConnectionError):
            requests.post(em.token_url(), data=_data(em), timeout=5)
    assert requests.post(em.token_url(), data=_data(em), timeout=5).status_code == 200
    assert em.count("token") == 2


def test_html_fault(em: Emulator, http: httpx.Client) -> None:
    em.inject("html")
    r = http.post(em.token_url(), data=_data(em))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.text.startswith("<!DOCTYPE html>")
    em.inject("html", status=502)
    assert http.post(em.token_url(), data=_data(em)).status_code == 502


def test_truncated_fault(em: Emulator, http: httpx.Client) -> None:
    em.inject("truncated")
    r = http.post(em.token_url(), data=_data(em))
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    assert r.content.startswith(b'{"token_type":"Bearer"')


def test_missing_field_fault(em: Emulator, http: httpx.Client) -> None:
    em.inject("missing_field")
    body = http.post(em.token_url(), data=_data(em)).json()
    assert "access_token" not in body
    assert body["token_type"] == "Bearer"
    em.inject("missing_field", field="expires_in")
    body = http.post(em.token_url(), data=_data(em)).json()
    assert "expires_in" not in body
    assert "access_token" in body


def test_latency_fault_and_global_latency(em: Emulator, http: httpx.Client) -> None:
    em.inject("latency", seconds=0.2)
    start = time.monotonic()
    assert http.post(em.token_url(), data=_data(em)).status_code == 200
    assert time.monotonic() - start >= 0.2
    assert not em.pending_faults  # used up: the next answer comes at once
    assert http.post(em.token_url(), data=_data(em)).status_code == 200
    em.latency = 0.1
    start = time.monotonic()
    http.get(em.api_url)
    assert time.monotonic() - start >= 0.1


def test_faults_apply_to_their_endpoint_only(em: Emulator, http: httpx.Client) -> None:
    em.inject("status", endpoint="api", status=500)
    assert http.post(em.token_url(), data=_data(em)).status_code == 200
    assert http.get(f"{em.api_url}/x").status_code == 500
    em.inject("status", count=2, endpoint="any", status=502)
    assert http.get(f"{em.url}/common/discovery/v2.0/keys").status_code == 502
    assert http.post(em.token_url(), data=_data(em)).status_code == 502
    assert http.post(em.token_url(), data=_data(em)).status_code == 200


def test_injected_401_on_the_api_carries_a_bearer_challenge(em: Emulator,
                                                            http: httpx.Client) -> None:
    em.inject("status", endpoint="api", status=401)
    r = http.get(em.api_url)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith('Bearer realm="", error="invalid_token"')


def test_bad_fault_arguments(em: Emulator) -> None:
    with pytest.raises(ValueError, match="kind"):
        em.inject("explode")
    with pytest.raises(ValueError, match="endpoint"):
        em.inject("drop", endpoint="tokens")
    em.inject("drop", endpoint="devicecode")  # known before its module exists
    assert [f.endpoint for f in em.pending_faults] == ["devicecode"]


def test_counters_match_form_fields_and_reset_clears(em: Emulator, http: httpx.Client) -> None:
    data = _data(em)
    http.post(em.token_url(), data=data)
    http.post(em.token_url(), data={**data, "grant_type": "password"})
    http.get(em.api_url)
    http.get(f"{em.url}/nothing-here")
    assert em.count() == 2
    assert em.count("token", grant_type="client_credentials") == 1
    assert em.count("token", grant_type="client_credentials", client_id=data["client_id"]) == 1
    assert em.count("token", client_id="someone-else") == 0
    assert em.count("api") == 1
    assert em.count("unknown") == 1
    assert em.count("any") == 4
    record = em.requests[0]
    assert record.endpoint == "token"
    assert record.method == "POST"
    assert record.path == f"/{em.tenant_id}/oauth2/v2.0/token"
    assert record.form == data
    assert record.headers["content-type"] == "application/x-www-form-urlencoded"
    assert record.time <= time.time()
    endpoint, method, _, _, form, *_ = record
    assert (endpoint, method, form) == ("token", "POST", data)
    em.inject("drop", count=3)
    em.reset()
    assert em.requests == []
    assert em.count("any") == 0
    assert em.pending_faults == []
    assert http.post(em.token_url(), data=data).status_code == 200


def test_request_log_can_be_capped(em: Emulator, http: httpx.Client) -> None:
    em.max_requests = 3
    for i in range(5):
        http.get(f"{em.api_url}/{i}")
    assert [r.path for r in em.requests] == ["/api/2", "/api/3", "/api/4"]
