"""Tables for people: the per-host summary after a run, and `fab status`. Drawn by rich,
which sizes columns to their content (long host names and IPv6 addresses stay whole)."""
from __future__ import annotations

from rich.table import Table

from .commands import mask


def table(*columns: str, title: str | None = None) -> Table:
    t = Table(*columns, box=None, title=title, title_justify="left", pad_edge=False,
              header_style="bold", show_edge=False)
    return t


def summary(engine) -> Table:
    t = table("host", "result", "changes")
    for r in engine.reports.values():
        t.add_row(r.name, r.result, str(len(r.changed)))
    return t


def details(engine) -> str:
    lines = []
    verb = "would change" if engine.dry_run else "changed"
    for r in engine.reports.values():
        if r.changed:
            lines.append(f"\n{r.name} {verb}:\n  " + "\n  ".join(r.changed))
        if r.failed:
            lines.append(f"\n{r.name} FAILED in {r.failed}")
        if r.stopped_at:
            lines.append(f"\n{r.name} INTERRUPTED: {r.stopped_at}; the steps listed above were done. "
                         "Run `fab deploy` again to finish: markers left on the host make it redo "
                         "what is still pending (restarts included).")
    return mask("\n".join(lines))


def timings(engine) -> str:
    return "stages: " + ", ".join(f"{name} {took:.1f}s" for name, took in engine.timings)
