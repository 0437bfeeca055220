"""Secret sources: a string (the secret itself) or a table with exactly one key, ``env``,
``file``, ``command`` or a plugin's name (CONTRACT §4, §10). Each kind is a
:class:`~authlayer.schema.SecretSourceSpec`: how the profile's value is checked when the profile
is loaded, how the secret is read when a token request needs it (and only then), how the source
enters a cache key and how it is shown to people. Messages never quote the value: it may be the
secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from .. import registry
from ..errors import ConfigError
from ..profile import (
    COMMAND_TIMEOUT,
    MAX_SECRET_BYTES,
    SecretSource,
    keyed_hash,
    read_at_most,
)
from ..schema import ReadContext, SecretSourceSpec
from ._keys import _suggest, _type_name

if TYPE_CHECKING:
    from ._keys import Where

__all__ = ["BUILTIN", "parse_secret"]

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_HOW = "a table with one of env, file or command"


def _error(ctx: ReadContext, message: str) -> ConfigError:
    return ConfigError(message, path=ctx.path, profile=ctx.profile or None, key=ctx.key)


# --------------------------------------------------------------------------------------------
# Checking what the profile wrote: (value, where) -> the ref that read() gets


def _check_env(ref: Any, where: Where) -> str:
    if not isinstance(ref, str) or not ref or "=" in ref or "\0" in ref:
        raise where.error(
            f"{where.key}.env must be the name of an environment variable"
            + ("" if isinstance(ref, str) else f", not {_type_name(ref)}")
        )
    return ref


def _check_file(ref: Any, where: Where) -> str:
    if not isinstance(ref, str) or not ref.strip():
        raise where.error(
            f"{where.key}.file must be the path of a file"
            + ("" if isinstance(ref, str) else f", not {_type_name(ref)}")
        )
    return where.local_path(ref)


def _check_command(ref: Any, where: Where) -> tuple[str, ...]:
    key = where.key
    if isinstance(ref, str):
        raise where.error(
            f'{key}.command must be a list like ["prog", "arg"], not a string: it runs '
            "without a shell, so give the program and each argument as list items"
        )
    if not isinstance(ref, list) or not ref:
        raise where.error(
            f'{key}.command must be a non-empty list like ["prog", "arg"]'
            + ("" if isinstance(ref, list) else f", not {_type_name(ref)}")
        )
    for number, arg in enumerate(ref, 1):
        if not isinstance(arg, str):
            raise where.error(
                f"{key}.command item {number} must be a string, not {_type_name(arg)}"
            )
        if "\0" in arg:  # no program can receive it
            raise where.error(f"{key}.command item {number} has a NUL character in it")
    if not ref[0].strip():
        raise where.error(f"{key}.command must start with the program to run")
    return tuple(ref)


# --------------------------------------------------------------------------------------------
# Reading: (ref, ctx) -> the secret


def _read_value(ref: str, ctx: ReadContext) -> str:
    return ref


def _read_env(ref: str, ctx: ReadContext) -> str:
    value = os.environ.get(ref)
    if value is None:
        raise _error(ctx, f"environment variable {ref} is not set")
    if not value:
        raise _error(ctx, f"environment variable {ref} is empty")
    return value


def _too_large(ctx: ReadContext, what: str) -> ConfigError:
    return _error(
        ctx,
        f"{what} is larger than {MAX_SECRET_BYTES // 1024} KB: that is not a secret"
    )


def _read_file(ref: str, ctx: ReadContext) -> str:
    try:
        # Non-blocking, so that a FIFO never hangs us (it is refused just below).
        fd = os.open(ref, os.O_RDONLY | _NONBLOCK | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise _error(ctx, f"file {ref} does not exist") from None
    except OSError as exc:
        raise _error(ctx, f"cannot read file {ref}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _error(ctx, f"cannot read file {ref}: it is a folder")
        if not stat.S_ISREG(st.st_mode):
            # /dev/zero, a FIFO, a socket: endless, or blocking until someone writes.
            raise _error(ctx,
                f"cannot read file {ref}: it is not a regular file (a device, a pipe "
                "or a socket)"
            )
        if st.st_size > MAX_SECRET_BYTES:
            raise _too_large(ctx, f"file {ref}")
        data = read_at_most(fd, MAX_SECRET_BYTES + 1)  # st_size may be 0 (/proc) or wrong
    except OSError as exc:
        raise _error(ctx, f"cannot read file {ref}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise _too_large(ctx, f"file {ref}")
    return _text(ctx, data, f"cannot read file {ref}: not UTF-8 text", f"file {ref} is empty")


def _run(ref: tuple[str, ...], ctx: ReadContext) -> str:
    argv = list(ref)
    shown = argv[0]
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            # Not shown (it may echo the secret), and not collected: it could be endless.
            stderr=subprocess.DEVNULL,
            # The profiles file's folder, like relative `file` sources: never the caller's.
            cwd=os.path.dirname(ctx.path) if ctx.path else None,
        )
    except FileNotFoundError:
        raise _error(ctx, f"command {shown!r} was not found") from None
    except OSError as exc:
        raise _error(ctx, f"command {shown!r} could not run: {exc.strerror}") from None
    # Output is read as it comes, at most MAX_SECRET_BYTES + 1 (a command that prints
    # without end is killed, not collected), by a thread, so that the timeout holds even
    # when something the command started keeps its output open.
    stdout = process.stdout
    assert stdout is not None
    output: list[bytes] = []
    reader = threading.Thread(
        # The thread holds `stdout` itself: its descriptor stays open while it reads.
        target=lambda: output.append(read_at_most(stdout.fileno(), MAX_SECRET_BYTES + 1)),
        name="authlayer-secret-command",
        daemon=True,
    )
    deadline = time.monotonic() + COMMAND_TIMEOUT
    returncode: Optional[int] = None
    try:
        reader.start()
        reader.join(COMMAND_TIMEOUT)
        if output and len(output[0]) <= MAX_SECRET_BYTES:
            with contextlib.suppress(subprocess.TimeoutExpired):
                returncode = process.wait(max(0.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:  # too much, too slow, or interrupted (Ctrl-C)
            process.kill()
            process.wait()
        if not reader.is_alive():
            stdout.close()
    data = output[0] if output else b""
    if returncode is None and len(data) <= MAX_SECRET_BYTES:
        raise _error(ctx, f"command {shown!r} did not finish within {COMMAND_TIMEOUT:g} s")
    if len(data) > MAX_SECRET_BYTES:
        raise _too_large(ctx, f"the output of command {shown!r}")
    if returncode != 0:
        # Its stderr is not shown: it may echo the secret.
        raise _error(ctx, f"command {shown!r} failed with exit status {returncode}")
    return _text(ctx, data, f"command {shown!r} printed something that is not UTF-8",
                 f"command {shown!r} printed nothing")


def _text(ctx: ReadContext, data: bytes, not_utf8: str, empty: str) -> str:
    """The secret in ``data``: UTF-8 text, trailing line breaks removed, not empty."""
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise _error(ctx, not_utf8) from None
    if not text:
        raise _error(ctx, empty)
    return text


# --------------------------------------------------------------------------------------------
# The built-in kinds


BUILTIN: dict[str, SecretSourceSpec] = {
    # A string in the profile: not a table key, the secret itself.
    "value": SecretSourceSpec(
        "value", _read_value, identity=lambda ref: "value:" + keyed_hash(ref),
        describe=lambda ref: "written in the profile", blocking=False,
    ),
    "env": SecretSourceSpec(
        "env", _read_env, identity=lambda ref: f"env:{ref}", describe=lambda ref: f"env {ref}",
        check=_check_env, blocking=False,
    ),
    "file": SecretSourceSpec(
        "file", _read_file, identity=lambda ref: f"file:{ref}",
        describe=lambda ref: f"file {ref}", check=_check_file,
    ),
    "command": SecretSourceSpec(
        "command", _run, identity=lambda ref: "command:" + "\x1f".join(ref),
        describe=lambda ref: f"command {ref[0]}", check=_check_command,
    ),
}


def frozen(value: Any) -> str:
    """What a profile wrote for a plugin's source, kept as canonical JSON text: hashable like
    the rest of a profile, and the same text for the same value."""
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def parse_secret(value: Any, where: Where) -> SecretSource:
    """The secret source written under ``where.key``."""
    key = where.key

    def source(spec: SecretSourceSpec, ref: Any, plugin: bool = False) -> SecretSource:
        return SecretSource(spec.name, ref, key=key, profile=where.profile, path=where.path,
                            spec=spec if plugin else None)

    if isinstance(value, str):
        if not value.strip():
            raise where.error(
                f'{key} is empty: give the secret, or {_HOW}, like {{ env = "NAME" }}'
            )
        return source(BUILTIN["value"], value)
    if not isinstance(value, Mapping):
        raise where.type_error(f"a string (the secret itself) or {_HOW}", value)
    for name in value:
        if name not in registry.BUILTIN_SECRET_SOURCES and not registry.has_secret_source(name):
            raise where.error(
                f"unknown key {name!r} in {key}"
                + _suggest(name, registry.secret_source_names())
                + f" ({key} must be {_HOW})"
            )
    if not value:
        raise where.error(f"{key} is an empty table: it must be {_HOW}")
    if len(value) > 1:
        first, second = list(value)[:2]
        raise where.error(
            f"{key} has both {first!r} and {second!r}: a secret source takes exactly one"
        )
    kind, raw = next(iter(value.items()))
    builtin = BUILTIN.get(kind) if kind in registry.BUILTIN_SECRET_SOURCES else None
    if builtin is not None:
        assert builtin.check is not None
        return source(builtin, builtin.check(raw, where))
    try:
        spec = registry.secret_source(kind)
    except ConfigError as exc:
        raise where.error(exc.reason) from None
    return source(spec, spec.check(raw, where) if spec.check else frozen(raw), plugin=True)
