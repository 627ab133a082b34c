"""A real redis-server for the tests: started on a free port in a temporary folder, AOF
on (fsync always), restartable on the same port and data. Tests skip with the reason
when no redis-server >= 6.2 (XAUTOCLAIM) is installed."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

MIN_VERSION = (6, 2)


def redis_server_or_skip() -> str:
    """The redis-server binary; skip (fail under STYLEBOT_REQUIRE_REDIS=1, as in CI) if none."""
    give_up = pytest.fail if os.environ.get("STYLEBOT_REQUIRE_REDIS") else pytest.skip
    path = shutil.which("redis-server")
    if path is None:
        give_up("no redis-server on PATH (apt-get install redis-server; .ci/run does)")
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"v=(\d+)\.(\d+)", out)
    if not found or tuple(map(int, found.groups())) < MIN_VERSION:
        give_up(f"redis-server >= 6.2 needed for XAUTOCLAIM (found: {out.strip()})")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, binary: str, folder: Path) -> None:
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
