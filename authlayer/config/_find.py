"""Where the profiles file is: the ``config`` argument, else ``$AUTHLAYER_CONFIG``, else
``profiles.toml`` in the user's config folder, never the working directory (CONTRACT §3); and
whether it may be trusted: on POSIX, a profiles file (or its folder) that another user owns or may
write to is refused, since it says where secrets are sent and which commands run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Union

from .. import _fileperms
from ..errors import ConfigError

__all__ = ["CONFIG_FILENAME", "ENV_CONFIG", "ENV_PROFILE", "PathArg", "config_path"]

PathArg = Union[str, os.PathLike[str]]
ENV_CONFIG = "AUTHLAYER_CONFIG"
ENV_PROFILE = "AUTHLAYER_PROFILE"
CONFIG_FILENAME = "profiles.toml"


def _default_config_dir() -> Path:
    if sys.platform.startswith("linux"):
        xdg = os.environ.get("XDG_CONFIG_HOME", "")
        # The XDG spec says a relative value is invalid and must be ignored.
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
        return base / "authlayer"
    import platformdirs  # only here: Linux needs no import

    return Path(platformdirs.user_config_dir("authlayer", appauthor=False))


def _resolve(config: Optional[PathArg]) -> tuple[Path, str]:
    """The profiles file's absolute path, and how it was chosen (for messages)."""
    if config is not None:
        raw, how = os.fspath(config), "the config argument"
        if not raw:
            raise ConfigError("the config argument is empty: give the path of a profiles file")
    elif os.environ.get(ENV_CONFIG):
        raw, how = os.environ[ENV_CONFIG], f"${ENV_CONFIG}"
    else:
        return _default_config_dir() / CONFIG_FILENAME, "the default location"
    return Path(os.path.abspath(os.path.expanduser(raw))), how


def config_path(config: Optional[PathArg] = None) -> Path:
    """The profiles file to use: ``config``, else ``$AUTHLAYER_CONFIG``, else ``profiles.toml``
    in the user's config folder. Never the working directory; ``~`` is expanded and a relative
    path is made absolute. The file need not exist."""
    return _resolve(config)[0]


def _check_trusted(path: str, st: os.stat_result) -> None:
    """Refuse (POSIX) a profiles file that another user owns or may write to: it says where
    secrets are sent and which commands run as the current user (CONTRACT §4). Root may own it
    (a file in /etc); a mode of ``0644`` or ``0600`` is fine, ``0664`` or ``0666`` is not."""
    found = _fileperms.problems(st, root_ok=True)
    if found:
        raise ConfigError(
            f"refusing to use the profiles file: it is {' and '.join(found)}, so another user "
            f"could change where secrets go and what commands run; {_fix(path, found)}",
            path=path,
        )


def _check_folder(path: str) -> None:
    """Refuse (POSIX) a profiles file whose folder another user owns or may write to (they
    could replace the file). For a file reached through a symbolic link, the link's folder and
    the real file's folder. Folders above those are not checked, as ssh does not."""
    if not _fileperms.POSIX:
        return
    folders = dict.fromkeys((os.path.dirname(path), os.path.dirname(os.path.realpath(path))))
    for folder in folders:
        try:
            st = os.stat(folder)
        except OSError as exc:
            raise ConfigError(
                f"cannot check the profiles file's folder {folder}: {exc.strerror}", path=path
            ) from None
        found = _fileperms.problems(st, folder=True, root_ok=True)
        if found:
            raise ConfigError(
                f"refusing to use the profiles file: its folder {folder} is "
                f"{' and '.join(found)}, so another user could replace the file; "
                f"{_fix(folder, found)}",
                path=path,
            )


def _fix(path: str, problems: list[str]) -> str:
    """What to run to make ``path`` safe."""
    import shlex

    quoted = shlex.quote(path)
    steps = []
    if any(p.startswith("owned") for p in problems):
        steps.append(f"sudo chown $(id -un) {quoted}")
    if any(p.startswith("writable") for p in problems):
        steps.append(f"chmod go-w {quoted}")
    return "fix it with: " + " && ".join(steps)
