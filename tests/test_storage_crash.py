"""Crash safety: writer processes SIGKILLed at random moments never leave a dataset that reads
wrong.

Each child (tests/storage_crash_child.py) runs one attempt of one trial: it streams rows,
flushes every few rows, reports each sealed part on stdout *after* flush() returned, and
finally compacts the trial. The parent kills it at a random moment (while it writes, seals,
or compacts), then "restores" the trial the way the platform does: a new attempt restarts
from the last checkpoint — the last reported flush, or the one before it when the crash is
taken to have hit between a flush and the checkpoint save — and replays from there.

After every kill the records must agree with the files (check_sweep finds no damage), the
dataset must scan without error, hold each (trial_id, step) at most once, hold every reported
sealed row, hold only rows some attempt wrote (with the values that attempt wrote), and a
step's row must come from an attempt at least as new as the newest one that reported sealing
it.
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from edgesweep.storage import check_sweep, compact_sweep, resolve_root, scan

CHILD = Path(__file__).with_name("storage_crash_child.py")
REPO = Path(__file__).resolve().parents[1]
SWEEP = "crash"
EVERY = 10          # step spacing
END = 900           # steps per trial: 90 feature rows
FLUSH_ROWS = 15     # feature rows per flush (→ 6 flushes per full attempt)
KILLS = 30


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Zygote:
    """The forking writer launcher of storage_crash_child.py (one interpreter start-up in all).

    Its stdout and stderr are drained by threads into queues, so that a chatty writer cannot
    block on a full pipe and a missing line fails the test after READ_TIMEOUT_S instead of
    hanging it."""

    READ_TIMEOUT_S = 120

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, str(CHILD)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=REPO, env=child_env())
        self._out: queue.Queue = queue.Queue()
        self._err: list[str] = []
        threading.Thread(target=_drain, args=(self.proc.stdout, self._out.put), daemon=True).start()
        threading.Thread(target=_drain, args=(self.proc.stderr, self._err.append), daemon=True).start()
        self.lines = []
        first = self._readline().strip()
        assert first == "READY", f"zygote did not start: {first!r} {self.stderr()}"

    def stderr(self) -> str:
        return "".join(self._err)[-3000:]

    def _readline(self) -> str:
        try:
            line = self._out.get(timeout=self.READ_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"no line from the zygote in {self.READ_TIMEOUT_S} s; read so "
                                 f"far {self.lines[-10:]}; stderr: {self.stderr()}") from None
        assert line, f"zygote died: {self.stderr()}"
        return line

    def start(self, params) -> int:
        self.proc.stdin.write(" ".join(map(str, params)) + "\n")
        self.proc.stdin.flush()
        self.lines = []
        while True:
            line = self._readline()
            if line.startswith("PID "):
                return int(line.split()[1])
            self.lines.append(line.strip())  # the writer may print before the zygote does

    def wait(self) -> tuple[int, list[str]]:
        """The writer's exit code and everything it printed."""
        while True:
            line = self._readline()
            if line.startswith("EXIT "):
                return int(line.split()[2]), self.lines
            self.lines.append(line.strip())

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def _drain(stream, put) -> None:
    for line in stream:
        put(line)
    put("")  # end of stream


class Trial:
    def __init__(self, trial_id):
        self.trial_id = trial_id
        self.attempt = 0
        self.start = 0
        self.done = False
        # table -> step -> newest attempt that reported sealing it
        self.sealed: dict[str, dict[int, int]] = {"features": {}, "evals": {}}
        self.boundaries = [0]      # restart points (first step after each reported flush)
        self.max_attempt = 0

    def run(self, zygote, root, rng, kill: bool, compact_only: bool = False,
            life: tuple[float, float] = (0.0, 0.0)):
        self.attempt += 1
        self.max_attempt = self.attempt
        start, end = (self.start, END) if not compact_only else (END, END)
        params = [root, SWEEP, self.trial_id, self.attempt, start, end, EVERY, FLUSH_ROWS, 1]
        pid = zygote.start(params)
        if kill:
            # Uniform over this writer's working life, a little beyond: `life` is what a whole
            # attempt and a compaction alone take (measured at the start of the campaign); an
            # attempt restored from a checkpoint writes only the remaining steps.
            whole, compaction = life
            remaining = compaction + (whole - compaction) * (end - start) / END
            time.sleep(rng.uniform(0.0, 1.2 * remaining))
            try:
                os.kill(pid, signal.SIGKILL)  # our grandchild, by pid; it may have finished
            except ProcessLookupError:
                pass
        rc, text = zygote.wait()
        errors = [line for line in text if line.startswith("ERROR")]
        assert not errors, errors
        if not kill or rc != -signal.SIGKILL:
            assert rc == 0, f"writer failed ({rc}): {text[-5:]}"
        for line in text:
            parts = line.split()
            if parts and parts[0] == "SEALED":
                table, lo, hi = parts[1], int(parts[2]), int(parts[3])
                # Within one attempt an eval row is written every 5th snapshot, starting with
                # the part's first row.
                stride = EVERY if table == "features" else 5 * EVERY
                for step in range(lo, hi + 1, stride):
                    self.sealed[table][step] = self.attempt
                if table == "features":
                    self.boundaries.append(hi + EVERY)
        if "DONE" in text:
            self.done = True
        else:
            # Restore: from the last checkpoint. Half the time the crash is taken to have hit
            # between the last flush and its checkpoint save → one flush earlier, so the new
            # attempt replays rows that are already sealed.
            back = 2 if (len(self.boundaries) > 1 and rng.random() < 0.5) else 1
            self.start = self.boundaries[-back]
            self.boundaries = self.boundaries[: len(self.boundaries) - back + 1]
        return rc


def check_dataset(root, trials: dict[str, Trial]):
    # Whatever moment the kill hit, the records agree with the files: nothing missing,
    # truncated, corrupt or unrecorded (interrupted seals are notes, not damage).
    r = resolve_root(root)
    if r.is_dir(r.path(SWEEP)):  # a kill may precede the sweep's first file
        report = check_sweep(root, SWEEP, tables=("features", "evals"))
        assert report.ok, "\n".join(p.line() for p in report.damage)
    for table, value_col in (("features", "g23"), ("evals", "test_acc")):
        df = scan(root, table).select("trial_id", "step", "attempt", value_col).collect()
        dup = df.group_by("trial_id", "step").len().filter(pl.col("len") > 1)
        assert dup.height == 0, f"{table}: duplicated (trial_id, step):\n{dup}"
        got = {(r[0], r[1]): (r[2], r[3]) for r in df.iter_rows()}
        for t in trials.values():
            for step, attempt in t.sealed[table].items():
                key = (t.trial_id, step)
                assert key in got, f"{table}: sealed row {key} (attempt {attempt}) missing"
                assert got[key][0] >= attempt, (
                    f"{table}: {key} read from attempt {got[key][0]}, but attempt {attempt} "
                    f"sealed it")
        for (trial_id, step), (attempt, value) in got.items():
            assert step % EVERY == 0 and 0 <= step < END, f"{table}: phantom step {step}"
            assert 1 <= attempt <= trials[trial_id].max_attempt, f"{table}: phantom attempt"
            # The stored value is the one that attempt wrote for that step.
            assert value == step * 1000.0 + attempt, f"{table}: {trial_id}/{step} value {value}"


def test_sigkill_at_random_points_leaves_a_consistent_dataset(tmp_path):
    stats = run_campaign(str(tmp_path / "store"), kills=KILLS, seed=20260329)
    print(stats)


def run_campaign(root: str, kills: int, seed: int) -> str:
    """Kill `kills` writers at random moments under `root` (local path or s3://), checking the
    dataset after each; then finish one trial, compact the rest, check again. Returns a
    one-line summary."""
    rng = random.Random(seed)
    r = resolve_root(root)
    r.fs.create_dir(r.base, recursive=True)  # as the driver does; a kill may precede any file
    trials: dict[str, Trial] = {}
    zygote = Zygote()
    try:
        life = writer_life(zygote, root)
        return _kill_and_check(root, rng, trials, zygote, kills, 10 * kills, life)
    finally:
        zygote.close()


def writer_life(zygote, root) -> tuple[float, float]:
    """Seconds a whole attempt (writing, sealing, compacting) and a compaction alone take here,
    measured beside `root` — so the kills spread over the writer's work on whatever machine
    and storage this runs."""
    beside = root.rstrip("/") + "-calibration"
    t0 = time.monotonic()
    zygote.start([beside, SWEEP, "c", 1, 0, END, EVERY, FLUSH_ROWS, 1])
    assert zygote.wait()[0] == 0
    t1 = time.monotonic()
    zygote.start([beside, SWEEP, "c", 2, END, END, EVERY, FLUSH_ROWS, 1])
    assert zygote.wait()[0] == 0
    return t1 - t0, time.monotonic() - t1


def _kill_and_check(root, rng, trials, zygote, n_kills, max_runs, life):
    t0 = time.monotonic()  # for the summary line only
    kills = runs = 0
    while kills < n_kills:
        pending = [t for t in trials.values() if not t.done]
        if len(pending) < 3:  # keep three trials in flight; start a new one as one finishes
            t = Trial(f"t{len(trials)}")
            trials[t.trial_id] = t
            pending.append(t)
        t = pending[runs % len(pending)]
        # Every fourth run of a fully written trial is a compaction alone, killed mid-way.
        compact_only = t.start >= END and runs % 4 == 3
        rc = t.run(zygote, root, rng, kill=True, compact_only=compact_only, life=life)
        runs += 1
        kills += rc == -signal.SIGKILL  # a child may finish before its kill time
        check_dataset(root, trials)
        # A guard against a loop whose kills never land, counted in runs, not seconds: a
        # loaded machine slows the children, which only makes the kills land sooner.
        assert runs < max_runs, f"only {kills} kills landed in {runs} runs"

    # Finish one crashed trial cleanly (it compacts); leave the others as crashed part sets.
    unfinished = [t for t in trials.values() if not t.done]
    while not unfinished[0].done:
        unfinished[0].run(zygote, root, rng, kill=False)
    check_dataset(root, trials)
    before = scan(root, "features").sort("trial_id", "step").collect()
    assert before.height > 0

    # Compacting what is left (as after a dead driver) changes no row and leaves one file
    # per trial and table.
    compact_sweep(root, SWEEP)
    after = scan(root, "features").sort("trial_id", "step").collect()
    assert before.equals(after)
    check_dataset(root, trials)
    r = resolve_root(root)
    for table in ("features", "evals"):
        visible = [i.base_name for i in r.list_files(r.path(SWEEP, table))
                   if i.base_name.endswith(".parquet") and not i.base_name.startswith(".")]
        owners = sorted(name.split(".")[0] for name in visible)
        wrote = sorted(t.trial_id for t in trials.values() if t.sealed[table])
        assert len(owners) == len(set(owners)), f"{table}: more than one file per trial: {visible}"
        assert set(wrote) <= set(owners), f"{table}: {visible}"
        assert all(".c" in name for name in visible), visible
    return (f"{kills} SIGKILLs over {runs} writer runs, {len(trials)} trials, "
            f"{time.monotonic() - t0:.1f} s (an attempt takes {life[0]:.2f} s, a compaction "
            f"{life[1]:.2f} s)")


# ------------------------------------------------------------------------------ full disk
FULL_DISK_CHILD = r"""
import json, os, sys
import numpy as np
from edgesweep.storage import StorageError, TrialWriter, scan

root = sys.argv[1]
P = {"workload": "mod_add", "optimizer": "adamw", "weight_decay": 1.0}
w = TrialWriter(root, "sw", "t", 0, P)
rng = np.random.default_rng(0)

def add(steps):
    for s in steps:
        w.add("features", {"step": s, "g23": float(s), "sigma": rng.random(10).tolist()})

add(range(0, 100, 10))
w.flush()                      # fits
add(range(100, 40100, 10))     # 4,000 rows of random doubles: ~350 KB, more than the disk
out = {}
try:
    w.flush()
except StorageError as exc:
    out["error"], out["paths"] = str(exc), exc.paths
except OSError as exc:
    out["raw"] = f"{type(exc).__name__}: {exc}"
out["files"] = sorted(os.path.relpath(os.path.join(d, f), root)
                      for d, _, fs in os.walk(root) for f in fs)
out["steps"] = sorted(scan(root, "features").collect()["step"].to_list())
print(json.dumps(out))
"""


def test_a_full_disk_fails_the_seal_naming_the_part_and_leaves_no_partial_file(tmp_path):
    # A 256 KiB tmpfs in a private mount namespace (unshare -m: needs root, or -r for a user
    # namespace); the mount disappears with the child.
    if not (shutil.which("unshare") and shutil.which("mount")):
        pytest.skip("no unshare/mount here to make a small file system")
    disk = tmp_path / "disk"
    disk.mkdir()
    flags = "-m" if os.geteuid() == 0 else "-rm"
    cmd = ["unshare", flags, "sh", "-c",
           'mount -t tmpfs -o size=256k tmpfs "$1" || exit 97; exec "$2" -c "$3" "$1"', "sh",
           str(disk), sys.executable, FULL_DISK_CHILD]
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=REPO, timeout=120)
    if out.returncode == 97 or "unshare failed" in out.stderr:
        pytest.skip(f"cannot mount a small tmpfs here: {out.stderr.strip()[-300:]}")
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    part_dir = "sw/features/workload=mod_add/optimizer=adamw/weight_decay=1.0"
    failed_part = f"{part_dir}/t.a000.s0000000100-0000040090.parquet"
    assert "raw" not in got, got["raw"]  # an OSError must not escape unwrapped
    assert got["paths"] == [str(disk / failed_part)], got
    assert str(disk / failed_part) in got["error"] and "No space left on device" in got["error"]
    parts = [f for f in got["files"] if f.endswith(".parquet")]
    assert parts == [f"{part_dir}/t.a000.s0000000000-0000000090.parquet"]
    assert not [f for f in got["files"] if ".tmp-" in f], got["files"]   # temp file removed
    assert got["steps"] == list(range(0, 100, 10))  # the sealed part still reads
