"""Seconds of a no-change `fab deploy` on the lab, and SSH round trips per host.

    .venv/bin/python bench/redeploy.py [runs]

Boots the lab and deploys first if needed (not timed). Target: <= 5 s for 3 hosts.
"""
import re
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
        sys.exit(proc.stdout)
    return proc.stdout


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    fab("lab.up")
    fab("deploy")
    times, trips = [], ""
    for _ in range(runs):
        t0 = time.monotonic()
        out = fab("deploy")
        times.append(time.monotonic() - t0)
        if re.search(r"^node\d+\s+changed", out, re.M):
            sys.exit("a no-change deploy changed something:\n" + out)
        trips = re.search(r"SSH round trips: (.*)$", out, re.M).group(1)
    print(f"no-change fab deploy, 3 lab hosts: median {statistics.median(times):.2f}s, "
          f"best {min(times):.2f}s over {runs} runs (whole `fab` command; target <= 5s)")
    print(f"SSH round trips per host: {trips}")


if __name__ == "__main__":
    main()
