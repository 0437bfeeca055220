"""Certificate credentials: load a PEM or PKCS#12 file, compute its thumbprints, build the client
assertion. This module reads the certificate file (and, through :class:`SecretSource`, its
password), remembers what it loaded per file version, checks the validity dates and signs the
``client_assertion`` JWT that Entra ID accepts instead of a client secret; it sends nothing, and
nothing imports it unless a profile uses a certificate. Every problem with the file is a
:class:`ConfigError` naming the certificate file, the profile and the key; no message ever
contains the password or key material.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from . import jwt
from .errors import ConfigError
from .profile import CertificateConfig, Secret

__all__ = [
    "MAX_LIFETIME",
    "ClientCertificate",
    "build_assertion",
    "check_validity",
    "clear_cache",
    "load_certificate",
]

# Entra ID wants an assertion's exp 5 to 10 minutes after its nbf (ENTRA.md).
MAX_LIFETIME = 600

# A certificate issued a moment ago on a machine whose clock is a little behind is still usable.
NOT_BEFORE_SKEW = 300

_ALGS = ("PS256", "RS256")

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_KEY_BLOCKS = (
    b"PRIVATE KEY",
    b"RSA PRIVATE KEY",
    b"ENCRYPTED PRIVATE KEY",
    b"EC PRIVATE KEY",
    b"DSA PRIVATE KEY",
)
_CERT_BLOCKS = (b"CERTIFICATE", b"X509 CERTIFICATE")


@dataclass(frozen=True)
class ClientCertificate:
    """A loaded certificate credential: an RSA private key, its certificate and the chain.

    ``chain`` starts with ``certificate`` (the leaf) and follows issuers where the file has them.
    ``thumbprint_sha1`` (``x5t``) and ``thumbprint_sha256`` (``x5t#S256``) are base64url without
    padding of the leaf's DER; ``x5c`` is the chain's DER in standard base64. The private key
    never appears in a ``repr``.
    """

    path: str
    subject: str
    thumbprint_sha1: str
    thumbprint_sha256: str
    not_valid_before: datetime
    not_valid_after: datetime
    x5c: tuple[str, ...] = field(repr=False)
    private_key: rsa.RSAPrivateKey = field(repr=False, compare=False)
    certificate: x509.Certificate = field(repr=False, compare=False)
    chain: tuple[x509.Certificate, ...] = field(repr=False, compare=False)

    def public_key(self) -> rsa.RSAPublicKey:
        """The public half of the key (the one in the certificate)."""
        return self.private_key.public_key()


# --- loading ------------------------------------------------------------------------------------


class _Where:
    """Where the certificate was configured, to build errors."""

    def __init__(self, file: str, profile: str, config_path: Optional[str]) -> None:
        self.file = file
        self.profile = profile
        self.config_path = config_path

    def error(self, message: str, key: str = "certificate") -> ConfigError:
        return ConfigError(message, path=self.config_path, profile=self.profile, key=key)


# (path, password identity) -> (file stamp, certificate). One entry per configured file, so a
# rewritten file replaces its old entry instead of piling up.
_cache: dict[tuple[str, Optional[str]], tuple[tuple[int, int, int, int], ClientCertificate]] = {}
_cache_lock = threading.Lock()
_load_locks: dict[tuple[str, Optional[str]], threading.Lock] = {}


def clear_cache() -> None:
    """Forget every loaded certificate (tests; a long-running process that wants a reload)."""
    with _cache_lock:
        _cache.clear()


def load_certificate(
    config: CertificateConfig, *, profile: str, config_path: Optional[str]
) -> ClientCertificate:
    """Load the key and certificate(s) ``config`` points at; remembered per file version.

    The file is PEM (a private key, PKCS#8 or traditional RSA, possibly encrypted, and one or
    more certificates, in any order) or PKCS#12 (``.pfx``/``.p12``, with or without password);
    the content decides, not the name. The answer is reused while the file's modification time,
    size and inode and the password's source stay the same; the password is read only when the
    file has to be loaded. Thread-safe: concurrent callers for one file load it once.
    """
    file = os.path.expanduser(config.path)
    where = _Where(file, profile, config_path)
    pw_identity = config.password.identity if config.password is not None else None
    key = (file, pw_identity)
    stamp = _stamp(where)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        lock = _load_locks.setdefault(key, threading.Lock())
    with lock:
        with _cache_lock:
            hit = _cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        stamp, data = _read(where)
        # Kept wrapped (out of captured locals) until it is handed to the parser.
        password = config.password.secret() if config.password is not None else None
        try:
            cert = _parse(data, password, where)
        except ConfigError as exc:
            error = exc
        else:
            with _cache_lock:
                _cache[key] = (stamp, cert)
            return cert
    # The parser's frames, and those of the errors it caught, hold the file's bytes: for an
    # unencrypted PEM, the private key. Raise its error without them (captured locals).
    del data
    error.__cause__ = error.__context__ = None
    raise error.with_traceback(None)


def _stamp(where: _Where) -> tuple[int, int, int, int]:
    try:
        st = os.stat(where.file)
    except FileNotFoundError:
        raise where.error(f"certificate file {where.file} does not exist") from None
    except OSError as exc:
        raise where.error(f"cannot read certificate file {where.file}: {exc.strerror}") from None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def _read(where: _Where) -> tuple[tuple[int, int, int, int], bytes]:
    """The file's content and the stamp of exactly that version (fstat of the open file)."""
    try:
        with open(where.file, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read()
    except FileNotFoundError:
        raise where.error(f"certificate file {where.file} does not exist") from None
    except IsADirectoryError:
        raise where.error(f"certificate path {where.file} is a directory, not a file") from None
    except OSError as exc:
        raise where.error(f"cannot read certificate file {where.file}: {exc.strerror}") from None
    if not data.strip():
        raise where.error(f"certificate file {where.file} is empty")
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev), data


def _parse(data: bytes, password: Optional[Secret], where: _Where) -> ClientCertificate:
    if b"-----BEGIN" in data:
        key, certs = _parse_pem(data, password, where)
    elif _looks_like_pkcs12(data):
        key, certs = _parse_pkcs12(data, password, where)
    else:
        raise where.error(
            f"certificate file {where.file} is neither PEM nor PKCS#12 (.pfx/.p12): it must hold "
            "the private key and the certificate"
        )
    if key is None:
        raise where.error(
            f"certificate file {where.file} holds no private key: it must hold the private key "
            "as well as the certificate"
        )
    if not certs:
        raise where.error(f"certificate file {where.file} holds no certificate")
    rsa_key = _require_rsa(key, where)
    return _build(rsa_key, certs, where)


def _revealed(password: Optional[Secret]) -> Optional[bytes]:
    return password.reveal().encode("utf-8") if password is not None else None


def _looks_like_pkcs12(data: bytes) -> bool:
    """A DER ``PFX`` starts with a SEQUENCE whose first element is ``INTEGER 3``."""
    if len(data) < 5 or data[0] != 0x30:
        return False
    first = data[1]
    if first < 0x80:
        offset = 2
    else:
        offset = 2 + (first & 0x7F)
        if first == 0x80 or offset > 6:
            return False
    return data[offset : offset + 3] == b"\x02\x01\x03"


def _parse_pem(
    data: bytes, password: Optional[Secret], where: _Where
) -> tuple[Optional[Any], list[x509.Certificate]]:
    key: Optional[Any] = None
    certs: list[x509.Certificate] = []
    for match in _PEM_BLOCK.finditer(data):
        kind, block = match.group(1), match.group(0)
        if kind in _CERT_BLOCKS:
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                raise where.error(
                    f"certificate file {where.file} holds a certificate that cannot be read"
                ) from None
        elif kind in _KEY_BLOCKS:
            if key is not None:
                raise where.error(
                    f"certificate file {where.file} holds more than one private key: keep only "
                    "the one that belongs to the certificate"
                )
            key = _pem_key(kind, block, password, where)
    if key is None and not certs:
        raise where.error(f"certificate file {where.file} holds no PEM private key or certificate")
    return key, certs


def _pem_key(kind: bytes, block: bytes, password: Optional[Secret], where: _Where) -> Any:
    encrypted = kind == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block
    if encrypted and password is None:
        raise where.error(
            f"the private key in {where.file} is encrypted: set certificate.password",
            key="certificate.password",
        )
    try:
        return serialization.load_pem_private_key(
            block, _revealed(password) if encrypted else None)
    except (ValueError, TypeError):
        if encrypted:
            raise where.error(
                f"cannot decrypt the private key in {where.file}: wrong password?",
                key="certificate.password",
            ) from None
        raise where.error(f"the private key in {where.file} cannot be read") from None
    except UnsupportedAlgorithm:
        raise where.error(
            f"the private key in {where.file} uses an unsupported algorithm or cipher"
        ) from None


def _parse_pkcs12(
    data: bytes, password: Optional[Secret], where: _Where
) -> tuple[Optional[Any], list[x509.Certificate]]:
    # Without a password, also try the empty one (what some exporters write). With a password,
    # fall back to none: a file that is not protected opens either way, as PEM does.
    attempts: list[Optional[Secret]] = [None, Secret("")] if password is None else [password, None]
    for attempt in attempts:
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(data, _revealed(attempt))
        except ValueError:
            continue
        except UnsupportedAlgorithm:
            raise where.error(
                f"PKCS#12 file {where.file} uses an unsupported cipher: export it again with "
                "AES-256 (openssl pkcs12 -export ... without -legacy)"
            ) from None
        certs = ([cert] if cert is not None else []) + list(extra)
        return key, certs
    if password is None:
        raise where.error(
            f"PKCS#12 file {where.file} is password-protected (or damaged): "
            "set certificate.password",
            key="certificate.password",
        )
    raise where.error(
        f"cannot open PKCS#12 file {where.file}: wrong password, or the file is damaged",
        key="certificate.password",
    )


def _require_rsa(key: Any, where: _Where) -> rsa.RSAPrivateKey:
    if isinstance(key, rsa.RSAPrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        kind = "an EC"
    elif isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        kind = "an EdDSA"
    elif isinstance(key, dsa.DSAPrivateKey):
        kind = "a DSA"
    else:
        kind = "a non-RSA"
    raise where.error(
        f"the private key in {where.file} is {kind} key: Entra ID certificate credentials need "
        "an RSA key (RS256/PS256); create an RSA certificate"
    )


def _build(
    key: rsa.RSAPrivateKey, certs: list[x509.Certificate], where: _Where
) -> ClientCertificate:
    numbers = key.public_key().public_numbers()
    leaf: Optional[x509.Certificate] = None
    for cert in certs:
        pub = cert.public_key()
        if isinstance(pub, rsa.RSAPublicKey) and pub.public_numbers() == numbers:
            leaf = cert
            break
    if leaf is None:
        which = "its certificate" if len(certs) == 1 else f"any of its {len(certs)} certificates"
        raise where.error(
            f"the private key in {where.file} does not match {which}: key and certificate must "
            "be a pair"
        )
    chain = _order_chain(leaf, certs)
    der = leaf.public_bytes(serialization.Encoding.DER)
    return ClientCertificate(
        path=where.file,
        subject=leaf.subject.rfc4514_string(),
        thumbprint_sha1=jwt.b64url_encode(hashlib.sha1(der).digest()),  # noqa: S324 - x5t is SHA-1
        thumbprint_sha256=jwt.b64url_encode(hashlib.sha256(der).digest()),
        not_valid_before=_utc(leaf, "not_valid_before"),
        not_valid_after=_utc(leaf, "not_valid_after"),
        x5c=tuple(
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")
            for c in chain
        ),
        private_key=key,
        certificate=leaf,
        chain=chain,
    )


def _order_chain(
    leaf: x509.Certificate, certs: list[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """Leaf first, then each issuer found in the file, then any other certificates as given."""
    rest = [c for c in certs if c is not leaf and c != leaf]
    chain = [leaf]
    current = leaf
    while current.issuer != current.subject:
        issuer = next((c for c in rest if c.subject == current.issuer), None)
        if issuer is None:
            break
        rest.remove(issuer)
        chain.append(issuer)
        current = issuer
    return tuple(chain + rest)


def _utc(cert: x509.Certificate, name: str) -> datetime:
    """``not_valid_*_utc`` (cryptography >= 42), else the naive UTC ``not_valid_*`` (41)."""
    value = getattr(cert, name + "_utc", None)
    if value is None:
        value = getattr(cert, name).replace(tzinfo=timezone.utc)
    assert isinstance(value, datetime)
    return value


# --- validity and the assertion -----------------------------------------------------------------


def check_validity(
    cert: ClientCertificate,
    *,
    profile: str,
    config_path: Optional[str],
    now: Optional[float] = None,
) -> None:
    """Raise :class:`ConfigError` if the certificate has expired or is not valid yet.

    Called before any request is sent: the identity service would refuse it anyway, with a far
    less helpful message. A certificate issued up to a few minutes in the future is accepted,
    for clocks that are a little behind.
    """
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    if moment >= cert.not_valid_after:
        raise ConfigError(
            f"certificate {cert.path} expired on {_show(cert.not_valid_after)}: create a new "
            "certificate, upload it to the app registration and point 'certificate' at it",
            path=config_path,
            profile=profile,
            key="certificate",
        )
    if moment + timedelta(seconds=NOT_BEFORE_SKEW) < cert.not_valid_before:
        raise ConfigError(
            f"certificate {cert.path} is not valid until {_show(cert.not_valid_before)}: "
            "check this machine's clock, or use a certificate that is valid now",
            path=config_path,
            profile=profile,
            key="certificate",
        )


def _show(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def build_assertion(
    cert: ClientCertificate,
    *,
    client_id: str,
    audience: str,
    alg: str = "PS256",
    send_x5c: bool = False,
    now: Optional[float] = None,
    lifetime: int = MAX_LIFETIME,
) -> str:
    """A signed client assertion for one token request (ENTRA.md, "Certificate assertion").

    ``audience`` is the exact token endpoint URL being called. PS256 carries ``x5t#S256``,
    RS256 carries ``x5t``; ``send_x5c`` adds the chain. Each call has a new ``jti``.
    """
    if alg not in _ALGS:
        raise ValueError(f"unsupported assertion algorithm {alg!r}; use PS256 or RS256")
    if not 0 < lifetime <= MAX_LIFETIME:
        raise ValueError(f"assertion lifetime must be 1..{MAX_LIFETIME} seconds, not {lifetime}")
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if alg == "PS256":
        header["x5t#S256"] = cert.thumbprint_sha256
    else:
        header["x5t"] = cert.thumbprint_sha1
    if send_x5c:
        header["x5c"] = list(cert.x5c)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": str(uuid.uuid4()),
        "nbf": issued,
        "iat": issued,
        "exp": issued + lifetime,
    }
    return jwt.sign(header, claims, cert.private_key)
