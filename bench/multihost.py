"""The multi-host drill: three replica hosts (network namespaces) on one PostgreSQL, HAProxy in front checking
/readyz, Prometheus scraping all three with the deployed alert rules, callers and three reviewers working through
HAProxy. Events, one after another: every process of one host SIGKILLed; one host cut off from PostgreSQL; all
three rolled, one at a time, to a new commit that carries an alembic migration (`teaming migrate` first, as the
migrate Job does). Afterwards the log is checked for every decision and answer a client was told about.
Root only. Usage: sudo .venv/bin/python -m bench.multihost [--hold 150] [--steady 60] [--rate 20]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import select

from bench.hosts import DB_ADDR, PORT, ROOT, RULES, HAProxy, Host, Network, Prometheus
from bench.multihost_report import Event, Request, alert_verdicts, pending_only, rule_waits, window_figures
from teaming.client import ApiError, TeamingClient
from teaming.datasets import default_test_jpegs, load_default_test
from teaming.ops.schema import current_revision, decisions, head_revision, reviews, tasks
from teaming.ops.store import connect
from tests.support.common import drop_postgres, scratch_postgres
from tests.support.faults import Workers
from tests.support.process import ServiceProcess

# the README's team: three reviewers, an admin and a caller
REVIEWERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
ENV = {
    "TEAMING_REVIEWER_TOKENS": ",".join(f"{k}:{v}" for k, v in REVIEWERS.items()),
    "TEAMING_ADMIN_TOKEN": "admin-secret",
    "TEAMING_CLASSIFY_TOKEN": "caller-secret",
    "TEAMING_AUDIT_RATE": "0.05",
    "TEAMING_LEASE_SECONDS": "30",  # a lease lost with a dead host comes round within the drill
}


@dataclass
class Drill:
    """What the drill runs and what it has seen."""

    net: Network
    proxy: HAProxy
    db: str  # as the hosts reach it, through DB_ADDR
    tmp: Path
    replicas: dict[str, ServiceProcess] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    def start(self, host: Host, tree: Path = ROOT) -> None:
        env = {**ENV, "TEAMING_DB_URL": self.db, "BENTOML_HOME": str(self.tmp / f"bentoml-{host.name}")}
        log = self.tmp / f"{host.name}.log"
        self.replicas[host.name] = ServiceProcess(env, log, PORT, tree=tree, host=host.addr, prefix=host.exec).start()

    def healthy(self) -> bool:
        """Every host UP behind HAProxy and answering /readyz with 200 itself."""
        if any(s["status"] != "UP" for s in self.proxy.servers().values()):
            return False
        try:
            return all(httpx.get(f"{r.url}/readyz", timeout=2).status_code == 200 for r in self.replicas.values())
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout: float = 600) -> float:
        deadline = time.time() + timeout
        while not self.healthy():
            if time.time() > deadline:
                raise RuntimeError(f"not back to full health in {timeout:.0f} s")
            time.sleep(0.5)
        return time.time()

    def wait_status(self, host: Host, status: str, timeout: float = 120) -> float | None:
        """When HAProxy came to see the host in `status`; None if it did not within `timeout`."""
        deadline = time.time() + timeout
        while self.proxy.servers()[host.name]["status"] != status:
            if time.time() > deadline:
                return None
            time.sleep(0.2)
        return time.time()


class Callers(Workers):
    """Callers each posting one photo every `period` seconds through HAProxy; every answer they got is kept."""

    def __init__(self, url: str, clients: int, period: float) -> None:
        self.url, self.period = url, period
        # held-out photos (the policy was fitted on 7000..8499, the model trained below 7000): a stream like the
        # policy's own, so the loop's monitors have nothing to say
        self.images = default_test_jpegs(range(8500, 10000))
        self.labels = load_default_test().labels[8500:10000]
        self.requests: list[Request] = []
        self.answered: list[dict] = []
        self.truth: dict[str, int] = {}  # item id -> its CIFAR-10 label, for the reviewers
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in range(clients)]

    def _run(self, k: int) -> None:
        headers = {"Authorization": "Bearer caller-secret"}
        with httpx.Client(base_url=self.url, timeout=60, headers=headers) as c:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                i = (k * 997 + n * 7) % len(self.images)
                item = f"drill/{k}-{n}"
                self.truth[item] = int(self.labels[i])
                body = {"images": [{"id": item, "data": base64.b64encode(self.images[i]).decode()}]}
                t0 = time.time()
                try:
                    r = c.post("/classify", json=body)
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0
                self.requests.append(Request(t0, time.time() - t0, status))
                if status == 200:
                    self.answered += r.json()
                self._stop.wait(max(0.0, self.period - (time.time() - t0)))


class Reviewers(Workers):
    """The README's three reviewers working the queue through HAProxy, answering each photo's true class after a
    short look; an answer that fails for want of a server is sent again with the same lease, as a person would.
    Told to stop, they stop once the queue has stayed empty past a lease."""

    def __init__(self, url: str, truth: dict[str, int], look: float = 0.3) -> None:
        self.url, self.truth, self.look = url, truth, look
        self.acknowledged: list[tuple[int, int]] = []  # (task id, label) the service said it recorded
        self.requests: list[Request] = []
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t,)) for t in REVIEWERS.values()]

    def _call(self, fn, *args):
        t0 = time.time()
        try:
            out = fn(*args)
            self.requests.append(Request(t0, time.time() - t0, 200))
            return out
        except ApiError as err:
            self.requests.append(Request(t0, time.time() - t0, err.status))
            raise
        except httpx.HTTPError:
            self.requests.append(Request(t0, time.time() - t0, 0))
            raise

    def _run(self, token: str) -> None:
        empty_since = None
        with TeamingClient(self.url, token, timeout=60) as c:
            while True:
                try:
                    task = self._call(c.claim).task
                except (ApiError, httpx.HTTPError):
                    time.sleep(0.5)
                    continue
                if task is None:
                    empty_since = empty_since or time.time()
                    if self._stop.is_set() and time.time() - empty_since > 35:  # past a lease: nothing left
                        return
                    time.sleep(0.5)
                    continue
                empty_since = None
                self._answer(c, task)

    def _answer(self, c: TeamingClient, task) -> None:
        time.sleep(self.look)
        label = self.truth.get(task.item_id, 0)
        for _ in range(20):
            try:
                self._call(c.label, task.task_id, task.lease_id, label)
                self.acknowledged.append((task.task_id, label))
                return
            except ApiError as err:
                if err.status < 500:  # the lease ran out: the task comes round again
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)


def kill_host(d: Drill, host: Host, hold: float) -> Event:
    """SIGKILL every process in the host's namespace, keep it dead for `hold` seconds, then start it again."""
    ev = Event(f"SIGKILL {host.name}", time.time(), {("TeamingNotReady", host.target)})
    for pid in host.pids():
        os.kill(pid, signal.SIGKILL)
    replica = d.replicas[host.name]
    replica.proc.wait(timeout=30)
    replica.log.close()
    ev.detected = d.wait_status(host, "DOWN")
    time.sleep(max(0.0, ev.start + hold - time.time()))
    ev.acted = time.time()
    d.start(host)
    ev.healthy = d.wait_healthy()
    return ev


def cut_host(d: Drill, host: Host, hold: float) -> Event:
    """Drop every packet from the host to PostgreSQL for `hold` seconds, then let them through again."""
    ev = Event(f"cut {host.name} from PostgreSQL", time.time(), {("TeamingNotReady", host.target)})
    host.cut_from_db()
    ev.detected = d.wait_status(host, "DOWN", timeout=hold)
    time.sleep(max(0.0, ev.start + hold - time.time()))
    ev.acted = time.time()
    host.mend()
    ev.healthy = d.wait_healthy()
    return ev


def next_commit(tmp: Path) -> tuple[Path, str]:
    """A worktree of HEAD plus a commit that adds a column by a new alembic migration: the release rolled to."""
    tree = tmp / "next"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), "HEAD"], check=True)
    head = head_revision()
    rev = f"{int(head) + 1:04d}"
    (tree / "teaming/ops/migrations/versions" / f"{rev}_drill.py").write_text(MIGRATION.format(rev=rev, head=head))
    git = ["git", "-C", str(tree), "-c", "user.name=drill", "-c", "user.email=drill@localhost"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "drill: a release that adds a column"], check=True)
    return tree, rev


MIGRATION = '''"""The drill's release: a nullable column on decisions (additive, so the old release keeps writing).

Revision ID: {rev}
Revises: {head}
"""

import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("drill_note", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("drill_note")
'''


def roll(d: Drill, tree: Path, db_local: str) -> Event:
    """`teaming migrate` from the new release (the migrate Job), then each host in turn: drained at HAProxy, stopped
    (SIGTERM), started on the new release, put back once ready. One host is down at a time (a Deployment with
    maxSurge 0): the manifests surge a fourth replica instead, which this drill's hosts have no room for."""
    ev = Event("rolling update with a migration", time.time())
    env = {**os.environ, "PYTHONPATH": str(tree)}
    teaming = str(Path(sys.executable).parent / "teaming")
    migrate = subprocess.run([teaming, "migrate", "--db", db_local], env=env, capture_output=True, text=True)
    if migrate.returncode:
        raise RuntimeError(f"teaming migrate failed: {migrate.stdout}{migrate.stderr}")
    print(f"{migrate.stdout.strip()} in {time.time() - ev.start:.1f} s, the replicas serving", flush=True)
    for host in d.net.hosts:
        d.proxy.set_state(host, "drain")
        deadline = time.time() + 15
        while int(d.proxy.servers()[host.name]["scur"] or 0) and time.time() < deadline:
            time.sleep(0.2)
        d.replicas[host.name].stop()
        d.start(host, tree)
        d.proxy.set_state(host, "ready")
        d.wait_status(host, "UP")
    ev.acted = time.time()
    ev.healthy = d.wait_healthy()
    return ev


@dataclass
class Losses:
    decisions: int  # acknowledged decisions not in the log as the caller was told
    answers: int  # acknowledged answers not in the log as the reviewer gave them
    unfinished: int  # review tasks still open or claimed after the queue was worked dry
    revision: str | None  # the schema's revision at the end


def check_log(db_local: str, callers: Callers, reviewers: Reviewers) -> Losses:
    engine = connect(db_local)  # a plain engine, not a Store: this checkout does not know the new revision
    with engine.connect() as conn:
        logged = dict(conn.execute(select(decisions.c.id, decisions.c.item_id)).all())
        answered = dict(conn.execute(select(reviews.c.task_id, reviews.c.label)).all())
        unfinished = len(conn.execute(select(tasks.c.id).where(tasks.c.status.in_(("open", "claimed")))).all())
    revision = current_revision(engine)
    engine.dispose()
    lost = sum(1 for d in callers.answered if logged.get(d["decision_id"]) != d["item_id"])
    unanswered = sum(1 for task, label in reviewers.acknowledged if answered.get(task) != label)
    return Losses(lost, unanswered, unfinished, revision)


def run(net: Network, tmp: Path, db_local: str, args: argparse.Namespace) -> None:
    proxy = HAProxy(net.hosts, tmp)
    d = Drill(net, proxy, db_local.replace("127.0.0.1", DB_ADDR), tmp)
    for host in net.hosts:
        d.start(host)
    prom = Prometheus(net.hosts, tmp).start()
    d.wait_healthy()
    callers = Callers(proxy.url, args.clients, args.clients / args.rate).start()
    reviewers = Reviewers(proxy.url, callers.truth).start()
    try:
        steady = Event("steady", time.time())
        time.sleep(args.steady)
        steady.healthy = time.time()
        d.events.append(steady)
        h1, h2, _ = net.hosts
        for event in (lambda: kill_host(d, h1, args.hold), lambda: cut_host(d, h2, args.hold)):
            d.events.append(event())
            print(f"{d.events[-1].name}: back to full health", flush=True)
            time.sleep(args.settle)
        tree, rev = next_commit(tmp)
        d.events.append(roll(d, tree, db_local))
        time.sleep(args.settle)  # the last alerts resolve, the loop runs on
        alarms = TeamingClient(proxy.url, "admin-secret").alarms()
        down = prom.query('sum by (instance) (count_over_time((up{job="teaming"} == 0)[1h:5s]))')
        unready = prom.query("sum by (instance) (count_over_time((teaming_ready == 0)[1h:5s]))")
    finally:
        callers.stop()
        reviewers.stop()
        prom.stop()
        proxy.stop()
        for r in d.replicas.values():
            r.stop()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "next")])
    report(d, callers, reviewers, prom, check_log(db_local, callers, reviewers), rev)
    raised = [f"{m.name} (estimate {m.estimate}, bound {m.bound})" for m in alarms.monitors if m.raised]
    print(f"the loop's alarms at the end: {', '.join(raised) or 'none raised'}; open: {len(alarms.open)}")
    for what, series in (("scrapes failed (up == 0)", down), ("not ready (teaming_ready == 0)", unready)):
        counts = {r["metric"]["instance"]: int(float(r["value"][1])) for r in series}
        print(f"5 s samples {what}: " + ", ".join(f"{h.target} {counts.get(h.target, 0)}" for h in d.net.hosts))
    start = d.events[0].start
    for a in prom.events:
        print(f"  alert timeline: +{a.at - start:6.1f} s {a.name} {a.instance} {a.state}")


def report(d: Drill, callers: Callers, reviewers: Reviewers, prom: Prometheus, losses: Losses, rev: str) -> None:
    steady = d.events[0]
    base = window_figures(callers.requests, steady.start, steady.healthy)
    for ev in d.events:
        f = window_figures(callers.requests, ev.start, ev.healthy)
        r = window_figures(reviewers.requests, ev.start, ev.healthy)
        line = (
            f"{ev.name}: classify requests {f['n']}, failed {f['failed']} ({f['why'] or '-'}), p50 {f['p50']:.0f} ms, "
            f"p99 {f['p99']:.0f} ms (steady {base['p99']:.0f}); reviewer calls {r['n']}, failed {r['failed']} "
            f"({r['why'] or '-'})"
        )
        if ev.detected:
            line += f"; out of HAProxy +{ev.detected - ev.start:.1f} s"
        if ev.acted and ev.name != "steady":
            back = ev.healthy - ev.acted
            line += f"; full health {back:.1f} s after it was undone ({ev.healthy - ev.start:.0f} s in all)"
        print(line)
    print(f"acknowledged decisions {len(callers.answered)}, lost {losses.decisions}")
    print(f"acknowledged answers {len(reviewers.acknowledged)}, lost {losses.answers}")
    print(f"review tasks open or claimed after the queue was worked dry: {losses.unfinished}")
    print(f"schema at revision {losses.revision} (the new release's: {rev})")
    verdicts = alert_verdicts(d.events, prom.events, rule_waits(RULES))
    for ok, line in verdicts:
        print(f"alert: {line}: {'ok' if ok else 'WRONG'}")
    for line in pending_only(d.events, prom.events):
        print(f"alert: {line}")
    if not [1 for _, line in verdicts]:
        print("alert: none fired")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steady", type=float, default=60, help="seconds of steady load before the first event")
    p.add_argument("--hold", type=float, default=150, help="seconds a host stays dead or cut off (the alert waits 120)")
    p.add_argument("--settle", type=float, default=30, help="seconds of steady load after each event")
    p.add_argument("--rate", type=float, default=20, help="classify requests a second, one photo each")
    p.add_argument("--clients", type=int, default=4)
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the drill needs root: network namespaces and nft")
    if missing := [b for b in ("haproxy", "prometheus", "nft") if not shutil.which(b)]:
        raise SystemExit(f"the drill needs {', '.join(missing)}: apt-get install haproxy prometheus nftables")
    cpu = next((line.split(":")[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "?")
    print(f"# multi-host drill, {time.strftime('%Y-%m-%d %H:%M')}, {cpu}, {os.cpu_count()} cores; {vars(args)}")
    with tempfile.TemporaryDirectory() as tmp, Network() as net:
        db_local = scratch_postgres("teaming_drill")
        try:
            run(net, Path(tmp), db_local, args)
        finally:
            drop_postgres(db_local)


if __name__ == "__main__":
    main()
