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
are imported inside the commands that need them, and a token served from the cache imports no
HTTP client.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, Optional

from . import __version__
from .errors import AuthLayerError, ConfigError, TokenError

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
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except OSError as exc:
        raise OutputFailed(exc) from None


def _err(text: str) -> None:
    """Print a line on standard error; if even that fails, there is nobody left to tell."""
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
    from .config import config_path, load_profile, profile_names

    names = profile_names(args.config)
    if not names:
        _err(f"no profiles in {_printable(str(config_path(args.config)))}")
        return EXIT_OK
    rows = [("PROFILE", "FLOW", "TENANT", "CLIENT ID", "SCOPE")]
    broken: list[ConfigError] = []
    for name in names:
        try:
            p = load_profile(name, config=args.config)
        except ConfigError as exc:
            broken.append(exc)
            rows.append((name, "(invalid: see below)", "-", "-", "-"))
            continue
        rows.append((name, p.flow, p.tenant or "-", p.client_id or "-", p.scope))
    shown = [[_printable(cell) for cell in row] for row in rows]
    widths = [max(len(r[i]) for r in shown) for i in range(4)]
    for row in shown:
        out("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    for error in broken:
        _err(f"authlayer: {_message(error)}")
    return EXIT_USAGE if broken else EXIT_OK


def _bind(args: argparse.Namespace) -> Any:
    """The profile named on the command line (else ``$AUTHLAYER_PROFILE``) with its overrides."""
    from .provider import PROVIDER

    if args.profile is None and not os.environ.get("AUTHLAYER_PROFILE"):
        raise ConfigError(f"no profile given: name one (authlayer {args.command} PROFILE) or "
                          "set $AUTHLAYER_PROFILE")
    return PROVIDER.bind(args.profile, config=args.config, scope=args.scope, tenant=args.tenant)


def _cmd_token(args: argparse.Namespace) -> int:
    from .provider import PROVIDER

    binding = _bind(args)
    token = PROVIDER.get(binding, interactive=not args.no_prompt).token
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
    from .provider import PROVIDER

    binding = _bind(args)
    profile = binding.profile
    out(f"profile {_printable(repr(profile.name))}: flow {profile.flow}, "
         "configuration is valid")
    entry = PROVIDER.get(binding, interactive=not args.no_prompt)
    out(f"token obtained (expires {_when(entry.token.expires_on)})")
    try:
        _header, claims = jwt.decode(entry.token.token)
    except (jwt.JWTError, RecursionError):
        out("the token is not a JWT that can be shown (opaque token); nothing to decode")
        return EXIT_OK
    for key, value in _summary(claims):
        out(f"  {key:<9} {value}")
    return EXIT_OK


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
    from .provider import PROVIDER

    binding = _bind(args)
    # Sign in anew (perhaps as someone else), even when a refresh token is kept; the kept
    # sign-in is replaced only if this one succeeds.
    entry = PROVIDER.login(binding)
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
    prefix = binding.account_key + "|"
    kept = any(k == binding.key or k.startswith(prefix) for k in list(PROVIDER.entries)) or (
        PROVIDER.store_for(binding.profile).load(binding.key, binding.account_key) is not None)
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run()


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH",
                        help="profiles file (default: $AUTHLAYER_CONFIG, else the user config "
                        "folder's authlayer/profiles.toml)")
    with_profile = argparse.ArgumentParser(add_help=False, parents=[common])
    with_profile.add_argument("profile", metavar="PROFILE", nargs="?",
                              help="profile name (default: $AUTHLAYER_PROFILE)")
    with_profile.add_argument("--scope", help="override the profile's scope")
    with_profile.add_argument("--tenant", help="override the profile's tenant")
    no_prompt = argparse.ArgumentParser(add_help=False)
    no_prompt.add_argument("--no-prompt", action="store_true",
                           help="never ask a person to sign in: fail instead (for cron and CI)")

    parser = argparse.ArgumentParser(
        prog="authlayer", description="Entra ID tokens for scripts, from named profiles.")
    parser.add_argument("--version", action="version", version=f"authlayer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("profiles", parents=[common], help="list profiles (never secrets)")
    p.set_defaults(func=_cmd_profiles)
    p = sub.add_parser("token", parents=[with_profile, no_prompt],
                       help="print an access token")
    p.add_argument("--json", action="store_true", help="print JSON with expires_on")
    p.set_defaults(func=_cmd_token)
    p = sub.add_parser("check", parents=[with_profile, no_prompt],
                       help="validate a profile, get a token and show its claims (not the token)")
    p.set_defaults(func=_cmd_check)
    p = sub.add_parser("decode",
                       help="decode a JWT offline (standard input when no argument)")
    # Accepted so that scripts may pass --config to every command; decoding reads no profile,
    # so it is not advertised.
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("token", nargs="?", help="the token (default: read standard input)")
    p.set_defaults(func=_cmd_decode)
    p = sub.add_parser("login", parents=[with_profile], help="sign in now and keep the tokens")
    p.set_defaults(func=_cmd_login)
    p = sub.add_parser("logout", parents=[with_profile], help="forget the cached tokens")
    p.set_defaults(func=_cmd_logout)
    # Listed for --help; main() hands "emulator ..." to the emulator's own parser.
    sub.add_parser("emulator", help="run the local Entra ID emulator (--port N, --tls)")
    p = sub.add_parser("demo", help="an offline tour against the emulator")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:  # the emulator parses its own options
        from .emulator.cli import main as emulator_main

        return emulator_main(argv[1:])
    args = _parser().parse_args(argv)
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
