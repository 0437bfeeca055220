"""Running a local program that signs in for us (``az``, ``azd``, ``pwsh``).

:func:`which` finds a program on ``PATH``, searching absolute entries only: never the current
folder, which Windows would search first, and where anyone may have put an ``az.cmd``.
:func:`run` runs it without a shell, with standard input closed, from a system folder (never
the caller's current folder), in a process group of its own, for at most ``timeout`` seconds;
then it stops the whole process tree (``az`` is Python, which may start more) and raises
:class:`subprocess.TimeoutExpired`. Both block: flows call them through a
:class:`~authlayer._http.Call` action. What the program's answer means is the flow's business.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Optional

__all__ = ["Finished", "run", "safe_argument", "stop_tree", "system_folder", "which"]

# The Windows extensions a program may have; PATHEXT may list more (.PS1, .VBS, ...): not run.
_PROGRAM_EXTENSIONS = (".exe", ".cmd", ".bat", ".com")
_STOP_WAIT = 5.0  # seconds to let a stopped tree close its pipes before leaving it
# What may be passed on a program's command line (on Windows az is a .cmd file, whose arguments
# cmd.exe parses again): no spaces, quotes, % or shell characters.
_SAFE_ARGUMENT = re.compile(r"[0-9A-Za-z_.:/-]+")


def safe_argument(value: str) -> bool:
    """Whether ``value`` (a scope, a tenant) may go on a command line as one argument: only
    letters, digits and ``_ . : / -``, and not starting with ``-`` (it would be an option)."""
    return bool(_SAFE_ARGUMENT.fullmatch(value)) and not value.startswith("-")


class Finished(NamedTuple):
    """What a program that ran to its end left: exit status, standard output and error."""

    returncode: int
    stdout: bytes
    stderr: bytes


def which(name: str) -> Optional[str]:
    """The program ``name`` on ``PATH`` (with one of PATHEXT's program extensions on Windows),
    or ``None``. Only absolute ``PATH`` entries are searched."""
    if os.name == "nt":
        extensions = [e for e in os.environ.get("PATHEXT", ".COM;.EXE;.BAT;.CMD").split(";")
                      if e.lower() in _PROGRAM_EXTENSIONS]
        names = [name + e.lower() for e in extensions]
    else:
        names = [name]
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        entry = entry.strip().strip('"')
        if not entry or not os.path.isabs(entry):
            continue
        for candidate_name in names:
            candidate = os.path.join(entry, candidate_name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return None


def system_folder() -> str:
    """Where programs run: a folder nobody plants files in, never the caller's current folder."""
    if os.name == "nt":
        return os.environ.get("SYSTEMROOT") or "C:\\Windows"
    return "/"


def stop_tree(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process`` and everything it started (it must have been started by :func:`run`,
    in a process group of its own)."""
    if os.name == "nt":
        taskkill = os.path.join(system_folder(), "System32", "taskkill.exe")
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([taskkill, "/T", "/F", "/PID", str(process.pid)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=10, check=False,
                           cwd=system_folder())
    else:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)  # its own session: see run()
    with contextlib.suppress(OSError):
        process.kill()


def run(argv: Sequence[str], *, timeout: float,
        env: Optional[Mapping[str, str]] = None) -> Finished:
    """Run ``argv`` (``argv[0]`` an absolute path, from :func:`which`) to its end, as the
    module says, with ``env`` added to this process's environment. Raises
    :class:`subprocess.TimeoutExpired` after stopping the tree, and :class:`OSError` when the
    program cannot be started."""
    options: dict[str, Any] = {}
    if env:
        options["env"] = {**os.environ, **env}
    if os.name == "nt":
        options["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)
    else:
        options["start_new_session"] = True
    with subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, cwd=system_folder(), **options) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_tree(process)
            # Something outside its tree may hold the pipes: then leave it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=_STOP_WAIT)
            raise
        return Finished(process.returncode, out, err)
