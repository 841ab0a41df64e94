"""`fab logs`: the hosts' journals as one stream ordered by time, each line prefixed with its
host and unit, every known secret masked.

Pure parts (unit-tested on recorded journalctl output):
- which units each host runs, from its roles, narrowed by --unit (`request`);
- the journalctl command for one host (`journal_cmd`, `follow_cmd`);
- journalctl's JSON lines -> records (`parse_line`, `parse`);
- records of several hosts -> one list ordered by time (`merge`);
- a small reorder buffer for following (`Reorder`) and the lines people read (`Formatter`).

I/O: `read` (each host's last lines, one command per host, in parallel) and `follow` (one
SSH channel per host, lines printed as they arrive). A followed journalctl runs under a small
shell wrapper that ends it when the channel's stdin reaches EOF, so closing the channel (Ctrl-C)
never leaves a journalctl running on a host, whatever the host's systemd version does about a
closed stdout.
"""
from __future__ import annotations

import fnmatch
import heapq
import itertools
import json
import queue
import re
import signal
import sys
import threading
import time
import unicodedata
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Callable, Iterable, Iterator, Protocol

from . import commands as C
from . import runner
from .commands import Cmd, mask
from .context import Ctx
from .inventory.checks import suggest
from .scale import host_scale
from .stages import flower as flower_stage, rabbitmq as rabbitmq_stage, redis as redis_stage
from .stages import workers as workers_stage
from .transport import Session

# Units --------------------------------------------------------------------------------------

RABBITMQ = rabbitmq_stage.UNIT                   # rabbitmq-server.service
REDIS = redis_stage.UNIT                         # redis-server.service
SENTINEL = "redis-sentinel.service"
WORKERS = workers_stage.instance("*")            # celery-worker@*.service
BEAT = workers_stage.BEAT                        # celery-beat.service
FLOWER = flower_stage.UNIT                       # flower.service
NGINX = flower_stage.NGINX                       # nginx.service
KIT_UNITS = (RABBITMQ, REDIS, SENTINEL, WORKERS, BEAT, FLOWER, NGINX)

# --unit short names; a short name narrows each host's own units (its roles decide).
SHORT = {"worker": (WORKERS,), "beat": (BEAT,), "flower": (FLOWER,), "rabbitmq": (RABBITMQ,),
         "redis": (REDIS, SENTINEL), "sentinel": (SENTINEL,), "nginx": (NGINX,)}
# A literal unit name or glob, as journalctl takes it (its argument is --unit=NAME, so even a
# leading dash could not become an option; refused anyway, it is never a unit).
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@\\*?\[\]-]{1,256}")
UNIT_SUFFIX = re.compile(r"\.(service|socket|timer|target|mount|path|scope|slice|swap|device|automount)$")
# journalctl time specifications: "10 min ago", "2026-11-28 10:00", "yesterday", "-1h", "@1700000000".
SINCE = re.compile(r"[A-Za-z0-9 :.,+@/-]{1,64}")
NO_DATA = "No data available"    # journalctl: a --unit glob matched no unit in the journal

DEFAULT_LINES = 100              # per host, when not following
DEFAULT_FOLLOW_LINES = 10        # per host, before following (journalctl -f's own default)
MAX_LINES = 100_000


class UsageError(ValueError):
    """A --host, --unit, --since or --lines the task refuses before connecting anywhere."""


def default_units(inv, host) -> list[str]:
    """The kit's units that run on `host`, given its roles."""
    units = []
    if host.has("rabbitmq"):
        units.append(RABBITMQ)
    if host.has("redis"):
        units.append(REDIS)
    if host in inv.sentinel_hosts():
        units.append(SENTINEL)
    if host.has("worker"):
        units.append(WORKERS)
    if host.has("beat"):
        units.append(BEAT)
    if host.has("flower"):
        units += [FLOWER, NGINX]
    return units


def _unit_name(name: str) -> str:
    """A unit name or glob with its suffix, as journalctl mangles it (.service by default)."""
    return name if UNIT_SUFFIX.search(name) else name + ".service"


def parse_units(given: Iterable[str]) -> tuple[set[str] | None, list[str]]:
    """--unit values (repeated or comma lists) -> (the kit's units they narrow to, or None for
    all of them; other unit names and globs, for every selected host)."""
    names = [n.strip() for g in given for n in g.split(",") if n.strip()]
    if not names:
        return None, []
    kit: set[str] = set()
    literal: list[str] = []
    stems = {u.removesuffix(".service"): u for u in KIT_UNITS}
    for name in names:
        if name in SHORT:
            kit.update(SHORT[name])
        elif name in stems or name in KIT_UNITS:
            kit.add(stems.get(name, name))
        elif re.search(r"[.@*?\[]", name):
            if not UNIT_NAME.fullmatch(name) or name.startswith("-"):
                raise UsageError(f"--unit: {name!r} is not a unit name or glob (letters, digits "
                                 f"and : _ . @ - \\ * ? [ ])")
            unit = _unit_name(name)
            (kit.add if unit in KIT_UNITS else literal.append)(unit)
        else:
            raise UsageError(f"--unit: unknown name {name!r}{suggest(name, SHORT)}; the short names are "
                             f"{', '.join(SHORT)}; or give a unit's full name or a glob "
                             f"(ssh.service, 'celery-*')")
    return kit, literal


def parse_hosts(inv, given: Iterable[str], flag: str) -> list[str]:
    names = [n.strip() for g in given for n in g.split(",") if n.strip()]
    unknown = [n for n in names if n not in inv.names()]
    if unknown:
        raise UsageError(f"{flag}: no host named {', '.join(unknown)} in {inv.path}; hosts are "
                         f"{', '.join(inv.names())}")
    return names


def check_since(since: str | None) -> str | None:
    if since is None:
        return None
    value = since.strip()
    if not SINCE.fullmatch(value):
        raise UsageError("--since: give a time journalctl understands, e.g. '10 min ago', "
                         "'2026-11-28 10:00', 'yesterday' (at most 64 letters, digits, spaces "
                         "and : . , + @ / -)")
    return value


@dataclass(frozen=True)
class Request:
    units: dict[str, tuple[str, ...]]     # host name -> journalctl --unit values, inventory order
    since: str | None = None
    lines: int = DEFAULT_LINES
    follow: bool = False

    def labels(self) -> list[str]:
        return sorted({label_of(u) for us in self.units.values() for u in us})


def _runs_on(inv, host, unit: str) -> bool:
    """Whether `unit` (a kit unit, or a name one of them matches: celery-worker@3.service) can
    run on `host`; a unit that is none of the kit's could run anywhere."""
    kit = [k for k in KIT_UNITS if fnmatch.fnmatchcase(unit, k)]
    return not kit or any(k in default_units(inv, host) for k in kit)


def request(inv, hosts: Iterable[str] = (), core_hosts: Iterable[str] = (), units: Iterable[str] = (),
            since: str | None = None, lines: int | None = None, follow: bool = False) -> Request:
    """What to read where, checked before anything connects. `hosts` from --host, `core_hosts`
    from fab -H: together, the hosts to read (default all)."""
    chosen = set(parse_hosts(inv, hosts, "--host")) | set(parse_hosts(inv, core_hosts, "-H"))
    kit, literal = parse_units(units)
    if lines is not None and not (0 if follow else 1) <= lines <= MAX_LINES:
        raise UsageError(f"--lines must be between {0 if follow else 1} and {MAX_LINES}, got {lines}")
    selected = [h for h in inv.hosts if not chosen or h.name in chosen]
    per_host: dict[str, tuple[str, ...]] = {}
    for host in selected:
        own = [u for u in default_units(inv, host) if kit is None or u in kit]
        own += [u for u in literal if _runs_on(inv, host, u)]
        if WORKERS in own:
            # Each instance by name too: journalctl resolves a glob against the units already in
            # the journal when it starts (and refuses a glob that matches none).
            scale = host_scale(inv, host)
            own += [workers_stage.instance(i) for i in range(1, (scale.instances if scale else 0) + 1)]
        if own:
            per_host[host.name] = tuple(own)
    if not per_host:
        names = [h.name for h in selected]
        asked = sorted(kit or ()) + literal
        raise UsageError(f"nothing to read: {', '.join(names)} {'runs' if len(names) == 1 else 'run'} "
                         f"none of {', '.join(label_of(u) for u in asked)}" +
                         "".join(f"; {label_of(u)} runs on "
                                 f"{', '.join(h.name for h in inv.hosts if _runs_on(inv, h, u)) or 'no host'}"
                                 for u in asked))
    default = DEFAULT_FOLLOW_LINES if follow else DEFAULT_LINES
    return Request(per_host, check_since(since), default if lines is None else lines, follow)


def journal_argv(units: Iterable[str], since: str | None, lines: int, follow: bool) -> list[str]:
    argv = ["journalctl", "--output=json", "--no-pager", "--all", "--quiet", f"--lines={lines}"]
    if since:
        argv.append(f"--since={since}")
    if follow:
        argv.append("--follow")
    return argv + [f"--unit={u}" for u in units]


def journal_cmd(req: Request, host: str) -> Cmd:
    """Read the host's journal as root (journal access), stdin from nothing."""
    return C.cmd(*journal_argv(req.units[host], req.since, req.lines, False))


# journalctl runs in the background; the wrapper waits for EOF on its own stdin (the SSH
# channel's) and then ends journalctl; when journalctl ends by itself, so does the wrapper.
# fd 3 keeps the channel's stdin: an asynchronous list's stdin is /dev/null otherwise.
FOLLOW_SCRIPT = ('exec 3<&0; journalctl "$@" </dev/null 3<&- & j=$!; '
                 '{ cat <&3 >/dev/null 2>&1; kill $j 2>/dev/null; } & w=$!; '
                 'wait $j; rc=$?; kill $w 2>/dev/null; exit $rc')


def follow_cmd(req: Request, host: str) -> Cmd:
    return C.sh(FOLLOW_SCRIPT, *journal_argv(req.units[host], req.since, req.lines, True)[1:])


# Records ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    host: str
    ts: int              # µs since the epoch (__REALTIME_TIMESTAMP)
    unit: str            # the unit the entry is from or about, without .service
    message: str
    priority: int = 6


def text(value) -> str:
    """A journal field as journalctl's JSON gives it: a string, an array of bytes (not UTF-8
    or not printable), null (too large without --all), or an array of those (a field given
    more than once)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if all(isinstance(b, int) and 0 <= b < 256 for b in value):
            return bytes(value).decode("utf-8", "replace")
        return "\n".join(text(v) for v in value)
    return str(value)


def label_of(unit: str) -> str:
    return unit.removesuffix(".service")


def _label(entry: dict) -> str:
    unit = text(entry.get("_SYSTEMD_UNIT"))
    if not unit or unit == "init.scope":      # systemd's own messages about a unit
        unit = (text(entry.get("UNIT")) or text(entry.get("OBJECT_SYSTEMD_UNIT")) or unit or
                text(entry.get("SYSLOG_IDENTIFIER")) or "?")
    return label_of(unit)


def parse_line(host: str, line: str | bytes) -> Record | None:
    """One line of `journalctl --output=json`; None for anything that is not an entry."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    try:
        ts = int(text(entry.get("__REALTIME_TIMESTAMP")))
    except ValueError:
        ts = 0
    try:
        priority = int(text(entry.get("PRIORITY")))
    except ValueError:
        priority = 6
    return Record(host, ts, _label(entry), text(entry.get("MESSAGE")), priority)


def parse(host: str, lines: Iterable[str | bytes]) -> list[Record]:
    return [r for r in (parse_line(host, line) for line in lines) if r is not None]


def merge(by_host: dict[str, list[Record]]) -> list[Record]:
    """All hosts' records in time order; equal times keep host order, then each host's order."""
    rank = {h: i for i, h in enumerate(by_host)}
    keyed = sorted((r.ts, rank[h], i, r) for h, records in by_host.items()
                   for i, r in enumerate(records))
    return [k[3] for k in keyed]


class Reorder:
    """Holds followed records for `delay` seconds, so that lines of several hosts arriving
    close together come out in time order. The record with the earliest time goes first once
    it has waited `delay`; none waits more than twice that (a host whose clock is behind
    cannot hold the others back)."""

    def __init__(self, delay: float = 1.0):
        self.delay = delay
        self._heap: list = []
        self._arrivals: deque = deque()        # (arrived, seq) in arrival order
        self._gone: set[int] = set()
        self._seq = itertools.count()

    def push(self, record: Record, now: float) -> None:
        seq = next(self._seq)
        heapq.heappush(self._heap, (record.ts, seq, now, record))
        self._arrivals.append((now, seq))

    def ready(self, now: float) -> list[Record]:
        out = []
        while self._heap:
            while self._arrivals[0][1] in self._gone:
                self._gone.discard(self._arrivals.popleft()[1])
            _, seq, arrived, record = self._heap[0]
            if arrived + self.delay <= now or self._arrivals[0][0] + 2 * self.delay <= now:
                heapq.heappop(self._heap)
                self._gone.add(seq)
                out.append(record)
            else:
                break
        return out

    def drain(self) -> list[Record]:
        out = [heapq.heappop(self._heap)[3] for _ in range(len(self._heap))]
        self._arrivals.clear()
        self._gone.clear()
        return out

    def __len__(self) -> int:
        return len(self._heap)


BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean(line: str) -> str:
    """Control characters (terminal escapes among them) and bidirectional overrides (text shown
    in another order than it is) as \\xNN or \\uNNNN, never sent to a terminal."""
    return "".join(f"\\x{ord(ch):02x}" if ch != "\t" and unicodedata.category(ch) == "Cc" else
                   f"\\u{ord(ch):04x}" if ch in BIDI else ch for ch in line)


class Formatter:
    """`Nov 28 10:00:01.123 node2 celery-worker@1 | message`, host and unit columns aligned
    (the unit column widens when a longer name shows up). A message of several lines gives
    several lines, each with the prefix. Every line passes through mask()."""

    def __init__(self, hosts: Iterable[str], units: Iterable[str] = (), tz: tzinfo | None = None):
        self.host_width = max((len(h) for h in hosts), default=0)
        self.unit_width = max((len(u) for u in units), default=0)
        self.tz = tz

    def stamp(self, ts: int) -> str:
        t = datetime.fromtimestamp(ts / 1_000_000, self.tz)
        return f"{t:%b %d %H:%M:%S}.{t.microsecond // 1000:03d}"

    def lines(self, r: Record) -> list[str]:
        self.host_width = max(self.host_width, len(r.host))
        self.unit_width = max(self.unit_width, len(r.unit))
        prefix = f"{self.stamp(r.ts)} {r.host:<{self.host_width}} {clean(r.unit):<{self.unit_width}} | "
        return [mask(prefix + clean(part)) for part in (r.message.splitlines() or [""])]


# Reading ------------------------------------------------------------------------------------

def _ended(host: str, rc: int | None, stderr: str) -> tuple[str | None, bool]:
    """What to tell about a journalctl that ended, and whether it is a failure."""
    if rc == 0:
        return None, False
    if NO_DATA in stderr:
        return f"{host}: no journal entries for those units yet", False
    tail = " ".join(mask(stderr).strip().splitlines()[-3:]) or "no message"
    return (f"{host}: journalctl exited {rc}: {tail}" if rc is not None else f"{host}: {tail}"), True


@dataclass
class Outcome:
    records: dict[str, list[Record]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)     # hosts not read, and why
    notes: list[str] = field(default_factory=list)        # worth saying, not a failure


def read(sessions: dict, req: Request) -> Outcome:
    """Each host's last lines, in parallel, one command per host. A host that cannot be read
    is a problem; the others are still read."""
    def one(name: str):
        s = sessions[name]
        try:
            res = s.run(journal_cmd(req, name), check=False)
        except Exception as exc:
            return name, [], (f"{s.where()}: {mask(str(exc)) or type(exc).__name__}", True)
        if res.rc == 0:
            return name, parse(name, res.stdout.split("\n")), (None, False)
        return name, [], _ended(name, res.rc, res.stderr or res.stdout)

    out = Outcome()
    pool = ThreadPoolExecutor(max_workers=max(1, len(sessions)))
    try:
        for name, records, (told, failed) in pool.map(one, list(sessions)):
            out.records[name] = records
            if told:
                (out.problems if failed else out.notes).append(told)
            elif len(records) >= req.lines:
                out.notes.append(f"{name}: the last {req.lines} entries only (--lines N for more)")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return out


class Stream(Protocol):
    def chunks(self) -> Iterator[bytes]: ...        # stdout, until EOF
    def finish(self) -> tuple[int | None, str]: ...  # exit status and stderr
    def stop(self) -> None: ...                     # end the remote command, close


class ChannelStream:
    """One SSH channel of the host's connection running a command; stdout read as it comes.
    Local stdin is never read; the remote stdin stays open until stop() sends EOF."""

    def __init__(self, session, command: str, timeout: float = 15, keepalive: int = 30):
        transport = session.connection().client.get_transport()
        transport.set_keepalive(keepalive)       # a quiet journal for hours: keep NATs open
        self.chan = transport.open_session(timeout=timeout)
        self.chan.exec_command(command)

    def chunks(self) -> Iterator[bytes]:
        while True:
            data = self.chan.recv(65536)
            if not data:
                return
            yield data

    def finish(self) -> tuple[int | None, str]:
        rc = self.chan.recv_exit_status()
        err = b""
        while self.chan.recv_stderr_ready():
            err += self.chan.recv_stderr(65536)
        return rc, err.decode("utf-8", "replace")

    def stop(self) -> None:
        try:
            self.chan.shutdown_write()      # EOF: the wrapper ends journalctl
        except Exception:
            pass
        self.chan.close()


def follow(streams: dict[str, Stream], write: Callable[[Record], None],
           note: Callable[[str], None], delay: float = 1.0, poll: float = 0.2,
           clock: Callable[[], float] = time.monotonic) -> tuple[list[str], bool]:
    """Print every host's lines as they arrive (through a `delay` reorder buffer) until every
    stream has ended or Ctrl-C. Returns the problems and whether Ctrl-C ended it. Streams
    are always stopped."""
    events: queue.Queue = queue.Queue()

    def pump(host: str, stream: Stream) -> None:
        rest = b""
        try:
            for chunk in stream.chunks():
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    record = parse_line(host, line)
                    if record is not None:
                        events.put(("record", host, record, clock()))
            if rest.strip():
                record = parse_line(host, rest)
                if record is not None:
                    events.put(("record", host, record, clock()))
            events.put(("end", host, stream.finish(), None))
        except Exception as exc:                       # the channel broke (or was closed)
            events.put(("end", host, (None, str(exc) or type(exc).__name__), None))

    for host, stream in streams.items():
        threading.Thread(target=pump, args=(host, stream), daemon=True, name=f"logs-{host}").start()
    running, problems, reorder, interrupted = set(streams), [], Reorder(delay), False
    due: deque = deque()             # released by the buffer, not printed yet
    ctrl_c = threading.Event()
    restore = _on_ctrl_c(ctrl_c)
    try:
        while running and not ctrl_c.is_set():
            try:
                event = events.get(timeout=poll)
                while True:
                    kind, host, value, arrived = event
                    if kind == "record":
                        reorder.push(value, arrived)
                    else:
                        running.discard(host)
                        told, failed = _ended(host, *value)
                        if told:
                            note(told)
                        if failed:
                            problems.append(told)
                    event = events.get_nowait()
            except queue.Empty:
                pass
            due.extend(reorder.ready(clock()))
            while due:
                write(due.popleft())
    except KeyboardInterrupt:        # a second Ctrl-C, or not in the main thread
        interrupted = True
    finally:
        restore()
        for stream in streams.values():
            try:
                stream.stop()
            except Exception:
                pass
    while True:                                 # what had arrived already is still printed
        try:
            kind, _, value, arrived = events.get_nowait()
        except queue.Empty:
            break
        if kind == "record":
            reorder.push(value, arrived)
    for record in [*due, *reorder.drain()]:
        write(record)
    return problems, interrupted or ctrl_c.is_set()


def _on_ctrl_c(flag: threading.Event) -> Callable[[], None]:
    """While following, the first Ctrl-C only sets `flag` (the loop ends at its next turn, no
    line half-handled); a second one raises KeyboardInterrupt at once. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


# The task's work ----------------------------------------------------------------------------

def show(inv, req: Request, opts: runner.Options = runner.Options(), *, sessions: dict | None = None,
         open_stream: Callable | None = None, out=None, err=None, tz: tzinfo | None = None,
         delay: float = 1.0) -> int:
    """Print the request's journals to `out` (notes and problems to `err`); the exit code:
    0, 1 when some host could not be read, 130 for Ctrl-C before a (non-following) read ended;
    Ctrl-C is the normal end of following (0).
    Every secret the control machine knows is registered for masking before anything prints."""
    out = out or sys.stdout
    err = err or sys.stderr
    Ctx(inv).secrets.register_known()
    if sessions is None:
        keys = runner.known_hosts(inv)
        sessions = {n: Session(inv.host(n), keys, opts.timeouts, opts.key) for n in req.units}
    fmt = Formatter(req.units, req.labels(), tz)

    def say(text: str) -> None:
        print(mask(text), file=err, flush=True)

    def write(record: Record) -> None:
        out.write("".join(line + "\n" for line in fmt.lines(record)))
        if req.follow:
            out.flush()

    problems: list[str] = []
    try:
        if req.follow:
            streams, problems = _open_streams(sessions, req, opts, open_stream or ChannelStream)
            for p in problems:
                say(p)
            more, _ = follow(streams, write, say, delay=delay) if streams else ([], False)
            problems += more
        else:
            outcome = read(sessions, req)
            records = merge(outcome.records)
            for record in records:
                write(record)
            out.flush()
            for text_ in outcome.notes + outcome.problems:
                say(text_)
            if not records and not outcome.problems:
                say("no journal entries" + (f" since {req.since}" if req.since else ""))
            problems = outcome.problems
    except KeyboardInterrupt:   # while connecting or reading; follow() takes it while following
        if req.follow:
            return 1 if problems else 0
        say("interrupted")
        return 130
    except BrokenPipeError:                 # `fab logs | head`: the reader has had enough
        _quiet_stdout(out)
        return 0
    finally:
        runner.close_all(sessions)
    return 1 if problems else 0


def _open_streams(sessions: dict, req: Request, opts, open_stream) -> tuple[dict, list[str]]:
    """One channel per host, opened in parallel; hosts that cannot be reached are problems."""
    def one(name: str):
        s = sessions[name]
        try:
            return name, open_stream(s, follow_cmd(req, name).shell(), opts.timeouts.connect)
        except Exception as exc:
            return name, f"{s.where()}: {mask(str(exc)) or type(exc).__name__}"

    streams, problems = {}, []
    pool = ThreadPoolExecutor(max_workers=max(1, len(sessions)))
    try:
        for name, got in pool.map(one, list(sessions)):
            if isinstance(got, str):
                problems.append(got)
            else:
                streams[name] = got
    finally:        # Ctrl-C while connecting: do not wait (closing the sessions ends them)
        pool.shutdown(wait=False, cancel_futures=True)
    return streams, problems


def _quiet_stdout(out) -> None:
    """After a broken pipe, point stdout at /dev/null so that Python's final flush is silent."""
    import os
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    except (AttributeError, OSError, ValueError):
        pass
