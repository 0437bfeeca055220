"""The I/O edges on their own: running a program (``_process``), the loopback listener for the
browser's redirect (``_loopback``), opening a browser (``_browser``) and the typed ``call``
step that flows use to hand blocking work to a driver."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from authlayer import _browser, _process
from authlayer._http import Call, call, run_sync
from authlayer._loopback import Callback, LoopbackListener

from .process_helpers import alive

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX programs and process groups")


def _program(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------- _process.which


@posix_only
def test_which_finds_a_program_in_an_absolute_path_entry(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    program = _program(tmp_path / "azd", "#!/bin/sh\n")
    monkeypatch.setenv("PATH", os.pathsep.join(["/nonexistent", str(tmp_path)]))
    assert _process.which("azd") == str(program)


@posix_only
def test_which_never_searches_relative_path_entries(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``.``, an empty entry (the current folder to a shell) and ``bin`` would all find the
    program planted in the current folder: none of them is searched."""
    (tmp_path / "bin").mkdir()
    _program(tmp_path / "azd", "#!/bin/sh\n")
    _program(tmp_path / "bin" / "azd", "#!/bin/sh\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", os.pathsep.join([".", "", "bin", '"."']))
    assert _process.which("azd") is None


@posix_only
def test_which_skips_a_file_that_is_not_executable(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "azd").write_text("not a program")
    (first / "azd").chmod(0o644)
    program = _program(second / "azd", "#!/bin/sh\n")
    monkeypatch.setenv("PATH", os.pathsep.join([str(first), str(second)]))
    assert _process.which("azd") == str(program)


@posix_only
def test_which_on_windows_takes_only_program_extensions_from_pathext(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A script type PATHEXT may list (.PS1, .VBS) is not something to run as ``az``."""
    _program(tmp_path / "az.ps1", "")
    monkeypatch.setattr(os, "name", "nt")
    monkeypatch.setenv("PATHEXT", ".PS1;.VBS;.CMD")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _process.which("az") is None
    program = _program(tmp_path / "az.cmd", "")
    assert _process.which("az") == str(program)


# --------------------------------------------------------------------------- _process.run


@posix_only
def test_run_returns_exit_status_and_both_outputs(tmp_path: Path) -> None:
    program = _program(tmp_path / "prog", '#!/bin/sh\necho "out $1"\necho err >&2\nexit 3\n')
    finished = _process.run([str(program), "a;b"], timeout=30)
    assert finished == (3, b"out a;b\n", b"err\n")  # no shell: "a;b" is one argument
    assert finished.returncode == 3


@posix_only
def test_run_starts_in_a_system_folder_with_standard_input_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    program = _program(tmp_path / "prog", "#!/bin/sh\npwd\ncat\necho end\n")
    finished = _process.run([str(program)], timeout=30)
    assert finished.stdout == b"/\nend\n"  # cat read nothing: no terminal to wait on


@posix_only
def test_run_in_its_own_process_group(tmp_path: Path) -> None:
    program = _program(tmp_path / "prog",
                       f'#!/bin/sh\nexec "{sys.executable}" -c "import os; print(os.getpgid(0))"\n')
    finished = _process.run([str(program)], timeout=30)
    assert int(finished.stdout) != os.getpgid(0)


@posix_only
def test_a_program_that_does_not_exist_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _process.run([str(tmp_path / "missing")], timeout=30)


@posix_only
def test_run_stops_the_whole_process_tree_on_timeout(tmp_path: Path) -> None:
    """The program's own child holds the output open: the timeout stops both, and the
    grandchild does not outlive it."""
    pid_file = tmp_path / "child.pid"
    program = _program(tmp_path / "prog", f"""#!/bin/sh
sleep 600 &
echo $! > "{pid_file}.tmp"
mv "{pid_file}.tmp" "{pid_file}"
wait
""")
    with pytest.raises(subprocess.TimeoutExpired):
        _process.run([str(program)], timeout=1.0)
    pid = int(pid_file.read_text())
    try:
        give_up = time.monotonic() + 30  # the kill is sent; only its delivery is awaited
        while alive(pid) and time.monotonic() < give_up:
            time.sleep(0.02)
        assert not alive(pid), "the program's child outlived the timeout"
    finally:
        if alive(pid):
            os.kill(pid, 9)


@posix_only
def test_stop_tree_on_windows_asks_taskkill_for_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Windows here: the taskkill command line is recorded, and the process itself is still
    killed afterwards."""
    calls: list[tuple[list[str], dict[str, Any]]] = []

    def record(argv: list[str], **kwargs: Any) -> None:
        calls.append((argv, kwargs))

    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) as process:
        monkeypatch.setattr(os, "name", "nt")
        monkeypatch.setenv("SYSTEMROOT", "C:\\Windows")
        monkeypatch.setattr(subprocess, "run", record)
        _process.stop_tree(process)
        monkeypatch.undo()
        assert process.wait() != 0
    ((argv, kwargs),) = calls
    assert argv[0].startswith("C:\\Windows")
    assert argv[0].endswith("taskkill.exe")
    assert argv[1:] == ["/T", "/F", "/PID", str(process.pid)]
    assert kwargs["cwd"] == "C:\\Windows"
    assert kwargs["stdin"] == subprocess.DEVNULL


# --------------------------------------------------------------------------- _http.call


def test_call_yields_one_call_and_returns_what_the_driver_sent_back() -> None:
    def fn() -> int:
        return 41

    step = call(fn)
    action = next(step)
    assert isinstance(action, Call)
    assert action.fn is fn
    with pytest.raises(StopIteration) as done:
        step.send(42)
    assert done.value.value == 42


def test_call_lets_the_functions_error_reach_the_flow() -> None:
    def fails() -> int:
        raise OSError("no")

    with pytest.raises(OSError, match="no"):
        run_sync(call(fails))
    assert run_sync(call(lambda: "answer")) == "answer"


# --------------------------------------------------------------------------- _loopback


def _raw(port: int, request: bytes) -> bytes:
    """The whole answer to ``request``; ``b""`` when the listener hung up without one."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        try:
            conn.sendall(request)
            while chunk := conn.recv(4096):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError):  # closed with our bytes unread
            pass
    return answer


def _get(listener: LoopbackListener, target: str) -> int:
    answer = _raw(listener.port, f"GET {target} HTTP/1.1\r\nHost: localhost:{listener.port}\r\n"
                                 "Connection: close\r\n\r\n".encode("latin-1"))
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def listener() -> Iterator[LoopbackListener]:
    made = LoopbackListener("the-state")
    yield made
    made.close()


def test_the_listener_redirect_uri_names_localhost_and_its_port(
        listener: LoopbackListener) -> None:
    assert listener.redirect_uri == f"http://localhost:{listener.port}"


def test_another_path_is_not_found_and_ignored(listener: LoopbackListener) -> None:
    assert _get(listener, "/favicon.ico?state=the-state&code=c") == 404
    assert _get(listener, "/?state=the-state&code=right") == 200
    callback = listener.wait(5)
    assert callback is not None
    assert callback.code == "right"


def test_a_callback_with_neither_code_nor_error_is_ignored(listener: LoopbackListener) -> None:
    assert _get(listener, "/?state=the-state") == 400
    assert _get(listener, "/?state=the-state&error=access_denied&error_description=no") == 200
    callback = listener.wait(5)
    assert callback is not None
    assert (callback.code, callback.error, callback.error_description) == (
        None, "access_denied", "no")


def test_what_is_not_an_http_request_gets_no_answer(listener: LoopbackListener) -> None:
    assert _raw(listener.port, b"DELETE / HTTP/1.1\r\nHost: localhost\r\n\r\n") == b""
    assert _raw(listener.port, b"GET " + b"a" * (70 * 1024)) == b""  # more than 64 KB, no end
    assert _get(listener, "/?state=the-state&code=c") == 200  # still listening


def test_wait_without_a_callback_answers_none(listener: LoopbackListener) -> None:
    assert listener.wait(0.05) is None


def test_close_twice_is_safe_and_the_port_is_closed() -> None:
    made = LoopbackListener("s")
    made.close()
    made.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", made.port), timeout=1).close()


def test_a_callbacks_repr_hides_the_code() -> None:
    text = repr(Callback({"code": "the-secret-code", "state": "s"}))
    assert "the-secret-code" not in text
    assert "<hidden>" in text


# --------------------------------------------------------------------------- _browser


def test_open_browser_answers_whether_a_browser_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_browser, "_console_browser_first", lambda: False)
    opened: list[str] = []

    def fake_open(url: str, *args: Any, **kwargs: Any) -> bool:
        opened.append(url)
        return True

    monkeypatch.setattr(webbrowser, "open", fake_open)
    assert _browser.open_browser("http://localhost:1/x") is True
    assert opened == ["http://localhost:1/x"]


def test_no_usable_browser_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_browser, "_console_browser_first", lambda: False)

    def broken(url: str, *args: Any, **kwargs: Any) -> Optional[bool]:
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "open", broken)
    assert _browser.open_browser("http://localhost:1/x") is False
