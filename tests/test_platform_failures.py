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


def test_a_resume_that_fails_before_training_closes_the_driver_record(local_ray, tmp_path, monkeypatch):
    """A failure between the driver's claim and Tune's loop (here Tune's own restore, on a
    Tuner state that passes the resume's checks — a whole pickle naming only what exists,
    `int` — but fails when run: int("xyz")) closes the record with the error; it was left
    open, naming a driver that had already died."""
    import json

    from edgesweep.platform import driver
    from edgesweep.platform.spec import load_spec
    from edgesweep.platform.spec_record import SPEC_RECORD, spec_record

    monkeypatch.setattr(driver, "CLAIM_SETTLE_S", 0.0)
    spec_path = tmp_path / "failing.yaml"
    spec_path.write_text(SPEC.format(storage=tmp_path / "results"))
    sweep = tmp_path / "results" / "failing"
    (sweep / "_tune").mkdir(parents=True)
    (sweep / SPEC_RECORD).write_bytes(spec_record(load_spec(str(spec_path))))
    (sweep / "_tune" / "tuner.pkl").write_bytes(b"cbuiltins\nint\n(Vxyz\ntR.")  # GLOBAL, REDUCE: int("xyz")
    (sweep / "_tune" / "experiment_state-2026-12-07_16-59-01.json").write_text('{"trial_data": []}')
    with pytest.raises(Exception) as raised:
        run_sweep(str(spec_path), resume=True)
    record = json.loads((sweep / "_driver.json").read_text())
    assert isinstance(raised.value, ValueError) and "xyz" in str(raised.value), raised.value
    assert record["outcome"] == "error: ValueError" and record["ended_at"] is not None
