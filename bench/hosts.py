"""The multi-host drill's machinery: replica "hosts" as network namespaces on one bridge, PostgreSQL reached
through an address of its own (so one host can be cut off from it), HAProxy in front, and Prometheus scraping
every host with the alert rules users deploy. Needs root (ip netns, nft) and Debian's haproxy, prometheus and
nftables.
"""

from __future__ import annotations

import csv
import io
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.multihost_report import AlertEvent

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "teaming-rules.yaml"
BRIDGE = "tmdrill0"
GATEWAY = "10.77.0.1"  # the root namespace: HAProxy's front door and Prometheus
DB_ADDR = "10.77.0.2"  # PostgreSQL, as the hosts reach it
PORT = 3000


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@dataclass
class Host:
    """One replica host: a network namespace with its own address."""

    name: str
    addr: str

    @property
    def exec(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    @property
    def target(self) -> str:
        return f"{self.addr}:{PORT}"

    def pids(self) -> list[int]:
        return [int(p) for p in sh("ip", "netns", "pids", self.name).split()]

    def cut_from_db(self) -> None:
        """Drop every packet this host sends to PostgreSQL, silently, as a partition does (no reset, no refusal)."""
        nft = [*self.exec, "nft"]
        sh(*nft, "add", "table", "inet", "drill")
        sh(*nft, "add", "chain", "inet", "drill", "out", "{ type filter hook output priority 0; }")
        sh(*nft, "add", "rule", "inet", "drill", "out", "ip", "daddr", DB_ADDR, "drop")

    def mend(self) -> None:
        sh(*self.exec, "nft", "delete", "table", "inet", "drill")


class Network:
    """`n` hosts 10.77.0.11.. on a bridge whose root side holds the gateway and PostgreSQL's address."""

    def __init__(self, n: int = 3) -> None:
        self.hosts = [Host(f"tmdrill-h{k}", f"10.77.0.{10 + k}") for k in range(1, n + 1)]

    def __enter__(self) -> "Network":
        self.teardown()
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        for addr in (GATEWAY, DB_ADDR):
            sh("ip", "addr", "add", f"{addr}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        for k, h in enumerate(self.hosts, 1):
            sh("ip", "netns", "add", h.name)
            sh("ip", "link", "add", f"tmdrill-v{k}", "type", "veth", "peer", "name", "eth0", "netns", h.name)
            sh("ip", "link", "set", f"tmdrill-v{k}", "master", BRIDGE, "up")
            sh(*h.exec, "ip", "addr", "add", f"{h.addr}/24", "dev", "eth0")
            sh(*h.exec, "ip", "link", "set", "eth0", "up")
            sh(*h.exec, "ip", "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    def teardown(self) -> None:
        for h in self.hosts:
            subprocess.run(["ip", "netns", "del", h.name], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


HAPROXY = """\
global
    stats socket {sock} mode 600 level admin
defaults
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 2s
frontend web
    mode http
    bind {gateway}:{port}
    default_backend teaming
backend teaming
    mode http
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    retries 2
    option redispatch
    retry-on conn-failure empty-response
    default-server inter 1s fall 2 rise 2
{servers}
listen postgres
    mode tcp
    bind {db}:5432
    timeout client 1h
    timeout server 1h
    server pg 127.0.0.1:5432
"""


class HAProxy:
    """HAProxy in front of the hosts (health-checked on /readyz), and the TCP path from the hosts to PostgreSQL."""

    def __init__(self, hosts: list[Host], tmp: Path, port: int = 8080) -> None:
        self.sock = tmp / "haproxy.sock"
        self.url = f"http://{GATEWAY}:{port}"
        servers = "\n".join(f"    server {h.name} {h.target} check" for h in hosts)
        self.config = tmp / "haproxy.cfg"
        self.config.write_text(HAPROXY.format(sock=self.sock, gateway=GATEWAY, port=port, servers=servers, db=DB_ADDR))
        self.log = open(tmp / "haproxy.log", "w")
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        _wait(lambda: self.sock.exists(), "haproxy's stats socket")

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.sock))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict]:
        """The backend's servers as HAProxy sees them: status (UP, DOWN, MAINT, DRAIN...), current sessions."""
        rows = csv.DictReader(io.StringIO(self.command("show stat").lstrip("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] == "teaming" and r["svname"] not in ("FRONTEND", "BACKEND")}

    def set_state(self, host: Host, state: str) -> None:
        self.command(f"set server teaming/{host.name} state {state}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


PROMETHEUS = """\
global:
  scrape_interval: 5s
  scrape_timeout: 4s
  evaluation_interval: 5s
rule_files: [{rules}]
scrape_configs:
  - job_name: teaming
    static_configs:
      - targets: [{targets}]
"""


@dataclass
class Prometheus:
    """Prometheus scraping every host every 5 s (a 1 s scrape timed out on a busy 2-core host and read as down),
    evaluating the deployed rules file as it is."""

    hosts: list[Host]
    tmp: Path
    port: int = 9099
    events: list[AlertEvent] = field(default_factory=list)

    def start(self) -> "Prometheus":
        shutil.copy(RULES, self.tmp / "rules.yaml")
        config = self.tmp / "prometheus.yml"
        targets = ", ".join(f"'{h.target}'" for h in self.hosts)
        config.write_text(PROMETHEUS.format(rules=self.tmp / "rules.yaml", targets=targets))
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.tmp / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={self.tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],  # fmt: skip
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        _wait(lambda: httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200, "prometheus")
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._poll, daemon=True)
        self._watch.start()
        return self

    def _poll(self) -> None:
        """Every second, note each alert's change of state (pending, firing, gone)."""
        seen: dict[tuple[str, str], str] = {}
        while not self._stop.wait(1.0):
            try:
                alerts = httpx.get(f"{self.url}/api/v1/alerts", timeout=2).json()["data"]["alerts"]
            except httpx.HTTPError:
                continue
            now = {(a["labels"]["alertname"], _subject(a["labels"])): a["state"] for a in alerts}
            for key in seen.keys() - now.keys():
                self.events.append(AlertEvent(time.time(), *key, "resolved"))
            for key, state in now.items():
                if seen.get(key) != state:
                    self.events.append(AlertEvent(time.time(), *key, state))
            seen = now

    def query(self, expr: str) -> list[dict]:
        return httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()["data"]["result"]

    def stop(self) -> None:
        self._stop.set()
        self._watch.join()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def _subject(labels: dict[str, str]) -> str:
    """What an alert is about: the replica (its instance) or the loop's alarm (its name)."""
    return labels.get("instance") or labels.get("name", "")


def _wait(ok, what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if ok():
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up in {timeout:.0f} s")
