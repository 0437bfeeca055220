"""Minimal JSON Web Token helpers: base64url, offline decoding, RS256/PS256 signing and checking.

Used by the certificate assertion (signing), by ``authlayer decode`` and ``authlayer check``
(offline decoding: nothing is verified, nothing is sent) and by the emulator (signing access
tokens, checking assertions). ``cryptography`` is imported only when a signature is made or
checked, so decoding stays cheap.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

__all__ = ["JWTError", "b64url_decode", "b64url_encode", "decode", "sign", "verify"]

SUPPORTED_ALGS = ("RS256", "PS256")


class JWTError(ValueError):
    """A string is not a well-formed JWT, or its signature does not check out."""


def b64url_encode(data: bytes) -> str:
    """Base64url without ``=`` padding, as JWTs use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url, with or without padding."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise JWTError("not valid base64url") from exc


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(part))
    except (JWTError, ValueError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting
        raise JWTError(f"the JWT's {what} is not base64url-encoded JSON") from exc
    if not isinstance(value, dict):
        raise JWTError(f"the JWT's {what} is not a JSON object")
    return value


def decode(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a JWT into its header and claims without checking anything. Offline."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JWTError(f"a JWT has 3 dot-separated parts; this has {len(parts)}")
    return _json_part(parts[0], "header"), _json_part(parts[1], "claims")


def _padding(alg: str) -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if alg == "RS256":
        return padding.PKCS1v15()
    if alg == "PS256":
        # Entra expects PSS with MGF1-SHA256 and a salt as long as the digest.
        return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    raise JWTError(f"unsupported JWT algorithm {alg!r}; use one of {', '.join(SUPPORTED_ALGS)}")


def sign(header: dict[str, Any], claims: dict[str, Any], key: RSAPrivateKey) -> str:
    """Make a compact JWT signed with ``header["alg"]`` (RS256 or PS256)."""
    from cryptography.hazmat.primitives import hashes

    pad = _padding(str(header.get("alg")))
    signing_input = (
        b64url_encode(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = key.sign(signing_input.encode("ascii"), pad, hashes.SHA256())
    return signing_input + "." + b64url_encode(signature)


def verify(token: str, key: RSAPublicKey) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check a JWT's RS256/PS256 signature with ``key``; return its header and claims."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes

    header, claims = decode(token)
    pad = _padding(str(header.get("alg")))
    head, body, sig = token.strip().split(".")
    try:
        key.verify(b64url_decode(sig), f"{head}.{body}".encode("ascii"), pad, hashes.SHA256())
    except InvalidSignature as exc:
        raise JWTError("the JWT's signature does not match the key") from exc
    return header, claims
