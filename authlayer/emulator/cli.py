"""The emulator's command line: ``python -m authlayer.emulator`` and ``authlayer emulator``.

Starts an emulator in the foreground, registers one demo app and one public app, prints what
a script needs to use them (authority, tenant, client id, secret, API scope and ready profiles)
and serves until Ctrl-C. The demo secret is a throwaway emulator secret, so it is printed; to
choose it instead, set ``AUTHLAYER_EMULATOR_SECRET`` (then it is not printed).

People sign in through the emulator's pages (``/devicelogin``, the authorize page); ``--user``
adds people, and ``--auto-approve`` signs the first of them in without a page, for scripted
runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import uuid
from types import FrameType
from typing import Optional

from ..hosts import is_loopback
from .server import Emulator

__all__ = ["DEFAULT_PORT", "SECRET_ENV", "main"]

DEFAULT_PORT = 8400
SECRET_ENV = "AUTHLAYER_EMULATOR_SECRET"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authlayer emulator",
        description="Run a local Entra ID emulator on loopback, for testing scripts offline.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on ({DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a throwaway CA")
    parser.add_argument("--client-id", help="the demo app's client id (random by default)")
    parser.add_argument("--tenant-id", help="the default tenant's GUID (random by default)")
    parser.add_argument("--user", action="append", default=[], metavar="NAME",
                        help="add a person who can sign in (repeatable; a name without @ gets "
                             "the tenant's domain)")
    parser.add_argument("--auto-approve", action="store_true",
                        help="sign the first --user in at once, without the sign-in pages")
    return parser


def _problem(args: argparse.Namespace) -> Optional[str]:
    """What is wrong with the options, in one line (``None``: nothing)."""
    if not is_loopback(args.host):
        return f"{args.host} is not a loopback address"
    if not 0 <= args.port <= 65535:
        return f"--port must be between 0 and 65535 (0 picks a free port), not {args.port}"
    if args.tenant_id is not None:
        try:
            uuid.UUID(args.tenant_id)
        except ValueError:
            return ("--tenant-id must be a GUID, like 72f988bf-86f1-41af-91ab-2d7cd011db47, "
                    f"not {args.tenant_id!r}")
    if args.auto_approve and not args.user:
        return "--auto-approve needs --user NAME: the person who signs in"
    for name in args.user:
        if not name.strip() or any(c.isspace() for c in name.strip()):
            return f"--user needs a user name like alice@contoso.onmicrosoft.com, not {name!r}"
    return None


def _people(emu: Emulator, names: list[str], auto_approve: bool) -> list[str]:
    """Add the ``--user`` people; set up the sign-in pages (or ``--auto-approve``)."""
    from .authorize import authorize_controls
    from .device import device_codes
    from .users import sign_in_person

    ref = emu.state.resolve_tenant(emu.tenant_id)
    people = [sign_in_person(emu, ref, name).username for name in names]
    if auto_approve:
        device_codes(emu).auto_approve = people[0]
        authorize_controls(emu).sign_in_as(people[0])
    else:
        authorize_controls(emu).interactive = True
    return people


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    """Run the emulator until Ctrl-C (or SIGTERM). Returns the exit status."""
    args = _parser().parse_args(argv)
    problem = _problem(args)
    if problem is not None:
        print(f"authlayer emulator: {problem}", file=sys.stderr)
        return 2
    try:
        emu = Emulator(args.host, args.port, args.tls, tenant_id=args.tenant_id)
    except ValueError as exc:
        print(f"authlayer emulator: {exc}", file=sys.stderr)
        return 2
    emu.max_requests = 1000  # a long-running emulator must not keep every request
    try:
        emu.start()
    except OSError as exc:
        print(f"authlayer emulator: cannot listen on {args.host} port {args.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        env_secret = os.environ.get(SECRET_ENV)
        app = emu.register_app(args.client_id, secret=env_secret or None)
        public = emu.register_app(public=True)
        people = _people(emu, args.user, args.auto_approve)
        shown = f"${SECRET_ENV}" if env_secret else str(app.secret)
        lines = [
            f"authlayer emulator listening on {emu.url}",
            f"  authority   {emu.url}",
            f"  tenant      {emu.tenant_id} ({emu.tenant_domain})",
            f"  client id   {app.client_id}",
            f"  secret      {shown}" + ("" if env_secret else "   (throwaway emulator secret)"),
            f"  api scope   {emu.api_scope}",
            f"  public app  {public.client_id}   (for people signing in)",
            f"  people      {', '.join(people) or '(none yet: type any name on the pages)'}",
            f"  sign in at  {emu.url}/devicelogin"
            + ("   (--auto-approve: no page needed)" if args.auto_approve else ""),
        ]
        if emu.ca_file:
            lines.append(f"  ca file     {emu.ca_file}   (trust it: SSL_CERT_FILE / "
                         "REQUESTS_CA_BUNDLE)")
        lines += [
            "",
            "A profile for it (profiles.toml):",
            "",
            "[profiles.emulator]",
            'flow = "client_credentials"',
            f'authority = "{emu.url}"',
            f'tenant = "{emu.tenant_id}"',
            f'client_id = "{app.client_id}"',
            (f'client_secret = {{ env = "{SECRET_ENV}" }}' if env_secret
             else f'client_secret = "{app.secret}"   # throwaway emulator secret'),
            f'scope = "{emu.api_scope}"',
            "",
            "A profile that signs a person in (authlayer login emulator-me):",
            "",
            "[profiles.emulator-me]",
            'flow = "device_code"        # or "authorization_code": sign in in the browser',
            f'authority = "{emu.url}"',
            f'tenant = "{emu.tenant_id}"',
            f'client_id = "{public.client_id}"',
            f'scope = "{emu.api_scope}"',
            "",
            "Press Ctrl-C to stop.",
        ]
        print("\n".join(lines), flush=True)
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
        forever = threading.Event()
        try:
            while not forever.wait(0.5):  # a timed wait lets Ctrl-C through everywhere
                pass
        except KeyboardInterrupt:
            pass
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    finally:
        emu.stop()
    print("authlayer emulator stopped", file=sys.stderr, flush=True)
    return 0
