"""Worker scale per host: the inventory's value unless `fab scale-workers` set another.

scale-workers records its choice in <state_dir>/scale.yaml so the next `fab deploy`
keeps it; editing the inventory's instances/concurrency for a host clears the override
(the file remembers which inventory value it overrode)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Scale:
    instances: int
    concurrency: int
    source: str        # "inventory" or "scale-workers"


def _path(inv) -> Path:
    return inv.state_dir / "scale.yaml"


def load_overrides(inv) -> dict:
    p = _path(inv)
    return (yaml.safe_load(p.read_text()) or {}) if p.exists() else {}


def host_scale(inv, host) -> Scale | None:
    if not host.has("worker"):
        return None
    base = Scale(host.worker.instances, host.worker.concurrency, "inventory")
    o = load_overrides(inv).get(host.name)
    # An override only stands while the inventory still says what it said when it was set.
    if o and o.get("inventory") == [base.instances, base.concurrency]:
        return Scale(o["instances"], o["concurrency"], "scale-workers")
    return base


def set_scale(inv, host, instances: int | None, concurrency: int | None) -> Scale:
    current = host_scale(inv, host)
    new = Scale(current.instances if instances is None else instances,
                current.concurrency if concurrency is None else concurrency, "scale-workers")
    data = load_overrides(inv)
    data[host.name] = {"instances": new.instances, "concurrency": new.concurrency,
                       "inventory": [host.worker.instances, host.worker.concurrency]}
    _path(inv).parent.mkdir(parents=True, exist_ok=True)
    tmp = _path(inv).with_suffix(".tmp")
    tmp.write_text("# Written by `fab scale-workers`; `fab deploy` keeps these.\n" +
                   yaml.safe_dump(data, default_flow_style=False))
    tmp.replace(_path(inv))
    return new
