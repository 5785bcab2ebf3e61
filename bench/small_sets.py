"""`teaming train` on a small set of one's own photos, batch sizes side by side in one run: the 1,000 digit photos
of the worked example (examples/digits.py), 800 to train and 200 held out, with their votes. One line per batch
size (and the automatic one the command picks when none is given): held-out accuracy and the time it took.
Usage: python -m bench.small_sets [--batches 1024,128,64,32,auto] [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from teaming.model.runtime import device_name

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1024,128,64,32,auto")
    p.add_argument("--epochs", type=float, default=None, help="default: the command's own")
    args = p.parse_args()
    print(f"# small_sets on {device_name(torch.device('cpu'))}, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "digits"
        subprocess.run([sys.executable, str(ROOT / "examples" / "digits.py"), "data", "--out", str(data)],
                       check=True, capture_output=True)  # fmt: skip
        for batch in args.batches.split(","):
            out = Path(tmp) / f"model-{batch}"
            cmd = [sys.executable, "-m", "teaming.cli", "train", "--out", str(out), "--images", str(data / "train"),
                   "--labels", str(data / "train.csv"), "--no-fgsm", "--force"]  # fmt: skip
            cmd += [] if batch == "auto" else ["--batch-size", batch]
            cmd += [] if args.epochs is None else ["--epochs", str(args.epochs)]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            seconds = time.perf_counter() - start
            meta = json.loads((out / "model.json").read_text())
            acc = meta["metrics"]["calibrated"]["accuracy"]
            used = meta["training"]["config"]["batch_size"]
            print(f"batch {batch:>5s} ({used:4d})  held-out accuracy={acc:.4f}  seconds={seconds:6.1f}", flush=True)


if __name__ == "__main__":
    main()
