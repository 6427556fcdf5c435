"""A trial that fails does not take the sweep down: it is recorded with its error, the other
trials finish, aggregation runs, and the driver exits non-zero."""

import polars as pl
import pytest

from edgesweep.platform.driver import run_sweep
from edgesweep.storage import scan

pytestmark = [pytest.mark.ray]

# The language-model trial's corpus file does not exist on the worker: the trial raises when it
# builds its data, every time (a deterministic failure that passes spec validation — the file
# is the workers' business, a driver cannot check it).
SPEC = """\
name: failing
storage: {storage}
max_failures: 1
grid:
  workload: [mod_add, tinystories]
train: {{preset: tiny, max_steps: 40, eval_every: 10, checkpoint_every: 20}}
monitor: {{window: 4, every: 5, params: all}}
per_workload:
  tinystories: {{train: {{task: {{corpus: /nonexistent/corpus.txt}}}}}}
"""


def test_failed_trial_is_recorded_and_the_sweep_completes(local_ray, tmp_path, capsys):
    spec = tmp_path / "failing.yaml"
    spec.write_text(SPEC.format(storage=tmp_path / "results"))
    assert run_sweep(str(spec)) == 1
    out = capsys.readouterr().out
    assert "FAIL  tinystories-adamw-wd1.0-s42" in out and "corpus file not found" in out
    trials = scan(tmp_path / "results" / "failing", "trials").collect().sort("trial_id")
    assert trials["status"].to_list() == ["completed", "failed"]
    failed = trials.filter(pl.col("status") == "failed")
    assert "/nonexistent/corpus.txt" in failed["error"][0]
    assert not [ln for ln in failed["error"][0].splitlines() if not ln.strip(" ^~")]  # no caret-only lines
    assert failed["started_at"][0] is not None  # the trial's own record was kept, not replaced
    # aggregation ran and left the failed trial out of the counts
    summary = scan(tmp_path / "results" / "failing", "summary").collect()
    assert summary.filter(pl.col("scope") == "all")["n_runs"].to_list() == [1]
