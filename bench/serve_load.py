"""Closed-loop HTTP load on the service, side by side with its references, in one run.

Targets, each started here as a subprocess on 127.0.0.1 and loaded from this process:
  bentoml        the service as shipped (decisions logged to a fresh SQLite file)
  bentoml-nolog  the same service with TEAMING_LOG_DECISIONS=0 (what deferral logging costs)
  bare           bench/bare_app.py: Starlette + uvicorn doing the same decode + forward, no batching or logging
  bentoml-keepalive5  (only when asked for) the service with BentoML's default 5 s keep-alive instead of 75 s
  bentoml@REV    (with --baseline REV) the service as it was at git commit REV, served from a temporary worktree
and the in-process ceiling: the same decode + forward in this Python process, no HTTP.
All targets run at once and each level runs in rounds that interleave them (in-process, bentoml, bentoml-nolog,
bare, then again), so a drift in the shared machine's speed hits every target alike. Every round is bounded in
time and request count. Prints one line per target and level, then the ratios the issue sets goals for.
Usage: python -m bench.serve_load [--levels 1,16,64,256] [--images 1,64] [--seconds 4] [--rounds 3]
                                  [--targets bentoml,bentoml-nolog,bare] [--baseline REV]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch

from teaming.decode import decode_image
from teaming.model import Artifact, load_artifact
from teaming.model.runtime import choose
from tests.support.common import jpeg_payloads, metric_total
from tests.support.process import KEEP_ALIVE_SECONDS, ServiceProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "cifar10h-default"


def load_served() -> Artifact:
    """The shipped model with the backend the service picks on this machine (TEAMING_BACKEND, default auto)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    art = load_artifact(MODEL, device)
    return art.use(choose(os.environ.get("TEAMING_BACKEND", "auto"), device, art.meta.backends)[0])


def ceiling(art: Artifact, payloads: list[dict], batch: int, seconds: float) -> float:
    """Images/s for base64 decode + JPEG decode + calibrated forward in this process, `batch` images at a time,
    after one untimed warm-up batch."""
    device = art.runtime.device
    done, start, k = 0, None, 0
    while start is None or time.perf_counter() - start < seconds:
        chunk = [payloads[(k + j) % len(payloads)] for j in range(batch)]
        k += batch
        x = np.stack([decode_image(base64.b64decode(p["data"]), 32).numpy() for p in chunk])
        with torch.inference_mode():
            art.outputs(torch.from_numpy(x).to(device))
        if start is None:
            start = time.perf_counter()
            continue
        done += batch
    return done / (time.perf_counter() - start)


class Target:
    """A server under load: the service (via ServiceProcess) or the bare Starlette app (uvicorn)."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.worktree: Path | None = None
        env = {
            "TEAMING_DB_URL": f"sqlite:///{tmp / (name + '.db')}",
            "TEAMING_AUDIT_RATE": "0.05",
            "BENTOML_HOME": str(tmp / f"bentoml-{name}"),  # one Prometheus directory per service
            "TEAMING_MAX_IMAGES": "64",
        }
        if name == "bentoml-nolog":
            env["TEAMING_LOG_DECISIONS"] = "0"
        if name != "bare":
            keep_alive = 5 if name == "bentoml-keepalive5" else KEEP_ALIVE_SECONDS  # 5 s: BentoML's default
            tree = ROOT
            if "@" in name:  # an earlier commit of the service, checked out beside this one
                rev = name.split("@", 1)[1]
                self.worktree = tree = tmp / f"tree-{rev}"
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True)
            log = tmp / f"{name.replace('@', '-')}.log"
            self.proc = ServiceProcess(env, log, keep_alive=keep_alive, tree=tree).start()
            self.url = self.proc.url
            return
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.bare = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.bare_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            start_new_session=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.post(self.url + "/classify", json={"images": jpeg_payloads(1)}).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        raise RuntimeError("the bare app did not start")

    def batch_stats(self) -> tuple[float, float]:
        """(sum, count) of the requests-per-batch histogram (BentoML's adaptive one in older commits); zeros for
        the bare app."""
        if self.name == "bare":
            return 0.0, 0.0
        text = httpx.get(self.url + "/metrics").text
        for metric in ("teaming_batch_requests", "bentoml_service_adaptive_batch_size"):
            count = metric_total(text, f"{metric}_count")
            if count:
                return metric_total(text, f"{metric}_sum"), count
        return 0.0, 0.0

    def stop(self) -> None:
        if self.name == "bare":
            self.bare.terminate()
            self.bare.wait(timeout=60)
        else:
            self.proc.stop()
        if self.worktree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(self.worktree)], check=True)


@dataclass
class Level:
    """What one closed-loop run saw: answered requests' latencies (s) and failures."""

    latencies: list[float]
    errors: int  # 4xx answers
    server_errors: int  # 5xx answers
    failures: Counter  # no answer: exception type -> count
    elapsed: float = 0.0  # s from the first request sent to the last answer received

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def images_per_second(self, per_request: int) -> float:
        """Answered images over the real elapsed time: a request that ends after the window counts its time too."""
        return self.requests * per_request / self.elapsed if self.elapsed else 0.0


async def closed_loop(
    url: str, payloads: list[dict], clients: int, per_request: int, seconds: float, max_requests: int
) -> Level:
    """`clients` workers each send a request and wait for its answer, for `seconds` or `max_requests`."""
    latencies: list[float] = []
    errors = server_errors = 0
    failures: Counter = Counter()
    sent = 0
    start = time.perf_counter()
    stop_at = start + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker(w: int) -> None:
            nonlocal errors, server_errors, sent
            k = w * per_request
            while time.perf_counter() < stop_at and sent < max_requests:
                sent += 1
                body = {"images": [payloads[(k + j) % len(payloads)] for j in range(per_request)]}
                k += clients * per_request
                t0 = time.perf_counter()
                try:
                    r = await client.post("/classify", json=body)
                except httpx.HTTPError as err:
                    failures[type(err).__name__] += 1
                    continue
                if r.status_code >= 500:
                    server_errors += 1
                elif r.status_code != 200:
                    errors += 1
                else:
                    latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker(w) for w in range(clients)))
    return Level(latencies, errors, server_errors, failures, time.perf_counter() - start)


@dataclass
class Tally:
    """One target's results at one level, summed over its interleaved rounds."""

    images: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    server_errors: int = 0
    failures: Counter = field(default_factory=Counter)
    batch_sum: float = 0.0
    batch_count: float = 0.0

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", default="1,16,64,256")
    p.add_argument("--images", default="1,64")
    p.add_argument("--seconds", type=float, default=4.0, help="length of one round of one target")
    p.add_argument("--rounds", type=int, default=3, help="rounds per level, targets interleaved in each")
    p.add_argument("--max-requests", type=int, default=20000)
    p.add_argument("--targets", default="bentoml,bentoml-nolog,bare")
    p.add_argument("--baseline", help="also load the service as it was at this git commit (before/after)")
    p.add_argument("--plot", type=Path, help="write the service's latency against request size and clients here")
    args = p.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    sizes = [int(x) for x in args.images.split(",")]
    names = args.targets.split(",") + ([f"bentoml@{args.baseline}"] if args.baseline else [])
    payloads = jpeg_payloads(2000)
    served = load_served()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(
        f"# serve_load on {device}, {os.cpu_count()} CPU cores, backend {served.backend}, {time.strftime('%Y-%m-%d')}; "
        f"{args.rounds} interleaved rounds of {args.seconds:g} s per target and level"
    )
    seen: dict[tuple[int, int], Tally | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        targets: list[Target] = []
        try:
            for name in names:
                targets.append(Target(name, Path(tmp)))
                asyncio.run(closed_loop(targets[-1].url, payloads, 4, 16, 2.0, 50))  # warm up
            for size in sizes:
                for clients in levels:
                    tallies = {name: Tally() for name in ["in-process", *names]}
                    for _ in range(args.rounds):
                        t = tallies["in-process"]
                        t.images += int(ceiling(served, payloads, 256, args.seconds) * args.seconds)
                        t.seconds += args.seconds
                        for target in targets:
                            t = tallies[target.name]
                            s0, c0 = target.batch_stats()
                            start = time.perf_counter()
                            lv = asyncio.run(
                                closed_loop(target.url, payloads, clients, size, args.seconds, args.max_requests)
                            )
                            t.seconds += time.perf_counter() - start
                            s1, c1 = target.batch_stats()
                            t.images += lv.requests * size
                            t.latencies += lv.latencies
                            t.errors += lv.errors
                            t.server_errors += lv.server_errors
                            t.failures.update(lv.failures)
                            t.batch_sum += s1 - s0
                            t.batch_count += c1 - c0
                    report(size, clients, tallies, args.baseline)
                    seen[(size, clients)] = tallies["bentoml"] if "bentoml" in tallies else None
        finally:
            for target in targets:
                target.stop()
    if args.plot:
        plot(seen, args.plot)


def plot(seen: dict[tuple[int, int], Tally | None], path: Path) -> None:
    """The service's p50 and p99 latency against images per request, one line per number of clients."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for clients in sorted({c for _, c in seen}):
        sizes = sorted(s for s, c in seen if c == clients and seen[(s, c)] and seen[(s, c)].latencies)
        for q, style in ((50, "-"), (99, ":")):
            ms = [np.percentile(seen[(s, clients)].latencies, q) * 1000 for s in sizes]
            ax.plot(sizes, ms, style, marker="o", label=f"{clients} clients, p{q}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("images per request")
    ax.set_ylabel("latency (ms)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


def report(size: int, clients: int, tallies: dict[str, Tally], baseline: str | None = None) -> None:
    """One line per target, then one line per ratio the issue sets a goal for (and after/before)."""
    for name, t in tallies.items():
        if name == "in-process":
            print(f"{name:<18s} images/req={size:<3d} clients={clients:<4d} images/s={t.rate:8.1f}  batch 256, no HTTP")
            continue
        lat = np.array(t.latencies) * 1000 if t.latencies else np.array([np.nan])
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        batch = f"{t.batch_sum / t.batch_count:6.1f}" if t.batch_count else "     -"
        print(
            f"{name:<18s} images/req={size:<3d} clients={clients:<4d} images/s={t.rate:8.1f}"
            f"  p50={p50:7.1f}ms p95={p95:7.1f}ms p99={p99:7.1f}ms  requests={len(t.latencies):<6d}"
            f" 4xx={t.errors} 5xx={t.server_errors} no_answer={sum(t.failures.values())}  mean_batch={batch}"
            + "".join(f"  {kind}={n}" for kind, n in sorted(t.failures.items())),
            flush=True,
        )
    for den in ("in-process", "bare", "bentoml-nolog", f"bentoml@{baseline}"):
        num = "bentoml"
        if num in tallies and den in tallies and tallies[den].rate:
            print(
                f"ratio              images/req={size:<3d} clients={clients:<4d} {num}/{den}="
                f"{tallies[num].rate / tallies[den].rate:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
