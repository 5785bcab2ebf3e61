"""The admission drill's building blocks, run by `python -m bench.admission` and, bounded, by
tests/service/test_admission.py: stalled uploads from many addresses, requests of huge photos, and a steady
caller whose answers show whether the service still serves."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.support.common import jpeg_payloads
from tests.support.process import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]


def photo(megapixels: float, seed: int = 0) -> bytes:
    """A phone-photo-like JPEG (q85, 4:3) of about `megapixels`: smooth shapes with sensor noise, so it weighs what
    a phone's does (2.8 MB at 12 MP)."""
    w = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    h = int(w * 3 / 4)
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC)).astype(np.int16)
    noisy = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@dataclass
class Probe:
    """Latencies (s) of the steady client's classify requests and /livez polls, and what went wrong."""

    classify: list[float] = field(default_factory=list)
    livez: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)

    def line(self, name: str) -> str:
        def pct(xs: list[float]) -> str:
            if not xs:
                return "none"
            p50, p99 = np.percentile(np.array(xs) * 1000, [50, 99])
            return f"n={len(xs)} p50={p50:.0f}ms p99={p99:.0f}ms max={1000 * max(xs):.0f}ms"

        bad = {k: v for k, v in self.statuses.items() if k != 200}
        return f"{name}: classify {pct(self.classify)}; livez {pct(self.livez)}; not 200: {dict(bad) or 0}"


def steady(url: str, seconds: float, headers: dict) -> Probe:
    """One classify request and one /livez poll at a time, every 50 ms, for `seconds`."""
    probe = Probe()
    body = {"images": jpeg_payloads(1, start=7000)}
    stop = time.perf_counter() + seconds
    with httpx.Client(base_url=url, timeout=30, headers=headers) as c:
        while time.perf_counter() < stop:
            for path, sink in (("/classify", probe.classify), ("/livez", probe.livez)):
                t0 = time.perf_counter()
                try:
                    r = c.post(path, json=body) if path == "/classify" else c.get(path)
                    probe.statuses[r.status_code] += 1
                    if r.status_code == 200:
                        sink.append(time.perf_counter() - t0)
                except httpx.HTTPError as err:
                    probe.statuses[type(err).__name__] += 1
            time.sleep(0.05)
    return probe


class Stallers:
    """`n` sockets that send POST /classify headers with a large Content-Length, then a byte every `every` s."""

    def __init__(self, url: str, n: int, addresses: int, token: str | None, every: float = 5.0) -> None:
        host, port = url.removeprefix("http://").split(":")
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        head = (
            f"POST /classify HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\n"
            "Content-Length: 50000000\r\n\r\n"
        ).encode()
        self.sockets: list[socket.socket] = []
        self.refused = 0
        for k in range(n):
            s = socket.socket()
            s.bind((f"127.0.{1 + k % addresses // 250}.{1 + k % addresses % 250}", 0))
            s.connect((host, int(port)))
            s.sendall(head)
            self.sockets.append(s)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drip, args=(every,), daemon=True)
        self.thread.start()

    def _drip(self, every: float) -> None:
        while not self.stop.wait(every):
            for s in self.sockets:
                try:
                    s.sendall(b" ")
                except OSError:
                    self.refused += 1

    def close(self) -> int:
        """Stop and close; returns how many sockets the service had closed on them (408, 429)."""
        self.stop.set()
        self.thread.join()
        for s in self.sockets:
            s.close()
        return self.refused


def big_body(count: int, megapixels: float) -> bytes:
    """One classify request of `count` photos (four different ones, repeated)."""
    photos = [base64.b64encode(photo(megapixels, seed)).decode() for seed in range(min(count, 4))]
    return json.dumps(
        {"images": [{"id": f"photo-{k}", "data": photos[k % len(photos)]} for k in range(count)]}
    ).encode()


def big_caller(url: str, body: bytes, headers: dict, stop: threading.Event, out: Counter) -> None:
    """Send the big request again and again until stopped; counts statuses and seconds."""
    with httpx.Client(base_url=url, timeout=300, headers={**headers, "Content-Type": "application/json"}) as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                r = c.post("/classify", content=body)
                out[r.status_code] += 1
            except httpx.HTTPError as err:
                out[type(err).__name__] += 1
            out["seconds"] += time.perf_counter() - t0


def drill(name: str, proc: ServiceProcess, args, body: bytes, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    print(steady(proc.url, args.seconds / 2, headers).line(f"{name} alone"), flush=True)
    stallers = Stallers(proc.url, args.stalled, args.addresses, token)
    stop, big = threading.Event(), Counter()
    caller = threading.Thread(target=big_caller, args=(proc.url, body, headers, stop, big))
    caller.start()
    time.sleep(1.0)
    probe = steady(proc.url, args.seconds, headers)
    stop.set()
    caller.join()
    dropped = stallers.close()
    print(probe.line(f"{name} with {args.stalled} stalled uploads and {args.big} x {args.megapixels:g} MP"), flush=True)
    seconds = big.pop("seconds", 0.0)
    print(
        f"{name} big requests ({len(body) / 1e6:.0f} MB each): {dict(big)}, {seconds:.1f} s in all; stalled "
        f"sockets the service closed: {dropped}",
        flush=True,
    )
