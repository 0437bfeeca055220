"""Chain benchmark: what a chain costs (CONTRACT §8).

Run: ``python benchmarks/bench_chain.py``. Against a local emulator, it times:

* binding a chain whose ``managed_identity`` member is skipped, with nothing listening at the
  IMDS address (connection refused: decided at once) and with a listener that accepts and never
  answers (the probe's deadline: at most about a second), then its ``app`` member used;
* a cached ``get_token`` through the chain next to one of the member by its own name (the
  chain is its member: the same hot path).

IMDS is pointed at loopback (``AZURE_POD_IDENTITY_AUTHORITY_HOST``): never 169.254.169.254.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from pathlib import Path

from bench_hot_path import per_call  # run as a script: benchmarks/ is on sys.path

import authlayer
from authlayer import get_token
from authlayer.emulator import Emulator
from authlayer.flows import managed_identity
from authlayer.provider import PROVIDER


def _profiles(emu: Emulator, folder: Path) -> None:
    app = emu.register_app(secret="bench-secret-value")
    path = folder / "profiles.toml"
    path.write_text(f"""
[profiles.c]
flow = "chain"
chain = ["vm", "app"]
scope = "{emu.api_scope}"

[profiles.vm]
flow = "managed_identity"

[profiles.app]
flow = "client_credentials"
authority = "{emu.url}"
tenant = "{emu.tenant_id}"
client_id = "{app.client_id}"
client_secret = "bench-secret-value"
""")
    os.environ["AUTHLAYER_CONFIG"] = str(path)


def _bind_time(host: str) -> float:
    os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = host
    authlayer.reset()
    managed_identity._answered.clear()
    start = time.perf_counter()
    binding = PROVIDER.bind("c")
    assert binding.base.name == "app"
    return time.perf_counter() - start


def main() -> None:
    os.environ["AUTHLAYER_CACHE_DIR"] = tempfile.mkdtemp()
    with Emulator() as emu, tempfile.TemporaryDirectory() as folder:
        _profiles(emu, Path(folder))
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        _bind_time(f"127.0.0.1:{port}")  # imports and first reads out of the way
        print(f"bind, IMDS refused:        {_bind_time(f'127.0.0.1:{port}') * 1000:8.1f} ms")
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        held: list[socket.socket] = []
        threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
        print(f"bind, IMDS never answers:  "
              f"{_bind_time(f'127.0.0.1:{silent.getsockname()[1]}') * 1000:8.1f} ms")
        silent.close()
        get_token("c")
        get_token("app", scope=emu.api_scope)
        chain = per_call(lambda: get_token("c"), 200_000)
        member = per_call(lambda: get_token("app", scope=emu.api_scope), 200_000)
        print(f"cached get_token, chain:   {chain * 1e9:8.0f} ns")
        print(f"cached get_token, member:  {member * 1e9:8.0f} ns")


if __name__ == "__main__":
    main()
