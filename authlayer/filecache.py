"""The persistent token store behind ``cache = "file"``: :class:`FileStore` keeps token records
in one JSON file (``tokens.json`` under ``$AUTHLAYER_CACHE_DIR``, else the user's cache folder),
shared safely by the threads and processes of one user. Its job is the file: where it lives, its
permissions (folder ``0700``, file ``0600``), atomic writes, a cross-process lock so concurrent
writers never lose each other's entries, pruning, and setting a corrupt file aside instead of
crashing. On POSIX it refuses (:class:`~authlayer.errors.AuthLayerError`) a folder, cache file or
lock file that belongs to another user or that other users may write to (ours it tightens):
another user could plant tokens there or take ours. It knows nothing about profiles, flows or
expiry policy beyond dropping records whose access token has expired: the provider decides what
to keep and when a token is good enough.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import errno
import json
import os
import stat
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, ClassVar, NamedTuple, Optional, Union

from . import _fileperms
from ._log import log
from .errors import AuthLayerError
from .store import account_part, account_prefix, is_time, merge_account
from .store import expires_on as _expires_on

if TYPE_CHECKING:
    import filelock

__all__ = ["FILE_NAME", "FileStore", "default_path"]


FILE_NAME = "tokens.json"
VERSION = 1
# Seconds a writer waits for another process to finish with the file.
LOCK_TIMEOUT = 10.0
# After a writer gave up waiting (a process holding the lock is stopped, or hung), the next
# writers wait only STUCK_TIMEOUT, for STUCK_FOR seconds (then LOCK_TIMEOUT again): a lock left by
# a stopped process must not cost every token request LOCK_TIMEOUT.
STUCK_TIMEOUT = 0.05
STUCK_FOR = 60.0
# The fleet locks (one token request for the processes sharing the file): this many lock files
# next to the cache, a token key's hash picks one.
FLIGHT_LOCKS = 64
# How often a waiting writer tries the lock again.
LOCK_POLL = 0.005
# At most this many access-token records (the ones expiring first go) and accounts (the ones
# saved longest ago go) are kept.
MAX_TOKENS = 5000
MAX_ACCOUNTS = 1000
# A file larger than this is not ours: set it aside rather than read it into memory.
MAX_FILE_BYTES = 100 * 1024 * 1024
# On Windows, replacing a file that another process has open fails with PermissionError until it
# closes it: try this many times, waiting REPLACE_BACKOFF * attempt (at most REPLACE_BACKOFF_MAX)
# seconds in between.
REPLACE_ATTEMPTS = 10
REPLACE_BACKOFF = 0.01
REPLACE_BACKOFF_MAX = 0.05

_POSIX = _fileperms.POSIX
_READ_FLAGS: int = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_BINARY", 0)
)
# Keys of a record that live under its account, not under its token key.
_ACCOUNT_KEYS = ("refresh_token", "account")
# Keys of a token record that hold a time (Unix seconds).
_TIME_KEYS = ("expires_on", "refresh_on")

Records = dict[str, dict[str, Any]]
Stamp = tuple[int, int, int]  # (mtime_ns, size, inode) of the file the snapshot was read from

PathArg = Union[str, "os.PathLike[str]"]


def default_path() -> str:
    """The cache file to use now: ``$AUTHLAYER_CACHE_DIR/tokens.json`` if that is set, else
    ``tokens.json`` in the user's cache folder (``$XDG_CACHE_HOME/authlayer`` or
    ``~/.cache/authlayer`` on Linux, the platform's usual place elsewhere)."""
    folder = os.environ.get("AUTHLAYER_CACHE_DIR")
    if folder:
        folder = os.path.expanduser(folder)
    elif sys.platform.startswith("linux"):  # as config._find does: Linux needs no import
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        # The XDG spec says a relative value is invalid and must be ignored.
        base = xdg if xdg and os.path.isabs(xdg) else os.path.expanduser("~/.cache")
        folder = os.path.join(base, "authlayer")
    else:
        import platformdirs

        folder = platformdirs.user_cache_dir("authlayer", appauthor=False)
    return os.path.join(os.path.abspath(folder), FILE_NAME)


class _Corrupt(Exception):
    """The file cannot be used; ``reason`` says why without quoting its contents."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Snapshot(NamedTuple):
    """The file as last read or written by this process. Never mutated: writers copy it."""

    stamp: Stamp
    raw: bytes
    tokens: Records
    accounts: Records


def _decode(raw: bytes) -> tuple[Records, Records]:
    """The token and account records of a cache file's bytes; :class:`_Corrupt` if unusable."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Corrupt("not UTF-8 text") from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise _Corrupt("not JSON") from None
    if not isinstance(doc, dict):
        raise _Corrupt("not a JSON object")
    version = doc.get("version")
    if version != VERSION or isinstance(version, bool):
        shown = f"version {version}" if isinstance(version, int) else "no valid version"
        raise _Corrupt(f"{shown}, expected version {VERSION}")
    tokens = doc.get("tokens")
    accounts = doc.get("accounts")
    for name, table in (("tokens", tokens), ("accounts", accounts)):
        if not isinstance(table, dict) or not all(isinstance(r, dict) for r in table.values()):
            raise _Corrupt(f"{name!r} is not a table of records")
    for record in tokens.values():  # type: ignore[union-attr]  # checked just above
        for name in _TIME_KEYS:
            value = record.get(name)
            # authlayer writes integers in range: anything else numeric is damage (or a plant)
            if isinstance(value, (int, float)) and not is_time(value):
                raise _Corrupt(f"a token record's {name} is not a valid time")
    return tokens, accounts  # type: ignore[return-value]  # checked just above


def _encode(tokens: Records, accounts: Records) -> bytes:
    doc = {"version": VERSION, "tokens": tokens, "accounts": accounts}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _prune(tokens: Records, accounts: Records, now: float) -> None:
    """Drop expired access-token records (refresh tokens live on under their account), then
    keep at most :data:`MAX_TOKENS` tokens and :data:`MAX_ACCOUNTS` accounts."""
    for key in [k for k, r in tokens.items() if _expires_on(r) <= now]:
        del tokens[key]
    excess = len(tokens) - MAX_TOKENS
    if excess > 0:
        for key, _ in sorted(tokens.items(), key=lambda kv: _expires_on(kv[1]))[:excess]:
            del tokens[key]
    excess = len(accounts) - MAX_ACCOUNTS
    if excess > 0:
        for key in list(accounts)[:excess]:  # in the order they were last saved
            del accounts[key]


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX; best effort)."""
    if not _POSIX:
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _owned(st: os.stat_result) -> bool:
    return _POSIX and st.st_uid == os.geteuid()


def _refuse(what: str, path: str, st: os.stat_result, *, folder: bool = False) -> AuthLayerError:
    """The error for a token cache ``what`` (file, folder) that is not safe to use: owned by
    another user and/or writable by other users."""
    found = _fileperms.problems(st, folder=folder)
    return AuthLayerError(
        f"refusing to use the token cache {what} {path}: it is {' and '.join(found)}"
    )


def _check_owner(what: str, path: str, st: os.stat_result) -> None:
    """Refuse (POSIX) a file of another user."""
    if _POSIX and not _owned(st):
        raise _refuse(what, path, st)


def _tighten(what: str, path: str, st: os.stat_result, chmod: Callable[[], None]) -> None:
    """Make a regular file of ours that is wider than ``0600`` private with ``chmod``
    (POSIX), refusing it if it stays writable by others."""
    if not _POSIX or not stat.S_IMODE(st.st_mode) & 0o077:
        return
    try:
        chmod()
    except OSError:
        if st.st_mode & 0o022:
            raise _refuse(what, path, st) from None


def _replace(src: str, dst: str) -> None:
    """``os.replace``, tried again while it fails with PermissionError (Windows: ``dst`` is open
    in another process)."""
    for attempt in range(1, REPLACE_ATTEMPTS + 1):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if attempt >= REPLACE_ATTEMPTS:
                raise
        _sleep(min(REPLACE_BACKOFF * attempt, REPLACE_BACKOFF_MAX))


_sleep = time.sleep  # tests replace it


class FileStore:
    """A :class:`~authlayer.store.TokenStore` kept in one JSON file, shared by processes.

    ``FileStore(path)`` uses the file ``path``; :meth:`default` the file :func:`default_path`
    names, one instance per path. Thread-safe and process-safe: every change is a
    read-modify-write under a ``threading.Lock`` and a file lock (``<path>.lock``), written
    atomically. Loads need no lock and re-read the file only when it changed.

    On POSIX, every method raises :class:`~authlayer.errors.AuthLayerError` rather than use a
    folder, file or lock file owned by another user or writable by others (ours are tightened
    to ``0700``/``0600``; a shared sticky folder of ours, like ``/tmp``, is left as it is).
    """

    _instances: ClassVar[dict[str, FileStore]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: PathArg) -> None:
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.folder = os.path.dirname(self.path)
        self.lock_path = self.path + ".lock"
        self._lock = threading.Lock()
        self._file_lock: Optional[filelock.FileLock] = None  # made by the first write
        self._snapshot: Optional[_Snapshot] = None
        self._stuck_until = 0.0  # monotonic: until then, wait only STUCK_TIMEOUT for the lock

    @classmethod
    def default(cls) -> FileStore:
        """The shared store for :func:`default_path` (resolved again on every call)."""
        path = default_path()
        store = cls._instances.get(path)
        if store is None:
            with cls._instances_lock:
                store = cls._instances.get(path)
                if store is None:
                    store = cls._instances[path] = cls(path)
        return store

    def __repr__(self) -> str:
        return f"FileStore({self.path!r})"

    # ------------------------------------------------------------------ TokenStore

    def load(self, key: str, account_key: str) -> Optional[dict[str, Any]]:
        with self._lock:
            if not self._ensure_folder(create=False):
                return None
            snapshot = self._current(exact=False, locked=False)
            if snapshot is None:
                return None
            merged = merge_account(snapshot.tokens.get(key), snapshot.accounts.get(account_key))
            return copy.deepcopy(merged)

    def save(self, key: str, account_key: str, record: dict[str, Any]) -> None:
        token = {k: v for k, v in record.items() if k not in _ACCOUNT_KEYS}
        account = account_part(record)

        def change(tokens: Records, accounts: Records) -> bool:
            tokens[key] = token
            if account is not None:
                accounts.pop(account_key, None)  # re-insert: the newest account goes last
                accounts[account_key] = account
            return True

        self._update(change, create=True)

    def discard(self, key: str) -> None:
        def change(tokens: Records, accounts: Records) -> bool:
            return tokens.pop(key, None) is not None

        self._update(change, create=False)

    def delete(self, key: str, account_key: str) -> None:
        def change(tokens: Records, accounts: Records) -> bool:
            dropped = tokens.pop(key, None) is not None
            dropped = _drop_account_tokens(tokens, account_key) or dropped
            return accounts.pop(account_key, None) is not None or dropped

        self._update(change, create=False)

    def forget_account_tokens(self, account_key: str) -> None:
        def change(tokens: Records, accounts: Records) -> bool:
            return _drop_account_tokens(tokens, account_key)

        self._update(change, create=False)

    # ------------------------------------------------------------------ FleetLock

    def try_lead(self, key: str, ttl: float) -> Optional[object]:
        """The fleet lock of ``key`` for the processes sharing this file: one of
        :data:`FLIGHT_LOCKS` lock files, picked by the key's hash. The system frees it when
        its holder dies, so ``ttl`` only bounds how long the others wait (a stopped holder)."""
        import hashlib

        import filelock

        bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "big")
        path = f"{self.path}.flight-{bucket % FLIGHT_LOCKS:02d}.lock"
        self._ensure_folder(create=True)
        self._check_lock_file(path)
        lock = filelock.FileLock(path, mode=0o600, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return None
        except OSError as exc:
            raise AuthLayerError(f"cannot lock the token cache: {path}: {exc.strerror}") from None
        return lock

    def release(self, lease: object) -> None:
        release = getattr(lease, "release", None)
        if callable(release):
            with contextlib.suppress(OSError):
                release()

    # ------------------------------------------------------------------ reading

    def _read(self, *, exact: bool) -> Optional[_Snapshot]:
        """The file's content, ``None`` if there is no file. Reuses the snapshot when the file's
        (mtime, size, inode) did not change; with ``exact``, only when its bytes did not."""
        try:
            fd = os.open(self.path, _READ_FLAGS)
        except FileNotFoundError:
            self._snapshot = None
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                with contextlib.suppress(OSError):
                    link = os.lstat(self.path)
                    _check_owner("file", self.path, link)  # theirs: not ours to move aside
                raise _Corrupt("a symbolic link") from None
            raise _Corrupt(f"cannot be opened: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            # before anything else, even on an unchanged stamp: a chown leaves it as it was
            _check_owner("file", self.path, st)
            if not stat.S_ISREG(st.st_mode):
                raise _Corrupt("not a regular file")
            _tighten("file", self.path, st, lambda: os.fchmod(fd, 0o600))
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            previous = self._snapshot
            if not exact and previous is not None and previous.stamp == stamp:
                return previous
            if st.st_size > MAX_FILE_BYTES:
                raise _Corrupt("too large")
            raw = _read_all(fd)
        except OSError as exc:
            raise _Corrupt(f"cannot be read: {exc.strerror}") from None
        finally:
            os.close(fd)
        if previous is not None and raw == previous.raw:
            snapshot = previous._replace(stamp=stamp)
        else:
            tokens, accounts = _decode(raw)
            snapshot = _Snapshot(stamp, raw, tokens, accounts)
        self._snapshot = snapshot
        return snapshot

    def _current(self, *, exact: bool, locked: bool) -> Optional[_Snapshot]:
        """:meth:`_read`, setting a corrupt file aside (under the file lock) as if absent."""
        try:
            return self._read(exact=exact)
        except _Corrupt as exc:
            if locked:
                self._set_aside(exc.reason)
                return None
        with self._locked():  # look again under the lock: a writer may have just fixed it
            try:
                return self._read(exact=True)
            except _Corrupt as exc:
                self._set_aside(exc.reason)
                return None

    def _set_aside(self, reason: str) -> None:
        """Move the unusable file to ``<path>.corrupt-<UTC time>``, warning; never raises."""
        self._snapshot = None
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = f"{self.path}.corrupt-{when}"
        try:
            st = os.lstat(self.path)
            if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077 and _owned(st):
                os.chmod(self.path, 0o600)  # it may hold tokens
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # gone already
        except OSError as exc:
            message = (
                f"the token cache {self.path} is unusable ({reason}) and could not be moved "
                f"aside ({exc.strerror}); using an empty cache"
            )
        else:
            message = (
                f"the token cache {self.path} was unusable ({reason}); moved it to {aside} "
                "and started a new one"
            )
        warnings.warn(message, UserWarning, stacklevel=4)
        log.warning("%s", message)

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the cross-process lock (creating the folder first)."""
        import filelock  # here, not at the top: loads take no lock, and the import is slow

        self._ensure_folder(create=True)
        self._check_lock_file(self.lock_path)
        if self._file_lock is None:  # (callers hold self._lock)
            self._file_lock = filelock.FileLock(self.lock_path, mode=0o600)
        stuck = time.monotonic() < self._stuck_until
        timeout = STUCK_TIMEOUT if stuck else LOCK_TIMEOUT
        try:
            self._file_lock.acquire(timeout=timeout, poll_interval=LOCK_POLL)
        except filelock.Timeout:
            self._stuck_until = time.monotonic() + STUCK_FOR
            raise AuthLayerError(
                f"gave up after {timeout:g} s waiting for the token cache lock "
                f"{self.lock_path}: another process is holding it"
                + (" (still)" if stuck else f"; for {STUCK_FOR:g} s, waiting only "
                   f"{STUCK_TIMEOUT:g} s for it")
            ) from None
        except OSError as exc:
            raise AuthLayerError(
                f"cannot lock the token cache: {self.lock_path}: {exc.strerror}"
            ) from None
        self._stuck_until = 0.0
        try:
            yield
        finally:
            self._file_lock.release()

    def _ensure_folder(self, *, create: bool) -> bool:
        """Whether the folder exists, creating it ``0700`` with ``create``. On POSIX, refuse it
        if another user owns it; if it is ours and wider, tighten it to ``0700`` (but never a
        shared sticky folder such as ``/tmp``, where others cannot touch our files), refusing
        it if it stays writable by others."""
        try:
            if create:
                os.makedirs(self.folder, mode=0o700, exist_ok=True)
            st = os.stat(self.folder)
        except OSError as exc:
            if not create and isinstance(exc, FileNotFoundError):
                return False
            verb = "create" if create else "use"
            raise AuthLayerError(
                f"cannot {verb} the token cache folder {self.folder}: {exc.strerror}"
            ) from None
        if not _POSIX:
            return True
        mode = stat.S_IMODE(st.st_mode)
        if not _owned(st):
            raise _refuse("folder", self.folder, st, folder=True)
        if mode & 0o077 and not mode & stat.S_ISVTX:
            try:
                os.chmod(self.folder, 0o700)
            except OSError:
                if mode & 0o022:
                    raise _refuse("folder", self.folder, st, folder=True) from None
        return True

    def _check_lock_file(self, path: str) -> None:
        """Refuse a lock file of another user (POSIX), or one that is not a plain file;
        tighten ours if wider than ``0600``."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return  # the lock creates it 0600
        except OSError as exc:
            raise AuthLayerError(
                f"cannot lock the token cache: {path}: {exc.strerror}"
            ) from None
        _check_owner("lock file", path, st)
        if not stat.S_ISREG(st.st_mode):
            raise AuthLayerError(
                f"refusing to use the token cache lock file {path}: "
                "it is not a regular file"
            )
        _tighten("lock file", path, st, lambda: os.chmod(path, 0o600))

    def _update(self, change: Callable[[Records, Records], bool], *, create: bool) -> None:
        """Read the file, apply ``change`` (which says whether it changed anything), prune and
        write it back atomically, all under both locks."""
        if not create and not os.path.lexists(self.path):
            return  # nothing to remove; don't create the folder for it
        with self._lock, self._locked():
            snapshot = self._current(exact=True, locked=True)
            tokens = dict(snapshot.tokens) if snapshot else {}
            accounts = dict(snapshot.accounts) if snapshot else {}
            if not change(tokens, accounts):
                return
            _prune(tokens, accounts, time.time())
            raw = _encode(tokens, accounts)
            stamp = self._write(raw)
            self._snapshot = _Snapshot(stamp, raw, tokens, accounts)

    def _write(self, raw: bytes) -> Stamp:
        """Replace the file with ``raw`` atomically: a ``0600`` temporary file in the same
        folder, flushed and synced, renamed onto it. Runs under the file lock."""
        prefix = f".{os.path.basename(self.path)}."
        self._remove_stale_temporaries(prefix)
        tmp: Optional[str] = None
        import tempfile

        try:
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=self.folder)
            with os.fdopen(fd, "wb") as file:
                file.write(raw)
                file.flush()
                os.fsync(file.fileno())
            _replace(tmp, self.path)
            tmp = None
            _fsync_folder(self.folder)
            st = os.stat(self.path)
        except OSError as exc:
            raise AuthLayerError(
                f"cannot write the token cache {self.path}: {exc.strerror}"
            ) from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _remove_stale_temporaries(self, prefix: str) -> None:
        """Temporary files left by a writer that died mid-write (they may hold tokens). Under
        the file lock no other writer is busy, so every one found is stale."""
        try:
            with os.scandir(self.folder) as entries:
                stale = [e.path for e in entries
                         if e.name.startswith(prefix) and e.name.endswith(".tmp")]
        except OSError:
            return
        for path in stale:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _drop_account_tokens(tokens: Records, account_key: str) -> bool:
    """Remove the token records of the account; whether there were any."""
    prefix = account_prefix(account_key)
    doomed = [k for k in tokens if k.startswith(prefix)]
    for key in doomed:
        del tokens[key]
    return bool(doomed)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
