"""Seconds for `fab lab.up` of 3 hosts: from the cached base image, and from nothing.

    .venv/bin/python bench/lab_boot.py [--from-nothing]

Each measurement starts from `lab.down` and runs the real `fab lab.up` command; "from
nothing" points the image cache at an empty directory so debootstrap runs too.
Leaves the lab down.
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
FAB = str(PROJECT / ".venv" / "bin" / "fab")


def timed_up(env=None) -> float:
    subprocess.run([FAB, "lab.down"], cwd=PROJECT, check=True, stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    subprocess.run([FAB, "lab.up", "--count", "3"], cwd=PROJECT, check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def main() -> None:
    timed_up()   # make sure the cached image exists
    runs = [timed_up() for _ in range(3)]
    print(f"lab.up, 3 hosts, cached image: {min(runs):.1f}s best, "
          f"{sum(runs) / len(runs):.1f}s mean of {len(runs)} (target <= 15s)")
    if "--from-nothing" in sys.argv:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as empty:
            env = dict(os.environ, CELERYKIT_LAB_CACHE=empty)
            print(f"lab.up, 3 hosts, from nothing (debootstrap): {timed_up(env):.1f}s")
            subprocess.run([FAB, "lab.down"], cwd=PROJECT, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([FAB, "lab.down"], cwd=PROJECT, check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
