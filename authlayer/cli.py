"""The ``authlayer`` command (also ``python -m authlayer``).

Each subcommand is a small function over the library's public API. Exit status: 0 success,
1 token error, 2 configuration or usage error. Errors are one line on standard error, never a
traceback. Only ``authlayer token`` prints a token, on standard output; sign-in instructions go
to standard error.

Text that comes from outside (claims of a token, a server's error description, names in a
profiles file) is printed with control characters escaped, so it cannot move the cursor, retitle
the terminal or forge extra lines. A reader that goes away (``| head``) ends the command quietly;
standard output that cannot be written (a full disk) is one line on standard error, exit 1.

Start-up matters here (``$(authlayer token p)`` runs in scripts, often): the library's modules
are imported inside the commands that need them, a token served from the cache imports no HTTP
client, and ``argcomplete`` is imported only when the shell asks for completions.

Comforts for people at a terminal: ``--verbose`` shows authlayer's DEBUG log on standard error
(scrubbed of anything shaped like a token or a secret); long waits (device-code polling,
retries) show one status line on standard error when it is a terminal; ``init`` writes a
commented profile; ``completion`` prints the shell code for tab completion.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Optional

from ._version import __version__
from .errors import AuthLayerError, ConfigError, TokenError

if TYPE_CHECKING:
    import argparse

    from ._actions import Sleep
    from .profile import Profile

__all__ = ["main"]

EXIT_OK, EXIT_TOKEN, EXIT_USAGE = 0, 1, 2
EXIT_PIPE = 141  # as if killed by SIGPIPE (128 + 13), like other tools whose reader went away

# The phrases the library uses for its Python arguments, as the command line spells them.
_OPTION_NAMES = (("the scope= argument", "--scope"), ("the tenant= argument", "--tenant"))


class OutputFailed(Exception):
    """Standard output could not be written (a closed pipe, a full disk)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


def out(text: str = "") -> None:
    """Print a line on standard output, flushed now so that a failure shows here (the commands
    and the demo print only through this)."""
    _clear_progress()
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except OSError as exc:
        raise OutputFailed(exc) from None


def _err(text: str) -> None:
    """Print a line on standard error; if even that fails, there is nobody left to tell."""
    _clear_progress()
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _printable(text: str) -> str:
    """``text`` with control and invisible formatting characters escaped (``\\x1b``,
    ``\\u202e``, ...): safe to show on a terminal, and always one line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _show(value: Any) -> str:
    """A claim's value as one printable line: strings as they are, lists space-separated,
    anything else as compact JSON."""
    import json

    if isinstance(value, str):
        return _printable(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return _printable(" ".join(v if isinstance(v, str) else repr(v) for v in value))
    try:
        return _printable(json.dumps(value, separators=(",", ":")))
    except (RecursionError, ValueError, TypeError):
        return "(too deeply nested to show)"


def _when(timestamp: Any) -> str:
    """A Unix time as a UTC date, or the value itself marked as not a time (a string, NaN,
    the year 3 billion)."""
    import datetime

    if isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool):
        try:
            moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
        except (OverflowError, OSError, ValueError):
            pass
        else:
            return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{_show(timestamp)} (not a valid time)"


def _cmd_profiles(args: argparse.Namespace) -> int:
    from .config import config_path, profile_names

    names = profile_names(args.config)
    if not names:
        _err(f"no profiles in {_printable(str(config_path(args.config)))}")
        return EXIT_OK
    rows = [("PROFILE", "FLOW", "TENANT", "CLIENT ID", "SCOPE")]
    broken: list[ConfigError] = []
    skipped: list[str] = []
    for name in names:
        try:
            p = _listed_profile(name, args.config)
            flow = p.flow
            if _stands_for(p):
                flow, why = _chain_summary(name, args.config)
                skipped += [f"{name}: skipped {member!r}: {reason}" for member, reason in why]
        except ConfigError as exc:
            broken.append(exc)
            rows.append((name, "(invalid: see below)", "-", "-", "-"))
            continue
        rows.append((name, flow, p.tenant or "-", p.client_id or "-", p.scope or "-"))
    shown = [[_printable(cell) for cell in row] for row in rows]
    widths = [max(len(r[i]) for r in shown) for i in range(4)]
    for row in shown:
        out("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    if skipped:
        out()
        for line in skipped:
            out(_printable(line))
    for error in broken:
        _err(f"authlayer: {_message(error)}")
    return EXIT_USAGE if broken else EXIT_OK


def _listed_profile(name: str, config: Any) -> Profile:
    """Profile ``name`` for ``authlayer profiles``: a chain's member that sets no scope of its
    own is shown as its chain gives it (it is valid there)."""
    from .config import load_member, load_profile, member_of

    try:
        return load_profile(name, config=config)
    except ConfigError as exc:
        chain = member_of(name, config) if exc.key == "scope" else None
        if chain is None:
            raise
        return load_member(chain, name)


def _stands_for(profile: Profile) -> bool:
    """Whether the profile is a chain (flow ``chain`` or ``auto``)."""
    from . import registry

    return registry.flow(profile.flow).stands_for is not None


def _chain_summary(name: str, config: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``authlayer profiles``' flow cell for a chain — the member it would use here — and the
    members skipped, with why. Looks at the environment as a token request would (it may probe
    for a managed identity, for about a second); asks for no token."""
    from .chains import ChainUnavailable, resolve

    try:
        _member, choice = resolve(name, path=config)
    except ChainUnavailable as exc:
        return f"{_flow_of(name, config)}: no member available", exc.skipped
    assert choice is not None
    return f"{choice.flow}: uses {choice.describe()}", choice.skipped


def _flow_of(name: str, config: Any) -> str:
    from .config import load_profile

    return load_profile(name, config=config).flow


def _bind(args: argparse.Namespace) -> Any:
    """The profile named on the command line (else ``$AUTHLAYER_PROFILE``) with its overrides."""
    from .provider import PROVIDER

    if args.profile is None and not os.environ.get("AUTHLAYER_PROFILE"):
        raise ConfigError(f"no profile given: name one (authlayer {args.command} PROFILE) or "
                          "set $AUTHLAYER_PROFILE")
    return PROVIDER.bind(args.profile, config=args.config, scope=args.scope, tenant=args.tenant)


def _cmd_token(args: argparse.Namespace) -> int:
    from .provider import PLAIN, PROVIDER

    binding = _bind(args)
    token = PROVIDER.get(binding, PLAIN.but(interactive=not args.no_prompt)).token
    if args.json:
        import json

        out(json.dumps({"access_token": token.token, "expires_on": token.expires_on,
                         "token_type": token.token_type}))
    else:
        out(token.token)
    return EXIT_OK


def _summary(claims: dict[str, Any]) -> list[tuple[str, str]]:
    """The claims a person checks first, in a fixed order."""
    rows = [
        ("audience", claims.get("aud")),
        ("tenant", claims.get("tid")),
        ("app id", claims.get("appid") or claims.get("azp")),
        ("subject", claims.get("upn") or claims.get("preferred_username")
         or claims.get("unique_name") or claims.get("oid")),
        ("roles", claims.get("roles")),
        ("scopes", claims.get("scp")),
    ]
    shown = [(k, _show(v)) for k, v in rows if v]
    shown += [(k, _when(claims[c])) for k, c in (("issued", "iat"), ("expires", "exp"))
              if c in claims]
    return shown


def _cmd_check(args: argparse.Namespace) -> int:
    from . import jwt
    from .provider import PLAIN, PROVIDER

    binding = _bind(args)
    profile = binding.profile
    via = binding.via
    if via is not None:  # a chain: say so, then show the member it uses
        out(f"profile {_printable(repr(via.chain))}: flow {via.flow}, configuration is valid; "
            f"it uses {_printable(via.describe())} here (profile "
            f"{_printable(repr(profile.name))}, flow {profile.flow})")
    else:
        out(f"profile {_printable(repr(profile.name))}: flow {profile.flow}, "
            "configuration is valid")
    for label, value in _profile_rows(profile):
        out(f"  {label:<14} {_printable(value)}")
    entry = PROVIDER.get(binding, PLAIN.but(interactive=not args.no_prompt))
    out(f"token obtained (expires {_when(entry.token.expires_on)})")
    for label, value in _chain_rows(binding):
        out(f"  {label:<14} {_printable(value)}")
    try:
        _header, claims = jwt.decode(entry.token.token)
    except (jwt.JWTError, RecursionError):
        out("the token is not a JWT that can be shown (opaque token); nothing to decode")
        return EXIT_OK
    for key, value in _summary(claims):
        out(f"  {key:<9} {value}")
    return EXIT_OK


def _profile_rows(profile: Profile) -> list[tuple[str, str]]:
    """What ``check`` says about a profile before it asks for a token: the file it came from,
    where each secret comes from (the kind of source, never the value), where the token may go
    and where it is kept."""
    from ._record import field_names
    from .profile import CertificateConfig, SecretSource

    rows = [("profiles file", profile.config_path or "-")]
    if profile.tenant:
        rows.append(("tenant", profile.tenant))
    if profile.client_id:
        rows.append(("client id", profile.client_id))
    rows.append(("scope", profile.scope or "-"))
    values = [(name, getattr(profile, name)) for name in field_names(profile)]
    for name, value in values + list(profile.extras):
        if isinstance(value, SecretSource):
            rows.append((value.key or name, value.describe()))
        elif isinstance(value, CertificateConfig):
            shown = f"file {value.path}"
            if value.password is not None:
                shown += f" (password: {value.password.describe()})"
            rows.append(("certificate", shown))
    if profile.hosts.patterns:
        where = ", ".join(profile.hosts.patterns)
        rows.append(("token goes to", f"{where} (https; plain http only to loopback)"))
    else:
        rows.append(("token goes to", "no host: no scope names one and allowed_hosts is not "
                     "set (fine for get_token and this command; EntraAuth refuses it)"))
    rows.append(("token cache", _cache_shown(profile.cache)))
    return rows


def _cache_shown(cache: Any) -> str:
    """Where a profile's tokens are kept, without a password a cache URL may hold."""
    if cache == "memory":
        return "memory (this process only)"
    if cache == "file":
        from .filecache import default_path

        return f"file {default_path()}"
    from urllib.parse import urlsplit

    url = str(getattr(cache, "url", cache))
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "shared store"
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else "shared store"


def _chain_rows(binding: Any) -> list[tuple[str, str]]:
    """Rows ``check`` adds, once the token is obtained, for a profile that stands for others
    (``flow = "chain"`` or ``"auto"``, CONTRACT §8): the member used and why the ones before it
    were skipped.

    Empty for any other profile."""
    via = getattr(binding, "via", None)
    if via is None:
        return []
    rows = [("chain member", via.describe()
             + (" (it gave a token before, in this process)" if via.remembered else ""))]
    while via is not None:
        rows += [("skipped", f"{member}: {why}") for member, why in via.skipped]
        via = via.inner
    return rows


def _cmd_decode(args: argparse.Namespace) -> int:
    import json

    from . import jwt

    text = args.token if args.token is not None else sys.stdin.read()
    words = text.split(None, 1)
    if words and words[0].lower() == "bearer":  # pasted from a header
        words = words[1:]
    text = words[0].strip() if words else ""
    if not text:
        raise ConfigError("no token given: pass it as an argument or on standard input")
    try:
        header, claims = jwt.decode(text)
        # ASCII JSON: every control character of a hostile claim comes out escaped.
        shown = json.dumps({"header": header, "claims": claims}, indent=2, sort_keys=True)
    except jwt.JWTError as exc:
        raise ConfigError(f"cannot decode the token: {exc}") from None
    except RecursionError:
        raise ConfigError("cannot decode the token: its JSON is nested too deeply") from None
    except (TypeError, ValueError) as exc:  # keys of mixed types cannot be sorted
        raise ConfigError(f"cannot show the token's claims: {exc}") from None
    out(shown)
    for key, value in _summary(claims):
        _err(f"{key}: {value}")
    return EXIT_OK


def _cmd_login(args: argparse.Namespace) -> int:
    from .provider import LOGIN, PROVIDER

    binding = _bind(args)
    # Sign in anew (perhaps as someone else), even when a refresh token is kept; the kept
    # sign-in is replaced only if this one succeeds.
    entry = PROVIDER.get(binding, LOGIN)
    cache = binding.profile.cache
    where = ("the token cache file" if cache == "file" else "memory only" if cache == "memory"
             else f"the shared cache, {cache}")
    _err(f"signed in with profile {_printable(repr(binding.profile.name))}; token valid until "
         f"{_when(entry.token.expires_on)} (kept in {where})")
    return EXIT_OK


def _cmd_logout(args: argparse.Namespace) -> int:
    from .provider import PROVIDER

    binding = _bind(args)
    name = _printable(repr(binding.profile.name))
    account = binding.key.account
    kept = any(k.account == account for k in list(PROVIDER.entries)) or (
        PROVIDER.store_for(binding.profile).load(binding.store_key, binding.store_account_key)
        is not None)
    PROVIDER.forget(binding)  # also other scopes' tokens of the same sign-in, if any
    if kept:
        _err(f"forgot the cached tokens of profile {name}")
    elif binding.profile.cache == "memory":
        # Nothing outlives the process that got it: no other process has anything to forget.
        _err(f"nothing to forget: profile {name} keeps its tokens in memory only "
             '(cache = "memory"), for the life of the process that got them')
    else:
        _err(f"nothing to forget: no cached token or sign-in of profile {name}")
    return EXIT_OK


# ------------------------------------------------------------------------ authlayer init

# One comment per key that init writes: what it is for, in a few words.
_KEY_NOTES = {
    "tenant": "tenant GUID or domain",
    "client_id": "the application (client) id",
    "scope": "what the token is for; the token goes only to its host",
    "authority": "the identity service",
    "client_secret": "where the secret is read from, when a token is needed",
    "certificate": "PEM (key and certificate) or PKCS#12",
    "username": "the account that signs in",
    "password": "where the password is read from, when a token is needed",
    "refresh_token": "where the refresh token is read from",
    "client_assertion": "a federated credential, read for every token request",
    "allowed_hosts": "the hosts the token may be sent to",
    "cache": '"memory" or "file"',
}
# Keys init offers as comments when the flow takes them and they were not given.
_OPTIONAL = (
    ("allowed_hosts", '["api.example.com"]', "where the token may go (default: the scope's host)"),
    ("cache", '"file"', "keep tokens across processes (default: memory for apps)"),
    ("timeout", "30", "seconds allowed for each request to the identity service"),
)
# The option that sets a key, for messages about a key that is missing or wrong.
_KEY_OPTIONS = {
    "flow": "--flow", "tenant": "--tenant", "client_id": "--client-id", "scope": "--scope",
    "authority": "--authority", "certificate": "--certificate", "allowed_hosts": "--allowed-host",
    "cache": "--cache",
    "client_secret": "--secret-env NAME, --secret-file PATH or --secret-command CMD",
}
_SECRET_KEYS = ("client_secret", "password", "refresh_token", "client_assertion")
_NAME = r"[A-Za-z0-9_.-]+"  # compiled by re when init needs it


def _toml(value: Any) -> str:
    """A value as TOML text (strings, numbers, booleans, lists and tables of them)."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's too
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise ConfigError(f"cannot write {type(value).__name__} values into a profile")


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _toml(name)


def _parse_set(item: str) -> tuple[str, Any]:
    """``--set KEY=VALUE``: VALUE is read as a TOML value when it is one, else as a string."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: write it as KEY=VALUE")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9 and 3.10
        import tomli as tomllib
    try:
        return key, tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return key, text


def _init_values(args: argparse.Namespace) -> dict[str, Any]:
    """The keys the options give, in the order they are written."""
    values: dict[str, Any] = {}
    if args.flow:
        values["flow"] = args.flow
    for key, given in (("authority", args.authority), ("tenant", args.tenant),
                       ("client_id", args.client_id)):
        if given:
            values[key] = given
    if args.scope:
        values["scope"] = args.scope[0] if len(args.scope) == 1 else list(args.scope)
    sources = [(kind, ref) for kind, ref in (("env", args.secret_env), ("file", args.secret_file),
                                             ("command", args.secret_command)) if ref]
    if len(sources) > 1:
        raise ConfigError("give at most one of --secret-env, --secret-file and --secret-command")
    for kind, ref in sources:
        values["client_secret"] = {kind: _split(ref) if kind == "command" else ref}
    if args.certificate:
        values["certificate"] = args.certificate
    if args.allowed_host:
        values["allowed_hosts"] = list(args.allowed_host)
    if args.cache:
        values["cache"] = args.cache
    for item in args.set or ():
        key, value = _parse_set(item)
        values[key] = value
    return values


def _split(command: str) -> list[str]:
    """A command line split as a shell would (a ``command`` source runs without one)."""
    import shlex

    try:
        return shlex.split(command)
    except ValueError as exc:  # an unclosed quote
        raise ConfigError(f"cannot read the command {command!r}: {exc}") from None


def _ask(question: str, default: str = "") -> str:
    """A line typed by the person at the terminal; the question goes to standard error."""
    shown = f" [{default}]" if default else ""
    sys.stderr.write(f"{question}{shown}: ")
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:  # end of input (Ctrl-D)
        raise ConfigError("init: no answer given")
    return line.strip() or default


def _interview(values: dict[str, Any]) -> None:
    """Ask, at a terminal, for what the options left out: the flow, then the keys it needs."""
    from . import registry

    if "flow" not in values:
        names = registry.flow_names()
        for number, name in enumerate(names, 1):
            try:
                summary = registry.flow(name).summary
            except (LookupError, ConfigError):
                summary = ""
            sys.stderr.write(f"  {number:>2}. {name}{' - ' + summary if summary else ''}\n")
        answer = _ask("flow (a number or a name)", "client_credentials")
        values["flow"] = names[int(answer) - 1] if answer.isdigit() and \
            0 < int(answer) <= len(names) else answer
    try:
        spec = registry.flow(values["flow"])
    except (LookupError, ConfigError):
        return  # the file is checked before it is written: that names the mistake
    wanted = [k for k in ("tenant", "client_id") if spec.takes(k)]
    wanted += [k for k in spec.required if k not in wanted and k != "scope"]
    for key in wanted:
        if key in values:
            continue
        if key in _SECRET_KEYS:
            values[key] = _ask_secret(key)
            continue
        default = (spec.default_tenant or "") if key == "tenant" else ""
        optional = key not in spec.required
        answer = _ask(f"{key}{' (optional)' if optional else ''}", default)
        if answer and not (optional and answer == default):  # the flow's default anyway
            values[key] = answer
    if "scope" not in values:
        values["scope"] = _ask("scope", "https://graph.microsoft.com/.default")
    if spec.credential == "one" and not any(k in values for k in
                                             ("client_secret", "certificate", "client_assertion")):
        answer = _ask("client credential: a secret from an environment variable (env), a file "
                      "(file) or a command (command), or a certificate (certificate)", "env")
        if answer == "certificate":
            values["certificate"] = _ask("certificate file (PEM or PKCS#12)")
        else:
            values["client_secret"] = _ask_secret("client_secret", answer)


def _ask_secret(key: str, kind: str = "") -> dict[str, Any]:
    """A secret source for ``key``: never the secret itself, which would be kept in the file."""
    kind = kind or _ask(f"{key} from an environment variable (env), a file (file) or a command "
                        "(command)", "env")
    if kind == "env":
        return {"env": _ask("environment variable", key.upper())}
    if kind == "file":
        return {"file": _ask("file")}
    if kind == "command":
        return {"command": _split(_ask("command"))}
    raise ConfigError(f"init: {kind!r} is not a kind of secret source: say env, file or command")


def _profile_block(name: str, values: dict[str, Any]) -> str:
    """The profile as commented TOML, to add at the end of a profiles file."""
    from . import registry

    flow = str(values.get("flow", ""))
    try:
        spec = registry.flow(flow)
    except (LookupError, ConfigError):
        spec = None
    lines = [f"# Written by `authlayer init`. Every key: docs/profiles.md. Try it: "
             f"authlayer check {name}",
             f"[profiles.{_toml_key(name)}]"]
    for key, value in values.items():
        note = (spec.summary if spec else "") if key == "flow" else _KEY_NOTES.get(key, "")
        lines.append(f"{_toml_key(key)} = {_toml(value)}" + (f"  # {note}" if note else ""))
    for key, example, note in _OPTIONAL:
        if key not in values and (spec is None or spec.takes(key)):
            lines.append(f"# {key} = {example}  # {note}")
    return "\n".join(lines) + "\n"


def _cmd_init(args: argparse.Namespace) -> int:
    from .config import config_path

    name = args.name
    if not re.fullmatch(_NAME, name):
        raise ConfigError(f"init: {_printable(repr(name))} is not a profile name init writes: "
                          "use letters, digits, '.', '_' and '-'")
    values = _init_values(args)
    if sys.stdin.isatty() and sys.stderr.isatty():
        _interview(values)
    if "flow" not in values:
        raise ConfigError("init: name the flow with --flow FLOW (authlayer init --help lists "
                          "the options)")
    path = config_path(args.config)
    _add_profile(path, name, _profile_block(name, values), given=list(values))
    _err(f"wrote profile {_printable(repr(name))} to {_printable(str(path))}; "
         f"try it with: authlayer check {name}")
    return EXIT_OK


def _add_profile(path: Path, name: str, block: str, given: Sequence[str] = ()) -> None:
    """Add ``block`` (profile ``name``) at the end of the profiles file, creating it (``0600``,
    in a folder created ``0700``) if there is none. The result must load before it replaces the
    file; an existing profile of that name is never overwritten. ``given``: the keys the person
    gave (a message about another key says which option gives it)."""
    import stat
    import tempfile

    from .config import clear_cache, load_profile, profile_names

    real = Path(os.path.realpath(path))  # a symbolic link (dotfiles) stays a link
    exists = real.exists()
    if exists:
        if name in profile_names(path):  # also refuses a file that is unsafe or not TOML
            raise ConfigError(f"profile {name!r} already exists: init never overwrites a "
                              "profile; edit it, or choose another name", path=str(path))
        old = real.read_bytes()
        mode = stat.S_IMODE(real.stat().st_mode)
    else:
        _make_folders(real.parent)
        old, mode = b"", 0o600
    if old and not old.endswith(b"\n"):
        old += b"\n"
    fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=".profiles-", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(old + (b"\n" if old else b"") + block.encode("utf-8"))
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, mode)
        try:
            load_profile(name, config=tmp)
        except ConfigError as exc:
            hint = ""
            if exc.key and exc.key not in given:  # missing: say which option gives it
                hint = f" (give it with {_KEY_OPTIONS.get(exc.key, f'--set {exc.key}=VALUE')})"
            raise ConfigError(f"{exc.reason}{hint}; nothing was written", path=str(path),
                              profile=name, key=exc.key) from None
        finally:
            clear_cache()
        if exists:
            os.replace(tmp, real)
        else:
            try:
                os.link(tmp, real)  # never replaces a file that appeared meanwhile
            except FileExistsError:
                raise ConfigError("the profiles file appeared while init was writing it: run "
                                  "init again", path=str(path)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _make_folders(folder: Path) -> None:
    """Create ``folder`` and the missing folders above it, each ``0700``: the profiles file's
    folder must not be writable by others (it is checked like the file)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for each in reversed(missing):
        try:
            each.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot create the folder {each}: {exc.strerror}") from None


# ------------------------------------------------------------- completion, progress, verbose

def _complete_profiles(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Profile names for tab completion (from the ``--config`` given so far, if any)."""
    from .config import profile_names

    try:
        names = profile_names(getattr(parsed_args, "config", None))
    except AuthLayerError:
        return []
    return [n for n in names if n.startswith(prefix)]


def _complete_flows(prefix: str, **_: Any) -> list[str]:
    from . import registry

    return [n for n in registry.flow_names() if n.startswith(prefix)]


def _cmd_completion(args: argparse.Namespace) -> int:
    try:
        from argcomplete.shell_integration import shellcode
    except ImportError:
        raise ConfigError("shell completion needs argcomplete: pip install "
                          "'authlayer[completion]'") from None
    out(shellcode(["authlayer"], shell=args.shell).rstrip("\n"))
    return EXIT_OK


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` finds it (``$COLUMNS``, else
    standard output's terminal, else 80), without importing shutil (it imports bz2 and lzma)."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        stream: Any = sys.__stdout__
        try:
            columns = os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, ValueError, OSError):  # no standard output, or not a terminal
            columns = 0
    return columns or 80


class _Progress:
    """One status line on standard error (a terminal), rewritten in place at each wait and
    cleared before anything else is printed."""

    def __init__(self) -> None:
        self.shown = False

    def __call__(self, wait: Sleep) -> None:
        if not wait.why:
            return
        width = max(20, _columns() - 1)
        text = _printable(f"authlayer: {wait.why} ...")[:width]
        self._write(f"\r\x1b[K{text}\r")
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.shown = False
            self._write("\r\x1b[K")

    @staticmethod
    def _write(text: str) -> None:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


_progress: Optional[_Progress] = None


def _clear_progress() -> None:
    if _progress is not None:
        _progress.clear()


def _show_progress() -> None:
    """Show long waits on standard error, if it is a terminal that understands escapes."""
    global _progress

    try:
        terminal = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        terminal = False
    if terminal:
        from . import _actions

        _progress = _actions.on_wait = _Progress()


def _stop_progress() -> None:
    global _progress

    if _progress is not None:
        from . import _actions

        _progress.clear()
        _actions.on_wait = _progress = None


# What the verbose log scrubs from each line, however it got there: JWTs, and runs of 40 or more
# characters that tokens and secrets are made of without a "/" (so paths and URLs stay).
# (Compiled by re when --verbose asks for the log.)
_SECRETISH = r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_.-]*|[A-Za-z0-9+_~.=-]{40,}"


def _verbose() -> Callable[[], None]:
    """Send authlayer's log, from DEBUG up, to standard error: one printable line per record,
    anything shaped like a token or a secret redacted (authlayer never logs one; this is the
    second line of defence). Returns what puts the logger back as it was."""
    import logging

    class Scrubbed(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return _printable(re.sub(_SECRETISH, "[redacted]", super().format(record)))

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Scrubbed("authlayer: %(levelname)s: %(message)s"))
    logger = logging.getLogger("authlayer")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)

    return restore


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run()


def _init_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``authlayer init``."""
    p.add_argument("name", metavar="NAME", help="the new profile's name")
    arg = p.add_argument("--flow", help="how the token is obtained (client_credentials, "
                         "device_code, managed_identity, ...)")
    setattr(arg, "completer", _complete_flows)  # noqa: B010 - argcomplete reads it
    p.add_argument("--tenant", help="tenant GUID or domain")
    p.add_argument("--client-id", help="the application (client) id")
    p.add_argument("--scope", action="append", help="scope (repeat for several)")
    p.add_argument("--authority", help="the identity service's base URL")
    p.add_argument("--secret-env", metavar="NAME",
                   help="client secret from this environment variable")
    p.add_argument("--secret-file", metavar="PATH", help="client secret from this file")
    p.add_argument("--secret-command", metavar="CMD",
                   help="client secret printed by this command (split like a shell would)")
    p.add_argument("--certificate", metavar="PATH",
                   help="certificate file (PEM with its key, or PKCS#12)")
    p.add_argument("--allowed-host", action="append", metavar="HOST",
                   help="a host the token may be sent to (repeat for several)")
    p.add_argument("--cache", choices=("memory", "file"), help="where tokens are kept")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other key; VALUE is a TOML value or else a string")


_VERBOSE_HELP = "show authlayer's log (DEBUG) on standard error; secrets are never shown"


# Every command, in the order --help lists them.
_COMMANDS = ("profiles", "token", "check", "decode", "login", "logout", "init", "completion",
             "emulator", "demo")


def _parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line's parser. With ``command`` (one of :data:`_COMMANDS`), only that
    command is added: the others matter to the top level's --help and its errors, which a
    command given never shows, and adding them costs start-up time of every command."""
    import argparse

    class Formatter(argparse.HelpFormatter):
        """argparse's own, measuring the terminal as it does but without importing shutil
        (which imports bz2 and lzma): argparse makes one for every option it adds."""

        def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                     width: Optional[int] = None, **kwargs: Any) -> None:
            super().__init__(prog, indent_increment, max_help_position,
                             _columns() - 2 if width is None else width, **kwargs)

    class Parser(argparse.ArgumentParser):  # its subcommands' parsers are of its class too
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("formatter_class", Formatter)
            super().__init__(*args, **kwargs)

    def wanted(name: str) -> bool:
        return command not in _COMMANDS or command == name

    verbose = Parser(add_help=False)
    # SUPPRESS: after the command, --verbose must not reset what was given before it.
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help=_VERBOSE_HELP)
    common = Parser(add_help=False, parents=[verbose])
    common.add_argument("--config", metavar="PATH",
                        help="profiles file (default: $AUTHLAYER_CONFIG, else the user config "
                        "folder's authlayer/profiles.toml)")
    with_profile = Parser(add_help=False, parents=[common])
    arg = with_profile.add_argument("profile", metavar="PROFILE", nargs="?",
                                    help="profile name (default: $AUTHLAYER_PROFILE)")
    setattr(arg, "completer", _complete_profiles)  # noqa: B010 - argcomplete reads it
    with_profile.add_argument("--scope", help="override the profile's scope")
    with_profile.add_argument("--tenant", help="override the profile's tenant")
    no_prompt = Parser(add_help=False)
    no_prompt.add_argument("--no-prompt", action="store_true",
                           help="never ask a person to sign in: fail instead (for cron and CI)")

    parser = Parser(
        prog="authlayer", description="Entra ID tokens for scripts, from named profiles.")
    parser.add_argument("--version", action="version", version=f"authlayer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    if wanted("profiles"):
        p = sub.add_parser("profiles", parents=[common], help="list profiles (never secrets)")
        p.set_defaults(func=_cmd_profiles)
    if wanted("token"):
        p = sub.add_parser("token", parents=[with_profile, no_prompt],
                           help="print an access token")
        p.add_argument("--json", action="store_true", help="print JSON with expires_on")
        p.set_defaults(func=_cmd_token)
    if wanted("check"):
        p = sub.add_parser("check", parents=[with_profile, no_prompt],
                           help="validate a profile, show where its secrets come from and where "
                           "its token may go, get a token and show its claims (not the token)")
        p.set_defaults(func=_cmd_check)
    if wanted("decode"):
        p = sub.add_parser("decode", parents=[verbose],
                           help="decode a JWT offline (standard input when no argument)")
        # Accepted so that scripts may pass --config to every command; decoding reads no
        # profile, so it is not advertised.
        p.add_argument("--config", help=argparse.SUPPRESS)
        p.add_argument("token", nargs="?", help="the token (default: read standard input)")
        p.set_defaults(func=_cmd_decode)
    if wanted("login"):
        p = sub.add_parser("login", parents=[with_profile],
                           help="sign in now and keep the tokens")
        p.set_defaults(func=_cmd_login)
    if wanted("logout"):
        p = sub.add_parser("logout", parents=[with_profile], help="forget the cached tokens")
        p.set_defaults(func=_cmd_logout)
    if wanted("init"):
        p = sub.add_parser(
            "init", parents=[common], help="add a commented profile to the profiles file",
            description="Add a commented profile to the profiles file (created 0600, in a "
            "folder created 0700, if there is none). On a terminal, asks for what the options "
            "leave out. Never overwrites a profile. Secrets are never written: name where they "
            "come from.")
        if command in (None, "init"):  # its many options cost start-up time of --help too
            _init_arguments(p)
        p.set_defaults(func=_cmd_init)
    if wanted("completion"):
        p = sub.add_parser(
            "completion", parents=[verbose], help="print shell code for tab completion",
            description="Print the code that makes your shell complete authlayer's commands "
            "and profile names (needs the completion extra: pip install "
            "'authlayer[completion]'). "
            'bash: eval "$(authlayer completion bash)" in ~/.bashrc; zsh: the same in ~/.zshrc; '
            "fish: authlayer completion fish | source, in config.fish.")
        p.add_argument("shell", choices=("bash", "zsh", "fish"))
        p.set_defaults(func=_cmd_completion)
    if wanted("emulator"):
        # Listed for --help; main() hands "emulator ..." to the emulator's own parser.
        sub.add_parser("emulator", help="run the local Entra ID emulator (--port N, --tls)")
    if wanted("demo"):
        p = sub.add_parser("demo", parents=[verbose], help="an offline tour against the emulator")
        p.set_defaults(func=_cmd_demo)
    return parser


# `authlayer token`'s options as its parser has them: those that take a value, and the flags.
_TOKEN_VALUES = {"--config": "config", "--scope": "scope", "--tenant": "tenant"}
_TOKEN_FLAGS = {"--json": "json", "--no-prompt": "no_prompt", "-v": "verbose",
                "--verbose": "verbose"}


def _plain_token(argv: Sequence[str]) -> Optional[SimpleNamespace]:
    """``authlayer token`` as scripts write it (``token NAME`` with options spelt out in full,
    each value a separate word not starting with ``-``), parsed as the parser would parse it
    but without argparse: importing it and building the parser cost a few milliseconds of a
    command that runs often. ``None`` for anything else (``--help``, an abbreviation, ``--``,
    ``--scope=S``, a mistake): the parser handles it, and explains its errors.
    ``tests/test_cli.py`` checks that both parse alike."""
    if argv[:1] != ["token"]:
        return None
    args = SimpleNamespace(command="token", func=_cmd_token, profile=None, config=None,
                           scope=None, tenant=None, json=False, no_prompt=False, verbose=False)
    words = iter(argv[1:])
    for word in words:
        if word in _TOKEN_FLAGS:
            setattr(args, _TOKEN_FLAGS[word], True)
        elif word in _TOKEN_VALUES:
            value = next(words, "-")
            if value.startswith("-"):
                return None
            setattr(args, _TOKEN_VALUES[word], value)
        elif word.startswith("-") or args.profile is not None:
            return None
        else:
            args.profile = word
    return args


_WAITS = frozenset({"token", "check", "login"})  # commands that may wait on the identity service


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:  # the emulator parses its own options
        from .emulator.cli import main as emulator_main

        return emulator_main(argv[1:])
    completing = "_ARGCOMPLETE" in os.environ
    args: Any = None if completing else _plain_token(argv)
    if args is None:
        parser = _parser(None if completing or not argv or argv[0].startswith("-") else argv[0])
        if completing:  # the shell asks for completions (authlayer completion)
            return _complete(parser)
        args = parser.parse_args(argv)
    quiet: Optional[Callable[[], None]] = None
    if args.verbose:
        quiet = _verbose()
    elif args.command in _WAITS:
        _show_progress()
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a failure to write shows here, not at the interpreter's exit
        return code
    except ConfigError as exc:
        _err(f"authlayer: {_message(exc)}")
        return EXIT_USAGE
    except TokenError as exc:
        _err(f"authlayer: {_message(exc)}")
        return EXIT_TOKEN
    except AuthLayerError as exc:
        _err(f"authlayer: {_message(exc)}")
        return EXIT_TOKEN
    except KeyboardInterrupt:
        _err("authlayer: interrupted")
        return 130
    except OutputFailed as exc:
        _drop_stdout()
        if isinstance(exc.error, BrokenPipeError):  # the reader went away (| head): be quiet
            return EXIT_PIPE
        _err(f"authlayer: cannot write to standard output: {exc}")
        return EXIT_TOKEN
    finally:
        _stop_progress()
        if quiet is not None:
            quiet()


def _complete(parser: argparse.ArgumentParser) -> int:
    """Answer the shell's completion request (argcomplete exits the process when it has)."""
    try:
        import argcomplete
    except ImportError:  # completion code from an environment that had it: say nothing
        return EXIT_USAGE
    argcomplete.autocomplete(parser)
    return EXIT_USAGE  # not asked by argcomplete's shell code after all


def _message(error: Exception) -> str:
    """An error's message for the terminal: one line, options named as typed."""
    text = str(error)
    for phrase, option in _OPTION_NAMES:
        text = text.replace(phrase, option)
    return _printable(text)


def _drop_stdout() -> None:
    """Point standard output at the null device: Python flushes it once more at exit, and that
    must not fail (and print a traceback) a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
