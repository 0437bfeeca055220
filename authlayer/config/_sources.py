"""Secret sources as the profiles file writes them: a string (the secret itself) or a table with
exactly one key, ``env``, ``file`` or ``command`` (CONTRACT §4), checked when the profile is
loaded and kept as a :class:`~authlayer.profile.SecretSource`, read only when a token request
needs the secret. Messages never quote the value: it may be the secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

from ..profile import SecretSource
from ._keys import _suggest, _type_name

if TYPE_CHECKING:
    from ._keys import Where

__all__ = ["parse_secret"]


def parse_secret(value: Any, where: Where, key: str) -> SecretSource:
    """The secret source written under ``key``."""
    kinds = ("env", "file", "command")
    how = "a table with one of env, file or command"

    def source(kind: str, ref: Union[str, tuple[str, ...]]) -> SecretSource:
        return SecretSource(kind, ref, key=key, profile=where.profile, path=where.path)

    def error(message: str) -> Exception:
        return where.error(message, key)

    if isinstance(value, str):
        if not value.strip():
            raise error(f'{key} is empty: give the secret, or {how}, like {{ env = "NAME" }}')
        return source("value", value)
    if not isinstance(value, Mapping):
        raise where.type_error(f"a string (the secret itself) or {how}", value, key)
    for name in value:
        if name not in kinds:
            raise error(
                f"unknown key {name!r} in {key}" + _suggest(name, kinds) + f" ({key} must be {how})"
            )
    if not value:
        raise error(f"{key} is an empty table: it must be {how}")
    if len(value) > 1:
        first, second = list(value)[:2]
        raise error(f"{key} has both {first!r} and {second!r}: a secret source takes exactly one")
    kind, ref = next(iter(value.items()))
    if kind == "env":
        if not isinstance(ref, str) or not ref or "=" in ref or "\0" in ref:
            raise error(
                f"{key}.env must be the name of an environment variable"
                + ("" if isinstance(ref, str) else f", not {_type_name(ref)}")
            )
        return source("env", ref)
    if kind == "file":
        if not isinstance(ref, str) or not ref.strip():
            raise error(
                f"{key}.file must be the path of a file"
                + ("" if isinstance(ref, str) else f", not {_type_name(ref)}")
            )
        return source("file", where.local_path(ref, key))
    if isinstance(ref, str):
        raise error(
            f'{key}.command must be a list like ["prog", "arg"], not a string: it runs '
            "without a shell, so give the program and each argument as list items"
        )
    if not isinstance(ref, list) or not ref:
        raise error(
            f'{key}.command must be a non-empty list like ["prog", "arg"]'
            + ("" if isinstance(ref, list) else f", not {_type_name(ref)}")
        )
    for number, arg in enumerate(ref, 1):
        if not isinstance(arg, str):
            raise error(f"{key}.command item {number} must be a string, not {_type_name(arg)}")
        if "\0" in arg:  # no program can receive it
            raise error(f"{key}.command item {number} has a NUL character in it")
    if not ref[0].strip():
        raise error(f"{key}.command must start with the program to run")
    return source("command", tuple(ref))
