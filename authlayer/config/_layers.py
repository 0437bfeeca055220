"""Reading the profiles file: TOML parsed and its top level checked (an optional
``[defaults]`` table and ``[profiles.NAME]`` tables), remembered per path, modification time,
size and inode, so that loading a profile again costs one ``stat``.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from typing import Any, Optional

from ..errors import ConfigError
from ..profile import Profile
from ._find import ENV_CONFIG, PathArg, _check_folder, _check_trusted, _resolve
from ._keys import ALIASES, KEYS, _suggest, _toml_key, _type_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9 and 3.10 only
    import tomli as tomllib

__all__ = ["MAX_FILE_BYTES", "clear_cache"]

# A profiles file larger than this is not one (and is not read into memory whole).
MAX_FILE_BYTES = 16 * 1024 * 1024


class _File:
    """A parsed profiles file whose top level has been checked; profiles are built on demand.
    (A plain class: making a dataclass costs start-up time.)"""

    __slots__ = ("built", "defaults", "path", "profiles")

    def __init__(self, path: str, defaults: dict[str, Any],
                 profiles: dict[str, dict[str, Any]]) -> None:
        self.path = path
        self.defaults = defaults
        self.profiles = profiles
        # (name, scope, tenant) -> the profile, and the environment variables it was built from
        self.built: dict[Any, tuple[Profile, tuple[tuple[str, Optional[str]], ...]]] = {}

    @property
    def directory(self) -> str:
        return os.path.dirname(self.path)

    def error(self, message: str, key: Optional[str] = None) -> ConfigError:
        return ConfigError(message, path=self.path, key=key)


_lock = threading.Lock()
_files: dict[str, tuple[tuple[int, int, int], _File]] = {}


def clear_cache() -> None:
    """Forget every parsed profiles file (the next load reads the file again)."""
    with _lock:
        _files.clear()


def _load_file(config: Optional[PathArg]) -> _File:
    path, how = _resolve(config)
    name = str(path)
    try:
        st = os.stat(name)
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(
            f"the profiles file does not exist (chosen by {how}). Create it with a "
            "[profiles.NAME] table for each profile (see the profiles file format in the docs), "
            f"or pass config= (--config) or set ${ENV_CONFIG} to use another file",
            path=name,
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the profiles file: {exc.strerror}", path=name) from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(
            f"the profiles file is a folder (chosen by {how}); give the path of a TOML file",
            path=name,
        )
    # Checked on every load (the stat is there anyway): a chmod leaves the stamp as it was.
    _check_trusted(name, st)
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    with _lock:
        cached = _files.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    # Parsed outside the lock; a file changed meanwhile is caught by the next call's stat.
    parsed = _parse(name)
    with _lock:
        _files[name] = (stamp, parsed)
    return parsed


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def _parse(path: str) -> _File:
    """Read and parse the file, and check its top level (``[defaults]``, ``[profiles.*]``)."""
    _check_folder(path)
    try:
        # Non-blocking: a FIFO put in the file's place must not hang us; refused just below.
        with open(path, "rb", opener=_open_nonblocking) as handle:
            st = os.fstat(handle.fileno())
            # What is read is what was checked, even if the file was swapped since the stat.
            _check_trusted(path, st)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError("the profiles file is not a regular file", path=path)
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the profiles file: {exc.strerror or exc}", path=path
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"the profiles file is larger than {MAX_FILE_BYTES // (1 << 20)} MB: it is not a "
            "profiles file",
            path=path,
        )
    # A byte order mark (Windows editors write one) is dropped: "utf-8-sig" would do it, but its
    # codec is one more module for every start.
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"the profiles file is not UTF-8 text (line {line})", path=path) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if "line" not in message:  # "(at end of document)"
            message += f" (line {text.count(chr(10)) + 1}, the last)"
        raise ConfigError(f"not valid TOML: {message}", path=path) from None
    except RecursionError:
        raise ConfigError("not valid TOML: nested too deeply", path=path) from None
    return _check_top_level(path, doc)


def _check_top_level(path: str, doc: dict[str, Any]) -> _File:
    for key, value in doc.items():
        if key in ("defaults", "profiles"):
            continue
        if isinstance(value, dict):
            if "flow" in value:
                message = (
                    f"unknown top-level table [{_toml_key(key)}]: "
                    f"profiles go in [profiles.{_toml_key(key)}]"
                )
            else:
                message = f"unknown top-level table [{_toml_key(key)}]" + _suggest(
                    key, ("defaults", "profiles")
                )
        else:
            message = (
                f"unknown top-level key {key!r}: the file holds an optional [defaults] table "
                "and [profiles.NAME] tables"
            )
        raise ConfigError(message, path=path, key=key)
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(
            f"defaults must be a table ([defaults]), not {_type_name(defaults)}",
            path=path,
            key="defaults",
        )
    for key in defaults:
        if key == "extends":
            raise ConfigError(
                "extends cannot be set in [defaults]: set it in a profile", path=path, key=key
            )
        if key not in KEYS:
            raise ConfigError(
                f"unknown key {key!r} in [defaults]" + _suggest(key, KEYS, ALIASES),
                path=path,
                key=key,
            )
    profiles = doc.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(
            f"profiles must be tables ([profiles.NAME]), not {_type_name(profiles)}",
            path=path,
            key="profiles",
        )
    for name, table in profiles.items():
        if not isinstance(table, dict):
            raise ConfigError(
                f"profiles.{_toml_key(name)} must be a table ([profiles.{_toml_key(name)}]), "
                f"not {_type_name(table)}",
                path=path,
                profile=name,
            )
    return _File(path=path, defaults=defaults, profiles=profiles)
