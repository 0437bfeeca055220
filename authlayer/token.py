"""Token values: the public :class:`AccessToken` and the internal :class:`TokenResult`.

Both are immutable, and neither shows a token in its ``repr``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from ._record import field, record

__all__ = ["AccessToken", "TokenResult"]


class AccessToken(NamedTuple):
    """An access token and when it expires.

    ``token`` is the bearer token, ``expires_on`` its expiry in Unix seconds, ``token_type``
    almost always ``"Bearer"``. A named tuple ``(token, expires_on, token_type)``: ``.token``,
    ``.expires_on``, ``[0]`` and ``[1]`` match azure-core's ``AccessToken`` (it unpacks into
    three names, not two). Its ``repr`` never shows the token.
    """

    token: str
    expires_on: int
    token_type: str = "Bearer"

    def __repr__(self) -> str:
        return (
            f"AccessToken(token=<{len(self.token)} chars>, expires_on={self.expires_on}, "
            f"token_type={self.token_type!r})"
        )

    def __str__(self) -> str:
        return self.__repr__()


@record
class TokenResult:
    """What a flow returns: the access token and what came with it.

    ``refresh_on`` is when to start getting a new one (Unix seconds). ``refresh_token`` is kept
    by the cache for flows that sign a person in; ``account`` identifies that person
    (``home_account_id``, ``username``) when the answer said so.
    """

    access_token: str = field(repr=False)
    expires_on: int
    refresh_on: int
    token_type: str = "Bearer"
    refresh_token: Optional[str] = field(default=None, repr=False)
    scope: Optional[str] = None
    id_token: Optional[str] = field(default=None, repr=False)
    account: Optional[dict[str, Any]] = None

    def public(self) -> AccessToken:
        """The :class:`AccessToken` users see."""
        return AccessToken(self.access_token, self.expires_on, self.token_type)
