"""Fault drills for the service: SIGKILL under load, PostgreSQL restarted under load, two replicas on one database.

Each drill starts real service processes on 127.0.0.1, drives them over HTTP with bounded loops, and
checks the log afterwards: every decision a client got an answer for is there, no queue item is lost or
stuck, and no item was claimed twice. With two replicas, a policy reloaded on one reaches the other by polling.
tests/test_faults.py runs the kill and replica drills as slow tests.
Usage: python -m bench.faults [--drills kill,replicas,pg-restart] [--seconds 6]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.support.faults import (
    kill_under_load,
    pg_restart,
    replicas,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drills", default="kill,replicas,pg-restart")
    p.add_argument("--seconds", type=float, default=6.0)
    args = p.parse_args()
    print(f"# faults, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        for drill in args.drills.split(","):
            start = time.perf_counter()
            if drill == "kill":
                c = kill_under_load(Path(tmp), args.seconds)
            elif drill == "replicas":
                c = replicas(Path(tmp), args.seconds)
            elif drill == "pg-restart":
                c, not_ready, recovered = pg_restart(Path(tmp), args.seconds)
                print(
                    f"pg-restart: /readyz answered not-ready {not_ready} times during the restart; "
                    f"recovered={recovered}"
                )
            else:
                raise SystemExit(f"unknown drill {drill!r}")
            ok = c.missing == 0 and c.open_or_stuck_after_drain == 0 and c.double_claims == 0
            ok = ok and c.policy_followed is not False
            if c.policy_followed is not None:
                print(f"{drill}: a policy reloaded on one replica reached both: {c.policy_followed}")
            print(
                f"{drill}: answered decisions {c.answered}, missing from the log {c.missing}, review tasks "
                f"{c.tasks}, open or stuck after draining {c.open_or_stuck_after_drain}, double claims "
                f"{c.double_claims}, 5xx {c.server_errors}, unanswered {c.refused}: "
                f"{'ok' if ok else 'FAILED'} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
