"""What a plan is made of. A stage reads facts and returns a Plan: a list of steps, built by a
pure function, so tests can compare recorded facts in with exact steps out.

- Change: commands to run, optionally after uploading a file (a ManagedFile installed
  atomically, or a local artefact staged for the commands).
- Await: poll a fact until a predicate holds, or fail after a timeout (optionally running
  recovery steps first, e.g. switching a release back).
- Replan: the steps so far changed what the host looks like; read its facts again and plan
  the rest (starting a node before deciding whether it must join the cluster).

The engine (engine.py) is the only place that runs, prints (dry-run) or waits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from .commands import Cmd
from .facts import Fact
from .files import ManagedFile

# In a Change with `upload`, this argument is replaced with the staged file's remote path.
STAGED = "@@STAGED@@"


@dataclass(frozen=True)
class Change:
    what: str                                   # one line for people: "file /etc/x", "start y"
    commands: tuple[Cmd, ...] = ()
    file: ManagedFile | None = None             # uploaded, then installed atomically
    upload: Path | None = None                  # a local artefact, staged as STAGED
    slow: bool = False                          # shown with a live progress line

    def __post_init__(self) -> None:
        object.__setattr__(self, "commands", tuple(self.commands))


@dataclass(frozen=True)
class Await:
    what: str                                   # "w1@node2, w2@node2 answer ping"
    fact: Fact
    until: Callable[[Any], bool]
    timeout: float
    fail: str                                   # the error when it does not happen
    interval: float = 0.5
    # Checked on every poll: a reason to stop waiting early (a crash-looping unit).
    give_up: Callable[[Any], str | None] | None = None
    on_fail: tuple["Step", ...] = ()            # run before failing (e.g. switch back)

    def __post_init__(self) -> None:
        object.__setattr__(self, "on_fail", tuple(self.on_fail))


@dataclass(frozen=True)
class Replan:
    why: str


Step = Union[Change, Await, Replan]


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    output: Any = None                          # what later stages read (e.g. a release id)
    notes: list[str] = field(default_factory=list)   # said to the user, e.g. a choice made

    @property
    def changes(self) -> list[Change]:
        return [s for s in self.steps if isinstance(s, Change)]


def change(what: str, *commands: Cmd, **kw) -> Change:
    return Change(what, tuple(commands), **kw)
