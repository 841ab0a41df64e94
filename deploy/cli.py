"""Command-line conventions of the kit's fab tasks.

- Short flags are the same in every task (no accidental letters): -i --inventory,
  -d --dry-run, -n --instances, -c --concurrency (scale-workers), -u --unit, -s --since,
  -f --follow (logs), -k --check (status).
- Numbers are checked here, with a message, instead of ending in a traceback.
- Fabric's own core flags are honoured: -H limits a run to those inventory hosts (Fabric
  would otherwise run the whole-inventory task once per host), -t / -T set the connect and
  command timeouts, -i before the task name gives one SSH key for every host. Those the kit
  cannot honour (-S, the password prompts) are refused with a message.
"""
from __future__ import annotations

from pathlib import Path

from fabric.executor import Executor as FabricExecutor
from invoke import Task, task
from invoke.exceptions import Exit

from .runner import Options
from .transport import Timeouts

SHORT = {"inventory": "i", "dry_run": "d", "instances": "n", "concurrency": "c", "unit": "u",
         "since": "s", "follow": "f", "check": "k"}
_CORE_HOSTS: list[str] = []


class KitTask(Task):
    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT.get(name)
        if short and short not in taken_names:
            opts["names"] = opts["names"] + [short]
        return opts


def kit_task(*args, **kwargs):
    return task(*args, klass=KitTask, auto_shortflags=False, **kwargs)


class Executor(FabricExecutor):
    """Runs each task once, whatever -H says; -H is read by the task as a host limit."""

    def expand_calls(self, calls, apply_hosts=True):
        value = self.core[0].args.hosts.value if self.core else None
        _CORE_HOSTS[:] = [h.strip() for h in value.split(",") if h.strip()] if value else []
        return super().expand_calls(calls, apply_hosts=False)


def number(value, flag: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise Exit(f"{flag} must be a whole number, got {value!r}", code=2)
    if not low <= n <= high:
        raise Exit(f"{flag} must be between {low} and {high}, got {n}", code=2)
    return n


def options(c, dry_run: bool = False) -> Options:
    """Run options from Fabric's core flags (refusing the ones the kit cannot honour)."""
    config = c.config
    kw = dict(getattr(config, "connect_kwargs", {}) or {})
    if kw.get("password") or kw.get("passphrase"):
        raise Exit("the SSH password prompts are not supported: the kit logs in with the key "
                   "the inventory's ssh: section names (or -i KEY)", code=2)
    if getattr(config, "_runtime_ssh_path", None):
        raise Exit("-S/--ssh-config is not supported: SSH settings come from the inventory's "
                   "ssh: section", code=2)
    keys = kw.get("key_filename") or []
    keys = [keys] if isinstance(keys, str) else list(keys)
    if len(keys) > 1:
        raise Exit("-i: give one key (the kit uses one key for every host)", code=2)
    timeouts = Timeouts(connect=float(kw.get("timeout") or config.timeouts.connect or 15),
                        command=float(config.timeouts.command or 3600))
    return Options(dry_run=dry_run, hosts=tuple(_CORE_HOSTS) or None, timeouts=timeouts,
                   key=Path(keys[0]).expanduser().resolve() if keys else None)
