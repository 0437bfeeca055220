"""Secrets, tokens and assertions never reach logs, reprs, exception texts or standard output.

Runs the core flows with DEBUG logging on, with good and failing credentials, and scans all that
was captured for every secret and token involved.
"""

from __future__ import annotations

import datetime
import logging
import traceback
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from authlayer import AuthLayerError, EntraAuth, get_token
from authlayer.emulator import Emulator
from authlayer.provider import PROVIDER

from .conftest import Profiles, leaked


def _self_signed() -> tuple[Any, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leak-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return key, cert


def test_no_secret_or_token_leaks(emu: Emulator, profiles: Profiles, tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture,
                                  capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    good_secret = "GoodSecret~" + "a1b2c3d4e5f6" * 3
    bad_secret = "WrongSecret~" + "f6e5d4c3b2a1" * 3
    pfx_password = "PfxPassword-0987654321"
    key, cert = _self_signed()
    secret_app = emu.register_app(secret=good_secret)
    cert_app = emu.register_app(certificate=cert)
    (tmp_path / "c.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.BestAvailableEncryption(pfx_password.encode()))
        + cert.public_bytes(serialization.Encoding.PEM))
    monkeypatch.setenv("GOOD", good_secret)
    profiles.write(f"""
        [defaults]
        authority = "{emu.url}"
        tenant = "{emu.tenant_id}"
        scope = "{emu.api_scope}"
        flow = "client_credentials"

        [profiles.good]
        client_id = "{secret_app.client_id}"
        client_secret = {{ env = "GOOD" }}

        [profiles.bad]
        client_id = "{secret_app.client_id}"
        client_secret = "{bad_secret}"

        [profiles.cert]
        client_id = "{cert_app.client_id}"
        certificate = {{ path = "c.pem", password = "{pfx_password}" }}

        [profiles.badpw]
        client_id = "{cert_app.client_id}"
        certificate = {{ path = "c.pem", password = "not-{pfx_password}" }}
    """)
    texts: list[str] = []

    def attempt(fn: Any) -> Any:
        try:
            value = fn()
            texts.append(repr(value))
            return value
        except AuthLayerError as exc:
            texts.append(str(exc))
            texts.append(repr(exc))
            texts.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            return None

    tokens = []
    for name in ("good", "cert"):
        auth = EntraAuth(name)
        texts.append(repr(auth))
        tok = attempt(lambda n=name: get_token(n))
        tokens.append(tok.token)
        with httpx.Client(auth=auth) as c:
            r = c.get(f"{emu.api_url}/x")
            texts.append(repr(r.request.headers.get("authorization") and r))
        emu.revoke_all()
        requests.get(f"{emu.api_url}/x", auth=auth)
        tokens.append(get_token(name).token)
    attempt(lambda: get_token("bad"))
    attempt(lambda: get_token("badpw"))
    emu.inject("truncated", count=1, status=200)
    attempt(lambda: get_token("good", force_refresh=True))
    texts.append(repr(PROVIDER.entries))
    texts.append(repr(PROVIDER.bind("good").profile))
    assertions = [r.form.get("client_assertion") for r in emu.requests]
    out = capsys.readouterr()
    everything = "\n".join(texts) + caplog.text + out.out + out.err
    assert caplog.records, "DEBUG logging produced nothing to scan"
    assert leaked(everything, [good_secret, bad_secret, pfx_password, *tokens,
                               *assertions]) == []
