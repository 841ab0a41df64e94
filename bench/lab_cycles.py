"""Reliability of lab boots: N `fab lab.down` / `fab lab.up` cycles per release.

    .venv/bin/python bench/lab_cycles.py [--cycles 20] [--release bookworm --release trixie]

After every `lab.up`, each host must accept a NEW non-root SSH login (the deploy user, host
key checked) within 5 s and report `systemctl is-system-running` = running over that login.
Prints one line per cycle and a summary per release; exits 1 if any cycle failed.
Leaves the lab down.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import paramiko

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
FAB = str(PROJECT / ".venv" / "bin" / "fab")

from deploy.lab.spec import DEPLOY_USER, default_spec  # noqa: E402


def login_check(address: str, key: Path, known_hosts: Path) -> tuple[float | None, str]:
    t0 = time.monotonic()
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(address, username=DEPLOY_USER, key_filename=str(key), timeout=5,
                       banner_timeout=5, auth_timeout=5, look_for_keys=False, allow_agent=False)
        _, out, _ = client.exec_command("systemctl is-system-running", timeout=5)
        state = out.read().decode().strip()
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return time.monotonic() - t0, state


def cycle(release: str) -> tuple[bool, str, float, float]:
    subprocess.run([FAB, "lab.down"], cwd=PROJECT, check=True, stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    up = subprocess.run([FAB, "lab.up", "--release", release], cwd=PROJECT, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    took = time.monotonic() - t0
    if up.returncode != 0:
        return False, "lab.up failed: " + up.stdout.strip().splitlines()[-1], took, 0.0
    spec = default_spec(PROJECT, release=release)
    worst, problems = 0.0, []
    for h in spec.hosts():
        login, state = login_check(h.address, spec.key_path, spec.known_hosts)
        if login is None or login > 5 or state != "running":
            problems.append(f"{h.name}: login {login}, state {state!r}")
        else:
            worst = max(worst, login)
    repaired = [l for l in up.stdout.splitlines() if "repaired" in l]
    note = "; ".join(problems) or "ok" + (f" ({'; '.join(repaired)})" if repaired else "")
    return not problems, note, took, worst


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--release", action="append", choices=["bookworm", "trixie"])
    args = ap.parse_args()
    failed = 0
    for release in args.release or ["bookworm", "trixie"]:
        ups, logins, bad = [], [], 0
        for i in range(1, args.cycles + 1):
            ok, note, took, worst = cycle(release)
            ups.append(took)
            logins.append(worst)
            bad += not ok
            print(f"{release} cycle {i:2}: lab.up {took:5.1f}s, slowest login {worst:.2f}s: {note}",
                  flush=True)
        failed += bad
        print(f"{release}: {args.cycles - bad}/{args.cycles} cycles passed; lab.up "
              f"{min(ups):.1f}-{max(ups):.1f}s (mean {sum(ups) / len(ups):.1f}s); "
              f"slowest new login {max(logins):.2f}s", flush=True)
    subprocess.run([FAB, "lab.down"], cwd=PROJECT, check=True, stdout=subprocess.DEVNULL)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
