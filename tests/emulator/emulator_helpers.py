"""Helpers shared by the emulator's tests: certificate material, client assertions, and the
check that an answer has Entra's error shape."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from authlayer import jwt

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class Material:
    """An RSA key and a self-signed certificate for it."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def x5t(self) -> str:
        return jwt.b64url_encode(hashlib.sha1(self.der).digest())  # noqa: S324

    @property
    def x5t256(self) -> str:
        return jwt.b64url_encode(hashlib.sha256(self.der).digest())


def make_material(cn: str) -> Material:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return Material(key, cert)


def build_assertion(
    material: Material,
    client_id: str,
    aud: str,
    *,
    alg: str = "PS256",
    header: Optional[dict[str, Any]] = None,
    claims: Optional[dict[str, Any]] = None,
    key: Optional[rsa.RSAPrivateKey] = None,
    x5c: bool = False,
) -> str:
    """A client assertion as Entra documents it; ``header``/``claims`` override the defaults."""
    now = int(time.time())
    head: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if alg == "PS256":
        head["x5t#S256"] = material.x5t256
    else:
        head["x5t"] = material.x5t
    if x5c:
        head["x5c"] = [base64.b64encode(material.der).decode()]
    head.update(header or {})
    body: dict[str, Any] = {
        "aud": aud, "iss": client_id, "sub": client_id, "jti": str(uuid.uuid4()),
        "nbf": now, "iat": now, "exp": now + 600,
    }
    body.update(claims or {})
    return jwt.sign(head, body, key or material.key)


def cc_form(client_id: str, scope: str, **extra: Optional[str]) -> dict[str, str]:
    """A client credentials token request form (``None`` values are left out)."""
    form = {"grant_type": "client_credentials", "client_id": client_id, "scope": scope}
    form.update({k: v for k, v in extra.items() if v is not None})
    return form


_DESCRIPTION = re.compile(
    r"^AADSTS(\d+): .+\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: [0-9a-f-]{36}\r\n"
    r"Timestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$",
    re.DOTALL,
)


def assert_entra_error(r: httpx.Response, status: int, error: str, code: int) -> dict[str, Any]:
    """The answer is Entra's error shape with this status, error and AADSTS code."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert body["error"] == error, body
    assert body["error_codes"] == [code], body
    m = _DESCRIPTION.match(body["error_description"])
    assert m is not None, body["error_description"]
    assert int(m.group(1)) == code
    assert body["trace_id"] in body["error_description"]
    assert body["correlation_id"] in body["error_description"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", body["timestamp"])
    assert body["error_uri"].endswith(f"/error?code={code}")
    return body
