"""Helpers for the stage fixture tests: the fixture inventory, a context with fixed secrets,
recorded host output, and short views of plans (what each step says, which commands)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from deploy.inventory import load_inventory
from deploy.secrets import Secret
from deploy.stage import StageEnv
from deploy.steps import Await, Change, Plan, Replan

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
RECORDED = HERE / "recorded"


def inventory(source: str = "inventory.yaml", **sections):
    """The fixture inventory, with whole sections replaced field by field:
    inventory(rabbitmq={"queue_mode": "quorum"})."""
    inv = load_inventory(FIXTURES / source)
    for name, fields in sections.items():
        inv = dataclasses.replace(inv, **{name: dataclasses.replace(getattr(inv, name), **fields)})
    return inv


class FakeCtx:
    """A Ctx whose secrets are fixed strings (never generated, never written)."""

    def __init__(self, inv):
        self.inv = inv

    def secret(self, name: str, length: int = 40) -> Secret:
        return Secret(name, f"{name.replace('_', '-')}-0123456789abcdef"[:max(length, 20)])


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


def env(outputs: dict | None = None, prepared=None, facts: dict | None = None) -> StageEnv:
    return StageEnv(outputs or {}, prepared, facts or {})


def whats(plan: Plan | list) -> list[str]:
    steps = plan.steps if isinstance(plan, Plan) else plan
    out = []
    for s in steps:
        if isinstance(s, Change):
            out.append(s.what)
        elif isinstance(s, Await):
            out.append(f"await: {s.what}")
        elif isinstance(s, Replan):
            out.append(f"replan: {s.why}")
    return out


def argvs(step: Change) -> list[tuple[str, ...]]:
    return [c.argv for c in step.commands]


def all_argv_text(plan: Plan | list) -> str:
    steps = plan.steps if isinstance(plan, Plan) else plan
    text = []
    for s in steps:
        if isinstance(s, Change):
            text += [" ".join(c.argv) for c in s.commands]
        elif isinstance(s, Await):
            text.append(" ".join(s.fact.argv))
            text += [t for t in all_argv_text(list(s.on_fail)).split("\n")]
    return "\n".join(text)


def step(plan: Plan, what: str):
    found = [s for s in plan.steps if getattr(s, "what", None) == what or
             (isinstance(s, Await) and f"await: {s.what}" == what)]
    assert found, f"no step {what!r} in {whats(plan)}"
    return found[0]
