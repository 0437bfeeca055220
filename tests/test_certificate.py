"""Tests of authlayer.certificate: loading PEM and PKCS#12, thumbprints, the client assertion,
validity checks, errors and memoisation. Keys and certificates are made here, offline."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from authlayer import certificate as certmod
from authlayer import jwt
from authlayer.certificate import (
    ClientCertificate,
    build_assertion,
    check_validity,
    load_certificate,
)
from authlayer.errors import ConfigError
from authlayer.profile import CertificateConfig, SecretSource

PASSWORD = "Tr0ub4dor-and-3-horses"
PROFILE = "robot"
CONFIG_PATH = "/etc/authlayer/profiles.toml"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TOKEN_URL = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"

UTC = dt.timezone.utc
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


# --- material -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    """A second key: signs the intermediate, and is the wrong key for the leaf."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(
    subject_key: Any,
    *,
    subject: str = "authlayer-test",
    issuer_key: Any = None,
    issuer: Optional[str] = None,
    not_before: Optional[dt.datetime] = None,
    not_after: Optional[dt.datetime] = None,
) -> x509.Certificate:
    now = dt.datetime.now(UTC)
    issuer_key = issuer_key if issuer_key is not None else subject_key
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer or subject))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=30))
        .sign(issuer_key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def cert(key: rsa.RSAPrivateKey) -> x509.Certificate:
    return make_cert(key)


def key_pem(
    key: Any,
    fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
    password: Optional[str] = None,
) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(PEM, fmt, enc)  # type: ignore[no-any-return]


def cert_pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(PEM)


def der(c: x509.Certificate) -> bytes:
    return c.public_bytes(DER)


def config(path: Path, password: Optional[str] = None, send_x5c: bool = False) -> CertificateConfig:
    source = (
        SecretSource("value", password, key="certificate.password", profile=PROFILE)
        if password is not None
        else None
    )
    return CertificateConfig(str(path), source, send_x5c)


def load(path: Path, password: Optional[str] = None) -> ClientCertificate:
    return load_certificate(config(path, password), profile=PROFILE, config_path=CONFIG_PATH)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    certmod.clear_cache()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- loading ------------------------------------------------------------------------------------


def assert_is(loaded: ClientCertificate, key: rsa.RSAPrivateKey, leaf: x509.Certificate) -> None:
    assert loaded.thumbprint_sha1 == b64url(hashlib.sha1(der(leaf)).digest())  # noqa: S324
    assert loaded.thumbprint_sha256 == b64url(hashlib.sha256(der(leaf)).digest())
    assert "=" not in loaded.thumbprint_sha1 + loaded.thumbprint_sha256
    assert loaded.certificate == leaf
    assert loaded.chain[0] == leaf
    assert base64.b64decode(loaded.x5c[0], validate=True) == der(leaf)
    assert loaded.private_key.private_numbers() == key.private_numbers()
    assert loaded.not_valid_after == leaf.not_valid_after_utc
    assert loaded.not_valid_before == leaf.not_valid_before_utc
    assert loaded.not_valid_after.tzinfo is not None


def test_pem_key_then_certificate(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes(key_pem(key) + cert_pem(cert))
    loaded = load(path)
    assert_is(loaded, key, cert)
    assert loaded.x5c == (base64.b64encode(der(cert)).decode(),)
    assert loaded.path == str(path)
    assert "authlayer-test" in loaded.subject


def test_pem_certificate_then_traditional_rsa_key(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pem"
    trad = key_pem(key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert b"BEGIN RSA PRIVATE KEY" in trad
    path.write_bytes(b"Bag Attributes: ignored\n" + cert_pem(cert) + b"\n" + trad)
    assert_is(load(path), key, cert)


def test_pem_with_crlf_line_ends(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes((key_pem(key) + cert_pem(cert)).replace(b"\n", b"\r\n"))
    assert_is(load(path), key, cert)


@pytest.mark.parametrize(
    "fmt",
    [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
    ids=["pkcs8", "traditional"],
)
def test_pem_encrypted_key_with_password(
    tmp_path: Path,
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate,
    fmt: serialization.PrivateFormat,
) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes(cert_pem(cert) + key_pem(key, fmt, PASSWORD))
    assert_is(load(path, PASSWORD), key, cert)


def test_pem_unencrypted_key_ignores_a_password(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes(key_pem(key) + cert_pem(cert))
    assert_is(load(path, PASSWORD), key, cert)


@pytest.mark.parametrize("password", [None, PASSWORD])
def test_pkcs12(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate, password: Optional[str]
) -> None:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    # The name says nothing: the content decides.
    path = tmp_path / "cred.bin"
    path.write_bytes(pkcs12.serialize_key_and_certificates(b"cred", key, cert, None, enc))
    assert_is(load(path, password), key, cert)


def test_pkcs12_unprotected_ignores_a_password(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pfx"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(b"c", key, cert, None, serialization.NoEncryption())
    )
    assert_is(load(path, PASSWORD), key, cert)


@pytest.fixture(scope="module")
def chain(
    key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> tuple[x509.Certificate, x509.Certificate]:
    intermediate = make_cert(other_key, subject="intermediate-ca")
    leaf = make_cert(key, subject="leaf", issuer_key=other_key, issuer="intermediate-ca")
    return leaf, intermediate


def test_pem_chain_leaf_first(
    tmp_path: Path,
    key: rsa.RSAPrivateKey,
    chain: tuple[x509.Certificate, x509.Certificate],
) -> None:
    leaf, intermediate = chain
    path = tmp_path / "chain.pem"
    # Intermediate first in the file: the leaf is found by its key and put first anyway.
    path.write_bytes(cert_pem(intermediate) + key_pem(key) + cert_pem(leaf))
    loaded = load(path)
    assert_is(loaded, key, leaf)
    assert loaded.chain == (leaf, intermediate)
    assert loaded.x5c == tuple(base64.b64encode(der(c)).decode() for c in (leaf, intermediate))
    for item in loaded.x5c:
        assert base64.b64decode(item, validate=True)  # standard alphabet, padded


def test_pkcs12_chain(
    tmp_path: Path,
    key: rsa.RSAPrivateKey,
    chain: tuple[x509.Certificate, x509.Certificate],
) -> None:
    leaf, intermediate = chain
    path = tmp_path / "chain.p12"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"c", key, leaf, [intermediate], serialization.BestAvailableEncryption(b"pw")
        )
    )
    loaded = load(path, "pw")
    assert loaded.chain == (leaf, intermediate)
    assert len(loaded.x5c) == 2


def test_repr_hides_the_key(tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes(key_pem(key) + cert_pem(cert))
    loaded = load(path)
    text = repr(loaded)
    assert "private_key" not in text
    assert "PRIVATE" not in text
    assert str(key.private_numbers().d) not in text
    assert str(key.public_key().public_numbers().n) not in text
    assert loaded.thumbprint_sha256 in text


# --- errors -------------------------------------------------------------------------------------


def check_error(path: Path, password: Optional[str], key: str, *words: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path, password)
    err = info.value
    assert err.key == key
    assert err.path == CONFIG_PATH
    assert err.profile == PROFILE
    text = str(err)
    assert str(path) in text
    assert PASSWORD not in text
    for word in words:
        assert word in text
    return err


def test_missing_file(tmp_path: Path) -> None:
    check_error(tmp_path / "nope.pem", None, "certificate", "does not exist")


def test_directory(tmp_path: Path) -> None:
    check_error(tmp_path, None, "certificate", "directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pem"
    path.write_bytes(b"")
    check_error(path, None, "certificate", "empty")


def test_unreadable_file(tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate,
                         deny_read: Callable[[Path], None]) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes(key_pem(key) + cert_pem(cert))
    deny_read(path)
    check_error(path, None, "certificate", "cannot read")


def test_no_private_key(tmp_path: Path, cert: x509.Certificate) -> None:
    path = tmp_path / "cert-only.pem"
    path.write_bytes(cert_pem(cert))
    check_error(path, PASSWORD, "certificate", "no private key")


def test_no_certificate(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "key-only.pem"
    path.write_bytes(key_pem(key))
    check_error(path, None, "certificate", "no certificate")


def test_pkcs12_without_key(tmp_path: Path, cert: x509.Certificate) -> None:
    path = tmp_path / "cert-only.pfx"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(b"c", None, cert, None, serialization.NoEncryption())
    )
    check_error(path, None, "certificate", "no private key")


def test_key_does_not_match(
    tmp_path: Path, other_key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "mismatch.pem"
    path.write_bytes(key_pem(other_key) + cert_pem(cert))
    check_error(path, None, "certificate", "does not match")


def test_encrypted_pem_needs_password(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes(key_pem(key, password=PASSWORD) + cert_pem(cert))
    check_error(path, None, "certificate.password", "encrypted", "certificate.password")


@pytest.mark.parametrize(
    "fmt",
    [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
    ids=["pkcs8", "traditional"],
)
def test_encrypted_pem_wrong_password(
    tmp_path: Path,
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate,
    fmt: serialization.PrivateFormat,
) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes(key_pem(key, fmt, "something-else") + cert_pem(cert))
    err = check_error(path, PASSWORD, "certificate.password", "wrong password")
    assert err.__cause__ is None


def test_pkcs12_wrong_password(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pfx"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"c", key, cert, None, serialization.BestAvailableEncryption(b"something-else")
        )
    )
    check_error(path, PASSWORD, "certificate.password", "wrong password")


def test_pkcs12_needs_password(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pfx"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"c", key, cert, None, serialization.BestAvailableEncryption(PASSWORD.encode())
        )
    )
    check_error(path, None, "certificate.password", "password-protected", "certificate.password")


@pytest.mark.parametrize(
    "content",
    [b"this is not a certificate\n", b"\x00\x01\x02" * 50, b"0\x82\x01\x00\x02\x01\x01junk"],
    ids=["text", "binary", "der-not-pfx"],
)
def test_neither_pem_nor_pkcs12(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "cred.pfx"
    path.write_bytes(content)
    check_error(path, PASSWORD, "certificate", "neither PEM nor PKCS#12")


def test_der_certificate_is_neither(tmp_path: Path, cert: x509.Certificate) -> None:
    path = tmp_path / "cred.cer"
    path.write_bytes(der(cert))
    check_error(path, None, "certificate", "neither PEM nor PKCS#12")


def test_pem_without_key_or_certificate(tmp_path: Path) -> None:
    path = tmp_path / "csr.pem"
    path.write_bytes(
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    )
    check_error(path, None, "certificate", "no PEM private key or certificate")


@pytest.mark.parametrize("container", ["pem", "pkcs12"])
def test_ec_key_is_refused(tmp_path: Path, container: str) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_cert = make_cert(ec_key)
    path = tmp_path / "ec.pem"
    if container == "pem":
        path.write_bytes(key_pem(ec_key) + cert_pem(ec_cert))
    else:
        path.write_bytes(
            pkcs12.serialize_key_and_certificates(
                b"c", ec_key, ec_cert, None, serialization.NoEncryption()
            )
        )
    check_error(path, None, "certificate", "EC key", "RSA")


def test_two_private_keys(
    tmp_path: Path, key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "two.pem"
    path.write_bytes(key_pem(key) + key_pem(other_key) + cert_pem(cert))
    check_error(path, None, "certificate", "more than one private key")


def test_password_source_error_passes_through(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes(key_pem(key, password=PASSWORD) + cert_pem(cert))
    monkeypatch.delenv("AUTHLAYER_TEST_NO_SUCH_VAR", raising=False)
    source = SecretSource(
        "env", "AUTHLAYER_TEST_NO_SUCH_VAR", key="certificate.password", profile=PROFILE
    )
    with pytest.raises(ConfigError) as info:
        load_certificate(
            CertificateConfig(str(path), source), profile=PROFILE, config_path=CONFIG_PATH
        )
    assert info.value.key == "certificate.password"
    assert "AUTHLAYER_TEST_NO_SUCH_VAR" in str(info.value)


# --- validity -----------------------------------------------------------------------------------


def test_check_validity_accepts_a_current_certificate(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes(key_pem(key) + cert_pem(cert))
    check_validity(load(path), profile=PROFILE, config_path=CONFIG_PATH)


def test_expired_certificate(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    expires = dt.datetime(2020, 3, 1, 12, 0, tzinfo=UTC)
    old = make_cert(key, not_before=expires - dt.timedelta(days=365), not_after=expires)
    path = tmp_path / "old.pem"
    path.write_bytes(key_pem(key) + cert_pem(old))
    loaded = load(path)  # loading works: the check is separate, before any request
    with pytest.raises(ConfigError) as info:
        check_validity(loaded, profile=PROFILE, config_path=CONFIG_PATH)
    err = info.value
    assert err.key == "certificate"
    assert err.path == CONFIG_PATH
    assert err.profile == PROFILE
    text = str(err)
    assert "expired on 2020-03-01" in text
    assert "upload" in text
    assert str(path) in text


def test_expiry_with_explicit_now(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes(key_pem(key) + cert_pem(cert))
    loaded = load(path)
    after = loaded.not_valid_after.timestamp()
    check_validity(loaded, profile=PROFILE, config_path=None, now=after - 1)
    with pytest.raises(ConfigError, match="expired"):
        check_validity(loaded, profile=PROFILE, config_path=None, now=after)


def test_not_yet_valid(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    start = dt.datetime.now(UTC) + dt.timedelta(days=2)
    future = make_cert(key, not_before=start, not_after=start + dt.timedelta(days=30))
    path = tmp_path / "future.pem"
    path.write_bytes(key_pem(key) + cert_pem(future))
    with pytest.raises(ConfigError) as info:
        check_validity(load(path), profile=PROFILE, config_path=CONFIG_PATH)
    assert info.value.key == "certificate"
    assert "not valid until" in str(info.value)


# --- the assertion ------------------------------------------------------------------------------


@pytest.fixture
def loaded(tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> ClientCertificate:
    path = tmp_path / "cred.pem"
    path.write_bytes(key_pem(key) + cert_pem(cert))
    return load(path)


def test_assertion_ps256(loaded: ClientCertificate, key: rsa.RSAPrivateKey) -> None:
    token = build_assertion(loaded, client_id=CLIENT_ID, audience=TOKEN_URL, now=1_700_000_000.7)
    assert "=" not in token
    header, claims = jwt.verify(token, key.public_key())
    assert header == {"alg": "PS256", "typ": "JWT", "x5t#S256": loaded.thumbprint_sha256}
    jti = claims.pop("jti")
    assert str(uuid.UUID(jti)) == jti
    assert claims == {
        "aud": TOKEN_URL,
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "nbf": 1_700_000_000,
        "iat": 1_700_000_000,
        "exp": 1_700_000_600,
    }


def test_assertion_rs256(loaded: ClientCertificate, key: rsa.RSAPrivateKey) -> None:
    token = build_assertion(loaded, client_id=CLIENT_ID, audience=TOKEN_URL, alg="RS256")
    header, claims = jwt.verify(token, key.public_key())
    assert header == {"alg": "RS256", "typ": "JWT", "x5t": loaded.thumbprint_sha1}
    assert claims["aud"] == TOKEN_URL
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["nbf"] == claims["iat"]
    assert 0 < claims["exp"] - claims["nbf"] <= 600


@pytest.mark.parametrize("alg", ["PS256", "RS256"])
def test_assertion_with_x5c(
    tmp_path: Path,
    key: rsa.RSAPrivateKey,
    chain: tuple[x509.Certificate, x509.Certificate],
    alg: str,
) -> None:
    leaf, intermediate = chain
    path = tmp_path / "chain.pem"
    path.write_bytes(key_pem(key) + cert_pem(leaf) + cert_pem(intermediate))
    loaded = load(path)
    token = build_assertion(loaded, client_id=CLIENT_ID, audience=TOKEN_URL, alg=alg, send_x5c=True)
    header, _ = jwt.verify(token, leaf.public_key())  # type: ignore[arg-type]
    assert header["x5c"] == [base64.b64encode(der(c)).decode() for c in (leaf, intermediate)]
    assert list(header) == ["alg", "typ", "x5t#S256" if alg == "PS256" else "x5t", "x5c"]


def test_assertion_jti_is_fresh_each_call(loaded: ClientCertificate) -> None:
    seen = {
        jwt.decode(build_assertion(loaded, client_id=CLIENT_ID, audience=TOKEN_URL, now=1.0))[1][
            "jti"
        ]
        for _ in range(5)
    }
    assert len(seen) == 5


def test_assertion_lifetime(loaded: ClientCertificate) -> None:
    token = build_assertion(loaded, client_id=CLIENT_ID, audience=TOKEN_URL, now=100, lifetime=300)
    _, claims = jwt.decode(token)
    assert (claims["nbf"], claims["iat"], claims["exp"]) == (100, 100, 400)
    with pytest.raises(ValueError, match="lifetime"):
        build_assertion(loaded, client_id=CLIENT_ID, audience=TOKEN_URL, lifetime=601)
    with pytest.raises(ValueError, match="lifetime"):
        build_assertion(loaded, client_id=CLIENT_ID, audience=TOKEN_URL, lifetime=0)


def test_assertion_defaults_to_now(loaded: ClientCertificate) -> None:
    import time

    before = int(time.time())
    _, claims = jwt.decode(build_assertion(loaded, client_id=CLIENT_ID, audience=TOKEN_URL))
    assert before <= claims["nbf"] <= int(time.time())
    assert claims["exp"] - claims["nbf"] == 600


def test_assertion_unknown_alg(loaded: ClientCertificate) -> None:
    with pytest.raises(ValueError, match="ES256"):
        build_assertion(loaded, client_id=CLIENT_ID, audience=TOKEN_URL, alg="ES256")


def test_assertion_wrong_key_does_not_verify(
    loaded: ClientCertificate, other_key: rsa.RSAPrivateKey
) -> None:
    token = build_assertion(loaded, client_id=CLIENT_ID, audience=TOKEN_URL)
    with pytest.raises(jwt.JWTError):
        jwt.verify(token, other_key.public_key())


# --- memoisation --------------------------------------------------------------------------------


def test_second_load_is_the_same_object(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pfx"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"c", key, cert, None, serialization.BestAvailableEncryption(PASSWORD.encode())
        )
    )
    first = load(path, PASSWORD)
    assert load(path, PASSWORD) is first


def test_rewritten_file_is_loaded_again(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes(key_pem(key) + cert_pem(cert))
    first = load(path)
    renewed = make_cert(key)  # same key, same size, new serial
    path.write_bytes(key_pem(key) + cert_pem(renewed))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = load(path)
    assert second is not first
    assert second.certificate == renewed
    assert second.thumbprint_sha256 != first.thumbprint_sha256
    assert load(path) is second


def test_password_source_is_part_of_the_key(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes(key_pem(key) + cert_pem(cert))
    assert load(path) is not load(path, PASSWORD)
    assert load(path, PASSWORD) is load(path, PASSWORD)


def test_failures_are_not_remembered(
    tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> None:
    path = tmp_path / "cred.pem"
    path.write_bytes(cert_pem(cert))
    with pytest.raises(ConfigError):
        load(path)
    path.write_bytes(key_pem(key) + cert_pem(cert))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert_is(load(path), key, cert)


def test_concurrent_loads_parse_once(
    tmp_path: Path,
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "cred.pfx"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"c", key, cert, None, serialization.BestAvailableEncryption(PASSWORD.encode())
        )
    )
    calls = []
    real_parse = certmod._parse

    def counting_parse(*args: Any) -> ClientCertificate:
        calls.append(1)
        return real_parse(*args)

    monkeypatch.setattr(certmod, "_parse", counting_parse)
    barrier = threading.Barrier(8)
    results: list[ClientCertificate] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        got = load(path, PASSWORD)
        with lock:
            results.append(got)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert all(r is results[0] for r in results)
    assert len(calls) == 1


def test_dates_from_older_cryptography() -> None:
    # cryptography 41 has only the naive not_valid_* properties (UTC by definition).
    from types import SimpleNamespace

    old_style = SimpleNamespace(not_valid_after=dt.datetime(2030, 1, 2, 3, 4, 5))
    got = certmod._utc(old_style, "not_valid_after")  # type: ignore[arg-type]
    assert got == dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
