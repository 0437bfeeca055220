"""Profiles and secret sources as immutable values.

:mod:`authlayer.config` reads and validates the TOML file and builds these; everything else only
reads them. A :class:`Profile` never holds a secret, only :class:`SecretSource` objects that say
where to find one; they are read when a token request needs them, and never shown in a ``repr``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from .errors import ConfigError
from .hosts import HostPolicy

__all__ = [
    "DEFAULT_AUTHORITY",
    "FLOWS",
    "CertificateConfig",
    "Profile",
    "SecretSource",
]

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"

FLOWS = (
    "client_credentials",
    "device_code",
    "authorization_code",
    "refresh_token",
    "on_behalf_of",
    "password",
    "managed_identity",
    "workload_identity",
    "azure_cli",
)

# Seconds a `command` secret source may run.
COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class SecretSource:
    """Where a secret comes from: the value itself, an environment variable, a file or a command.

    ``kind`` is ``"value"``, ``"env"``, ``"file"`` or ``"command"``; ``ref`` is the value, the
    variable's name, the file's absolute path, or the program and its arguments. ``key``,
    ``profile`` and ``path`` say where it was configured, for error messages.
    """

    kind: str
    ref: Union[str, tuple[str, ...]] = field(repr=False)
    key: str = ""
    profile: str = ""
    path: Optional[str] = None

    def _error(self, message: str) -> ConfigError:
        return ConfigError(message, path=self.path, profile=self.profile or None, key=self.key)

    def read(self) -> str:
        """The secret, read now. Raises :class:`ConfigError` naming file, profile and key."""
        if self.kind == "value":
            assert isinstance(self.ref, str)
            return self.ref
        if self.kind == "env":
            assert isinstance(self.ref, str)
            value = os.environ.get(self.ref)
            if value is None:
                raise self._error(f"environment variable {self.ref} is not set")
            if not value:
                raise self._error(f"environment variable {self.ref} is empty")
            return value
        if self.kind == "file":
            assert isinstance(self.ref, str)
            try:
                text = Path(self.ref).read_text(encoding="utf-8")
            except FileNotFoundError:
                raise self._error(f"file {self.ref} does not exist") from None
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise self._error(f"cannot read file {self.ref}: {reason}") from None
            text = text.rstrip("\r\n")
            if not text:
                raise self._error(f"file {self.ref} is empty")
            return text
        if self.kind == "command":
            return self._run()
        raise self._error(f"unknown secret source kind {self.kind!r}")

    def _run(self) -> str:
        argv = list(self.ref) if isinstance(self.ref, tuple) else [self.ref]
        shown = argv[0]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
                stdin=subprocess.DEVNULL,
                # The profiles file's folder, like relative `file` sources: never the caller's.
                cwd=os.path.dirname(self.path) if self.path else None,
            )
        except FileNotFoundError:
            raise self._error(f"command {shown!r} was not found") from None
        except subprocess.TimeoutExpired:
            raise self._error(
                f"command {shown!r} did not finish within {COMMAND_TIMEOUT:g} s"
            ) from None
        except OSError as exc:
            raise self._error(f"command {shown!r} could not run: {exc.strerror}") from None
        if done.returncode != 0:
            # Its stderr is not shown: it may echo the secret.
            raise self._error(f"command {shown!r} failed with exit status {done.returncode}")
        try:
            text = done.stdout.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise self._error(f"command {shown!r} printed something that is not UTF-8") from None
        if not text:
            raise self._error(f"command {shown!r} printed nothing")
        return text

    @property
    def identity(self) -> str:
        """A stable, non-secret description, used in cache keys (``env:NAME``, ``file:/p``, ...).

        A literal value is represented by a short hash, so that two different secrets never share
        cached tokens while the secret itself never enters a key.
        """
        if self.kind == "value":
            assert isinstance(self.ref, str)
            return "value:" + hashlib.sha256(self.ref.encode()).hexdigest()[:16]
        if isinstance(self.ref, tuple):
            return f"{self.kind}:" + "\x1f".join(self.ref)
        return f"{self.kind}:{self.ref}"

    def describe(self) -> str:
        """How the source is shown to people: never the value itself."""
        if self.kind == "value":
            return "<inline secret>"
        if self.kind == "env":
            return f"env {self.ref}"
        if self.kind == "file":
            return f"file {self.ref}"
        argv = self.ref if isinstance(self.ref, tuple) else (self.ref,)
        return "command " + " ".join(argv[:1])


@dataclass(frozen=True)
class CertificateConfig:
    """A certificate credential: a PEM or PKCS#12 file, an optional password, and whether to
    send the chain (``x5c``) for subject-name/issuer setups."""

    path: str
    password: Optional[SecretSource] = None
    send_x5c: bool = False

    @property
    def identity(self) -> str:
        return f"cert:{self.path}"


@dataclass(frozen=True)
class Profile:
    """One validated profile, with ``[defaults]``, ``extends`` and call overrides applied.

    ``scopes`` is always a tuple; ``authority`` has no trailing slash; ``hosts`` is the policy of
    where the token may go (CONTRACT §5). ``tenant`` and ``client_id`` may be ``None`` only for
    flows that find them elsewhere (managed identity, workload identity, Azure CLI).
    """

    name: str
    flow: str
    scopes: tuple[str, ...]
    hosts: HostPolicy = field(compare=False)
    tenant: Optional[str] = None
    client_id: Optional[str] = None
    authority: str = DEFAULT_AUTHORITY
    config_path: Optional[str] = None
    client_secret: Optional[SecretSource] = None
    certificate: Optional[CertificateConfig] = None
    assertion_alg: str = "PS256"
    client_assertion: Optional[SecretSource] = None
    refresh_token: Optional[SecretSource] = None
    username: Optional[str] = None
    password: Optional[SecretSource] = None
    redirect_port: Optional[int] = None
    login_hint: Optional[str] = None
    domain_hint: Optional[str] = None
    prompt: Optional[str] = None
    object_id: Optional[str] = None
    resource_id: Optional[str] = None
    allowed_hosts: Optional[tuple[str, ...]] = None
    cache: str = "memory"
    timeout: float = 30.0

    @property
    def scope(self) -> str:
        """The scopes as the wire wants them: space-separated."""
        return " ".join(self.scopes)

    @property
    def credential_identity(self) -> str:
        """A non-secret description of the client credential, for cache keys."""
        if self.certificate is not None:
            return self.certificate.identity
        if self.client_secret is not None:
            return "secret:" + self.client_secret.identity
        if self.client_assertion is not None:
            return "assertion:" + self.client_assertion.identity
        return "public"

    def config_error(self, message: str, key: Optional[str] = None) -> ConfigError:
        """A :class:`ConfigError` about this profile (and ``key``)."""
        return ConfigError(message, path=self.config_path, profile=self.name, key=key)
