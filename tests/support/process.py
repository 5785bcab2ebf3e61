"""Run the service as a child process on a free loopback port: the harness of tests, benchmarks and fault drills."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
# BentoML's default of 5 s closes idle connections while busy clients still reuse them: at 256 clients, 7 of
# 3,566 requests got no answer (ReadError); with 75 s, 0 of 3,783 (BENCHMARKS.md, serving).
KEEP_ALIVE_SECONDS = 75


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """`bentoml serve service.app:Teaming` with TEAMING_* settings in `env`; logs to `log_path`.

    `tree` is the checkout to serve from (this one by default; an older commit's worktree for before/after benches).
    `host` is the address to bind and `prefix` the command that runs it there (`ip netns exec <ns>` in the
    multi-host drill).
    """

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        port: int | None = None,
        keep_alive: int = KEEP_ALIVE_SECONDS,
        tree: Path = ROOT,
        host: str = "127.0.0.1",
        prefix: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.host, self.prefix = host, list(prefix)
        self.keep_alive = keep_alive
        self.tree = tree
        self.url = f"http://{host}:{self.port}"
        self.env = {**os.environ, **env}
        if tree != ROOT:  # its own teaming/ and service/ first, not this checkout's installed library
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), self.env.get("PYTHONPATH")]))
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180, ready_path: str = "/readyz") -> "ServiceProcess":
        """Start it and wait until `ready_path` answers 200 (/livez for a service that is up but not ready)."""
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "bentoml",
                "serve",
                "service.app:Teaming",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--timeout-keep-alive",
                str(self.keep_alive),
            ],
            cwd=self.tree,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}{ready_path}", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"service not ready after {timeout:.0f} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the arbiter and every worker at once: no cleanup, as when a machine dies.

        BentoML's workers run in sessions of their own, so the process tree is walked, not the group.
        """
        procs = self._tree()
        for p in procs:
            p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=30)
        self.proc.wait(timeout=30)
        self.log.close()

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL whatever is left of the tree."""
        procs = self._tree()
        self.proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for p in alive:
            p.kill()
        psutil.wait_procs(alive, timeout=10)
        self.proc.wait(timeout=10)
        self.log.close()

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
