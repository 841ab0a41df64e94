"""Real redis-server and redis-sentinel on this machine's loopback, configured with the files
the kit renders for its hosts.

Each inventory host gets a loopback address (127.0.0.11, .12, ...) and a directory that
stands in for its filesystem: the kit's paths (/etc/celery-kit/redis, /etc/redis,
/var/lib/redis, /var/log/redis, /run/...) are mapped into it, and the processes are started
with the ExecStart of the kit's systemd drop-in. Facts are read by running the stages' own
fact commands here, with the same paths mapped, so the stages' plans can be checked against
real Redis and Sentinel state (e.g. "a deploy after a failover changes nothing").

Only the bind line changes meaning: every host would bind 127.0.0.1 too, which they cannot
share here, so each binds its own address only. The harness adds one user, `loopback-check`,
to the ACL files it installs, to read ACL LOG (nothing the kit deploys has that right).
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy import facts as F
from deploy import redis_model as RM
from deploy.files import ManagedFile
from deploy.inventory import load_inventory
from deploy.secrets import Secret
from deploy.stage import StageEnv
from deploy.stages import redis as RS
from deploy.steps import Change

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "fixtures"
MAPPED = re.compile(r"(/etc/celery-kit|/etc/redis|/var/lib/redis|/var/log/redis|/run|/etc/systemd)"
                    r"(/[^\s\"]*)?")
CHECK_USER = "loopback-check"
CHECK_PASSWORD = "loopback-check-0123456789"

INVENTORY = """
ssh: {{user: deploy}}
hosts:
{hosts}
redis:
  master_name: results
project:
  path: project
celery:
  app: tasks
"""


class Ctx:
    """Fixed secrets, as the unit tests' FakeCtx."""

    def __init__(self, inv):
        self.inv = inv

    def secret(self, name: str, length: int = 40) -> Secret:
        return Secret(name, f"{name.replace('_', '-')}-0123456789abcdef")


def make_inventory(tmp: Path, roles: dict[str, list[str]]):
    hosts = "\n".join(f"  {name}:\n    address: 127.0.0.{11 + i}\n    roles: [{', '.join(r)}]"
                      for i, (name, r) in enumerate(roles.items()))
    if not (tmp / "project").exists():
        shutil.copytree(FIXTURES / "project", tmp / "project")
    path = tmp / "inventory.yaml"
    path.write_text(INVENTORY.format(hosts=hosts))
    return load_inventory(path)


@dataclass
class Host:
    """One inventory host: its stand-in root and its running processes."""
    inv_host: object
    root: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    argv: dict[str, list[str]] = field(default_factory=dict)
    # real path -> (sha256 as installed here, sha256 the kit rendered): while a file is as
    # installed, its facts report the kit's sha256, so that plans compare as on a host.
    installed: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.inv_host.address

    def path(self, real: str) -> Path:
        """Where a path of the real host lives in this host's stand-in root."""
        found = MAPPED.match(real)
        if not found or found.group(0) != real:
            raise ValueError(real)
        return self.root / found.group(1).strip("/").replace("/", "_") / (found.group(2) or "/").lstrip("/")

    def map_text(self, text: str) -> str:
        return MAPPED.sub(lambda m: str(self.path(m.group(0))).rstrip("/"), text)

    def unmap_text(self, text: str) -> str:
        """Back to the real host's paths (for recorded outputs)."""
        for prefix in ("/etc/celery-kit", "/etc/redis", "/var/lib/redis", "/var/log/redis", "/run", "/etc/systemd"):
            text = text.replace(str(self.path(prefix)).rstrip("/"), prefix)
        return text

    def install(self, f: ManagedFile) -> None:
        """As the engine would: content, owner, group, mode (Debian's redis user exists here)."""
        text = f.content.decode()
        if f.path.endswith(".conf"):
            text = self.map_text(text)
            text = text.replace(f"bind {self.address} 127.0.0.1 -::1", f"bind {self.address}")
            text = text.replace(f"bind {self.address} 127.0.0.1", f"bind {self.address}")
        if f.path.endswith(".acl"):
            text += f"user {CHECK_USER} on >{CHECK_PASSWORD} ~* &* +@all\n"
        target = self.path(f.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        self.attrs(target, f.owner, f.group, f.mode)
        self.installed[f.path] = (hashlib.sha256(text.encode()).hexdigest(), f.sha256)

    @staticmethod
    def attrs(target: Path, owner: str, group: str, mode: int) -> None:
        shutil.chown(target, owner, group)
        target.chmod(mode)

    def apply(self, steps: list) -> list[str]:
        """Install the files of a plan's Change steps; the rest (systemctl, chown) is the
        engine's and is done by start()/restart() here. Returns what the plan said."""
        said = []
        for s in steps:
            if isinstance(s, Change):
                said.append(s.what)
                if s.file is not None:
                    self.install(s.file)
                elif s.what.startswith(("directory ", "attributes of ")):
                    argv = s.commands[-1].argv          # chmod MODE PATH, after chown
                    target = self.path(argv[-1])
                    target.mkdir(parents=True, exist_ok=True) if s.what.startswith("directory") else None
                    owner, group = s.commands[-2].argv[1].split(":")
                    self.attrs(target, owner, group, int(argv[1], 8))
        return said

    def start(self, unit: str) -> None:
        dropin = self.path(RM.dropin(unit)).read_text()
        exec_start = [l for l in dropin.splitlines() if l.startswith("ExecStart=/")][0]
        argv = shlex.split(self.map_text(exec_start[len("ExecStart="):] + "\n").strip())
        argv = [a for a in argv if a not in ("--supervised", "systemd")]
        for d in ("var_lib_redis", "var_log_redis", "run/redis", "run/sentinel", "etc_redis"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.argv[unit] = argv
        self.procs[unit] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                            cwd=self.root)

    def kill(self, unit: str) -> None:
        p = self.procs.pop(unit, None)
        if p is not None:
            p.kill()
            p.wait(10)

    def stop(self, unit: str) -> None:
        p = self.procs.pop(unit, None)
        if p is not None:
            p.terminate()
            p.wait(20)

    def running(self, unit: str) -> bool:
        p = self.procs.get(unit)
        return p is not None and p.poll() is None

    # Facts, read like the engine does (paths mapped into this host's root) -------------------
    def gather(self, facts: list[F.Fact]) -> dict:
        out = {}
        for fact in facts:
            if fact.key == "units":
                out[fact.key] = {u: {"Id": u, "ActiveState": "active" if self.running(u) else "inactive",
                                     "UnitFileState": "enabled"} for u in (RM.REDIS_UNIT, RM.SENTINEL_UNIT)}
                continue
            if fact.key == "packages":
                version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "redis-server"],
                                         capture_output=True, text=True).stdout
                out[fact.key] = {"redis-server": version, "redis-sentinel": version}
                continue
            argv = [self.map_text(a + "\n")[:-1] if a.startswith("/") else a for a in fact.argv]
            if fact.key in ("state", "redis state", "sentinel state", "redis"):
                argv = [*argv[:8], self.address] if len(argv) == 8 else argv
            r = subprocess.run(argv, capture_output=True, text=True)
            stdout = r.stdout
            if fact.key == "files":
                stdout = "\n".join(self._unmap_file_line(l) for l in stdout.splitlines())
            out[fact.key] = fact.parse(stdout, r.returncode)
        return out

    def _unmap_file_line(self, line: str) -> str:
        path, attrs, sha = line.split("\t")
        for real in (RM.REDIS_CONF, RM.REDIS_REPLICATION, RM.REDIS_ACL, RM.SENTINEL_CONF, RM.SENTINEL_AUTH,
                     RM.SENTINEL_ACL, RM.ADMIN_PASSWORD, RM.REDIS_MAIN, RM.SENTINEL_MAIN, RM.LEGACY_AUTH,
                     RM.dropin(RM.REDIS_UNIT), RM.dropin(RM.SENTINEL_UNIT)):
            if str(self.path(real)) == path:
                here, kit = self.installed.get(real, (None, None))
                return f"{real}\t{attrs}\t{kit if sha == here else sha}"
        return line


class Cluster:
    """The inventory's redis and sentinel hosts on loopback, deployed by the stages' plans."""

    def __init__(self, tmp: Path, roles: dict[str, list[str]]):
        self.tmp = tmp
        self.inv = make_inventory(tmp, roles)
        self.ctx = Ctx(self.inv)
        self.hosts = {h.name: Host(h, tmp / "hosts" / h.name) for h in self.inv.hosts}

    def facts(self, stage) -> dict[str, dict]:
        return {name: self.hosts[name].gather(stage.facts(self.ctx, self.inv.host(name)))
                for name in [h.name for h in stage.hosts(self.inv)]}

    def plans(self, stage) -> dict[str, list]:
        """Every host's plan from freshly read facts, as a deploy would make them."""
        facts = self.facts(stage)
        env = StageEnv({}, stage.prepare(self.ctx, facts), facts)
        return {name: stage.plan(self.ctx, self.inv.host(name), f, env).steps for name, f in facts.items()}

    def deploy(self, stage, unit: str) -> dict[str, list[str]]:
        """One stage, host by host: files installed, the unit (re)started when planned."""
        said = {}
        facts = self.facts(stage)
        env = StageEnv({}, stage.prepare(self.ctx, facts), facts)
        for name in facts:
            host = self.hosts[name]
            steps = stage.plan(self.ctx, self.inv.host(name), facts[name], env).steps
            said[name] = host.apply(steps)
            if any(w.startswith(("start ", "restart ")) for w in said[name]):
                host.stop(unit)
                host.start(unit)
                wait_for(lambda: self.answers(name, unit), 30, f"{unit} on {name}")
        return said

    def answers(self, name: str, unit: str) -> bool:
        state = self.state(name)
        if unit == RM.REDIS_UNIT:
            return bool(state.get("redis"))
        return bool((state.get("sentinel") or {}).get("master"))

    def recorded_state(self, name: str) -> str:
        """The state fact's raw JSON, paths as on a real host."""
        return self.hosts[name].unmap_text(json.dumps(self.state(name), indent=1)) + "\n"

    def state(self, name: str) -> dict:
        h = self.hosts[name]
        return h.gather([RS.state_fact(self.inv, self.inv.host(name))])["state"]

    def down(self) -> None:
        for h in self.hosts.values():
            for unit in list(h.procs):
                h.stop(unit)

    def cli(self, name: str, user: str, password: str, *args: str, sentinel: bool = False) -> str:
        port = self.inv.redis.sentinel_port if sentinel else self.inv.redis.port
        r = subprocess.run(["redis-cli", "--no-auth-warning", "--user", user, "-h", self.hosts[name].address,
                            "-p", str(port), *args], capture_output=True, text=True,
                           env={"REDISCLI_AUTH": password, "PATH": "/usr/bin:/bin"})
        return (r.stdout + r.stderr).strip()

    def check(self, name: str, *args: str, sentinel: bool = False) -> str:
        return self.cli(name, CHECK_USER, CHECK_PASSWORD, *args, sentinel=sentinel)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")
