"""Is a trial that says ``running`` still running? The driver's record and the owner rule.

A trial writes its ``trials`` row as ``running`` when it starts and rewrites it when it ends.
If its worker or its driver dies in between (SIGKILL, node loss, Ctrl-C), nobody rewrites it:
the row says ``running`` forever, and every reader would call its partial rows provisional
results of a live trial. This module lets a reader tell, without Ray:

* :class:`DriverRecord` — ``<sweep>/_driver.json``, written by the job driver when it starts,
  refreshed every ``heartbeat_s`` while Tune runs, and closed (``ended_at``, ``outcome``) when
  it returns. Hidden from scans (leading ``_``); replaced whole and atomically.
* :func:`owner_gone` — why a ``running`` row's owner is gone, or None while it may be alive.
  Rules, first that applies: the trial started before the current driver (an earlier driver
  that is gone: a ``--resume`` has not reached it yet); the driver has ended; the driver or the
  trial's worker ran on *this* host and its process is gone (the pid checked against the
  identity recorded with it — boot id and the kernel's start tick — so a reused pid does not
  count as alive; no wall clock is involved, which a restored VM or a container may skew); no
  driver heartbeat for ``stale_after`` — the only rule that reaches other hosts, and the reason
  the record carries a heartbeat at all.

Sweeps written before the driver record existed (or by the bare loop, which has no driver)
get the worker rule only.
"""

from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from .sweep import SweepPath

__all__ = ["DRIVER_FILE", "DriverRecord", "read_driver_record", "write_driver_record", "owner_gone", "driver_gone",
           "process_alive", "process_identity"]

DRIVER_FILE = "_driver.json"
HEARTBEAT_S = 30.0
#: Heartbeats missed before a driver on another host counts as gone. Tune's loop refreshes the
#: record between trial events; a driver busy for minutes in one call (a slow restore) would
#: read as gone only after this many intervals.
STALE_HEARTBEATS = 4
#: Clocks of two hosts may disagree by this much (a trial started on a worker node within
#: seconds of its driver must not read as an earlier driver's).
CLOCK_SLACK_S = 5.0


@dataclass
class DriverRecord:
    pid: int
    hostname: str
    started_at: str                 # ISO 8601, UTC
    heartbeat_at: str
    heartbeat_s: float = HEARTBEAT_S
    ended_at: str | None = None
    outcome: str | None = None      # "finished", "failed", "interrupted" once ended
    counts: dict | None = None      # {"finished": n, "failed": n, "interrupted": n, "never_started": n}
    pid_start: str | None = None    # process_identity() of the driver

    @classmethod
    def start(cls, heartbeat_s: float = HEARTBEAT_S) -> "DriverRecord":
        now = _iso(_now())
        return cls(os.getpid(), socket.gethostname(), now, now, heartbeat_s,
                   pid_start=process_identity())

    def beat(self) -> None:
        self.heartbeat_at = _iso(_now())

    def end(self, outcome: str, counts: dict) -> None:
        self.ended_at = self.heartbeat_at = _iso(_now())
        self.outcome, self.counts = outcome, counts


def write_driver_record(sp: SweepPath, rec: DriverRecord) -> None:
    sp.write_bytes(DRIVER_FILE, json.dumps(asdict(rec), indent=1).encode())


def read_driver_record(sp: SweepPath) -> DriverRecord | None:
    """The sweep's driver record, or None (none written, or unreadable: then only the worker
    rule applies, which is what a sweep without a record gets)."""
    try:
        raw = sp.read_bytes(DRIVER_FILE)
        rec = None if raw is None else DriverRecord(**json.loads(raw))
    except (OSError, ValueError, TypeError):
        return None
    return rec if rec is None or _well_formed(rec) else None


def _well_formed(rec: DriverRecord) -> bool:
    """Whether every field has its type (JSON that parses can still hold ``"pid": null``, which
    would fail later, in the liveness checks, as a traceback)."""
    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    optional_text = (rec.ended_at, rec.outcome, rec.pid_start)
    return (isinstance(rec.pid, int) and not isinstance(rec.pid, bool) and rec.pid > 0
            and isinstance(rec.hostname, str) and isinstance(rec.started_at, str)
            and isinstance(rec.heartbeat_at, str) and number(rec.heartbeat_s) and rec.heartbeat_s > 0
            and all(x is None or isinstance(x, str) for x in optional_text)
            and (rec.counts is None or isinstance(rec.counts, dict)))


def owner_gone(trial: dict, driver: DriverRecord | None, now: datetime | None = None,
               host: str | None = None) -> str | None:
    """Why the owner of this ``running`` trials row is gone (a sentence), or None.

    ``trial`` carries ``started_at`` (datetime), ``pid``, ``pid_start`` and ``hostname`` when
    the trial wrote them; ``now`` and ``host`` default to this moment and this machine."""
    now = now or _now()
    host = host or socket.gethostname()
    started = _utc(trial.get("started_at"))
    if driver is not None:
        d_started = _parse(driver.started_at)
        if started is not None and d_started is not None and \
                (d_started - started).total_seconds() > CLOCK_SLACK_S:
            return (f"it was started by an earlier driver, which is gone (the current one started "
                    f"{driver.started_at})")
        why = _driver_ended_or_dead(driver, host)
        if why:
            return f"its {why}"
    pid, worker_host = trial.get("pid"), trial.get("hostname")
    if pid is not None and worker_host == host and not process_alive(int(pid), trial.get("pid_start")):
        return f"its worker (pid {pid} on {host}) is not running"
    if driver is not None:
        why = _driver_silent(driver, now)
        if why:
            return why
    return None


def driver_gone(driver: DriverRecord | None, now: datetime | None = None,
                host: str | None = None) -> str | None:
    """Why the sweep's driver is gone (a sentence: "driver ended …", "no heartbeat …"), or None
    while it may be alive — and None without a record (nothing to say either way)."""
    if driver is None:
        return None
    why = _driver_ended_or_dead(driver, host or socket.gethostname())
    return f"the {why}" if why else _driver_silent(driver, now or _now(), whose="the")


def _driver_ended_or_dead(driver: DriverRecord, host: str) -> str | None:
    if driver.ended_at:
        return f"driver ended at {driver.ended_at} ({driver.outcome or 'no outcome recorded'})"
    if driver.hostname == host and not process_alive(driver.pid, driver.pid_start):
        return f"driver (pid {driver.pid} on {host}) is not running"
    return None


def _driver_silent(driver: DriverRecord, now: datetime, whose: str = "its") -> str | None:
    beat = _parse(driver.heartbeat_at)
    limit = STALE_HEARTBEATS * float(driver.heartbeat_s)
    if beat is not None and (now - beat).total_seconds() > limit:
        return (f"no heartbeat from {whose} driver (pid {driver.pid} on {driver.hostname}) since "
                f"{driver.heartbeat_at}, more than {limit:g} s ago")
    return None


def process_alive(pid: int, identity: str | None = None) -> bool:
    """Whether process ``pid`` on this host is alive (not a zombie) and — when ``identity``
    (a :func:`process_identity` recorded earlier) is given and /proc tells — is still the same
    process (else the pid was reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc (not Linux): existence is all we can tell
    state, ticks = stat
    if state in ("Z", "X"):
        return False
    if identity is not None and ticks is not None:
        now = _identity(ticks)
        return now is None or now == identity
    return True


def process_identity(pid: int | None = None) -> str | None:
    """Who process ``pid`` (default: this one) is: ``"<boot id>:<start tick>"``, the kernel's
    start time of the process in clock ticks since boot, with the boot's id so that a reboot
    cannot alias it. Equal identities are the same process; a reused pid gets another. A
    value compared with itself, so no wall clock (which a restored VM may step) is involved.
    None where /proc does not tell (not Linux)."""
    stat = _proc_stat(os.getpid() if pid is None else pid)
    return None if stat is None or stat[1] is None else _identity(stat[1])


def _identity(ticks: int) -> str | None:
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    except OSError:
        return None
    return f"{boot}:{ticks}"


def _proc_stat(pid: int) -> tuple[str, int | None] | None:
    """(state, start tick) of ``pid`` from /proc, or None without one."""
    try:
        text = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return fields[0] if fields else "?", None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def _parse(text: str | None) -> datetime | None:
    try:
        return _utc(datetime.fromisoformat(text)) if text else None
    except ValueError:
        return None


def _utc(t) -> datetime | None:
    if not isinstance(t, datetime):
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)
