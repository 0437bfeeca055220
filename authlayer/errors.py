"""The one error hierarchy of authlayer, and the table of hints for well-known AADSTS codes.

Every error authlayer raises on purpose derives from :class:`AuthLayerError`. Messages name the
profile, the file and the key (for configuration) or the AADSTS code (for the identity service)
and say what to do. No message ever contains a secret, a token or an assertion: callers build
messages from names and codes only, and :func:`redact` is the last line of defence for text that
comes from outside (an error description from a server).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Optional

__all__ = [
    "AADSTS_HINTS",
    "AuthLayerError",
    "ConfigError",
    "TokenError",
    "hint_for",
    "redact",
]


class AuthLayerError(Exception):
    """Base of every error authlayer raises on purpose."""


class ConfigError(AuthLayerError):
    """Bad or missing configuration.

    The message names the profiles file, the profile and the key at fault; the same facts are
    available as attributes for programs that want them.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Optional[str] = None,
        profile: Optional[str] = None,
        key: Optional[str] = None,
    ) -> None:
        self.path = path
        self.profile = profile
        self.key = key
        where = []
        if path:
            where.append(str(path))
        if profile:
            where.append(f"profile {profile!r}")
        if key:
            where.append(f"key {key!r}")
        prefix = ": ".join([", ".join(where)]) + ": " if where else ""
        self.reason = message
        super().__init__(prefix + message)


# The hint for each well-known AADSTS code (ENTRA.md). Kept in one place on purpose.
AADSTS_HINTS: dict[int, str] = {
    7000215: "wrong client secret: check that client_secret is the secret's value, not its id",
    7000222: "the client secret has expired: create a new one in the app registration",
    7000218: "no client credential was sent: set client_secret or certificate",
    700027: "the assertion's signature or certificate is not registered on the app: "
    "upload the certificate to the app registration",
    700024: "the assertion is outside its valid time: check this machine's clock",
    700016: "application not found in that tenant: check client_id and tenant, "
    "or grant admin consent in that tenant",
    90002: "tenant not found: check the tenant name or id",
    70011: "invalid scope: client credentials need '<resource>/.default'",
    65001: "consent is missing: grant consent to the application for these permissions",
    50076: "multi-factor authentication is required: use flow 'device_code' or "
    "'authorization_code' instead",
    50079: "multi-factor enrolment is required: sign in interactively with flow "
    "'device_code' or 'authorization_code'",
    53003: "blocked by Conditional Access: ask your administrator which policy applies",
    50126: "bad username or password",
    70008: "the code or refresh token has expired: sign in again (authlayer login PROFILE)",
    700082: "the refresh token was unused for 90 days: sign in again (authlayer login PROFILE)",
    50173: "the grant was revoked (password changed?): sign in again (authlayer login PROFILE)",
    54005: "the authorization code was already redeemed: sign in again",
    501481: "the PKCE code_verifier does not match the code_challenge: sign in again",
    9002313: "the refresh token is malformed or unknown to the service: sign in again "
    "(authlayer login PROFILE)",
    50020: "the account does not exist in that tenant: check tenant, or invite the user there",
    50013: "the incoming token (user_assertion) is not valid: expired, or not issued by Entra",
    500131: "the incoming token (user_assertion) is for another API: its audience must be this "
    "app's client id or api://<client id>",
    70016: "authorization is still pending",
    70018: "bad verification code: start the device code sign-in again",
    70019: "the device code expired before sign-in finished: start again",
    700213: "no federated credential on the app matches the assertion's issuer and subject",
    70021: "no federated credential on the app matches the assertion's issuer and subject",
    50196: "the client is looping: too many identical requests in a short time",
}

# Hints by OAuth error name, for answers without AADSTS codes (other servers, device code).
_ERROR_HINTS: dict[str, str] = {
    "authorization_declined": "the person declined the sign-in",
    "expired_token": "the device code expired before sign-in finished: start again",
    "bad_verification_code": "bad verification code: start the device code sign-in again",
    "invalid_client": "the client credential was refused: check client_secret or certificate",
    "temporarily_unavailable": "the identity service is temporarily unavailable: try again later",
}


def hint_for(error: Optional[str], error_codes: Sequence[int]) -> Optional[str]:
    """The hint for an Entra error: by AADSTS code first, then by OAuth error name."""
    for code in error_codes:
        if code in AADSTS_HINTS:
            return AADSTS_HINTS[code]
    if error and error in _ERROR_HINTS:
        return _ERROR_HINTS[error]
    return None


# What redact() keeps of a longer text: a server's error description is a sentence or two, and
# a huge one must not cost more than this to clean.
REDACT_LIMIT = 4096
# A run of the characters tokens and secrets are made of, with base64's padding after it.
# (Patterns are compiled by re at their first use: most processes never redact anything.)
_RUN = r"([A-Za-z0-9+/_~.-]+)(={0,2})"
_RUN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_~.-="
# A JWT inside a short run (a long run is redacted whole).
_JWT = r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*"
_LONG = 40


def _redact_run(match: re.Match[str]) -> str:
    run = match.group(1)
    if len(run) >= _LONG:
        return "[redacted]"
    # Bounded: a short run costs at most _LONG² steps however the text is made.
    return re.sub(_JWT, "[redacted]", run) + match.group(2)


def redact(text: str) -> str:
    """Remove anything that looks like a token or a long secret from text received from outside.

    Linear in the text, which is cut to :data:`REDACT_LIMIT` characters first (dropping a run
    that the cut splits, so no head of a secret survives the cut).
    """
    if len(text) > REDACT_LIMIT:
        size = len(text)
        text = text[:REDACT_LIMIT].rstrip(_RUN_CHARS) + f"... (cut from {size} characters)"
    return re.sub(_RUN, _redact_run, text)


class TokenError(AuthLayerError):
    """The identity service refused or failed to give a token.

    Attributes mirror Entra's error answer: ``error`` (``invalid_client``, ...), ``error_codes``
    (the AADSTS numbers), ``description`` (the first line of ``error_description``),
    ``correlation_id``, ``status`` (the HTTP status, ``None`` when no answer came) and
    ``profile``. ``claims`` holds a claims challenge sent with ``interaction_required``.
    """

    def __init__(
        self,
        message: Optional[str] = None,
        *,
        profile: Optional[str] = None,
        error: Optional[str] = None,
        error_codes: Sequence[int] = (),
        description: Optional[str] = None,
        correlation_id: Optional[str] = None,
        status: Optional[int] = None,
        suberror: Optional[str] = None,
        claims: Optional[str] = None,
        hint: Optional[str] = None,
    ) -> None:
        self.profile = profile
        self.error = error
        self.error_codes = tuple(error_codes)
        self.description = redact(description) if description else description
        self.correlation_id = correlation_id
        self.status = status
        self.suberror = suberror
        self.claims = claims
        self.hint = hint if hint is not None else hint_for(error, self.error_codes)
        super().__init__(self._render(message))

    def _render(self, message: Optional[str]) -> str:
        parts = []
        if self.profile:
            parts.append(f"profile {self.profile!r}:")
        if message:
            parts.append(message)
        else:
            what = self.error or "token request failed"
            if self.error_codes:
                what += " (" + ", ".join(f"AADSTS{c}" for c in self.error_codes) + ")"
            parts.append(what)
            if self.description:
                # "AADSTS7000215: Invalid client secret ..." -> the code is shown already
                parts.append("- " + re.sub(r"^AADSTS\d+:\s*", "", self.description))
        if self.hint:
            parts.append(f"[hint: {self.hint}]")
        if self.correlation_id:
            parts.append(f"[correlation id: {self.correlation_id}]")
        return " ".join(parts)
