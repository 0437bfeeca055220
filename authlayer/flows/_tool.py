"""What the flows that run a signed-in tool (``azd``, Azure PowerShell) share: turning the token
and expiry it printed into a :class:`TokenResult`."""

from __future__ import annotations

from ..errors import TokenError
from ..oauth import refresh_time
from ..token import TokenResult

__all__ = ["tool_result"]


def tool_result(token: str, expires_on: int, *, now: float, profile: str,
                said: str) -> TokenResult:
    """The token a tool (``said``: what it ran, for the message) gave at ``now`` (read before it
    was started); a token already expired by then is a malformed answer, not a token."""
    if expires_on <= now:
        raise TokenError(f"{said} gave a token that has already expired: check this machine's "
                         "clock", profile=profile, error="malformed_response")
    return TokenResult(access_token=token, expires_on=expires_on,
                       refresh_on=refresh_time(now, expires_on))
