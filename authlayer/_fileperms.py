"""Whether a file or folder may be trusted, judged from its owner and mode (POSIX only).

Shared by the token cache (:mod:`authlayer.filecache`) and the profiles file
(:mod:`authlayer.config`), as ssh judges its own files: a file or folder that another user owns,
or that other users may write to, can be changed under us. Each caller decides what to do with
the answer (tighten its own files, or refuse with an error that says how to fix them). On
Windows there is no owner/mode to read here: nothing is refused.
"""

from __future__ import annotations

import os
import stat

__all__ = ["POSIX", "problems"]

POSIX = os.name == "posix"


def problems(st: os.stat_result, *, folder: bool = False, root_ok: bool = False) -> list[str]:
    """Why ``st`` (of a file, or a ``folder``) is not safe, as phrases for a message; empty if
    it is. Unsafe: owned by another user than the current one (or root, with ``root_ok``), or
    writable by group or others — except a sticky folder such as ``/tmp``, where others cannot
    replace what is ours."""
    if not POSIX:
        return []
    found = []
    if st.st_uid != os.geteuid() and not (root_ok and st.st_uid == 0):
        found.append(f"owned by another user (uid {st.st_uid})")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and not (folder and mode & stat.S_ISVTX):
        found.append(f"writable by others (mode {mode:04o})")
    return found
