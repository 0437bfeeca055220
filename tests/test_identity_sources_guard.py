"""The suite-wide network guard (tests/conftest.py): a test that opens a socket to an address
that is not loopback is refused at once and fails, even when the code under test swallows the
refusal."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from . import conftest


def _forget_violations() -> list[str]:
    found = list(conftest._network_violations)
    conftest._network_violations.clear()
    return found


@pytest.mark.parametrize("address", [("192.0.2.1", 9), ("2001:db8::1", 9), ("example.invalid", 9)])
def test_connecting_elsewhere_than_loopback_is_refused_and_recorded(
        address: tuple[str, int]) -> None:
    with pytest.raises(OSError, match="test network guard"):
        socket.create_connection(address, timeout=0.1)
    assert _forget_violations()


def test_asyncio_connections_are_guarded_too() -> None:
    async def go() -> None:
        await asyncio.open_connection("192.0.2.1", 9)

    with pytest.raises(OSError, match="test network guard"):
        asyncio.run(go())
    assert _forget_violations()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost",
                                  "::ffff:127.0.0.1"])
def test_loopback_is_allowed(host: str) -> None:
    assert conftest._loopback_only((host, 9)) is None


def test_swallowed_refusal_still_fails_the_test() -> None:
    with contextlib.suppress(OSError):  # what code under test might do
        socket.create_connection(("198.51.100.7", 9), timeout=0.1)
    assert len(_forget_violations()) == 1
