"""A process of a fleet, for the fleet cache tests: ``python -m tests.fleet_worker PROFILE
--threads N [--go FILE] [--then FILE] [--scope S]``. It loads authlayer, says ``ready`` on
standard output, waits for ``--go`` to exist (so that every process of a stampede starts at
once), gets a token from N threads at once, and prints one JSON line: the tokens its threads
got. With ``--then``, it waits for that file, moves its provider's clock on by the seconds the
file holds (if any: instead of the test sleeping until the token is due), and gets the token
again until it changes (a refresh ahead of expiry landed), then prints a second line. A sign-in
prompt ends it with status 3: the fleet must share a person's sign-in, not ask again. ``--grace
S`` sets this process's ``FLEET_GRACE`` (how much longer than the profile's timeout it waits for
another process's lock)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path


def wait_for(path: str) -> None:
    while not Path(path).exists():
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--go")
    parser.add_argument("--then")
    parser.add_argument("--scope")
    parser.add_argument("--grace", type=float)
    args = parser.parse_args()

    from authlayer import get_token, provider
    from authlayer.provider import PROVIDER

    if args.grace is not None:
        provider.FLEET_GRACE = args.grace

    def no_prompt(message: str) -> None:
        print("asked to sign in", file=sys.stderr, flush=True)
        os._exit(3)

    print("ready", flush=True)
    if args.go:
        wait_for(args.go)
    got: list[str] = []
    failed: list[str] = []

    def one() -> None:
        try:
            got.append(get_token(args.profile, scope=args.scope, prompt=no_prompt).token)
        except Exception as exc:
            failed.append(type(exc).__name__)

    threads = [threading.Thread(target=one) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"tokens": got, "failed": failed}), flush=True)
    if args.then:
        wait_for(args.then)
        later = float(Path(args.then).read_text() or 0)
        PROVIDER.clock = lambda: time.time() + later
        first = got[0] if got else None
        deadline = time.monotonic() + 60
        token = first
        while token == first and time.monotonic() < deadline:
            token = get_token(args.profile, scope=args.scope, prompt=no_prompt).token
            time.sleep(0.01)
        PROVIDER.join_background(timeout=30)
        print(json.dumps({"tokens": [token], "failed": []}), flush=True)


if __name__ == "__main__":
    main()
