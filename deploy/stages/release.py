"""Ship the task package: build the release for each host's interpreter on the control machine
(prepare), upload it where it is missing, and install it into releases/<id>/venv offline.
Switching `current` happens later, during the rolling restart (stages/workers.py), which
reads this stage's output: the release id each host should run."""
from __future__ import annotations

from .. import build
from .. import commands as C
from .. import facts as F
from ..errors import DeployFailed
from ..stage import Stage, StageEnv
from ..steps import STAGED, Change, Plan

BASE = "/opt/celery-kit"
RELEASES = f"{BASE}/releases"
CURRENT = f"{BASE}/current"
APP_ROLES = ("worker", "beat", "flower")

# One round trip: unpack, make the venv in its final place (venv scripts carry absolute
# paths), install from the shipped wheels only, and mark it complete last. A release dir
# without .complete is debris from an interrupted deploy and is rebuilt.
_INSTALL = """set -e
R="$1"; T="$2"; W="$3"
rm -rf "$R"; mkdir -p "$R"
tar -xzf "$T" -C "$R"
# No pip inside the release venv (it never installs anything later): pip runs from the wheel
# Debian ships with python3-venv, which also saves seeding pip into every venv.
P=$(ls /usr/share/python-wheels/pip-*.whl 2>/dev/null | head -n 1)
if [ -n "$P" ]; then
  python3 -m venv --without-pip "$R/venv"; PIP="$R/venv/bin/python $P/pip"
else
  python3 -m venv "$R/venv"; PIP="$R/venv/bin/pip"
fi
$PIP install -q --no-index --no-cache-dir --disable-pip-version-check \\
  --find-links "$R/wheels" -r "$R/requirements.txt" "$R/wheels/$W"
# The kit's settings module, importable as celery_kit_config inside the venv.
mv "$R/celery_kit_config.py" "$("$R/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"
rm -rf "$R/wheels" "$T"
chmod -R go-w "$R"
touch "$R/.complete"
"""


def app_hosts(inv) -> list:
    return [h for h in inv.hosts if any(h.has(r) for r in APP_ROLES)]


def project_of(inv) -> build.Project:
    return build.Project(inv.project.path, inv.project.lock)


def releases_fact() -> F.Fact:
    """Complete releases, newest first, and where `current` points."""
    script = (f'readlink {CURRENT} || echo; cd {RELEASES} 2>/dev/null && '
              'ls -1t | while read d; do [ -e "$d/.complete" ] && echo "$d"; done; true')
    return F.Fact("releases", ("sh", "-c", script), parse_releases)


def parse_releases(out: str, rc: int = 0) -> dict:
    lines = out.split("\n")
    current = lines[0].strip().rsplit("/", 1)[-1] if lines and lines[0].strip() else None
    return {"current": current, "complete": [line.strip() for line in lines[1:] if line.strip()]}


def target_fact() -> F.Fact:
    return F.Fact("target", build.TARGET_FACT_ARGV, build.parse_target)


def prune_plan(releases: list[str], keep: int, protect: set[str]) -> list[Change]:
    """Pure: remove complete releases beyond the newest `keep`, never current or new."""
    old = [r for r in releases[keep:] if r not in protect]
    if not old:
        return []
    return [Change(f"remove old releases {', '.join(old)}",
                   [C.cmd("rm", "-rf", *[f"{RELEASES}/{r}" for r in old])])]


def install_change(rel: build.Release, python: str) -> Change:
    return Change(f"release {rel.id} (Python {python})",
                  [C.sh(_INSTALL, f"{RELEASES}/{rel.id}", STAGED, rel.wheel)], upload=rel.tarball, slow=True)


def check_lock(inv, project: build.Project) -> None:
    """The release venv runs the workers, and Flower on the flower host: its lock must pin them."""
    need = ["celery"] + (["flower"] if inv.with_role("flower") else [])
    missing = sorted(set(need) - set(build.pinned(project.lock, need)))
    if missing:
        raise DeployFailed(f"{project.lock} does not pin {', '.join(missing)}: the release's venv runs "
                           f"{'the workers and Flower' if 'flower' in need else 'the workers'}; add them "
                           "with exact versions")


class Release(Stage):
    name = "release"
    prepare_early = True        # the build only needs each host's Python: it overlaps apt

    def hosts(self, inv) -> list:
        return app_hosts(inv)

    def facts(self, ctx, host) -> list:
        return [target_fact(), releases_fact()]

    def prepare(self, ctx, facts: dict) -> dict:
        """Build once per distinct target (cached by content): target -> Release."""
        project = project_of(ctx.inv)
        check_lock(ctx.inv, project)
        out = {}
        for name, f in facts.items():
            if f["target"] is None:
                raise DeployFailed(f"{name}: python3 on the host did not report its version")
            if f["target"] not in out:
                out[f["target"]] = build.build_release(project, ctx.inv.state_dir / "build", f["target"])
        return out

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        rel: build.Release = env.prepared[facts["target"]]
        have = facts["releases"]
        steps = [] if rel.id in have["complete"] else [install_change(rel, facts["target"].python)]
        steps += prune_plan(have["complete"], ctx.inv.releases.keep, {rel.id, have["current"] or ""})
        return Plan(steps, output=rel.id)


class Previous(Stage):
    """`fab rollback`: the release each app host ran before its current one."""
    name = "previous release"

    def hosts(self, inv) -> list:
        return app_hosts(inv)

    def facts(self, ctx, host) -> list:
        return [releases_fact()]

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        have = facts["releases"]
        older = [r for r in have["complete"] if r != have["current"]]
        if not older:
            raise DeployFailed("no previous release to roll back to")
        return Plan([], output=older[0], notes=[f"{have['current']} -> {older[0]}"])
