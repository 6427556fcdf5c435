"""A whole sweep with an s3:// storage root on a real S3 server (SeaweedFS on 127.0.0.1):
Tune's experiment state and checkpoints, the Parquet tables, the aggregation and the report
all go through the object store; then `--resume` of the finished sweep reruns nothing, and a
`--resume` with a changed spec is refused."""

import polars as pl
import pytest
import pyarrow.fs as pafs

from edgesweep.platform.driver import run_sweep
from edgesweep.platform.spec import SpecError
from edgesweep.storage import resolve_root, scan

pytestmark = [pytest.mark.ray, pytest.mark.s3]

SPEC = """\
name: s3sweep
storage: ./unused
grid:
  workload: [mod_add]
  weight_decay: [1.0, 0.0]
train: {preset: tiny, max_steps: 60, eval_every: 10, checkpoint_every: 20}
monitor: {window: 4, every: 5, params: all}
"""


def test_sweep_on_s3_root(s3_env, local_ray, local_ray_dir, s3_root, tmp_path):
    # s3_env comes before local_ray: Ray's workers inherit the environment of ray.init.
    spec = tmp_path / "s3.yaml"
    spec.write_text(SPEC)
    assert run_sweep(str(spec), storage=s3_root) == 0
    sweep = f"{s3_root}/s3sweep"
    trials = scan(sweep, "trials").collect()
    assert sorted(trials["status"]) == ["completed", "completed"]
    feats = scan(sweep, "features").collect()
    assert feats.group_by("trial_id").agg(pl.col("step").n_unique())["step"].to_list() == [11, 11]
    runs = scan(sweep, "runs").collect()
    assert set(runs["trial_id"]) == set(trials["trial_id"])
    root = resolve_root(s3_root)
    assert root.fs.get_file_info(root.path("s3sweep", "report.md")).type == pafs.FileType.File
    tune_files = root.list_files(root.path("s3sweep", "_tune"))
    assert any("checkpoint_" in f.path for f in tune_files)  # Tune checkpoints live in S3 too
    # no local fallback directory was created
    assert not (tmp_path / "unused").exists()

    # the S3 secret the trials wrote with is in no file the sweep or Ray wrote
    from test_secrets import files_containing
    secret = s3_env.env["AWS_SECRET_ACCESS_KEY"].encode()
    assert files_containing(local_ray_dir, [secret]) == {} and files_containing(tmp_path, [secret]) == {}

    # resuming a finished sweep trains nothing again
    before = trials.select("trial_id", "started_at", "attempt").sort("trial_id")
    assert run_sweep(str(spec), storage=s3_root, resume=True) == 0
    after = scan(sweep, "trials").collect().select("trial_id", "started_at", "attempt").sort("trial_id")
    assert after.equals(before)

    # a resume whose spec changed is refused before anything runs, naming the changes: Tune
    # would continue the trials it was started with (the record is _spec.json, in S3 too)
    assert root.fs.get_file_info(root.path("s3sweep", "_spec.json")).type == pafs.FileType.File
    changed = tmp_path / "s3-changed.yaml"
    changed.write_text(SPEC.replace("max_steps: 60", "max_steps: 80").replace("[1.0, 0.0]", "[1.0, 0.0, 0.5]"))
    with pytest.raises(SpecError) as refused:
        run_sweep(str(changed), storage=s3_root, resume=True)
    assert "1 trial(s) added (mod_add-adamw-wd0.5-s42)" in str(refused.value)
    assert "train.max_steps: 60 → 80 in 2 trial(s)" in str(refused.value)
    assert scan(sweep, "trials").collect().select("trial_id", "started_at", "attempt").sort("trial_id").equals(before)
