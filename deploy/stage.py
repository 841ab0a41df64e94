"""What a stage is: which hosts, which facts, and a pure plan.

    facts(ctx, host)                 -> the Facts to read (one round trip with all others)
    prepare(ctx, facts_by_host)      -> local work once per stage (e.g. build the release)
    plan(ctx, host, facts, env)      -> Plan: steps, an output for later stages, notes

`plan` must not touch hosts or the network: given recorded facts it returns the same steps
every time, which is what the fixture tests in tests/unit/test_stage_*.py check.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .steps import Plan


@dataclass(frozen=True)
class StageEnv:
    outputs: dict[str, dict[str, Any]]    # earlier stages: stage name -> host -> output
    prepared: Any                         # what prepare() returned
    facts: dict[str, dict]                # this stage's facts of every host, as first read

    def output(self, stage: str, host: str, default: Any = None) -> Any:
        return self.outputs.get(stage, {}).get(host, default)


class Stage:
    name = ""
    serial = False          # order-sensitive: one host at a time, each awaited
    # prepare() may start as soon as the first round trip returned (it only needs facts that
    # earlier stages do not change, e.g. the hosts' Python for a release build): it then runs
    # on the control machine while earlier stages run on the hosts.
    prepare_early = False

    def hosts(self, inv) -> list:
        raise NotImplementedError

    def facts(self, ctx, host) -> list:
        return []

    def prepare(self, ctx, facts: dict[str, dict]) -> Any:
        return None

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        raise NotImplementedError

    def serial_for(self, facts: dict[str, dict]) -> bool:
        """One host at a time? Given every host's facts (a rollout that protects nothing,
        such as the first one, may go faster)."""
        return self.serial


@dataclass(frozen=True)
class Parallel:
    """Sequences of stages that depend on nothing in each other: each sequence runs in its
    own thread, the stages of one sequence in order. The next item waits for all of them."""
    sequences: tuple[tuple[Stage, ...], ...]

    def __init__(self, *sequences):
        object.__setattr__(self, "sequences", tuple(tuple(s) for s in sequences))

    @property
    def stages(self) -> list[Stage]:
        return [st for seq in self.sequences for st in seq]
