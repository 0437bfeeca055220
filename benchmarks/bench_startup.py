"""Start-up benchmark: what a fresh process pays before it can print a cached token.

Run: ``python benchmarks/bench_startup.py`` (``--runs N``, default 21). Measures, in one run,
the median wall time of N fresh processes of each:

* ``python -c pass`` (the baseline: a bare interpreter start, with ``site``);
* ``python -c "import authlayer"``;
* ``authlayer token PROFILE`` (the console script next to this Python, else
  ``python -m authlayer``) with a warm file cache (the token was fetched once
  before, so the command sends nothing), against the emulator on loopback;

and prints each as milliseconds and as a ratio to the bare start of the same run. The runs of
the three commands alternate, so the machine's noise hits them alike. Offline: the emulator
listens on loopback only, and is asked for a token once (the warm-up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(argv: list[str], env: dict[str, str]) -> float:
    """Seconds for one fresh process to run ``argv`` to completion (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="processes per command (21)")
    args = parser.parse_args()

    from authlayer.emulator import Emulator

    with Emulator() as emu, tempfile.TemporaryDirectory(prefix="authlayer-bench-") as folder:
        app = emu.register_app(secret="bench-startup-secret")
        config = Path(folder) / "profiles.toml"
        config.write_text(
            "[profiles.bench]\n"
            'flow = "client_credentials"\n'
            f'authority = "{emu.url}"\n'
            f'tenant = "{emu.tenant_id}"\n'
            f'client_id = "{app.client_id}"\n'
            'client_secret = "bench-startup-secret"\n'
            f'scope = "{emu.api_scope}"\n'
            'cache = "file"\n',
            encoding="utf-8",
        )
        env = dict(os.environ, AUTHLAYER_CONFIG=str(config),
                   AUTHLAYER_CACHE_DIR=str(Path(folder) / "cache"))
        # Compiled bytecode as an installed package has it (pip compiles it), kept out of the
        # source tree; a bytecode-less run would time the compiler, not authlayer.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(folder) / "pycache")
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                     "all_proxy"):
            env.pop(name, None)
        py = sys.executable
        script = Path(py).parent / "authlayer"  # the installed console script, if any
        token = [str(script)] if script.exists() else [py, "-m", "authlayer"]
        commands = {
            "python -c pass": [py, "-c", "pass"],
            "import authlayer": [py, "-c", "import authlayer"],
            "authlayer token (warm file cache)": [*token, "token", "bench"],
        }
        for argv in commands.values():  # warm-up: fills the token cache and the OS's caches
            wall(argv, env)
        asked = emu.count("token")
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                times[name].append(wall(argv, env))
        if emu.count("token") != asked:
            print("error: the warm runs asked the emulator for a token", file=sys.stderr)
            return 1

    base = statistics.median(times["python -c pass"])
    print(f"Python {sys.version.split()[0]}, median of {args.runs} fresh processes each")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<36} {median * 1000:7.1f} ms  {median / base:5.2f}x bare start")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
