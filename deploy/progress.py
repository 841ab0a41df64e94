"""What the user sees while a run goes on: plain lines, and a live line per host for long
steps (apt, uploads, node starts, ping waits) with the time elapsed.

On a terminal the live lines are drawn by rich; when output is not a terminal (CI, a log
file) a long step prints a line when it starts, one every 15 s while it runs, and one when
it ends. Every line passes through commands.mask(): no secret is ever printed.
"""
from __future__ import annotations

import itertools
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .commands import mask

HEARTBEAT = 15.0        # seconds between "still running" lines when not on a terminal


@dataclass
class _Running:
    host: str
    what: str
    started: float


class Progress:
    def __init__(self, console: Console | None = None):
        self.console = console or make_console()
        self.live_mode = self.console.is_terminal
        self._running: dict[int, _Running] = {}
        self._ids = itertools.count()
        # Reentrant: the Ctrl-C handler may print while the main thread is inside say().
        self._lock = threading.RLock()
        self._live: Live | None = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    # Plain lines ----------------------------------------------------------------------
    def say(self, text: str) -> None:
        with self._lock:
            self.console.print(mask(text), markup=False, highlight=False, soft_wrap=True)

    # Long steps -----------------------------------------------------------------------
    @contextmanager
    def step(self, host: str, what: str, announce: bool = True):
        """A step that may take a while. Yields nothing; the caller just does the work."""
        key = next(self._ids)
        now = time.monotonic()
        with self._lock:
            self._running[key] = _Running(host, mask(what), now)
            self._ensure_display()
        if announce and not self.live_mode:
            self.say(f"  {host}: {what} ...")
        ok = False
        try:
            yield
            ok = True
        finally:
            with self._lock:
                item = self._running.pop(key)
            took = time.monotonic() - item.started
            if announce:
                self.say(f"  {host}: {what} {'done' if ok else 'FAILED'} ({took:.1f}s)")

    def _ensure_display(self) -> None:
        if self.live_mode and self._live is None:
            self._live = Live(self._table(), console=self.console, refresh_per_second=4,
                              transient=True, get_renderable=self._table)
            self._live.start()
        if not self.live_mode and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _table(self) -> Table:
        table = Table(box=None, show_header=False, pad_edge=False)
        now = time.monotonic()
        for r in list(self._running.values()):
            table.add_row(r.host, r.what, f"{now - r.started:5.1f}s")
        return table

    def _tick(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            now = time.monotonic()
            with self._lock:
                running = [r for r in self._running.values() if now - r.started >= HEARTBEAT]
            for r in running:
                self.say(f"  {r.host}: {r.what} ... still running ({now - r.started:.0f}s)")

    def close(self) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.stop()
            self._live = None


def make_console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        # A log or CI: no wrapping at 80 columns (diffs and paths must stay whole).
        console = Console(highlight=False, width=200, no_color=True)
    return console
