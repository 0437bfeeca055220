"""Client authentication and the token request that every grant ends with.

:func:`client_auth_fields` turns a confidential client's credential — a secret, a certificate
assertion, or a ready-made (federated) assertion — into form fields; :func:`token_request` posts
a grant's form to the token endpoint with those fields and any claims request, and parses the
answer. Reading a secret source or a certificate file is blocking work, so it is yielded as a
:class:`~authlayer._http.Call`.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any, Union

from .._http import Action, HttpRequest, call, send, token_response
from ..profile import Profile, Secret, SecretSource
from ..token import TokenResult
from . import FlowContext

__all__ = ["ASSERTION_TYPE", "Form", "client_auth_fields", "read_secret", "secret_of",
           "token_request"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# A grant's form: secrets stay wrapped (hidden from reprs and captured locals) until the
# request is built.
Form = Mapping[str, Union[str, Secret]]


def secret_of(source: SecretSource) -> Generator[Action, Any, Secret]:
    """Read a secret source, wrapped; files and commands off the event loop."""
    if source.kind in ("value", "env"):
        return source.secret()
    return (yield from call(source.secret))


def read_secret(source: SecretSource) -> Generator[Action, Any, str]:
    """Read a secret source as plain text; files and commands off the event loop."""
    return (yield from secret_of(source)).reveal()


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


def client_auth_fields(profile: Profile, token_url: str) -> Generator[Action, Any, Form]:
    """The form fields that authenticate the client to ``token_url`` (empty for a public
    client). A certificate assertion is built anew, with a fresh ``jti``, for every request."""
    if profile.client_secret is not None:
        return {"client_secret": (yield from secret_of(profile.client_secret))}
    if profile.certificate is not None:
        assertion = yield from call(lambda: Secret(_certificate_assertion(profile, token_url)))
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    if profile.client_assertion is not None:
        return {"client_assertion_type": ASSERTION_TYPE,
                "client_assertion": (yield from secret_of(profile.client_assertion))}
    return {}


def _revealed(form: Form) -> dict[str, str]:
    """The form as it is sent: secrets unwrapped, at the last moment."""
    return {k: v.reveal() if isinstance(v, Secret) else v for k, v in form.items()}


def token_request(
    ctx: FlowContext,
    form: Form,
    *,
    what: str = "token request",
    authenticate: bool = True,
) -> Generator[Action, Any, TokenResult]:
    """POST a grant's ``form`` to the profile's token endpoint — with the client's credential
    (unless ``authenticate`` is false: the form carries its own) and the context's claims
    request — and return the parsed answer. Raises :class:`~authlayer.errors.TokenError`."""
    profile = ctx.profile
    url = ctx.token_url()

    def build() -> Generator[Action, Any, HttpRequest]:
        # Called for every attempt: a retried request gets a new assertion (a fresh jti).
        fields = dict(form)
        if authenticate:
            fields.update((yield from client_auth_fields(profile, url)))
        if ctx.claims:
            fields["claims"] = ctx.claims
        # The request's form is left out of its repr.
        return HttpRequest("POST", url, form=_revealed(fields), timeout=profile.timeout,
                           what=what)

    # Lifetimes count from when the request was sent: never past the token's real expiry.
    sent = ctx.clock()
    response = yield from send(build, profile=profile.name)
    return token_response(response, profile=profile.name, now=sent, what=what)
