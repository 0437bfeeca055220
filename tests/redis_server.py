"""Real ``redis-server`` processes for the fleet cache tests: each on a free loopback port, in
its own folder, started, stopped, restarted (on the same port), paused (SIGSTOP: a Redis that
answers nothing) and resumed at will. Without ``redis-server`` on ``PATH`` the tests that need one
skip, unless ``AUTHLAYER_REQUIRE_REDIS=1`` (set by ``.ci/run``): then they fail."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

from authlayer.emulator.tls import TLSFiles, make_tls_files

REQUIRE = "AUTHLAYER_REQUIRE_REDIS"


def redis_server_path() -> str:
    """``redis-server`` from PATH; else skip (or fail when Redis is required)."""
    found = shutil.which("redis-server")
    if found is None:
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"redis-server is not on PATH and {REQUIRE}=1")
        pytest.skip("redis-server is not on PATH (install Redis to run the fleet cache tests)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server on 127.0.0.1 (``url``), with no persistence."""

    def __init__(self, folder: Path, *, password: Optional[str] = None, tls: bool = False) -> None:
        self.binary = redis_server_path()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.port = free_port()
        self.tls: Optional[TLSFiles] = make_tls_files(folder) if tls else None
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.log = folder / "redis.log"

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        query = f"?ssl_ca_certs={self.tls.ca_file}" if self.tls else ""
        return f"{scheme}://127.0.0.1:{self.port}/0{query}"

    def argv(self) -> list[str]:
        argv = [self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.folder), "--logfile", str(self.log)]
        if self.tls:
            argv += ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", str(self.tls.cert_file),
                     "--tls-key-file", str(self.tls.key_file),
                     "--tls-ca-cert-file", str(self.tls.ca_file), "--tls-auth-clients", "no"]
        else:
            argv += ["--port", str(self.port)]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server stopped at start: {self.log.read_text()[-500:]}"
                                   if self.log.exists() else "redis-server stopped at start")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start listening")

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGCONT)
                self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def client(self) -> object:
        import redis

        return redis.Redis.from_url(self.url, password=self.password, socket_timeout=5)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
