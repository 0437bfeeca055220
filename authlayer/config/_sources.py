"""Secret sources: a string (the secret itself) or a table with exactly one key, ``env``,
``file``, ``command`` or a plugin's name (CONTRACT §4, §10); for ``client_assertion`` also a
borrowed identity (CONTRACT §8): ``profile`` (another profile's access token),
``github_actions`` and ``azure_pipelines`` (those CI systems' OIDC tokens). Each kind is a
:class:`~authlayer.schema.SecretSourceSpec`: how the profile's value is checked when the profile
is loaded, how the secret is read when a token request needs it (and only then), how the source
enters a cache key and how it is shown to people. Messages never quote the value: it may be the
secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import time
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlsplit

from .. import registry
from ..errors import ConfigError, TokenError, redact
from ..profile import (
    COMMAND_TIMEOUT,
    MAX_SECRET_BYTES,
    SecretSource,
    keyed_hash,
    read_at_most,
)
from ..schema import ReadContext, SecretSourceSpec
from ._keys import _suggest, _type_name

if TYPE_CHECKING:
    from .._http import Action, HttpResponse
    from ..profile import Profile
    from ._keys import Where

__all__ = ["BUILTIN", "EXCHANGE_AUDIENCES", "parse_secret"]

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_HOW = "a table with one of env, file or command"


def _error(ctx: ReadContext, message: str) -> ConfigError:
    return ConfigError(message, path=ctx.path, profile=ctx.profile or None, key=ctx.key)


# --------------------------------------------------------------------------------------------
# Checking what the profile wrote: (value, where) -> the ref that read() gets


def _check_env(ref: Any, where: Where) -> str:
    if not isinstance(ref, str) or not ref or "=" in ref or "\0" in ref:
        raise where.error(
            f"{where.key}.env must be the name of an environment variable"
            + ("" if isinstance(ref, str) else f", not {_type_name(ref)}")
        )
    return ref


def _check_file(ref: Any, where: Where) -> str:
    if not isinstance(ref, str) or not ref.strip():
        raise where.error(
            f"{where.key}.file must be the path of a file"
            + ("" if isinstance(ref, str) else f", not {_type_name(ref)}")
        )
    return where.local_path(ref)


def _check_command(ref: Any, where: Where) -> tuple[str, ...]:
    key = where.key
    if isinstance(ref, str):
        raise where.error(
            f'{key}.command must be a list like ["prog", "arg"], not a string: it runs '
            "without a shell, so give the program and each argument as list items"
        )
    if not isinstance(ref, list) or not ref:
        raise where.error(
            f'{key}.command must be a non-empty list like ["prog", "arg"]'
            + ("" if isinstance(ref, list) else f", not {_type_name(ref)}")
        )
    for number, arg in enumerate(ref, 1):
        if not isinstance(arg, str):
            raise where.error(
                f"{key}.command item {number} must be a string, not {_type_name(arg)}"
            )
        if "\0" in arg:  # no program can receive it
            raise where.error(f"{key}.command item {number} has a NUL character in it")
    if not ref[0].strip():
        raise where.error(f"{key}.command must start with the program to run")
    return tuple(ref)


# --------------------------------------------------------------------------------------------
# Reading: (ref, ctx) -> the secret


def _read_value(ref: str, ctx: ReadContext) -> str:
    return ref


def _read_env(ref: str, ctx: ReadContext) -> str:
    value = os.environ.get(ref)
    if value is None:
        raise _error(ctx, f"environment variable {ref} is not set")
    if not value:
        raise _error(ctx, f"environment variable {ref} is empty")
    return value


def _env_available(ref: str, ctx: ReadContext) -> Optional[str]:
    value = os.environ.get(ref)
    if value is None:
        return f"environment variable {ref} is not set"
    return None if value else f"environment variable {ref} is empty"


def _too_large(ctx: ReadContext, what: str) -> ConfigError:
    return _error(
        ctx,
        f"{what} is larger than {MAX_SECRET_BYTES // 1024} KB: that is not a secret"
    )


def _read_file(ref: str, ctx: ReadContext) -> str:
    try:
        # Non-blocking, so that a FIFO never hangs us (it is refused just below).
        fd = os.open(ref, os.O_RDONLY | _NONBLOCK | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise _error(ctx, f"file {ref} does not exist") from None
    except OSError as exc:
        raise _error(ctx, f"cannot read file {ref}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _error(ctx, f"cannot read file {ref}: it is a folder")
        if not stat.S_ISREG(st.st_mode):
            # /dev/zero, a FIFO, a socket: endless, or blocking until someone writes.
            raise _error(ctx,
                f"cannot read file {ref}: it is not a regular file (a device, a pipe "
                "or a socket)"
            )
        if st.st_size > MAX_SECRET_BYTES:
            raise _too_large(ctx, f"file {ref}")
        data = read_at_most(fd, MAX_SECRET_BYTES + 1)  # st_size may be 0 (/proc) or wrong
    except OSError as exc:
        raise _error(ctx, f"cannot read file {ref}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise _too_large(ctx, f"file {ref}")
    return _text(ctx, data, f"cannot read file {ref}: not UTF-8 text", f"file {ref} is empty")


def _run(ref: tuple[str, ...], ctx: ReadContext) -> str:
    import subprocess  # only for a command source: it costs start-up time

    argv = list(ref)
    shown = argv[0]
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            # Not shown (it may echo the secret), and not collected: it could be endless.
            stderr=subprocess.DEVNULL,
            # The profiles file's folder, like relative `file` sources: never the caller's.
            cwd=os.path.dirname(ctx.path) if ctx.path else None,
        )
    except FileNotFoundError:
        raise _error(ctx, f"command {shown!r} was not found") from None
    except OSError as exc:
        raise _error(ctx, f"command {shown!r} could not run: {exc.strerror}") from None
    # Output is read as it comes, at most MAX_SECRET_BYTES + 1 (a command that prints
    # without end is killed, not collected), by a thread, so that the timeout holds even
    # when something the command started keeps its output open.
    stdout = process.stdout
    assert stdout is not None
    output: list[bytes] = []
    reader = threading.Thread(
        # The thread holds `stdout` itself: its descriptor stays open while it reads.
        target=lambda: output.append(read_at_most(stdout.fileno(), MAX_SECRET_BYTES + 1)),
        name="authlayer-secret-command",
        daemon=True,
    )
    deadline = time.monotonic() + COMMAND_TIMEOUT
    returncode: Optional[int] = None
    try:
        reader.start()
        reader.join(COMMAND_TIMEOUT)
        if output and len(output[0]) <= MAX_SECRET_BYTES:
            with contextlib.suppress(subprocess.TimeoutExpired):
                returncode = process.wait(max(0.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:  # too much, too slow, or interrupted (Ctrl-C)
            process.kill()
            process.wait()
        if not reader.is_alive():
            stdout.close()
    data = output[0] if output else b""
    if returncode is None and len(data) <= MAX_SECRET_BYTES:
        raise _error(ctx, f"command {shown!r} did not finish within {COMMAND_TIMEOUT:g} s")
    if len(data) > MAX_SECRET_BYTES:
        raise _too_large(ctx, f"the output of command {shown!r}")
    if returncode != 0:
        # Its stderr is not shown: it may echo the secret.
        raise _error(ctx, f"command {shown!r} failed with exit status {returncode}")
    return _text(ctx, data, f"command {shown!r} printed something that is not UTF-8",
                 f"command {shown!r} printed nothing")


def _text(ctx: ReadContext, data: bytes, not_utf8: str, empty: str) -> str:
    """The secret in ``data``: UTF-8 text, trailing line breaks removed, not empty."""
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise _error(ctx, not_utf8) from None
    if not text:
        raise _error(ctx, empty)
    return text


# --------------------------------------------------------------------------------------------
# Borrowed identities: client_assertion = { profile | github_actions | azure_pipelines = ... }

# The audience a token exchanged for an Entra token must have, by the cloud's sign-in host
# (Entra's "Configure an app to trust a managed identity"; MSAL.NET's known clouds).
EXCHANGE_AUDIENCES: dict[str, str] = {
    **dict.fromkeys(("login.microsoftonline.us", "login.usgovcloudapi.net"),
                    "api://AzureADTokenExchangeUSGov"),
    **dict.fromkeys(("login.partner.microsoftonline.cn", "login.chinacloudapi.cn"),
                    "api://AzureADTokenExchangeChina"),
}
DEFAULT_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
GITHUB_URL = "ACTIONS_ID_TOKEN_REQUEST_URL"
GITHUB_TOKEN = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
PIPELINES_URI = "SYSTEM_OIDCREQUESTURI"
PIPELINES_TOKEN = "SYSTEM_ACCESSTOKEN"
PIPELINES_API_VERSION = "7.1"
_GITHUB_HINT = ("in GitHub Actions, give the job (or workflow) `permissions: id-token: write`; "
                "the runner sets ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN "
                "only then")
_PIPELINES_HINT = ("in Azure Pipelines, map the job's token: `env: SYSTEM_ACCESSTOKEN: "
                   "$(System.AccessToken)`; SYSTEM_OIDCREQUESTURI is set by the agent")
_borrowing = threading.local()  # the profiles whose assertion this thread is fetching


def _only_assertion(kind: str, where: Where) -> None:
    if where.key != "client_assertion":
        raise where.error(f"{where.key}.{kind}: a borrowed identity can only be a "
                          "client_assertion (a federated credential)")


def _owner(ctx: ReadContext) -> Optional[Profile]:
    """The profile the source belongs to (its authority and timeout), if it loads."""
    from . import load_profile

    try:
        return load_profile(ctx.profile, config=ctx.path) if ctx.profile else None
    except ConfigError:
        return None


def exchange_audience(authority: str) -> str:
    """The token exchange audience of the cloud whose sign-in host ``authority`` names."""
    host = (urlsplit(authority).hostname or "").lower()
    return EXCHANGE_AUDIENCES.get(host, DEFAULT_EXCHANGE_AUDIENCE)


def _check_profile(ref: Any, where: Where) -> str:
    _only_assertion("profile", where)
    if not isinstance(ref, str) or not ref.strip():
        raise where.error(f"{where.key}.profile must be the name of another profile"
                          + ("" if isinstance(ref, str) else f", not {_type_name(ref)}"))
    if ref == where.profile:
        raise where.error(f"{where.key}.profile names this profile itself: name another "
                          "profile, whose token is the assertion")
    return ref


def _borrowed(ref: str, ctx: ReadContext) -> Profile:
    """The profile whose token is borrowed; a cycle of borrowings is a ConfigError."""
    from . import load_profile

    seen = [ctx.profile]
    name = ref
    while True:
        if name in seen:
            raise _error(ctx, "client_assertion borrows in a cycle: "
                         + " -> ".join([*seen[seen.index(name):], name]))
        seen.append(name)
        loaded = load_profile(name, config=ctx.path)
        if name == ref:
            first = loaded
        source = loaded.client_assertion
        if source is None or source.kind != "profile":
            return first
        name = source.ref


def _read_profile(ref: str, ctx: ReadContext) -> str:
    from ..provider import get_token

    borrowed = _borrowed(ref, ctx)
    stack: list[str] = _borrowing.__dict__.setdefault("stack", [])
    if ref in stack:  # through a chain, say: the static walk above cannot see it
        raise _error(ctx, "client_assertion borrows in a cycle: " + " -> ".join([*stack, ref]))
    stack.append(ref)
    try:
        return get_token(borrowed.name, config=ctx.path).token
    except TokenError as exc:
        said = str(exc)
        prefix = f"profile {ref!r}: "
        raise TokenError(
            f"client_assertion borrows the token of profile {ref!r}, which failed: "
            + (said[len(prefix):] if said.startswith(prefix) else said),
            profile=ctx.profile or None, error=exc.error, error_codes=exc.error_codes,
            status=exc.status, correlation_id=exc.correlation_id, hint="",
        ) from None
    finally:
        stack.pop()


def _profile_available(ref: str, ctx: ReadContext) -> Optional[str]:
    reason = registry.unavailable(_borrowed(ref, ctx))
    return None if reason is None else f"profile {ref!r}: {reason}"


def _check_github(ref: Any, where: Where) -> str:
    _only_assertion("github_actions", where)
    if ref is True:
        return ""
    if isinstance(ref, str) and ref.strip() and not any(c.isspace() for c in ref):
        where.no_control(ref)
        return ref
    raise where.error(f"{where.key}.github_actions must be true (audience "
                      f"{DEFAULT_EXCHANGE_AUDIENCE}) or the audience to ask for, like "
                      f'"{DEFAULT_EXCHANGE_AUDIENCE}"')


def _variables(ctx: ReadContext, names: tuple[str, str], hint: str) -> tuple[str, str]:
    missing = [n for n in names if not os.environ.get(n, "").strip()]
    if missing:
        raise _error(ctx, f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                          f"not set: {hint}")
    url, token = (os.environ[n].strip() for n in names)
    parts = urlsplit(url)
    from ..hosts import is_loopback

    if parts.scheme != "https" and not (parts.scheme == "http"
                                        and is_loopback(parts.hostname or "")):
        raise _error(ctx, f"{names[0]} is not an https:// URL: the request token would "
                          "travel in the clear")
    return url, token


def _with_query(url: str, fields: Mapping[str, str]) -> str:
    """``url`` with ``fields`` added to the query it may already have."""
    from urllib.parse import urlencode

    return url + ("&" if "?" in url else "?") + urlencode(fields)


def _fetch(ctx: ReadContext, build: Any) -> HttpResponse:
    """One request (with the usual bounded retries) through :mod:`authlayer._http`."""
    from .._http import run_sync, send

    def flow() -> Generator[Action, Any, HttpResponse]:
        return (yield from send(build, profile=ctx.profile or None))

    return run_sync(flow())


def _timeout(ctx: ReadContext) -> float:
    owner = _owner(ctx)
    return owner.timeout if owner is not None else 30.0


def _read_github(ref: str, ctx: ReadContext) -> str:
    from .._http import HttpRequest

    url, token = _variables(ctx, (GITHUB_URL, GITHUB_TOKEN), _GITHUB_HINT)
    audience = ref
    if not audience:
        owner = _owner(ctx)
        audience = exchange_audience(owner.authority) if owner else DEFAULT_EXCHANGE_AUDIENCE
    # The URL has a query already (api-version): the audience is appended to it, as the
    # actions toolkit does.
    request = HttpRequest("GET", _with_query(url, {"audience": audience}),
                          headers={"Authorization": f"Bearer {token}"},
                          timeout=_timeout(ctx), what="GitHub Actions OIDC token request",
                          retry_statuses=frozenset({429, 502, 503, 504}))
    response = _fetch(ctx, request)
    body = response.json_object() if response.status == 200 else None
    value = body.get("value") if body is not None else None
    if not isinstance(value, str) or not value:
        raise TokenError(
            f"GitHub Actions' OIDC endpoint gave no token (HTTP {response.status}"
            + (f": {_said(response)}" if response.status != 200 else ", no 'value'") + ")",
            profile=ctx.profile or None, error="github_actions_oidc_failed",
            status=response.status, hint=_GITHUB_HINT)
    return value


def _check_pipelines(ref: Any, where: Where) -> str:
    _only_assertion("azure_pipelines", where)
    if not isinstance(ref, str) or not ref.strip() or any(c in ref for c in " \t\r\n&?#/"):
        raise where.error(f"{where.key}.azure_pipelines must be the service connection's id "
                          "(the resourceId on its page in Azure DevOps)")
    return ref


def _read_pipelines(ref: str, ctx: ReadContext) -> str:
    from .._http import HttpRequest

    url, token = _variables(ctx, (PIPELINES_URI, PIPELINES_TOKEN), _PIPELINES_HINT)
    request = HttpRequest(
        "POST", _with_query(url.rstrip("/"), {"api-version": PIPELINES_API_VERSION,
                                              "serviceConnectionId": ref}),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                 "X-TFS-FedAuthRedirect": "Suppress"},
        timeout=_timeout(ctx), what="Azure Pipelines OIDC token request")
    response = _fetch(ctx, request)
    body = response.json_object() if response.status == 200 else None
    value = body.get("oidcToken") if body is not None else None
    if not isinstance(value, str) or not value:
        ids = [f"{name}: {response.headers[name.lower()]}" for name in ("X-VSS-E2EID",
                                                                        "X-MSEdge-Ref")
               if response.headers.get(name.lower())]
        raise TokenError(
            f"Azure Pipelines' OIDC endpoint gave no token for service connection {ref} (HTTP "
            f"{response.status}" + (f": {_said(response)}" if response.status != 200
                                    else ", no 'oidcToken'") + ")"
            + (f" [{', '.join(ids)}]" if ids else ""),
            profile=ctx.profile or None, error="azure_pipelines_oidc_failed",
            status=response.status,
            hint=f"check the service connection id {ref} (its resourceId), that this pipeline "
                 "may use it, and that SYSTEM_ACCESSTOKEN is mapped: `env: SYSTEM_ACCESSTOKEN: "
                 "$(System.AccessToken)`")
    return value


def _said(response: HttpResponse) -> str:
    body = response.json_object() or {}
    message = body.get("message")
    text = message if isinstance(message, str) else response.content[:200].decode(
        "utf-8", "replace")
    return redact(" ".join(text.split()))[:200]


def _variables_available(names: tuple[str, str], where: str) -> Optional[str]:
    missing = [n for n in names if not os.environ.get(n, "").strip()]
    if not missing:
        return None
    return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set ({where})"


# --------------------------------------------------------------------------------------------
# The built-in kinds


BUILTIN: dict[str, SecretSourceSpec] = {
    # A string in the profile: not a table key, the secret itself.
    "value": SecretSourceSpec(
        "value", _read_value, identity=lambda ref: "value:" + keyed_hash(ref),
        describe=lambda ref: "written in the profile", blocking=False,
    ),
    "env": SecretSourceSpec(
        "env", _read_env, identity=lambda ref: f"env:{ref}", describe=lambda ref: f"env {ref}",
        check=_check_env, blocking=False, available=_env_available,
    ),
    "file": SecretSourceSpec(
        "file", _read_file, identity=lambda ref: f"file:{ref}",
        describe=lambda ref: f"file {ref}", check=_check_file,
    ),
    "command": SecretSourceSpec(
        "command", _run, identity=lambda ref: "command:" + "\x1f".join(ref),
        describe=lambda ref: f"command {ref[0]}", check=_check_command,
    ),
    "profile": SecretSourceSpec(
        "profile", _read_profile, identity=lambda ref: f"profile:{ref}",
        describe=lambda ref: f"the token of profile {ref}", check=_check_profile,
        available=_profile_available,
    ),
    "github_actions": SecretSourceSpec(
        "github_actions", _read_github, identity=lambda ref: f"github_actions:{ref}",
        describe=lambda ref: "GitHub Actions' OIDC token", check=_check_github,
        available=lambda ref, ctx: _variables_available(
            (GITHUB_URL, GITHUB_TOKEN),
            "not in GitHub Actions, or the job lacks `permissions: id-token: write`"),
    ),
    "azure_pipelines": SecretSourceSpec(
        "azure_pipelines", _read_pipelines, identity=lambda ref: f"azure_pipelines:{ref}",
        describe=lambda ref: f"Azure Pipelines' OIDC token for service connection {ref}",
        check=_check_pipelines,
        available=lambda ref, ctx: _variables_available(
            (PIPELINES_URI, PIPELINES_TOKEN),
            "not in Azure Pipelines, or SYSTEM_ACCESSTOKEN is not mapped"),
    ),
}


def frozen(value: Any) -> str:
    """What a profile wrote for a plugin's source, kept as canonical JSON text: hashable like
    the rest of a profile, and the same text for the same value."""
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def parse_secret(value: Any, where: Where) -> SecretSource:
    """The secret source written under ``where.key``."""
    key = where.key

    def source(spec: SecretSourceSpec, ref: Any, plugin: bool = False) -> SecretSource:
        return SecretSource(spec.name, ref, key=key, profile=where.profile, path=where.path,
                            spec=spec if plugin else None)

    if isinstance(value, str):
        if not value.strip():
            raise where.error(
                f'{key} is empty: give the secret, or {_HOW}, like {{ env = "NAME" }}'
            )
        return source(BUILTIN["value"], value)
    if not isinstance(value, Mapping):
        raise where.type_error(f"a string (the secret itself) or {_HOW}", value)
    for name in value:
        if name not in registry.BUILTIN_SECRET_SOURCES and not registry.has_secret_source(name):
            raise where.error(
                f"unknown key {name!r} in {key}"
                + _suggest(name, registry.secret_source_names())
                + f" ({key} must be {_HOW})"
            )
    if not value:
        raise where.error(f"{key} is an empty table: it must be {_HOW}")
    if len(value) > 1:
        first, second = list(value)[:2]
        raise where.error(
            f"{key} has both {first!r} and {second!r}: a secret source takes exactly one"
        )
    kind, raw = next(iter(value.items()))
    builtin = BUILTIN.get(kind) if kind in registry.BUILTIN_SECRET_SOURCES else None
    if builtin is not None:
        assert builtin.check is not None
        return source(builtin, builtin.check(raw, where))
    try:
        spec = registry.secret_source(kind)
    except ConfigError as exc:
        raise where.error(exc.reason) from None
    return source(spec, spec.check(raw, where) if spec.check else frozen(raw), plugin=True)
