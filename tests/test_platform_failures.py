"""A trial that fails does not take the sweep down: it is recorded with its error, the other
trials finish, aggregation runs, and the driver exits non-zero."""

import tempfile

import polars as pl
import pytest
from raycluster import require_loopback_namespace

from edgesweep.platform.driver import run_sweep
from edgesweep.storage import scan

pytestmark = [pytest.mark.ray]

# The dyck trial's monitor selector matches no parameter: the trial raises at its first
# snapshot, every time (a deterministic failure that passes spec validation).
SPEC = """\
name: failing
storage: {storage}
max_failures: 1
grid:
  workload: [mod_add, dyck]
train: {{preset: tiny, max_steps: 40, eval_every: 10, checkpoint_every: 20}}
monitor: {{window: 4, every: 5, params: all}}
per_workload:
  dyck: {{monitor: {{params: "no_such_parameter"}}}}
"""


@pytest.fixture
def local_ray(monkeypatch):
    require_loopback_namespace()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             _temp_dir=tempfile.mkdtemp(prefix="esfail-", dir="/tmp"))
    try:
        yield ray
    finally:
        ray.shutdown()


def test_failed_trial_is_recorded_and_the_sweep_completes(local_ray, tmp_path, capsys):
    spec = tmp_path / "failing.yaml"
    spec.write_text(SPEC.format(storage=tmp_path / "results"))
    assert run_sweep(str(spec)) == 1
    out = capsys.readouterr().out
    assert "FAIL  dyck-adamw-wd1.0-s42" in out and "matches no parameter" in out
    trials = scan(tmp_path / "results" / "failing", "trials").collect().sort("trial_id")
    assert trials["status"].to_list() == ["failed", "completed"]
    failed = trials.filter(pl.col("status") == "failed")
    assert "no_such_parameter" in failed["error"][0]
    assert failed["started_at"][0] is not None  # the trial's own record was kept, not replaced
    # aggregation ran and left the failed trial out of the counts
    summary = scan(tmp_path / "results" / "failing", "summary").collect()
    assert summary.filter(pl.col("scope") == "all")["n_runs"].to_list() == [1]
