"""The codebase's own standards, checked by the suite: mypy --strict, ruff, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.quality


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def test_mypy_strict_is_clean() -> None:
    done = _run("-m", "mypy")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_is_clean() -> None:
    done = _run("-m", "ruff", "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_import_authlayer_is_light() -> None:
    code = ("import sys, authlayer; heavy = [m for m in ('httpx', 'requests', 'cryptography', "
            "'anyio', 'filelock', 'platformdirs') if m in sys.modules]; print(','.join(heavy))")
    done = _run("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_package_ships_py_typed() -> None:
    assert (ROOT / "authlayer" / "py.typed").is_file()
