"""Admission drill: does the service keep answering while strangers stall uploads and a caller sends huge photos?

One service (this checkout, or an earlier commit with --baseline REV, side by side) is started on 127.0.0.1.
A steady client sends one CIFAR image per request and polls /livez, first alone (baseline), then while
- `--stalled` connections each send the headers of POST /classify with a large Content-Length and then one body
  byte every few seconds (slowloris), spread over `--addresses` loopback addresses (127.0.x.y), and
- a caller sends `--big` photos of `--megapixels` MP each in one request, again and again.
Prints one line per target and phase: requests, p50 and p99 of classify and /livez, and how many got 4xx/5xx.
Usage: python -m bench.admission [--stalled 1000] [--addresses 100] [--big 64] [--megapixels 12] [--seconds 20]
                                 [--baseline REV]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.admission import ROOT, big_body, drill
from tests.support.process import ServiceProcess


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stalled", type=int, default=1000)
    p.add_argument("--addresses", type=int, default=100, help="loopback addresses the stalled uploads come from")
    p.add_argument("--big", type=int, default=64, help="photos in the big request")
    p.add_argument("--megapixels", type=float, default=12.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--baseline", help="also drill the service as it was at this git commit")
    args = p.parse_args()
    print(f"# admission drill, {time.strftime('%Y-%m-%d')}", flush=True)
    body = big_body(args.big, args.megapixels)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "TEAMING_MAX_IMAGES": str(max(args.big, 1)),
            "TEAMING_MAX_BATCH_SIZE": str(max(args.big, 256)),
            "TEAMING_MAX_IMAGE_BYTES": "16000000",
            "TEAMING_MAX_PIXELS": str(int(args.megapixels * 1.2e6)),
            "TEAMING_AUDIT_RATE": "0",
        }
        targets = [("this tree", ROOT)]
        old = Path(tmp) / f"tree-{args.baseline}"
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.baseline], check=True)
            targets.insert(0, (f"at {args.baseline}", old))
        try:
            for k, (name, tree) in enumerate(targets):
                settings = {**env, "TEAMING_DB_URL": f"sqlite:///{tmp}/drill-{k}.db", "BENTOML_HOME": f"{tmp}/bh-{k}"}
                proc = ServiceProcess(settings, Path(tmp) / f"drill-{k}.log", tree=tree).start()
                try:
                    drill(name, proc, args, body, None)
                finally:
                    proc.stop()
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=True)


if __name__ == "__main__":
    main()
