"""Closed-loop HTTP load on the service, side by side with its references, in one run.

Targets, each started here as a subprocess on 127.0.0.1 and loaded from this process:
  bentoml        the service as shipped (decisions logged to a fresh SQLite file)
  bentoml-nolog  the same service with TEAMING_LOG_DECISIONS=0 (what deferral logging costs)
  bare           bench/bare_app.py: Starlette + uvicorn doing the same decode + forward, no batching or logging
and the in-process ceiling: the same decode + forward in this Python process, no HTTP.
Every level runs a bounded time and request count. Prints one line per target and level.
Usage: python -m bench.serve_load [--levels 1,16,64,256] [--images 1,64] [--seconds 8] [--targets bentoml,bare]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch

from bench.common import jpeg_payloads
from service.process import ServiceProcess, free_port
from teaming.artifact import load_artifact
from teaming.data import decode_image

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "cifar10h-default"


def ceiling(payloads: list[dict], batch: int, seconds: float) -> float:
    """Images/s for base64 decode + JPEG decode + calibrated forward in this process, `batch` images at a time."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    art = load_artifact(MODEL, device)
    done, start, k = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        chunk = [payloads[(k + j) % len(payloads)] for j in range(batch)]
        k += batch
        x = np.stack([decode_image(base64.b64decode(p["data"]), 32).numpy() for p in chunk])
        with torch.inference_mode():
            art.predict_proba(torch.from_numpy(x).to(device))
        done += batch
    return done / (time.perf_counter() - start)


class Target:
    """A server under load: the service (via ServiceProcess) or the bare Starlette app (uvicorn)."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        env = {
            "TEAMING_DB_URL": f"sqlite:///{tmp / (name + '.db')}",
            "TEAMING_AUDIT_RATE": "0.05",
            "BENTOML_HOME": str(tmp / "bentoml"),
            "TEAMING_MAX_IMAGES": "64",
        }
        if name == "bentoml-nolog":
            env["TEAMING_LOG_DECISIONS"] = "0"
        if name != "bare":
            self.proc = ServiceProcess(env, tmp / f"{name}.log").start()
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
        """(sum, count) of BentoML's adaptive batch size histogram; zeros for the bare app."""
        if self.name == "bare":
            return 0.0, 0.0
        text = httpx.get(self.url + "/metrics").text
        s = sum(float(v) for v in re.findall(r"^bentoml_service_adaptive_batch_size_sum\{[^}]*\} (\S+)", text, re.M))
        c = sum(float(v) for v in re.findall(r"^bentoml_service_adaptive_batch_size_count\{[^}]*\} (\S+)", text, re.M))
        return s, c

    def stop(self) -> None:
        if self.name == "bare":
            self.bare.terminate()
            self.bare.wait(timeout=60)
        else:
            self.proc.stop()


@dataclass
class Level:
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    errors: int
    server_errors: int


async def closed_loop(
    url: str, payloads: list[dict], clients: int, per_request: int, seconds: float, max_requests: int
) -> Level:
    """`clients` workers each send a request and wait for its answer, for `seconds` or `max_requests`."""
    latencies: list[float] = []
    errors = server_errors = 0
    sent = 0
    stop_at = time.perf_counter() + seconds
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
                except httpx.HTTPError:
                    errors += 1
                    continue
                if r.status_code >= 500:
                    server_errors += 1
                elif r.status_code != 200:
                    errors += 1
                else:
                    latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return Level(
        len(latencies) * per_request / elapsed, *np.percentile(lat, [50, 95, 99]), len(latencies), errors, server_errors
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", default="1,16,64,256")
    p.add_argument("--images", default="1,64")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--max-requests", type=int, default=20000)
    p.add_argument("--targets", default="bentoml,bentoml-nolog,bare")
    args = p.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    sizes = [int(x) for x in args.images.split(",")]
    payloads = jpeg_payloads(2000)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(
        f"# serve_load on {device}, {os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}; "
        f"{args.seconds:g} s per level"
    )
    for size in sizes:
        print(f"in-process ceiling  images/req={size:<3d} batch=256  images/s={ceiling(payloads, 256, 5):8.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.targets.split(","):
            target = Target(name, Path(tmp))
            try:
                for size in sizes:
                    for clients in levels:
                        s0, c0 = target.batch_stats()
                        lv = asyncio.run(
                            closed_loop(target.url, payloads, clients, size, args.seconds, args.max_requests)
                        )
                        s1, c1 = target.batch_stats()
                        batch = f"{(s1 - s0) / (c1 - c0):6.1f}" if c1 > c0 else "     -"
                        print(
                            f"{name:<18s}  images/req={size:<3d} clients={clients:<4d} images/s={lv.images_per_s:8.1f}"
                            f"  p50={lv.p50_ms:7.1f}ms p95={lv.p95_ms:7.1f}ms p99={lv.p99_ms:7.1f}ms"
                            f"  requests={lv.requests:<6d} 4xx/conn={lv.errors} 5xx={lv.server_errors}"
                            f"  mean_batch={batch}",
                            flush=True,
                        )
            finally:
                target.stop()


if __name__ == "__main__":
    main()
