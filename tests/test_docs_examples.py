"""Every example in README.md and docs/*.md that claims to run, runs.

The convention (for whoever writes docs):

* A fenced block whose language is ``python``, ``sh``, ``bash`` or ``shell`` runs; blocks with no
  language, ``toml``, ``console`` or ``text`` are shown, never run.
* A block runs on its own, in a fresh process, in an empty temporary folder, with this
  environment's Python first on ``PATH`` and no profiles file, token cache or proxy of the
  user's. A Python block that defines ``test_*`` functions is a pytest module: it is run with
  pytest. A shell block runs with ``bash -euo pipefail``.
* To show a block that must not run (a sketch with ``...``, a signature, top-level ``await``, a
  command that installs things or takes minutes), put ``<!-- not run -->`` (optionally
  ``<!-- not run: why -->``) on the line just before its opening fence.
* Blocks only ever talk to loopback (the emulator): in the processes that run them, opening a
  connection to, or looking up, any other address fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_LANGUAGES = {"python", "sh", "bash", "shell"}
NOT_RUN = re.compile(r"^<!--\s*not run\b.*-->\s*$")

# Runs before each Python block (and, through sitecustomize, in every Python a shell block
# starts): connections and name lookups are refused unless they stay on this machine.
GUARD = textwrap.dedent('''
    import ipaddress as _ip
    import socket as _socket

    def _local(host):
        host = str(host).strip("[]").split("%")[0]
        if host in ("localhost", ""):
            return True
        try:
            return _ip.ip_address(host).is_loopback
        except ValueError:
            return False

    def _guard(address):
        if isinstance(address, tuple) and not _local(address[0]):
            raise OSError(f"docs examples talk to loopback only, not to {address[0]!r}")

    _connect, _connect_ex = _socket.socket.connect, _socket.socket.connect_ex
    _socket.socket.connect = lambda self, a: (_guard(a), _connect(self, a))[1]
    _socket.socket.connect_ex = lambda self, a: (_guard(a), _connect_ex(self, a))[1]
    _getaddrinfo = _socket.getaddrinfo

    def _getaddrinfo_local(host, *args, **kwargs):
        if host is not None and not _local(host.decode() if isinstance(host, bytes) else host):
            raise _socket.gaierror(f"docs examples talk to loopback only, not to {host!r}")
        return _getaddrinfo(host, *args, **kwargs)

    _socket.getaddrinfo = _getaddrinfo_local
''')


class Block(NamedTuple):
    path: Path
    line: int  # of the opening fence
    language: str
    text: str
    run: bool

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(```+)\s*([\w-]*)", lines[i])
        if not fence:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith(fence.group(1)):
            end += 1
        language = fence.group(2).lower()
        marked = i > 0 and bool(NOT_RUN.match(lines[i - 1].strip()))
        found.append(Block(path, i + 1, language, "\n".join(lines[i + 1:end]) + "\n",
                           language in RUN_LANGUAGES and not marked))
        i = end + 1
    return found


ALL = [b for path in DOCS for b in blocks(path)]
RUNNABLE = [b for b in ALL if b.run]


def _environment(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().endswith("_PROXY") and not k.startswith(("AUTHLAYER_", "AZURE_"))
           and k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                         "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "PYTHONPATH")}
    guard_dir = folder / ".guard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(GUARD, encoding="utf-8")
    env.update(
        PYTHONPATH=str(guard_dir),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        HOME=str(folder),
        XDG_CONFIG_HOME=str(folder / "config"),
        AUTHLAYER_CACHE_DIR=str(folder / "cache"),
        AUTHLAYER_CONFIG=str(folder / "no-profiles.toml"),
    )
    return env


def test_the_readme_setup_commands_are_not_run() -> None:
    """They make virtual environments and install packages: shown, never run by this test."""
    setup = blocks(ROOT / "README.md")[0]
    assert "-m venv" in setup.text
    assert not setup.run
    for block in RUNNABLE:
        assert "-m venv" not in block.text, block.name
        assert "pip install" not in block.text, block.name


def test_every_runnable_block_is_found() -> None:
    assert len(RUNNABLE) >= 5
    assert {b.language for b in RUNNABLE} >= {"python"}


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_docs_example_runs(block: Block, tmp_path: Path) -> None:
    env = _environment(tmp_path)
    if block.language == "python" and re.search(r"^def test_", block.text, re.MULTILINE):
        module = tmp_path / "test_docs_example.py"
        module.write_text(block.text, encoding="utf-8")
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)]
    elif block.language == "python":
        script = tmp_path / "example.py"
        script.write_text(block.text, encoding="utf-8")
        argv = [sys.executable, str(script)]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", block.text]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, (
        f"{block.name} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n"
        f"{done.stderr[-3000:]}")


def test_the_example_profiles_file_loads(tmp_path: Path) -> None:
    """Every profile of profiles.example.toml is valid (its certificates ship in examples/)."""
    env = _environment(tmp_path)
    env["AUTHLAYER_CONFIG"] = str(ROOT / "profiles.example.toml")
    done = subprocess.run([sys.executable, "-m", "authlayer", "profiles"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.stderr == ""
    assert done.returncode == 0
    assert "invalid" not in done.stdout


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_docs_point_only_inside_the_repository(doc: Path) -> None:
    """Links and relative paths name files of this repository, not of a checkout next to it."""
    text = doc.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)[^)]*\)", text) + re.findall(r"`(\.\./[^`\s]+)`", text)
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        resolved = (doc.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{doc.name}: {target} is outside the repository"
        assert resolved.exists(), f"{doc.name}: {target} does not exist"
