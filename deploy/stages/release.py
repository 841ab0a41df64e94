"""Ship the task package: build the release for each hosts' interpreter on the control
machine, upload it where it is missing, and install it into releases/<id>/venv offline.
Switching `current` happens later, during the rolling restart (stages/workers.py)."""
from __future__ import annotations

from .. import build
from .. import commands as C
from .. import facts as F
from ..context import Ctx
from ..engine import Change, DeployFailed, Engine, apply_plan

BASE = "/opt/celery-kit"
RELEASES = f"{BASE}/releases"
CURRENT = f"{BASE}/current"
APP_ROLES = ("worker", "beat", "flower")

# One round trip: unpack, make the venv in its final place (venv scripts carry absolute
# paths), install from the shipped wheels only, and mark it complete last. A release dir
# without .complete is debris from an interrupted deploy and is rebuilt.
_INSTALL = """set -e
R="$1"; T="$2"
rm -rf "$R"; mkdir -p "$R"
tar -xzf "$T" -C "$R"
python3 -m venv "$R/venv"
"$R/venv/bin/pip" install -q --no-index --no-cache-dir --disable-pip-version-check \
  --find-links "$R/wheels" -r "$R/requirements.txt" celery-kit-app
rm -rf "$R/wheels" "$T"
chmod -R go-w "$R"
touch "$R/.complete"
"""


def app_hosts(inv) -> list:
    return [h for h in inv.hosts if any(h.has(r) for r in APP_ROLES)]


def releases_fact() -> F.Fact:
    """Complete releases, newest first, and where `current` points."""
    script = (f'readlink {CURRENT} || echo; cd {RELEASES} 2>/dev/null && '
              'ls -1t | while read d; do [ -e "$d/.complete" ] && echo "$d"; done; true')
    return F.Fact("releases", ("sh", "-c", script), parse_releases)


def parse_releases(out: str, rc: int = 0) -> dict:
    lines = out.split("\n")
    current = lines[0].strip().rsplit("/", 1)[-1] if lines and lines[0].strip() else None
    return {"current": current, "complete": [l.strip() for l in lines[1:] if l.strip()]}


def prune_plan(releases: list[str], keep: int, protect: set[str]) -> list[Change]:
    """Pure: remove complete releases beyond the newest `keep`, never current or new."""
    old = [r for r in releases[keep:] if r not in protect]
    if not old:
        return []
    return [Change(f"remove old releases {', '.join(old)}",
                   [C.cmd("rm", "-rf", *[f"{RELEASES}/{r}" for r in old])])]


def run(ctx: Ctx, engine: Engine) -> None:
    """Fills ctx.release: host -> release id it should run (the workers stage switches)."""
    hosts = app_hosts(ctx.inv)
    wanted = ctx.release

    def one(s, report):
        facts = s.gather([F.Fact("target", build.TARGET_FACT_ARGV, build.parse_target), releases_fact()],
                         sudo=False)
        target = facts["target"]
        if target is None:
            raise DeployFailed("python3 on the host did not report its version")
        rid, tarball = build.build_release(ctx.inv.state_dir, target)
        wanted[s.name] = rid
        plan = []
        if rid not in facts["releases"]["complete"]:
            plan.append(Change(f"release {rid} (Python {target.python})", [], ))
        if plan and not s.dry_run:
            staged = s.stage(tarball.read_bytes())
            plan[0].commands = [C.sh(_INSTALL, f"{RELEASES}/{rid}", staged)]
        protect = {rid, facts["releases"]["current"] or ""}
        plan += prune_plan(facts["releases"]["complete"], ctx.inv.releases.keep, protect)
        apply_plan(s, plan, report, "release")

    engine.stage("release", [h.name for h in hosts], one)
