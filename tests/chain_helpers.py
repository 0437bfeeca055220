"""What the chain and auto tests share: an environment with nothing to find (no tools on PATH,
no Azure CLI sign-in, IMDS on a closed loopback port), and running a script in a fresh process
with the environment variables a user would have."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from authlayer.flows import managed_identity

# Variables that make a source available: every test starts without them.
SOURCE_VARIABLES = (
    "AZURE_TOKEN_CREDENTIALS", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_CONFIG_DIR", "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "SYSTEM_OIDCREQUESTURI", "SYSTEM_ACCESSTOKEN",
    "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT",
    "MSI_ENDPOINT", "MSI_SECRET", "AUTHLAYER_CONFIG", "AUTHLAYER_PROFILE",
)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nothing_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's environment made bare: no source available. Returns the variables set
    (for fresh processes)."""
    for name in SOURCE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(managed_identity, "_answered", set())
    monkeypatch.setattr(managed_identity, "HIMDS_PATHS", {})
    bare = {
        "PATH": str(tmp_path / "bin"),  # no az, azd or pwsh
        "AZURE_CONFIG_DIR": str(tmp_path / "no-azure-cli"),
        # Never the real IMDS: a loopback port where nothing answers.
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": f"127.0.0.1:{closed_port()}",
    }
    (tmp_path / "bin").mkdir(exist_ok=True)
    for name, value in bare.items():
        monkeypatch.setenv(name, value)
    return bare


def run_fresh(code: str, env: dict[str, str], *args: str,
              cwd: Optional[Path] = None) -> subprocess.CompletedProcess[str]:
    """``python -c code args`` in a new process whose environment is this test's bare one plus
    ``env`` (nothing else of this process's state comes along)."""
    keep = {k: v for k, v in os.environ.items() if k not in SOURCE_VARIABLES}
    return subprocess.run([sys.executable, "-c", code, *args], env={**keep, **env},
                          capture_output=True, text=True, timeout=120, check=False, cwd=cwd)
