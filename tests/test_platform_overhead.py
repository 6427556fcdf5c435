"""Per-trial overhead of a sweep (issue 12): workers are reused between trials, so a trial does
not pay a process start and the torch import; Tune's own per-trial loggers (CSV, JSON,
TensorBoard) are off unless a tracker asks for one — the Parquet tables are the record."""

from pathlib import Path

import polars as pl
import pytest
import torch

from edgesweep.platform.driver import run_sweep
from edgesweep.platform.spec import load_spec
from edgesweep.platform.trainable import execute_trial
from edgesweep.storage import scan

pytestmark = [pytest.mark.ray]

SPEC = """\
name: reuse
storage: {storage}
grid:
  workload: [mod_add]
  seed: [1, 2, 3, 4]
train: {{preset: tiny, max_steps: 30, eval_every: 10, checkpoint_every: 20}}
monitor: {{window: 4, every: 5, params: attention}}
"""


def test_trials_reuse_workers_and_tune_writes_no_logger_files(local_ray, tmp_path, caplog):
    spec = tmp_path / "reuse.yaml"
    spec.write_text(SPEC.format(storage=tmp_path / "results"))
    assert run_sweep(str(spec), aggregate=False) == 0
    sweep = tmp_path / "results" / "reuse"
    trials = scan(sweep, "trials").collect()
    assert trials["status"].to_list() == ["completed"] * 4
    # 4 trials on 2 CPUs (1 CPU each): at most 2 worker processes ran them
    assert trials["pid"].n_unique() <= 2, trials.select("trial_id", "pid")
    assert trials.filter(pl.col("pid").is_duplicated()).height >= 2
    # A trial on a reused worker computes what it computes in a fresh process: the later of
    # the two trials of one worker, run again here with the bare loop, gives the same rows.
    pid = trials.filter(pl.col("pid").is_duplicated())["pid"][0]
    later = trials.filter(pl.col("pid") == pid).sort("started_at")["trial_id"][-1]
    trial = next(t for t in load_spec(str(spec)).trials if t.trial_id == later)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the 1-CPU trial ran (summation order)
    try:
        execute_trial(trial, "reuse", str(tmp_path / "bare"))
    finally:
        torch.set_num_threads(threads)
    for table in ("features", "evals"):
        got, want = (scan(root / "reuse", table).filter(pl.col("trial_id") == later).collect()
                     .drop("gram_ms", "attempt", strict=False).sort("step")
                     for root in (tmp_path / "results", tmp_path / "bare"))
        assert got.height > 0 and got.equals(want), table
    # Tune's per-trial folders hold no auto-logger output (no tracker was asked for)
    logged = [p.name for p in Path(sweep, "_tune").rglob("*")
              if p.name in ("progress.csv", "result.json") or p.name.startswith("events.out.tfevents")]
    assert logged == []
    # ... and Tune does not complain about it in the driver log
    assert not [r for r in caplog.records if "Failed to fetch metrics" in r.getMessage()]
