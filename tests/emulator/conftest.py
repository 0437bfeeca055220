"""Fixtures of the emulator's own tests: a fresh emulator per test (cheap: the signing key is
shared per process), an httpx client, and certificate material."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from authlayer.emulator import Emulator

from .emulator_helpers import Material, make_material


@pytest.fixture(scope="session")
def cert() -> Material:
    return make_material("emulator-test-app")


@pytest.fixture(scope="session")
def other_cert() -> Material:
    return make_material("some-other-app")


@pytest.fixture
def em() -> Iterator[Emulator]:
    """A fresh emulator for this test only."""
    with Emulator() as emu:
        yield emu


@pytest.fixture(scope="session")
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # made once: loading the CA bundle is slow


@pytest.fixture
def http(_ssl_context: ssl.SSLContext) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, verify=_ssl_context) as client:
        yield client
