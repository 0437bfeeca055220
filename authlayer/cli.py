"""The ``authlayer`` command (also ``python -m authlayer``).

Each subcommand is a small function over the library's public API. Exit status: 0 success,
1 token error, 2 configuration or usage error. Errors are one line on standard error, never a
traceback. Only ``authlayer token`` prints a token, on standard output; sign-in instructions go
to standard error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from typing import Any, Optional

from . import __version__
from .errors import AuthLayerError, ConfigError, TokenError

__all__ = ["main"]

EXIT_OK, EXIT_TOKEN, EXIT_USAGE = 0, 1, 2


def _when(timestamp: Any) -> str:
    if not isinstance(timestamp, (int, float)):
        return "?"
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _cmd_profiles(args: argparse.Namespace) -> int:
    from .config import config_path, load_profile, profile_names

    names = profile_names(args.config)
    if not names:
        print(f"no profiles in {config_path(args.config)}", file=sys.stderr)
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
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    for error in broken:
        print(f"authlayer: {error}", file=sys.stderr)
    return EXIT_USAGE if broken else EXIT_OK


def _cmd_token(args: argparse.Namespace) -> int:
    from .provider import PROVIDER

    binding = PROVIDER.bind(args.profile, config=args.config, scope=args.scope,
                            tenant=args.tenant)
    token = PROVIDER.get(binding, interactive=not args.no_prompt).token
    if args.json:
        print(json.dumps({"access_token": token.token, "expires_on": token.expires_on,
                          "token_type": token.token_type}))
    else:
        print(token.token)
    return EXIT_OK


def _summary(claims: dict[str, Any]) -> list[tuple[str, str]]:
    """The claims a person checks first, in a fixed order."""
    rows = [
        ("audience", claims.get("aud")),
        ("tenant", claims.get("tid")),
        ("app id", claims.get("appid") or claims.get("azp")),
        ("subject", claims.get("upn") or claims.get("preferred_username")
         or claims.get("unique_name") or claims.get("oid")),
        ("roles", " ".join(claims["roles"]) if isinstance(claims.get("roles"), list) else None),
        ("scopes", claims.get("scp")),
        ("issued", _when(claims.get("iat")) if "iat" in claims else None),
        ("expires", _when(claims.get("exp")) if "exp" in claims else None),
    ]
    return [(k, str(v)) for k, v in rows if v]


def _cmd_check(args: argparse.Namespace) -> int:
    from . import jwt
    from .provider import PROVIDER

    binding = PROVIDER.bind(args.profile, config=args.config, scope=args.scope,
                            tenant=args.tenant)
    profile = binding.profile
    print(f"profile {profile.name!r}: flow {profile.flow}, configuration is valid")
    entry = PROVIDER.get(binding, interactive=not args.no_prompt)
    print(f"token obtained (expires {_when(entry.token.expires_on)})")
    try:
        _header, claims = jwt.decode(entry.token.token)
    except jwt.JWTError:
        print("the token is not a JWT (opaque token); nothing to decode")
        return EXIT_OK
    for key, value in _summary(claims):
        print(f"  {key:<9} {value}")
    return EXIT_OK


def _cmd_decode(args: argparse.Namespace) -> int:
    from . import jwt

    text = args.token if args.token is not None else sys.stdin.read()
    text = text.strip()
    if text.lower().startswith("bearer "):
        text = text[7:].strip()
    try:
        header, claims = jwt.decode(text)
    except jwt.JWTError as exc:
        raise ConfigError(f"cannot decode the token: {exc}") from None
    print(json.dumps({"header": header, "claims": claims}, indent=2, sort_keys=True))
    for key, value in _summary(claims):
        print(f"{key}: {value}", file=sys.stderr)
    return EXIT_OK


def _cmd_login(args: argparse.Namespace) -> int:
    from .provider import PROVIDER

    binding = PROVIDER.bind(args.profile, config=args.config, scope=args.scope,
                            tenant=args.tenant)
    # Sign in anew (perhaps as someone else), even when a refresh token is kept; the kept
    # sign-in is replaced only if this one succeeds.
    entry = PROVIDER.login(binding)
    where = "the token cache file" if binding.profile.cache == "file" else "memory only"
    print(f"signed in with profile {binding.profile.name!r}; token valid until "
          f"{_when(entry.token.expires_on)} (kept in {where})", file=sys.stderr)
    return EXIT_OK


def _cmd_logout(args: argparse.Namespace) -> int:
    from .provider import PROVIDER

    binding = PROVIDER.bind(args.profile, config=args.config, scope=args.scope,
                            tenant=args.tenant)
    PROVIDER.forget(binding)
    print(f"forgot the cached tokens of profile {binding.profile.name!r}", file=sys.stderr)
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
    with_profile.add_argument("profile", metavar="PROFILE", help="profile name")
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
    p = sub.add_parser("decode", parents=[common],
                       help="decode a JWT offline (standard input when no argument)")
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
        return int(args.func(args))
    except ConfigError as exc:
        print(f"authlayer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TokenError as exc:
        print(f"authlayer: {exc}", file=sys.stderr)
        return EXIT_TOKEN
    except AuthLayerError as exc:
        print(f"authlayer: {exc}", file=sys.stderr)
        return EXIT_TOKEN
    except KeyboardInterrupt:
        print("authlayer: interrupted", file=sys.stderr)
        return 130
