"""The persistent token store (``cache = "file"``): location, permissions, atomic and locked
writes shared by processes, corrupt files set aside, pruning, the in-memory copy, and the
provider using it across a (simulated and a real) process restart."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import filelock
import pytest

from authlayer import AuthLayerError, filecache, get_token
from authlayer.config import load_profile
from authlayer.emulator import Emulator
from authlayer.filecache import FileStore
from authlayer.provider import PROVIDER

from .test_store import HOUR, record


def contents(store: FileStore) -> dict[str, Any]:
    data = json.loads(Path(store.path).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store" / "tokens.json")


# ---------------------------------------------------------------------- location


def test_default_follows_authlayer_cache_dir(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    first = FileStore.default()
    assert first.path == str(tmp_path / "cache" / "tokens.json")
    assert FileStore.default() is first  # one shared instance per path
    monkeypatch.setenv("AUTHLAYER_CACHE_DIR", str(tmp_path / "other"))
    second = FileStore.default()
    assert second is not first
    assert second.path == str(tmp_path / "other" / "tokens.json")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG is the Linux layout")
def test_default_is_the_user_cache_folder(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTHLAYER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    assert FileStore.default().path == str(tmp_path / "xdg-cache" / "authlayer" / "tokens.json")


def test_repr_shows_the_path_only(store: FileStore) -> None:
    store.save("k", "a", record("at-secret-value", refresh_token="rt-secret-value"))
    assert repr(store) == f"FileStore({store.path!r})"


# ---------------------------------------------------------------------- basics


def test_round_trip(store: FileStore) -> None:
    assert store.load("k", "a") is None
    rec = record("at-1")
    store.save("k", "a", rec)
    assert store.load("k", "a") == rec
    assert FileStore(store.path).load("k", "a") == rec  # read back from the file
    assert contents(store)["version"] == 1


def test_loaded_records_are_copies(store: FileStore) -> None:
    store.save("k", "a", record("at-1", refresh_token="rt", account={"upn": "me"}))
    loaded = store.load("k", "a")
    assert loaded is not None
    loaded["access_token"] = "changed"
    loaded["account"]["upn"] = "changed"
    again = store.load("k", "a")
    assert again is not None
    assert again["access_token"] == "at-1"
    assert again["account"] == {"upn": "me"}


def test_refresh_token_is_shared_by_the_keys_of_an_account(store: FileStore) -> None:
    store.save("graph", "me", record("at-graph", refresh_token="rt-1", account={"upn": "me"}))
    other = store.load("arm", "me")  # another scope set of the same sign-in
    assert other == {"refresh_token": "rt-1", "account": {"upn": "me"}}
    store.save("arm", "me", record("at-arm", refresh_token="rt-2", account={"upn": "me"}))
    graph = store.load("graph", "me")
    assert graph is not None
    assert graph["access_token"] == "at-graph"
    assert graph["refresh_token"] == "rt-2"  # the newest one
    assert store.load("graph", "someone-else") is not None
    assert "refresh_token" not in (store.load("graph", "someone-else") or {})
    # the refresh token is kept once, under the account
    text = Path(store.path).read_text(encoding="utf-8")
    assert text.count("rt-2") == 1
    assert "rt-1" not in text


def test_discard_keeps_the_refresh_token_delete_does_not(store: FileStore) -> None:
    store.save("a|s1", "a", record("at-1", refresh_token="rt-1"))
    store.save("b|s1", "b", record("at-b"))
    store.discard("a|s1")
    assert store.load("a|s1", "a") == {"refresh_token": "rt-1"}
    store.save("a|s1", "a", record("at-3", refresh_token="rt-3"))
    store.delete("a|s1", "a")
    assert store.load("a|s1", "a") is None
    loaded = store.load("b|s1", "b")  # another account is left alone
    assert loaded is not None
    assert loaded["access_token"] == "at-b"
    assert "rt-3" not in Path(store.path).read_text(encoding="utf-8")


def test_delete_forgets_every_token_of_the_account(store: FileStore) -> None:
    store.save("a|s1", "a", record("at-a1", refresh_token="rt-a"))
    store.save("a|s2 s3", "a", record("at-a2"))
    store.save("a-longer|s1", "a-longer", record("at-longer", refresh_token="rt-longer"))
    store.save("b|s1", "b", record("at-b", refresh_token="rt-b"))
    store.delete("a|s1", "a")
    data = contents(store)
    assert set(data["tokens"]) == {"a-longer|s1", "b|s1"}
    assert set(data["accounts"]) == {"a-longer", "b"}
    assert store.load("a|s2 s3", "a") is None
    assert FileStore(store.path).load("a|s2 s3", "a") is None
    text = Path(store.path).read_text(encoding="utf-8")
    assert "at-a" not in text
    assert "rt-a" not in text


def test_forget_account_tokens_keeps_the_refresh_token(store: FileStore) -> None:
    store.save("a|s1", "a", record("at-a1", refresh_token="rt-a", account={"upn": "me"}))
    store.save("a|s2", "a", record("at-a2"))
    store.save("b|s1", "b", record("at-b", refresh_token="rt-b"))
    store.forget_account_tokens("a")
    data = contents(store)
    assert set(data["tokens"]) == {"b|s1"}
    assert set(data["accounts"]) == {"a", "b"}
    assert store.load("a|s1", "a") == {"refresh_token": "rt-a", "account": {"upn": "me"}}
    assert FileStore(store.path).load("a|s2", "a") == {"refresh_token": "rt-a",
                                                        "account": {"upn": "me"}}
    before = Path(store.path).read_bytes()
    store.forget_account_tokens("a")  # nothing left to forget: the file is not rewritten
    store.forget_account_tokens("nobody")
    assert Path(store.path).read_bytes() == before


def test_removing_from_a_missing_cache_creates_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "nothing" / "tokens.json")
    store.discard("k")
    store.delete("k", "a")
    assert store.load("k", "a") is None
    assert not (tmp_path / "nothing").exists()


# ---------------------------------------------------------------------- permissions, atomicity


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_folder_is_0700_and_file_0600(store: FileStore, umask022: None) -> None:
    store.save("k", "a", record("at-1", refresh_token="rt-1"))
    assert mode(store.folder) == 0o700
    assert mode(store.path) == 0o600
    assert mode(store.lock_path) & 0o077 == 0


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_wider_folder_and_file_are_tightened(tmp_path: Path, umask022: None) -> None:
    folder = tmp_path / "loose"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)  # noqa: S103 - the point of the test
    store = FileStore(folder / "tokens.json")
    store.save("k", "a", record("at-1"))
    assert mode(folder) == 0o700
    os.chmod(store.path, 0o644)
    assert FileStore(store.path).load("k", "a") is not None
    assert mode(store.path) == 0o600


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_shared_sticky_folder_is_left_alone(tmp_path: Path, umask022: None) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # noqa: S103 - like /tmp
    store = FileStore(shared / "tokens.json")
    store.save("k", "a", record("at-1"))
    assert mode(shared) == 0o1777
    assert mode(store.path) == 0o600


def test_writes_leave_no_temporary_files(store: FileStore) -> None:
    for i in range(20):
        store.save(f"k{i}", "a", record(f"at-{i}", refresh_token=f"rt-{i}"))
    store.discard("k0")
    store.delete("k1", "a")
    assert sorted(os.listdir(store.folder)) == ["tokens.json", "tokens.json.lock"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save("k", "a", record("at-old"))
    before = Path(store.path).read_bytes()

    def full_disk(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(AuthLayerError, match="cannot write the token cache") as caught:
        store.save("k", "a", record("at-new-secret", refresh_token="rt-new-secret"))
    assert "secret" not in str(caught.value)
    monkeypatch.undo()
    assert Path(store.path).read_bytes() == before
    assert sorted(os.listdir(store.folder)) == ["tokens.json", "tokens.json.lock"]
    assert FileStore(store.path).load("k", "a") == store.load("k", "a")


def test_stale_temporary_files_are_removed(store: FileStore) -> None:
    store.save("k", "a", record("at-1"))
    stale = Path(store.folder) / ".tokens.json.abc123.tmp"
    stale.write_text("half a file", encoding="utf-8")
    store.save("k2", "a", record("at-2"))
    assert not stale.exists()


def test_replace_is_retried_while_the_file_is_open_elsewhere(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows refuses to replace a file another process has open (WinError 5) until it closes
    it: the write tries again, a little later."""
    store.save("k", "a", record("at-old"))
    real = os.replace
    calls: list[str] = []
    sleeps: list[float] = []

    def busy_twice(src: Any, dst: Any) -> None:
        calls.append(os.fspath(dst))
        if len(calls) <= 2:
            raise PermissionError(13, "Access is denied")
        real(src, dst)

    monkeypatch.setattr(os, "replace", busy_twice)
    monkeypatch.setattr(filecache, "_sleep", sleeps.append)
    store.save("k", "a", record("at-new"))
    assert calls == [store.path] * 3
    assert sleeps == [0.01, 0.02]
    monkeypatch.undo()
    loaded = FileStore(store.path).load("k", "a")
    assert loaded is not None
    assert loaded["access_token"] == "at-new"
    assert sorted(os.listdir(store.folder)) == ["tokens.json", "tokens.json.lock"]


def test_replace_gives_up_after_a_few_attempts(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save("k", "a", record("at-old"))
    before = Path(store.path).read_bytes()
    calls: list[str] = []
    sleeps: list[float] = []

    def always_busy(src: Any, dst: Any) -> None:
        calls.append(os.fspath(dst))
        raise PermissionError(13, "Access is denied")

    monkeypatch.setattr(os, "replace", always_busy)
    monkeypatch.setattr(filecache, "_sleep", sleeps.append)
    with pytest.raises(AuthLayerError, match=r"cannot write the token cache .*: Access is denied"):
        store.save("k", "a", record("at-new-secret"))
    assert len(calls) == filecache.REPLACE_ATTEMPTS == 10
    assert sleeps == [0.01, 0.02, 0.03, 0.04, 0.05, 0.05, 0.05, 0.05, 0.05]
    monkeypatch.undo()
    assert Path(store.path).read_bytes() == before
    assert sorted(os.listdir(store.folder)) == ["tokens.json", "tokens.json.lock"]


def test_lock_timeout_is_a_clear_error(store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.save("k", "a", record("at-1"))
    monkeypatch.setattr(filecache, "LOCK_TIMEOUT", 0.2)
    other = filelock.FileLock(store.lock_path)  # another holder: a separate descriptor
    with other, pytest.raises(AuthLayerError, match="lock") as caught:
        store.save("k", "a", record("at-secret-2"))
    assert store.lock_path in str(caught.value)
    assert "at-secret-2" not in str(caught.value)
    store.save("k", "a", record("at-2"))  # free again
    loaded = store.load("k", "a")
    assert loaded is not None
    assert loaded["access_token"] == "at-2"


# ---------------------------------------------------------------------- other users' files

OTHER_UID = 54321  # no one: a user other than the one running the tests

needs_chown = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0, reason="POSIX, as root (to give files away)"
)


def give_away(path: str | Path, *, follow: bool = True) -> None:
    """Make ``path`` belong to another user."""
    if follow:
        os.chown(path, OTHER_UID, -1)
    else:
        os.lchown(path, OTHER_UID, -1)


def planted(store: FileStore) -> bytes:
    """A valid cache file with a token that another user put there."""
    os.makedirs(store.folder, exist_ok=True)
    raw = json.dumps({"version": 1, "tokens": {"k": record("at-planted")},
                      "accounts": {"a": {"refresh_token": "rt-planted", "account": None}}})
    Path(store.path).write_text(raw, encoding="utf-8")
    return raw.encode("utf-8")


def refuses(store: FileStore, *problems: str) -> None:
    """Every method refuses the store with an error naming the path and ``problems``."""
    uses: list[Callable[[], object]] = [
        lambda: store.load("k", "a"),
        lambda: store.save("k", "a", record("at-mine-secret", refresh_token="rt-mine")),
        lambda: store.discard("k"),
        lambda: store.delete("k", "a"),
        lambda: store.forget_account_tokens("a"),
    ]
    for use in uses:
        with pytest.raises(AuthLayerError, match="refusing to use the token cache") as caught:
            use()
        message = str(caught.value)
        for problem in problems:
            assert problem in message
        assert "secret" not in message
        assert "planted" not in message


@needs_chown
def test_a_cache_file_of_another_user_is_refused(store: FileStore) -> None:
    store.save("k", "a", record("at-1", refresh_token="rt-1"))
    assert store.load("k", "a") is not None  # the in-memory copy: an unchanged stamp
    give_away(store.path)
    before = Path(store.path).read_bytes()
    refuses(store, f"file {store.path}", f"owned by another user (uid {OTHER_UID})")
    refuses(FileStore(store.path), f"file {store.path}", f"uid {OTHER_UID}")
    # left exactly as it was: not rewritten, not set aside, not made ours
    assert Path(store.path).read_bytes() == before
    assert sorted(os.listdir(store.folder)) == ["tokens.json", "tokens.json.lock"]
    assert os.stat(store.path).st_uid == OTHER_UID
    assert mode(store.path) == 0o600


@needs_chown
def test_a_world_writable_cache_file_of_another_user_is_refused(store: FileStore) -> None:
    raw = planted(store)
    give_away(store.path)
    os.chmod(store.path, 0o666)  # noqa: S103 - the point of the test
    refuses(store, store.path, f"owned by another user (uid {OTHER_UID})",
            "writable by others (mode 0666)")
    assert Path(store.path).read_bytes() == raw
    assert mode(store.path) == 0o666  # not ours to change
    assert os.stat(store.path).st_uid == OTHER_UID


@needs_chown
def test_a_symbolic_link_of_another_user_is_refused(store: FileStore, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("{}", encoding="utf-8")
    os.makedirs(store.folder)
    os.symlink(target, store.path)
    give_away(store.path, follow=False)
    refuses(store, store.path, f"uid {OTHER_UID}")
    assert os.path.islink(store.path)
    assert target.read_text(encoding="utf-8") == "{}"


@needs_chown
def test_a_lock_file_of_another_user_is_refused(store: FileStore) -> None:
    store.save("k", "a", record("at-1"))
    give_away(store.lock_path)
    os.chmod(store.lock_path, 0o666)  # noqa: S103 - the point of the test
    changes: list[Callable[[], None]] = [
        lambda: store.save("k", "a", record("at-2-secret")),
        lambda: store.discard("k"),
        lambda: store.delete("k", "a"),
    ]
    for change in changes:
        with pytest.raises(AuthLayerError, match="refusing to use") as caught:
            change()
        message = str(caught.value)
        assert f"lock file {store.lock_path}" in message
        assert f"owned by another user (uid {OTHER_UID})" in message
        assert "writable by others (mode 0666)" in message
    assert mode(store.lock_path) == 0o666
    loaded = store.load("k", "a")  # reading takes no lock: our own file is still fine
    assert loaded is not None
    assert loaded["access_token"] == "at-1"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_our_wider_lock_file_is_tightened(store: FileStore) -> None:
    store.save("k", "a", record("at-1"))
    os.chmod(store.lock_path, 0o666)  # noqa: S103 - the point of the test
    store.save("k", "a", record("at-2"))
    assert mode(store.lock_path) == 0o600


@needs_chown
def test_a_cache_folder_of_another_user_is_refused(store: FileStore) -> None:
    store.save("k", "a", record("at-1"))
    give_away(store.folder)
    refuses(store, f"folder {store.folder}", f"owned by another user (uid {OTHER_UID})")
    assert mode(store.folder) == 0o700
    os.chmod(store.folder, 0o777)  # noqa: S103 - the point of the test
    refuses(store, f"folder {store.folder}", f"uid {OTHER_UID}",
            "writable by others (mode 0777)")
    assert mode(store.folder) == 0o777  # not ours to change


@needs_chown
def test_a_shared_sticky_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # noqa: S103 - like /tmp
    give_away(shared)
    store = FileStore(shared / "tokens.json")
    with pytest.raises(AuthLayerError, match=f"owned by another user \\(uid {OTHER_UID}\\)$"):
        store.save("k", "a", record("at-1"))
    assert os.listdir(shared) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_our_writable_folder_that_cannot_be_tightened_is_refused(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save("k", "a", record("at-1"))
    os.chmod(store.folder, 0o770)  # noqa: S103 - the point of the test

    def refused(path: Any, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refused)
    refuses(store, f"folder {store.folder}", "writable by others (mode 0770)")
    monkeypatch.undo()
    os.chmod(store.folder, 0o750)  # noqa: S103 - readable by others only: tightened
    loaded = store.load("k", "a")
    assert loaded is not None
    assert mode(store.folder) == 0o700


# ---------------------------------------------------------------------- corrupt files

CORRUPT = {
    "garbage": b"\xff\xfe\x00 at-leaked-secret \x81",
    "not-json": b"at-leaked-secret {",
    "empty": b"",
    "list": b'["at-leaked-secret"]',
    "wrong-version": b'{"version": 2, "tokens": {}, "accounts": {}}',
    "no-version": b'{"tokens": {}, "accounts": {}}',
    "wrong-shape": b'{"version": 1, "tokens": ["at-leaked-secret"], "accounts": {}}',
    "bad-record": b'{"version": 1, "tokens": {"k": "at-leaked-secret"}, "accounts": {}}',
    "deep": b"[" * 100_000,
}


@pytest.mark.parametrize("content", list(CORRUPT.values()), ids=list(CORRUPT))
def test_corrupt_file_is_set_aside_and_rebuilt(store: FileStore, content: bytes,
                                               caplog: pytest.LogCaptureFixture) -> None:
    os.makedirs(store.folder)
    Path(store.path).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="authlayer"), \
            pytest.warns(UserWarning, match="moved it to") as warned:
        assert store.load("k", "a") is None
    message = str(warned[0].message)
    assert store.path in message
    assert "at-leaked-secret" not in message
    assert [r.getMessage() for r in caplog.records] == [message]
    aside = [n for n in os.listdir(store.folder) if n.startswith("tokens.json.corrupt-")]
    assert len(aside) == 1
    assert (Path(store.folder) / aside[0]).read_bytes() == content
    if os.name == "posix":
        assert mode(Path(store.folder) / aside[0]) == 0o600
    assert not os.path.exists(store.path)
    store.save("k", "a", record("at-1"))
    assert contents(store)["tokens"]["k"]["access_token"] == "at-1"


def test_corrupt_file_found_while_saving(store: FileStore) -> None:
    os.makedirs(store.folder)
    Path(store.path).write_bytes(b"{{{")
    with pytest.warns(UserWarning, match="not JSON"):
        store.save("k", "a", record("at-1"))
    assert contents(store)["tokens"]["k"]["access_token"] == "at-1"


def test_corruption_after_a_good_read_is_noticed(store: FileStore) -> None:
    store.save("k", "a", record("at-1"))
    assert store.load("k", "a") is not None
    Path(store.path).write_bytes(b"not json at all")
    with pytest.warns(UserWarning, match="not JSON"):
        assert store.load("k", "a") is None


# ---------------------------------------------------------------------- pruning


def test_expired_records_are_pruned_on_write(store: FileStore) -> None:
    store.save("old", "acct", record("at-old", expires_in=-10, refresh_token="rt-old"))
    store.save("live", "other", record("at-live"))
    data = contents(store)
    assert set(data["tokens"]) == {"live"}
    assert data["accounts"]["acct"]["refresh_token"] == "rt-old"  # the sign-in survives
    assert store.load("old", "acct") == {"refresh_token": "rt-old"}


def test_size_is_capped(store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filecache, "MAX_TOKENS", 5)
    monkeypatch.setattr(filecache, "MAX_ACCOUNTS", 3)
    lifetimes = [HOUR + 10 * i for i in (5, 1, 7, 3, 0, 6, 2, 4)]
    for i, life in enumerate(lifetimes):
        store.save(f"k{i}", f"a{i}", record(f"at-{i}", expires_in=life, refresh_token=f"rt-{i}"))
    data = contents(store)
    # the five expiring last: lifetimes 7, 6, 5, 4, 3
    assert set(data["tokens"]) == {"k2", "k5", "k0", "k7", "k3"}
    assert list(data["accounts"]) == ["a5", "a6", "a7"]  # the three saved last
    store.save("k0", "a0", record("at-0b", refresh_token="rt-0b"))
    assert list(contents(store)["accounts"]) == ["a6", "a7", "a0"]


# ---------------------------------------------------------------------- the in-memory copy


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = filecache._decode

    def counting(raw: bytes) -> Any:
        calls.append(len(raw))
        return real(raw)

    monkeypatch.setattr(filecache, "_decode", counting)
    return calls


def test_unchanged_file_is_not_parsed_again(store: FileStore, parses: list[int]) -> None:
    FileStore(store.path).save("k", "a", record("at-1"))
    for _ in range(5):
        assert store.load("k", "a") is not None
    assert len(parses) == 1
    store.save("k2", "a", record("at-2"))  # our own write needs no parse afterwards
    assert store.load("k2", "a") is not None
    assert len(parses) == 1


def test_file_changed_by_another_process_is_read_again(store: FileStore,
                                                       parses: list[int]) -> None:
    store.save("k", "a", record("at-1"))
    assert store.load("k2", "a") is None
    FileStore(store.path).save("k2", "a", record("at-2"))  # atomic replace: a new inode
    loaded = store.load("k2", "a")
    assert loaded is not None
    assert loaded["access_token"] == "at-2"
    # rewritten in place (same inode), as a careless tool would do
    data = contents(store)
    data["tokens"]["k3"] = record("at-3")
    Path(store.path).write_text(json.dumps(data), encoding="utf-8")
    loaded = store.load("k3", "a")
    assert loaded is not None
    assert loaded["access_token"] == "at-3"


def test_a_writer_never_trusts_a_stale_copy(store: FileStore) -> None:
    other = FileStore(store.path)
    store.save("k1", "a", record("at-1"))
    other.save("k2", "a", record("at-2"))
    store.save("k3", "a", record("at-3"))
    other.save("k4", "a", record("at-4"))
    assert set(contents(store)["tokens"]) == {"k1", "k2", "k3", "k4"}


# ---------------------------------------------------------------------- concurrency


def test_threads_and_instances_lose_no_entries(store: FileStore) -> None:
    stores = [store, FileStore(store.path)]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for j in range(25):
                stores[n % 2].save(f"t{n}-{j}", f"a{n}", record(f"at-{n}-{j}",
                                                               refresh_token=f"rt-{n}-{j}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = contents(store)
    assert len(data["tokens"]) == 200
    assert {k: v["refresh_token"] for k, v in data["accounts"].items()} == {
        f"a{n}": f"rt-{n}-24" for n in range(8)
    }


WORKER = textwrap.dedent("""
    import sys, time
    from authlayer.filecache import FileStore
    path, n = sys.argv[1], int(sys.argv[2])
    store = FileStore(path)
    print("ready", flush=True)
    sys.stdin.readline()
    now = int(time.time())
    for j in range(100):
        store.save(f"p{n}-k{j}", f"acct-{n}", {
            "access_token": f"at-{n}-{j}", "expires_on": now + 3600,
            "refresh_on": now + 3300, "token_type": "Bearer",
            "refresh_token": f"rt-{n}-{j}", "account": None,
        })
    print("done", flush=True)
""")


def test_processes_sharing_the_file_lose_no_entries(store: FileStore) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, store.path, str(n)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for n in range(8)
    ]
    try:
        for p in procs:  # every worker is started and imported: now let them race
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.close()
        for p in procs:  # every save returned (none gave up waiting for the lock)
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "done"
            assert p.wait(timeout=60) == 0
    finally:
        for p in procs:
            if p.poll() is None:  # pragma: no cover - only after a failure
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
    data = contents(store)
    assert data["version"] == 1
    assert set(data["tokens"]) == {f"p{n}-k{j}" for n in range(8) for j in range(100)}
    assert all(data["tokens"][f"p{n}-k{j}"]["access_token"] == f"at-{n}-{j}"
               for n in range(8) for j in range(100))
    assert {k: v["refresh_token"] for k, v in data["accounts"].items()} == {
        f"acct-{n}": f"rt-{n}-99" for n in range(8)
    }
    assert sorted(os.listdir(store.folder)) == ["tokens.json", "tokens.json.lock"]


# ---------------------------------------------------------------------- through the provider


@pytest.fixture
def file_profile(app_profile: Callable[..., str]) -> str:
    app_profile("filed", cache="file", timeout=5)
    return "filed"


def test_provider_keeps_tokens_in_the_file_across_restarts(
    emu: Emulator, file_profile: str, secret: str, tmp_path: Path, umask022: None
) -> None:
    assert load_profile(file_profile).cache == "file"
    first = get_token(file_profile)
    assert emu.count("token") == 1
    path = tmp_path / "cache" / "tokens.json"
    text = path.read_text(encoding="utf-8")
    assert first.token in text  # that is the point of the cache
    assert secret not in text
    if os.name == "posix":
        assert mode(path) == 0o600
        assert mode(path.parent) == 0o700

    PROVIDER.reset()  # a new process, as far as the in-memory cache goes
    assert get_token(file_profile) == first
    assert emu.count("token") == 1

    # and a real new process
    out = subprocess.run(
        [sys.executable, "-c",
         f"from authlayer import get_token; print(get_token({file_profile!r}).token)"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ), check=True,
    )
    assert out.stdout.strip() == first.token
    assert emu.count("token") == 1


def test_logout_removes_the_tokens_from_the_file(emu: Emulator, file_profile: str,
                                                 tmp_path: Path) -> None:
    token = get_token(file_profile)
    PROVIDER.forget(PROVIDER.bind(file_profile))
    assert token.token not in (tmp_path / "cache" / "tokens.json").read_text(encoding="utf-8")
    PROVIDER.reset()
    assert get_token(file_profile) != token
    assert emu.count("token") == 2
