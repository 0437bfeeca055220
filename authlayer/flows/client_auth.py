"""Client authentication for confidential clients: a secret, a certificate assertion, or a
ready-made (federated) assertion, as form fields of a token request.

Shared by every grant a confidential client can use. Reading a secret source or a certificate
file is blocking work, so it is yielded as a :class:`~authlayer._http.Call`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .._http import Action, Call
from ..profile import Profile, SecretSource

__all__ = ["ASSERTION_TYPE", "client_auth_fields", "read_secret"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def read_secret(source: SecretSource) -> Generator[Action, Any, str]:
    """Read a secret source; files and commands off the event loop."""
    if source.kind in ("value", "env"):
        return source.read()
    value = yield Call(source.read)
    return str(value)


def _certificate_assertion(profile: Profile, audience: str) -> str:
    from ..certificate import build_assertion, check_validity, load_certificate

    assert profile.certificate is not None
    cert = load_certificate(profile.certificate, profile=profile.name,
                            config_path=profile.config_path)
    check_validity(cert, profile=profile.name, config_path=profile.config_path)
    assert profile.client_id is not None
    return build_assertion(
        cert,
        client_id=profile.client_id,
        audience=audience,
        alg=profile.assertion_alg,
        send_x5c=profile.certificate.send_x5c,
    )


def client_auth_fields(profile: Profile, token_url: str) -> Generator[Action, Any, dict[str, str]]:
    """The form fields that authenticate the client to ``token_url`` (empty for a public
    client). A certificate assertion is built anew, with a fresh ``jti``, for every request."""
    if profile.client_secret is not None:
        return {"client_secret": (yield from read_secret(profile.client_secret))}
    if profile.certificate is not None:
        assertion = yield Call(lambda: _certificate_assertion(profile, token_url))
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": str(assertion)}
    if profile.client_assertion is not None:
        assertion = yield from read_secret(profile.client_assertion)
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    return {}
