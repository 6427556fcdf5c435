"""Crash safety: writer processes SIGKILLed at random moments never leave a dataset that reads
wrong.

Each child (tests/storage_crash_child.py) runs one attempt of one trial: it streams rows,
flushes every few rows, reports each sealed part on stdout *after* flush() returned, and
finally compacts the trial. The parent kills it at a random moment (while it writes, seals,
or compacts), then "restores" the trial the way the platform does: a new attempt restarts
from the last checkpoint — the last reported flush, or the one before it when the crash is
taken to have hit between a flush and the checkpoint save — and replays from there.

After every kill the dataset must scan without error, hold each (trial_id, step) at most
once, hold every reported sealed row, hold only rows some attempt wrote (with the values that
attempt wrote), and a step's row must come from an attempt at least as new as the newest one
that reported sealing it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from edgesweep.storage import compact_sweep, resolve_root, scan

CHILD = Path(__file__).with_name("storage_crash_child.py")
REPO = Path(__file__).resolve().parents[1]
SWEEP = "crash"
EVERY = 10          # step spacing
END = 1500          # steps per trial: 150 feature rows
FLUSH_ROWS = 15     # feature rows per flush (→ 10 flushes per full attempt)
KILLS = 30


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Zygote:
    """The forking writer launcher of storage_crash_child.py (one interpreter start-up in all)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, str(CHILD)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=REPO, env=child_env())
        first = self.proc.stdout.readline().strip()
        assert first == "READY", f"zygote did not start: {first!r} {self.proc.stderr.read()}"

    def start(self, params) -> int:
        self.proc.stdin.write(" ".join(map(str, params)) + "\n")
        self.proc.stdin.flush()
        self.lines = []
        while True:
            line = self.proc.stdout.readline()
            assert line, f"zygote died: {self.proc.stderr.read()}"
            if line.startswith("PID "):
                return int(line.split()[1])
            self.lines.append(line.strip())  # the writer may print before the zygote does

    def wait(self) -> tuple[int, list[str]]:
        """The writer's exit code and everything it printed."""
        while True:
            line = self.proc.stdout.readline()
            assert line, f"zygote died: {self.proc.stderr.read()}"
            if line.startswith("EXIT "):
                return int(line.split()[2]), self.lines
            self.lines.append(line.strip())

    def close(self):
        if self.proc.poll() is None:
            self.proc.communicate("\n", timeout=30)


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

    def run(self, zygote, root, rng, kill: bool, compact_only: bool = False, kill_scale=1.0):
        self.attempt += 1
        self.max_attempt = self.attempt
        start, end = (self.start, END) if not compact_only else (END, END)
        params = [root, SWEEP, self.trial_id, self.attempt, start, end, EVERY, FLUSH_ROWS, 1]
        pid = zygote.start(params)
        if kill:
            # Uniform over the writer's working life (measured here: ~0.15 s of writing and
            # sealing, then ~0.1 s of compaction; a compaction alone ~0.1 s).
            time.sleep(rng.uniform(0.0, 0.12 if compact_only else 0.3) * kill_scale)
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
    stats = run_campaign(str(tmp_path / "store"), kills=KILLS, seed=20260329, budget_s=45)
    print(stats)


def run_campaign(root: str, kills: int, seed: int, budget_s: float, kill_scale: float = 1.0) -> str:
    """Kill `kills` writers at random moments under `root` (local path or s3://), checking the
    dataset after each; then finish one trial, compact the rest, check again. Returns a
    one-line summary. `kill_scale` stretches the kill window for slower storage."""
    rng = random.Random(seed)
    r = resolve_root(root)
    r.fs.create_dir(r.base, recursive=True)  # as the driver does; a kill may precede any file
    trials: dict[str, Trial] = {}
    zygote = Zygote()
    try:
        return _kill_and_check(root, rng, trials, zygote, kills, budget_s, kill_scale)
    finally:
        zygote.close()


def _kill_and_check(root, rng, trials, zygote, n_kills, budget_s, kill_scale):
    t0 = time.monotonic()
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
        rc = t.run(zygote, root, rng, kill=True, compact_only=compact_only, kill_scale=kill_scale)
        runs += 1
        kills += rc == -signal.SIGKILL  # a child may finish before its kill time
        check_dataset(root, trials)
        assert time.monotonic() - t0 < budget_s, f"{kills} kills in {runs} runs took too long"

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
            f"{time.monotonic() - t0:.1f} s")
