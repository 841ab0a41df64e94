"""Deploy times on the lab: a fresh deploy into new hosts (with the time of each stage) and a
no-change deploy (whole `fab deploy` command, and SSH round trips per host).

    .venv/bin/python bench/redeploy.py [--fresh N] [--runs N] [--cold] [--release bookworm|trixie]

--fresh N: N times lab.down / lab.up / fab deploy (default 1). The release build on the control
machine is cached by content; --cold empties that cache first (the build then overlaps apt).
--runs N: no-change deploys after that (default 10). Targets: fresh <= 60 s, no-change <= 1 s.
Leaves the lab up with the cluster deployed.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
FAB = str(PROJECT / ".venv" / "bin" / "fab")


def fab(*args) -> str:
    proc = subprocess.run([FAB, *args], cwd=PROJECT, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(proc.stdout[-3000:])
    return proc.stdout


def timed(*args) -> tuple[float, str]:
    t0 = time.monotonic()
    out = fab(*args)
    return time.monotonic() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fresh", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--release", default="bookworm", choices=["bookworm", "trixie"])
    args = ap.parse_args()
    fresh = []
    for _ in range(args.fresh):
        fab("lab.down")
        fab("lab.up", "--release", args.release)
        if args.cold:
            shutil.rmtree(PROJECT / ".state" / "build", ignore_errors=True)
        took, out = timed("deploy")
        fresh.append(took)
        stages = re.search(r"^stages: (.*)$", out, re.M).group(1)
        print(f"fresh fab deploy, 3 new {args.release} hosts{' (cold build cache)' if args.cold else ''}: "
              f"{took:.1f}s\n  {stages}", flush=True)
    if fresh:
        print(f"fresh: median {statistics.median(fresh):.1f}s, best {min(fresh):.1f}s over {len(fresh)} "
              "(target <= 60s)")
    if not fresh:
        fab("lab.up", "--release", args.release)
        fab("deploy")
    times, trips = [], ""
    for _ in range(args.runs):
        took, out = timed("deploy")
        times.append(took)
        if re.search(r"^node\d+\s+changed", out, re.M):
            sys.exit("a no-change deploy changed something:\n" + out)
        trips = re.search(r"SSH round trips: (.*)$", out, re.M).group(1)
    if times:
        print(f"no-change fab deploy, 3 lab hosts: median {statistics.median(times):.2f}s, "
              f"best {min(times):.2f}s, worst {max(times):.2f}s over {len(times)} runs "
              "(whole `fab` command; target <= 1s)")
        print(f"SSH round trips per host: {trips}")


if __name__ == "__main__":
    main()
