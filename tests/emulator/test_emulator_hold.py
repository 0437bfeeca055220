"""The emulator's hold: requests wait, recorded, until the test releases them — so that a test
can make "many callers arrive while one request is under way" happen for sure, without sleeping.
No test here bounds a wall time: each waits for an event (the pytest timeout is the backstop)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from authlayer.emulator import Emulator, Hold

from .emulator_helpers import cc_form


def _data(em: Emulator) -> dict[str, str]:
    app = em.app("hold-client") or em.register_app("hold-client")
    return cc_form(app.client_id, em.api_scope, client_secret=str(app.secret))


def _post(em: Emulator) -> int:
    with httpx.Client(timeout=60) as c:
        return c.post(em.token_url(), data=_data(em)).status_code


def test_held_requests_are_recorded_and_answered_only_after_the_release(em: Emulator) -> None:
    gate = em.hold()
    with ThreadPoolExecutor(3) as pool:
        answers = [pool.submit(_post, em) for _ in range(3)]
        assert gate.wait_for(3)
        assert gate.held == 3
        assert em.count("token") == 3  # recorded on arrival
        assert not any(a.done() for a in answers)  # nobody was answered yet
        gate.release()
        assert [a.result() for a in answers] == [200, 200, 200]
    assert gate.held == 0
    assert gate.arrived == 3
    assert _post(em) == 200  # a released hold holds no more


def test_a_hold_applies_to_its_endpoint_only(em: Emulator, http: httpx.Client) -> None:
    with em.hold(endpoint="api") as gate, ThreadPoolExecutor(1) as pool:
        api = pool.submit(http.get, f"{em.api_url}/x")
        gate.wait_for(1)
        assert http.post(em.token_url(), data=_data(em)).status_code == 200  # not held
        assert not api.done()
        gate.release()
        assert api.result().status_code == 401  # (no token) answered after the release


def test_a_hold_with_a_count_holds_only_that_many(em: Emulator, http: httpx.Client) -> None:
    gate = em.hold(count=1)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_post, em)
        gate.wait_for(1)
        assert http.post(em.token_url(), data=_data(em)).status_code == 200  # the second
        assert not first.done()
        gate.release()
        assert first.result() == 200
    assert gate.arrived == 1


def test_a_fault_applies_to_a_held_request_after_its_release(em: Emulator) -> None:
    gate = em.hold()
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(_post, em)
        gate.wait_for(1)
        em.inject("status", status=429)  # queued while the request waits
        gate.release()
        assert answer.result() == 429


def test_leaving_the_with_block_releases(em: Emulator) -> None:
    with ThreadPoolExecutor(1) as pool:
        with em.hold() as gate:
            answer = pool.submit(_post, em)
            gate.wait_for(1)
        assert gate.released
        assert answer.result() == 200


def test_reset_abandons_every_hold_and_its_requests_take_no_later_fault(em: Emulator) -> None:
    token, api = em.hold(), em.hold(endpoint="any")
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(_post, em)
        token.wait_for(1)
        em.reset()  # the test that held it is over: no answer
        with pytest.raises(httpx.RemoteProtocolError):
            answer.result()
    assert token.released
    assert api.released
    em.inject("status", status=429)  # the next test's fault is for the next test's request
    assert len(em.pending_faults) == 1
    assert _post(em) == 429


def test_stop_abandons_held_requests_and_joins_their_threads() -> None:
    # Other emulators of this test session (the shared one) may have threads of their own.
    before = set(threading.enumerate())
    em = Emulator().start()
    gate = em.hold()
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(_post(em))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    gate.wait_for(1)
    em.stop()  # would wait for ever if the hold kept its request
    assert gate.released
    caller.join()
    assert len(outcome) == 1
    assert isinstance(outcome[0], httpx.HTTPError)  # no answer
    assert not [t for t in threading.enumerate()
                if t.name.startswith("authlayer-emulator") and t not in before]
    assert em.hold().released  # a stopped emulator holds nothing


def test_wait_for_can_be_given_a_timeout(em: Emulator) -> None:
    gate = em.hold()
    assert gate.wait_for(0)
    assert not gate.wait_for(1, timeout=0)  # nothing arrived
    gate.release()


def test_bad_hold_arguments(em: Emulator) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        em.hold(endpoint="tokens")
    with pytest.raises(ValueError, match="count"):
        em.hold(count=0)
    gate = em.hold(endpoint="devicecode")  # known before its module exists
    assert isinstance(gate, Hold)
    assert repr(gate) == "<Hold 'devicecode' holding 0>"
    gate.release()
    assert repr(gate) == "<Hold 'devicecode' released>"
