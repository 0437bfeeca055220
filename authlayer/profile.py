"""Profiles and secret sources as immutable values.

:mod:`authlayer.config` reads and validates the TOML file and builds these; everything else only
reads them. A :class:`Profile` never holds a secret, only :class:`SecretSource` objects that say
where to find one; they are read when a token request needs them, and never shown in a ``repr``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from typing import TYPE_CHECKING, Any, Optional, Union

from . import _fileperms
from ._log import log
from ._record import field, record
from .errors import ConfigError
from .hosts import HostPolicy
from .registry import BUILTIN_FLOWS as FLOWS
from .schema import ReadContext, SecretSourceSpec

if TYPE_CHECKING:
    from .stores import StoreConfig

__all__ = [
    "DEFAULT_AUTHORITY",
    "FLOWS",
    "CertificateConfig",
    "Profile",
    "Secret",
    "SecretSource",
]


DEFAULT_AUTHORITY = "https://login.microsoftonline.com"

# Seconds a `command` secret source may run.
COMMAND_TIMEOUT = 60.0
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
# Bytes a secret source may yield: a secret, a certificate password or an assertion is far
# smaller; more is a mistake (a log file, /dev/zero, a runaway command), not a secret.
MAX_SECRET_BYTES = 64 * 1024
_READ_CHUNK = 8192


class Secret:
    """A secret held in memory (a password, a refresh token, a client secret) on its way to a
    request form. Its ``repr`` and ``str`` hide it, so it stays out of tracebacks with captured
    locals (Sentry, ``pytest --showlocals``), logs and messages; it refuses to be pickled.
    :meth:`reveal` gives the value, at the moment it is encoded into the form."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("a Secret is not pickled: it would carry the secret")


@record
class SecretSource:
    """Where a secret comes from: the value itself, an environment variable, a file, a command,
    or a secret source a plugin adds.

    ``kind`` is ``"value"``, ``"env"``, ``"file"``, ``"command"`` or a plugin's name; ``ref`` is
    the value, the variable's name, the file's absolute path, the program and its arguments, or
    what the profile wrote for a plugin. ``key``, ``profile`` and ``path`` say where it was
    configured, for error messages. How each kind is read, shown and keyed is its
    :class:`~authlayer.schema.SecretSourceSpec` (``spec``, else the built-in of that kind).
    """

    kind: str
    ref: Any = field(repr=False)
    key: str = ""
    profile: str = ""
    path: Optional[str] = None
    spec: Optional[SecretSourceSpec] = field(default=None, compare=False, repr=False)

    def _spec(self) -> SecretSourceSpec:
        if self.spec is not None:
            return self.spec
        from .registry import secret_source

        try:
            return secret_source(self.kind, plugins=False)
        except LookupError:
            raise ConfigError(f"unknown secret source kind {self.kind!r}", path=self.path,
                              profile=self.profile or None, key=self.key) from None

    def read(self) -> str:
        """The secret, read now. Raises :class:`ConfigError` naming file, profile and key."""
        return self._spec().read(self.ref, ReadContext(self.profile, self.key, self.path))

    def secret(self) -> Secret:
        """:meth:`read`, wrapped so that the value does not show in reprs."""
        return Secret(self.read())

    @property
    def blocking(self) -> bool:
        """Whether reading it does I/O (a file, a command): then it runs off the event loop."""
        return self._spec().blocking

    @property
    def identity(self) -> str:
        """A stable, non-secret description, used in cache keys (``env:NAME``, ``file:/p``, ...).

        A literal value is represented by a keyed hash (HMAC-SHA256 with this installation's
        salt, see :func:`installation_salt`), so that two different secrets never share cached
        tokens while the secret itself never enters a key, and a key seen elsewhere (a cache
        file, a Redis key name) cannot be checked against guessed secrets.
        """
        return self._spec().identity(self.ref)

    def describe(self) -> str:
        """How the source is shown to people: never the value itself."""
        return self._spec().describe(self.ref)

    def available(self) -> Optional[str]:
        """Why the source cannot give a secret here (an unset environment variable, ...), or
        ``None``: its spec's ``available``; a kind without one is always available."""
        check = self._spec().available
        return None if check is None else check(self.ref, ReadContext(self.profile, self.key,
                                                                      self.path))


def keyed_hash(text: str) -> str:
    """``text`` hashed with this installation's salt: for cache keys that must not reveal it."""
    import hashlib  # here: OpenSSL's start costs every start, and most profiles hash nothing
    import hmac

    digest = hmac.new(installation_salt(), text.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


SALT_FILE = "key-salt"
_SALT_HEX = 64
_salts: dict[str, bytes] = {}  # the token cache's folder -> its salt
_salts_lock = threading.Lock()


def installation_salt() -> bytes:
    """The key for hashing inline secrets into cache keys: random, created once per
    installation (``key-salt``, ``0600``, next to the token cache), the same for every process
    of the user. If it cannot be kept there, a salt for this process only (with a warning):
    then tokens that the file cache holds for profiles with an inline secret are not found by
    other processes, which fetch their own."""
    from .filecache import default_path  # only on this slow path: it imports filelock

    folder = os.path.dirname(default_path())
    salt = _salts.get(folder)
    if salt is None:
        with _salts_lock:
            salt = _salts.get(folder)
            if salt is None:
                salt = _salts[folder] = _load_salt(folder)
    return salt


def _load_salt(folder: str) -> bytes:
    path = os.path.join(folder, SALT_FILE)
    try:
        salt = _read_salt(path)
        if salt is None:  # once per installation: these imports cost start-up time
            import secrets
            import tempfile

            os.makedirs(folder, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{SALT_FILE}.", suffix=".tmp", dir=folder)
            try:
                with os.fdopen(fd, "w", encoding="ascii") as file:
                    file.write(secrets.token_hex(_SALT_HEX // 2))
                    file.flush()
                    os.fsync(file.fileno())
                # A link never replaces an existing file: when two processes race, both end up
                # with the one that got there first.
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
            finally:
                os.unlink(tmp)
            salt = _read_salt(path)
            if salt is None:
                raise OSError(0, "it disappeared as it was made")
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.warning(
            "cannot keep the cache key salt %s (%s): using one for this process only, so "
            "tokens that the file cache holds for profiles with an inline secret are not "
            "found by other processes", path, reason,
        )
        import secrets

        return secrets.token_bytes(_SALT_HEX // 2)
    return salt


def _read_salt(path: str) -> Optional[bytes]:
    """The salt in ``path``; ``None`` if there is no file; ValueError if it is not fit."""
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        found = _fileperms.problems(st)
        if found or not stat.S_ISREG(st.st_mode):
            raise ValueError("it is " + (" and ".join(found) or "not a regular file"))
        text = read_at_most(fd, _SALT_HEX + 1).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if len(text) != _SALT_HEX or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("it does not hold a salt")
    return bytes.fromhex(text)


def read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd``, until its end."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(_READ_CHUNK, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


@record
class CertificateConfig:
    """A certificate credential: a PEM or PKCS#12 file, an optional password, and whether to
    send the chain (``x5c``) for subject-name/issuer setups."""

    path: str
    password: Optional[SecretSource] = None
    send_x5c: bool = False

    @property
    def identity(self) -> str:
        return f"cert:{self.path}"


@record
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
    azure_config_dir: Optional[str] = None
    # flow "chain": the member profiles' names, in order
    chain: tuple[str, ...] = ()
    # send the client capabilities (xms_cc: cp1) with every token request: CAE tokens
    cae: bool = False
    # tenants an Azure SDK's tenant_id may switch to ("*": any), lower-cased
    additionally_allowed_tenants: tuple[str, ...] = ()
    allowed_hosts: Optional[tuple[str, ...]] = None
    # "memory", "file", or a shared store (Redis, a plugin's): authlayer.stores.StoreConfig
    cache: Union[str, StoreConfig] = "memory"
    timeout: float = 30.0
    # A plugin flow's own keys (its spec's extra_keys), parsed: (name, value) pairs.
    extras: tuple[tuple[str, Any], ...] = ()

    def extra_key(self, name: str, default: Any = None) -> Any:
        """The value of a plugin flow's own key ``name``, or ``default``."""
        return dict(self.extras).get(name, default)

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
