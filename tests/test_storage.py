"""edgesweep.storage on a local root: layout, streaming writer, resume dedupe, compaction,
scan (dedupe, pushdown, evolution, bad input), write_table and the SQL query layer.

Expected values are built by the tests from what they wrote (plain Python), never by calling
the code under test a second way. Crash safety under SIGKILL is tests/test_storage_crash.py;
the same paths against a real S3 server are tests/test_storage_s3.py.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from edgesweep.storage import (StorageError, StorageWarning, TrialWriter, compact_sweep, compact_trial, query,
                               query_main, resolve_root, scan, write_table)
from edgesweep.storage.layout import canonical_float, live_parts, parse_part_name

REPO = Path(__file__).resolve().parents[1]
P1 = {"workload": "mod_add", "optimizer": "adamw", "weight_decay": 1.0}
P0 = {"workload": "mod_add", "optimizer": "adamw", "weight_decay": 0.0}


def feature(step, attempt, **extra):
    return {"step": step, "g23": step * 10.0 + attempt, "gap_ratio": 2.0, "k_star": 2,
            "sigma": [3.0, 2.0, 1.0], "lr": 1e-3, "nonfinite": False, **extra}


def write_trial(root, sweep, trial_id, attempt, partition, steps, flush_every=None, evals=True):
    w = TrialWriter(root, sweep, trial_id, attempt, partition)
    for i, s in enumerate(steps):
        w.add("features", feature(s, attempt))
        if evals:
            w.add("evals", {"step": s, "test_acc": s / 1000 + attempt, "train_acc": 1.0})
        if flush_every and (i + 1) % flush_every == 0:
            w.flush()
    w.flush()
    return w


def visible_files(directory: Path) -> list[str]:
    """Data files: not hidden, and not in a hidden folder (such as the records' _sealed/)."""
    return sorted(p.name for p in directory.rglob("*") if p.is_file()
                  and not any(part.startswith((".", "_")) for part in p.relative_to(directory).parts))


# --------------------------------------------------------------------------------- layout
def test_partition_paths_are_canonical_floats_and_read_back_as_float64(tmp_path):
    for wd, text in [(1, "1.0"), (0, "0.0"), (0.1, "0.1"), (1e-5, "1e-05"), (-0.0, "0.0")]:
        assert canonical_float(wd) == text
    write_trial(tmp_path, "s", "a", 0, {"workload": "mod_add", "optimizer": "adamw", "weight_decay": 1}, [0])
    write_trial(tmp_path, "s", "b", 0, {"workload": "mod_add", "optimizer": "adamw", "weight_decay": 0.1}, [0])
    dirs = sorted(p.relative_to(tmp_path / "s" / "features").as_posix()
                  for p in (tmp_path / "s" / "features").glob("*/*/*"))
    assert dirs == ["workload=mod_add/optimizer=adamw/weight_decay=0.1",
                    "workload=mod_add/optimizer=adamw/weight_decay=1.0"]
    df = scan(tmp_path, "features").collect()
    assert df.schema["weight_decay"] == pl.Float64
    assert sorted(df["weight_decay"].to_list()) == [0.1, 1.0]


@pytest.mark.parametrize("bad", [
    dict(sweep="a/b"), dict(sweep="features"), dict(trial_id="../x"), dict(trial_id=".hidden"),
    dict(trial_id="_hidden"), dict(sweep="_x"),
    dict(partition={**P1, "workload": "mod add"}), dict(partition={**P1, "weight_decay": float("nan")}),
    dict(partition={"workload": "w", "optimizer": "o"}), dict(attempt=-1), dict(attempt=1.5),
])
def test_writer_rejects_unsafe_names(tmp_path, bad):
    args = dict(sweep="s", trial_id="t", attempt=0, partition=P1) | bad
    with pytest.raises(ValueError):
        TrialWriter(tmp_path, args["sweep"], args["trial_id"], args["attempt"], args["partition"])


@pytest.mark.parametrize("sweep", ["features", "Trials", "EVALS", "runs", "summary", "_tune",
                                   "_sealed", ".git", "_x"])
def test_reserved_sweep_names_are_refused_with_a_clear_message(tmp_path, sweep):
    with pytest.raises(ValueError, match=f"sweep name {sweep!r} is reserved"):
        TrialWriter(tmp_path, sweep, "t", 0, P1)
    with pytest.raises(ValueError, match="reserved"):
        write_table(tmp_path, sweep, "runs", pl.DataFrame({"trial_id": ["t"]}))
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_named_like_a_table_beside_other_sweeps_is_an_error_not_a_hiding_place(tmp_path):
    # Made by hand (as by a version that did not refuse the name): <root>/features/ is a sweep.
    write_trial(tmp_path, "other", "t", 0, P1, [0, 10])
    write_trial(tmp_path, "hidden_by", "u", 0, P1, [0])
    (tmp_path / "hidden_by").rename(tmp_path / "features")
    with pytest.raises(StorageError, match="ambiguous root: it holds table folder.s. features and "
                                           "sweep folder.s. other"):
        scan(tmp_path, "features")
    # A sweep folder's report figures (figures/trials/<id>.png) do not make it ambiguous.
    (tmp_path / "other" / "figures" / "trials").mkdir(parents=True)
    (tmp_path / "other" / "figures" / "trials" / "t.png").write_bytes(b"png")
    assert scan(tmp_path / "other", "features").collect().height == 2  # one sweep still reads


# ---------------------------------------------------------------------------- storage roots
def test_file_uris_are_the_local_paths_they_name(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    target = tmp_path / "store"
    for uri in (f"file://{target}", f"file:{target}", f"file://localhost{target}", f"{target}/"):
        assert resolve_root(uri).base == str(target), uri
    spaced = tmp_path / "with space"
    assert resolve_root(f"file://{tmp_path}/with%20space").base == str(spaced)
    write_trial(f"file://{target}", "sw", "t", 0, P1, [0, 10])
    write_trial(f"file:{target}", "sw", "u", 0, P1, [0])
    assert list(cwd.iterdir()) == []  # nothing became a folder named "file:" under the cwd
    assert scan(str(target), "features").collect().height == 3


@pytest.mark.parametrize("text", [
    "http://example.com/x", "https://example.com/x", "S3://bucket/x", "Gs://bucket/x",
    "ftp://host/x", "hdfs://namenode/x", "az://container/x", "gcs://bucket/x",
    "s3:/bucket/x",          # '//' collapsed (as pathlib.Path does to a URI)
    "gs:/bucket/x", "file://otherhost/x", "results:old", "s3://",
    "s3:///prefix",          # an empty bucket name, not a bucket called "prefix"
    "~no-such-user-edgesweep/x",
])
def test_unsupported_storage_roots_are_refused_naming_what_is_accepted(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError) as err:
        resolve_root(text)
    msg = str(err.value)
    assert text in msg and err.value.paths == [text]
    if text not in ("s3://", "s3:///prefix", "~no-such-user-edgesweep/x"):  # these say what is missing
        for accepted in ("local path", "file:///", "s3://bucket/prefix", "gs://bucket/prefix"):
            assert accepted in msg, msg
    with pytest.raises(StorageError):
        TrialWriter(text, "sw", "t", 0, P1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(pafs, "GcsFileSystem"), reason="pyarrow built without GCS")
def test_gs_roots_resolve_to_pyarrows_gcs_filesystem():
    r = resolve_root("gs://some-bucket/prefix/")  # nothing is contacted until a read or write
    assert isinstance(r.fs, pafs.GcsFileSystem)
    assert r.base == "some-bucket/prefix" and not r.is_s3 and r.scheme == "gs"
    assert r.uri(r.path("sw", "features")) == "gs://some-bucket/prefix/sw/features"


def test_low_space_is_said_of_a_local_root_against_its_disks_free_space(tmp_path):
    """Checked against the disk's own numbers (statvfs), for a root not created yet too (the
    disk it will be on); an object store has no such limit to report."""
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    for root in (tmp_path, tmp_path / "not" / "made" / "yet"):
        r = resolve_root(str(root))
        assert abs(r.free_bytes() - free) < 64 * 2**20  # other writers on a shared disk move it
        assert r.low_space(below=free // 2) is None
        text = r.low_space(below=free * 2)
        assert text is not None and text.startswith(f"{root}: only ") and text.endswith(" free on its disk")
    assert resolve_root("s3://bucket/prefix").free_bytes() is None
    assert resolve_root("s3://bucket/prefix").low_space(below=2**62) is None


# --------------------------------------------------------------------------------- writer
def test_each_flush_seals_one_file_per_table_named_by_trial_attempt_and_steps(tmp_path):
    w = TrialWriter(tmp_path, "sw", "trial-1", 3, P1)
    for s in (0, 10, 20):
        w.add("features", feature(s, 3))
    w.add("evals", {"step": 20, "test_acc": 0.5})
    paths = w.flush()
    assert w.flush() == []  # nothing buffered: nothing sealed
    for s in (30, 40):
        w.add("features", feature(s, 3))
    paths += w.flush()
    part_dir = tmp_path / "sw" / "features" / "workload=mod_add" / "optimizer=adamw" / "weight_decay=1.0"
    assert visible_files(part_dir) == ["trial-1.a003.s0000000000-0000000020.parquet",
                                       "trial-1.a003.s0000000030-0000000040.parquet"]
    assert visible_files(tmp_path / "sw" / "evals") == ["trial-1.a003.s0000000020-0000000020.parquet"]
    assert len(paths) == 3 and all(os.path.isabs(p) for p in paths)
    # no temp files left behind by a clean write
    assert [p for p in tmp_path.rglob(".*")] == []
    t = pq.read_table(part_dir / "trial-1.a003.s0000000000-0000000020.parquet")
    assert t.column("trial_id").to_pylist() == ["trial-1"] * 3
    assert t.column("attempt").to_pylist() == [3] * 3
    assert t.column("weight_decay").to_pylist() == [1.0] * 3
    assert t.column("step").to_pylist() == [0, 10, 20]
    meta = json.loads(t.schema.metadata[b"edgesweep"])
    assert meta["schema_version"] >= 1 and meta["table"] == "features"


def test_writer_validates_rows_at_add(tmp_path):
    w = TrialWriter(tmp_path, "sw", "t", 0, P1)
    with pytest.raises(ValueError, match="unknown column"):
        w.add("features", feature(0, 0, g32=1.0))
    with pytest.raises(ValueError, match="does not fit"):
        w.add("features", feature(0, 0, k_star="two"))
    with pytest.raises(ValueError, match="step"):
        w.add("features", {"g23": 1.0})
    with pytest.raises(ValueError, match="step must be ≥ 0"):
        w.add("features", feature(-1, 0))
    w.add("features", feature(5, 0))
    with pytest.raises(ValueError, match="does not increase"):
        w.add("features", feature(5, 0))
    with pytest.raises(ValueError, match="partition"):
        w.add("features", feature(6, 0, weight_decay=0.0))
    with pytest.raises(ValueError, match="not streamed"):
        w.add("trials", {"step": 1})
    with pytest.raises(StorageError, match="unknown table"):
        w.add("feature", {"step": 1})
    assert w.pending == {"features": 1, "evals": 0}


def test_context_manager_seals_on_success_only(tmp_path):
    with TrialWriter(tmp_path, "sw", "ok", 0, P1) as w:
        w.add("features", feature(0, 0))
    with pytest.raises(RuntimeError):
        with TrialWriter(tmp_path, "sw", "crashed", 0, P1) as w:
            w.add("features", feature(0, 0))
            raise RuntimeError("trainer died")
    assert scan(tmp_path, "features").select("trial_id").collect()["trial_id"].to_list() == ["ok"]


# ------------------------------------------------------------------------- resume + dedupe
def test_rows_replayed_by_a_new_attempt_win_and_appear_once(tmp_path):
    # attempt 1 seals 0..90 in two parts (checkpoint after each flush), then dies with 100..120
    # buffered. Its last checkpoint save is taken to have failed, so attempt 2 restores from the
    # checkpoint at step 40 and replays 50..150 with different values.
    write_trial(tmp_path, "sw", "t", 1, P1, range(0, 100, 10), flush_every=5)
    write_trial(tmp_path, "sw", "t", 2, P1, range(50, 160, 10), flush_every=4)
    df = scan(tmp_path, "features").select("step", "attempt", "g23").sort("step").collect()
    expected = [(s, 1 if s < 50 else 2) for s in range(0, 160, 10)]
    assert list(zip(df["step"], df["attempt"])) == expected
    assert df["g23"].to_list() == [s * 10.0 + a for s, a in expected]
    ev = scan(tmp_path, "evals").select("step", "attempt").sort("step").collect()
    assert list(zip(ev["step"], ev["attempt"])) == expected


def test_dedupe_is_per_trial_and_per_sweep(tmp_path):
    write_trial(tmp_path, "s1", "t", 0, P1, [0, 10])
    write_trial(tmp_path, "s1", "u", 0, P1, [0, 10])
    write_trial(tmp_path, "s2", "t", 5, P1, [0, 10])   # same trial id, other sweep
    df = scan(tmp_path, "features").select("sweep", "trial_id", "step", "attempt").collect()
    assert df.height == 6
    assert sorted(df.filter(pl.col("sweep") == "s2")["attempt"].to_list()) == [5, 5]


def test_filters_on_values_do_not_resurrect_rows_of_older_attempts(tmp_path):
    # Attempt 1 wrote step 10 with g23 = 101; attempt 2 rewrote it with g23 = 102. A filter that
    # only the *old* row passes must return nothing for step 10: filtering before the dedupe
    # would be wrong.
    write_trial(tmp_path, "sw", "t", 1, P1, [0, 10])
    write_trial(tmp_path, "sw", "t", 2, P1, [10])
    got = scan(tmp_path, "features").filter(pl.col("g23") == 101.0).collect()
    assert got.height == 0
    got = scan(tmp_path, "features").filter(pl.col("g23") == 102.0).collect()
    assert got.select("step", "attempt").rows() == [(10, 2)]


# ------------------------------------------------------------------------------ compaction
def test_compaction_makes_one_sorted_deduplicated_file_with_row_group_stats(tmp_path):
    write_trial(tmp_path, "sw", "t", 1, P1, range(0, 2000, 10), flush_every=50)
    write_trial(tmp_path, "sw", "t", 2, P1, range(1500, 2500, 10), flush_every=30)
    write_trial(tmp_path, "sw", "other", 1, P1, [0])
    before = scan(tmp_path, "features").sort("trial_id", "step").collect()
    path = compact_trial(tmp_path, "sw", "features", P1, "t", row_group_size=64)
    part_dir = Path(path).parent
    assert visible_files(part_dir) == ["other.a001.s0000000000-0000000000.parquet",
                                       "t.c002.s0000000000-0000002490.parquet"]
    # The compacted file itself is deduplicated and sorted (not just the scan of it).
    t = pq.read_table(path)
    steps = t.column("step").to_pylist()
    assert steps == list(range(0, 2500, 10))
    assert t.column("attempt").to_pylist() == [1 if s < 1500 else 2 for s in steps]
    md = pq.ParquetFile(path).metadata
    assert md.num_row_groups == -(-250 // 64)
    step_col = md.schema.to_arrow_schema().get_field_index("step")
    stats = [md.row_group(i).column(step_col).statistics for i in range(md.num_row_groups)]
    assert all(s.has_min_max for s in stats)
    assert [s.min for s in stats] == steps[::64]
    assert all(a.max < b.min for a, b in zip(stats, stats[1:]))
    after = scan(tmp_path, "features").sort("trial_id", "step").collect()
    assert after.equals(before)
    # Idempotent: compacting again changes nothing.
    assert compact_trial(tmp_path, "sw", "features", P1, "t") == path
    assert visible_files(part_dir)[1] == "t.c002.s0000000000-0000002490.parquet"


def test_compaction_end_step_drops_abandoned_rows_for_good(tmp_path):
    """Rows past the trial's end (an abandoned attempt's) are dropped and their files retired —
    also when an earlier compaction already ended below its name's range, and when nothing is
    left (the final attempt ended before any row of this table)."""
    from edgesweep.storage import verify

    def steps(table="features"):
        return sorted(scan(tmp_path, table).filter(pl.col("trial_id") == "t").collect()["step"].to_list())

    write_trial(tmp_path, "sw", "t", 0, P1, range(10, 70, 10), flush_every=2)   # attempt 0: to 60
    write_trial(tmp_path, "sw", "t", 1, P1, range(50, 60, 10))                  # restarted at 40, ends at 50
    first = compact_trial(tmp_path, "sw", "features", P1, "t", end_step=50)
    assert Path(first).name == "t.c001.s0000000010-0000000060.parquet"  # spans every input
    assert steps() == [10, 20, 30, 40, 50]
    # attempt 1 died before its trials row said so; attempt 2 restarts from 30 and ends at 40
    write_trial(tmp_path, "sw", "t", 2, P1, range(40, 50, 10))
    second = compact_trial(tmp_path, "sw", "features", P1, "t", end_step=40)
    part_dir = Path(second).parent
    assert [f for f in visible_files(part_dir) if f.startswith("t.")] == ["t.c002.s0000000010-0000000060.parquet"]
    got = scan(tmp_path, "features").filter(pl.col("trial_id") == "t").sort("step").collect()
    assert got["step"].to_list() == [10, 20, 30, 40] and got["attempt"].to_list() == [0, 0, 0, 2]
    # a final attempt that ended before this table's first row: an empty file retires the rest
    write_trial(tmp_path, "sw", "u", 0, P1, range(10, 40, 10))
    write_trial(tmp_path, "sw", "u", 1, P1, [], evals=False)
    empty = compact_trial(tmp_path, "sw", "features", P1, "u", end_step=5)
    assert pq.read_table(empty).num_rows == 0
    assert [f for f in visible_files(part_dir) if f.startswith("u.")] == [Path(empty).name]
    assert scan(tmp_path, "features").filter(pl.col("trial_id") == "u").collect().height == 0
    assert verify(tmp_path).ok, verify(tmp_path).problems


def test_compacting_a_trial_that_still_writes_never_hides_its_next_parts(tmp_path):
    """Only a finished trial's compaction (end_step given) names past its rows; compaction while
    an attempt still writes names what it holds, so the attempt's next part stays live — here
    after an earlier attempt's final compaction already reached to step 80."""
    write_trial(tmp_path, "sw", "t", 0, P1, range(10, 90, 10), flush_every=2)  # abandoned at 80
    write_trial(tmp_path, "sw", "t", 1, P1, [50])                             # ended at 50 ...
    compact_trial(tmp_path, "sw", "features", P1, "t", end_step=50)          # ... and compacted
    w = TrialWriter(tmp_path, "sw", "t", 2, P1)  # its trials row never said so: a restart from 40
    for s in (50, 60):
        w.add("features", feature(s, 2))
    w.flush()
    mid = compact_trial(tmp_path, "sw", "features", P1, "t")  # e.g. compact_sweep mid-run
    assert Path(mid).name == "t.c002.s0000000010-0000000060.parquet"
    w.add("features", feature(70, 2))
    w.flush()
    got = scan(tmp_path, "features").filter(pl.col("trial_id") == "t").sort("step").collect()
    assert got.select("step", "attempt").rows() == [(10, 0), (20, 0), (30, 0), (40, 0), (50, 2), (60, 2), (70, 2)]
    compact_trial(tmp_path, "sw", "features", P1, "t", end_step=70)
    again = scan(tmp_path, "features").filter(pl.col("trial_id") == "t").sort("step").collect()
    assert again.select("step", "attempt").rows() == got.select("step", "attempt").rows()


def test_compact_sweep_follows_the_trials_table(tmp_path):
    """compact_sweep compacts a finished trial up to its recorded last step, leaves a running
    trial with a live owner alone, and the trial's own end-of-run compaction later still drops
    what an earlier compaction kept past the end."""
    from edgesweep.storage.liveness import process_identity

    me = {"pid": os.getpid(), "hostname": socket.gethostname(), "pid_start": process_identity(),
          "started_at": datetime.now(timezone.utc)}
    write_trial(tmp_path, "sw", "done", 0, P1, range(10, 90, 10), flush_every=2)
    write_trial(tmp_path, "sw", "done", 1, P1, [50])
    write_table(tmp_path, "sw", "trials", trial_rows(trial_id="done", attempt=1, status="completed", steps=50))
    write_trial(tmp_path, "sw", "busy", 0, P1, range(10, 40, 10))
    write_table(tmp_path, "sw", "trials", trial_rows(trial_id="busy", status="running", steps=0, **me))
    write_trial(tmp_path, "sw", "late", 0, P1, range(10, 90, 10), flush_every=2)
    write_trial(tmp_path, "sw", "late", 1, P1, [50])
    out = compact_sweep(tmp_path, "sw", tables=("features",))
    names = sorted(Path(p).name for p in out)
    assert names == ["done.c001.s0000000010-0000000080.parquet", "late.c001.s0000000010-0000000080.parquet"]
    steps = {t: sorted(scan(tmp_path, "features").filter(pl.col("trial_id") == t).collect()["step"].to_list())
             for t in ("done", "busy", "late")}
    assert steps["done"] == [10, 20, 30, 40, 50]
    assert steps["busy"] == [10, 20, 30]
    part_dir = Path(out[0]).parent
    assert [f for f in visible_files(part_dir) if f.startswith("busy.")] == \
        ["busy.a000.s0000000010-0000000030.parquet"]  # not compacted: its attempt is still writing
    assert steps["late"] == list(range(10, 90, 10))  # no trials row: compacted as it stands
    # 'late' resumes at its final checkpoint (50), writes nothing more and compacts at its end
    compact_trial(tmp_path, "sw", "features", P1, "late", end_step=50)
    assert sorted(scan(tmp_path, "features").filter(pl.col("trial_id") == "late").collect()["step"]) == [10, 20, 30, 40, 50]


def test_interrupted_compaction_shows_the_compacted_file_only(tmp_path):
    # Crash between sealing the compacted file and deleting the parts: both are on disk.
    write_trial(tmp_path, "sw", "t", 1, P1, range(0, 100, 10), flush_every=3, evals=False)
    path = compact_trial(tmp_path, "sw", "features", P1, "t", delete_inputs=False)
    part_dir = Path(path).parent
    assert len(visible_files(part_dir)) == 5  # 4 parts + compacted
    # Make a leftover part disagree with the compacted file: if a reader used it, it would show.
    stale = part_dir / "t.a001.s0000000000-0000000020.parquet"
    t = pq.read_table(stale)
    t = t.set_column(t.schema.get_field_index("g23"), "g23", pa.array([-1.0] * t.num_rows))
    pq.write_table(t, stale)
    df = scan(tmp_path, "features").sort("step").collect()
    assert df["step"].to_list() == list(range(0, 100, 10))
    assert (df["g23"] >= 0).all()
    # Re-running compaction finishes the job.
    compact_trial(tmp_path, "sw", "features", P1, "t")
    assert visible_files(part_dir) == [Path(path).name]


def test_compaction_of_a_running_trial_keeps_later_parts_live(tmp_path):
    w = write_trial(tmp_path, "sw", "t", 1, P1, range(0, 50, 10), evals=False)
    compact_trial(tmp_path, "sw", "features", P1, "t")
    for s in range(50, 80, 10):  # the same attempt goes on writing after the compaction
        w.add("features", feature(s, 1))
    w.flush()
    # and a newer attempt replays part of the compacted range
    write_trial(tmp_path, "sw", "t", 2, P1, [30, 40], evals=False)
    df = scan(tmp_path, "features").sort("step").collect()
    assert list(zip(df["step"], df["attempt"])) == [(0, 1), (10, 1), (20, 1), (30, 2), (40, 2),
                                                    (50, 1), (60, 1), (70, 1)]


def test_live_parts_rule():
    names = ["t.a001.s0000000000-0000000090.parquet", "t.a002.s0000000050-0000000150.parquet",
             "t.c001.s0000000000-0000000090.parquet", "u.a001.s0000000000-0000000010.parquet",
             "t.a001.s0000000100-0000000110.parquet"]
    parts = [parse_part_name(n) for n in names]
    live = {f"{p.trial_id}.{'c' if p.compacted else 'a'}{p.attempt}.{p.lo}" for p in live_parts(parts)}
    # the compacted file hides attempt-1 parts inside its range only
    assert live == {"t.a2.50", "t.c1.0", "u.a1.0", "t.a1.100"}


def test_writer_compact_covers_all_attempts_and_closes(tmp_path):
    write_trial(tmp_path, "sw", "t", 1, P1, range(0, 50, 10))
    w = TrialWriter(tmp_path, "sw", "t", 2, P1)
    for s in range(30, 70, 10):
        w.add("features", feature(s, 2))
        w.add("evals", {"step": s, "test_acc": 0.9})
    out = w.compact()
    assert [Path(p).name for p in out] == ["t.c002.s0000000000-0000000060.parquet"] * 2
    with pytest.raises(StorageError, match="closed"):
        w.add("features", feature(80, 2))
    assert visible_files(tmp_path / "sw" / "features") == ["t.c002.s0000000000-0000000060.parquet"]


# ------------------------------------------------------------------------------------ scan
def make_sweeps(root):
    write_trial(root, "alpha", "a1", 0, P1, range(0, 30, 10))
    write_trial(root, "alpha", "a0", 0, P0, range(0, 30, 10))
    write_trial(root, "beta", "b1", 0, {**P1, "workload": "dyck"}, range(0, 20, 10))


def test_scan_root_of_sweeps_and_one_sweep_folder(tmp_path):
    make_sweeps(tmp_path)
    both = scan(tmp_path, "features").group_by("sweep").len().sort("sweep").collect()
    assert both.rows() == [("alpha", 6), ("beta", 2)]
    one = scan(tmp_path / "beta", "features").collect()
    assert set(one["sweep"]) == {"beta"} and set(one["workload"]) == {"dyck"}
    assert scan(tmp_path, "features").collect_schema().names()[:2] == ["sweep", "trial_id"]


def scan_sections(plan: str) -> list[dict]:
    """The Parquet SCAN nodes of an explain() plan: files, columns read / all, selection."""
    out = []
    for block in plan.split("Parquet SCAN")[1:]:
        lines = block.splitlines()
        project = next(line for line in lines if "PROJECT" in line)
        n_read, n_all = map(int, project.split("PROJECT")[1].split()[0].split("/"))
        selection = next((line for line in lines[:4] if "SELECTION" in line), "")
        out.append({"files": lines[0], "read": n_read, "all": n_all, "selection": selection})
    return out


def test_reading_nan_as_null_keeps_a_weight_decay_filter_in_the_parquet_reader(tmp_path):
    """query's NaN→NULL step rewrites the float columns above the scan; a filter on a column it
    rewrote can no longer reach the reader, so the partition keys are left out of it: a filter
    on weight_decay still reaches the reader (and prunes other partitions' files)."""
    from edgesweep.storage.query import nan_as_null_frame

    make_sweeps(tmp_path)
    with pl.SQLContext(frames={"features": nan_as_null_frame(scan(tmp_path, "features"))}) as ctx:
        plan = ctx.execute("SELECT trial_id FROM features WHERE weight_decay = 0", eager=False).explain()
    [section] = scan_sections(plan)
    assert 'col("weight_decay")' in section["selection"], plan
    with pl.SQLContext(frames={"features": nan_as_null_frame(scan(tmp_path, "features"))}) as ctx:
        assert ctx.execute("SELECT DISTINCT trial_id FROM features WHERE weight_decay = 0", eager=True).rows() == [("a0",)]


def test_projection_and_predicate_pushdown_reach_the_parquet_scan(tmp_path):
    make_sweeps(tmp_path)
    q = (scan(tmp_path, "features")
         .filter(pl.col("weight_decay") == 1.0, pl.col("step") >= 10, pl.col("g23") > 0)
         .select("trial_id", "step", "g23"))
    [section] = scan_sections(q.explain())
    # No file overlaps another of its trial: a plain scan, every predicate inside the reader,
    # and only the columns the query uses are read.
    for col in ("weight_decay", "step", "g23"):
        assert f'col("{col}")' in section["selection"]
    assert section["read"] == 4 and section["all"] == 25
    assert sorted(q.collect().rows()) == [("a1", 10, 100.0), ("a1", 20, 200.0), ("b1", 10, 100.0)]


def test_pushdown_with_a_restored_trial_stops_value_filters_at_the_dedupe(tmp_path):
    make_sweeps(tmp_path)
    write_trial(tmp_path, "alpha", "a1", 1, P1, [20, 30])  # a1 restored: replays step 20
    q = (scan(tmp_path, "features").filter(pl.col("step") >= 10, pl.col("g23") > 0)
         .select("trial_id", "step", "g23"))
    sections = scan_sections(q.explain())
    clean = next(s for s in sections if "a0.a000" in s["files"])
    dirty = next(s for s in sections if "a1.a001" in s["files"])
    assert "a1." not in clean["files"] and "a0." not in dirty["files"]
    # Files of the restored trial: the key predicate (step) is pushed into the reader, the
    # value predicate (g23) is not — it must see the newest attempt's value first.
    assert 'col("step")' in dirty["selection"] and 'col("g23")' not in dirty["selection"]
    assert 'col("step")' in clean["selection"] and 'col("g23")' in clean["selection"]
    assert dirty["read"] < dirty["all"] and clean["read"] < clean["all"]
    assert sorted(q.collect().rows()) == [("a0", 10, 100.0), ("a0", 20, 200.0), ("a1", 10, 100.0),
                                          ("a1", 20, 201.0), ("a1", 30, 301.0), ("b1", 10, 100.0)]


def test_older_files_get_nulls_and_newer_columns_are_kept(tmp_path):
    write_trial(tmp_path, "sw", "new", 0, P1, [0])
    d = tmp_path / "sw" / "features" / "workload=mod_add" / "optimizer=adamw" / "weight_decay=1.0"
    # An "older" file: written before grad_norm/loss/... existed (fewer columns, version 0) ...
    old = pa.table({"trial_id": ["old"], "workload": ["mod_add"], "optimizer": ["adamw"],
                    "weight_decay": [1.0], "attempt": pa.array([0], pa.int64()),
                    "step": pa.array([0], pa.int64()), "g23": [5.0]})
    meta = {b"edgesweep": json.dumps({"schema_version": 0, "table": "features", "trial_id": "old",
                                      "attempt": 0, "partition": P1}).encode()}
    pq.write_table(old.replace_schema_metadata(meta), d / "old.a000.s0000000000-0000000000.parquet")
    # ... and a "newer" one with a column this reader does not declare.
    newer = pq.read_table(d / "new.a000.s0000000000-0000000000.parquet")
    newer = newer.append_column("curvature", pa.array([7.0]))
    newer = newer.set_column(0, "trial_id", pa.array(["newer"]))
    meta = json.loads(newer.schema.metadata[b"edgesweep"]) | {"trial_id": "newer", "schema_version": 99}
    del meta["record"]  # written by hand: no sealed-file record lists it (a legacy file)
    pq.write_table(newer.replace_schema_metadata({b"edgesweep": json.dumps(meta).encode()}),
                   d / "newer.a000.s0000000000-0000000000.parquet")
    df = scan(tmp_path, "features").sort("trial_id").collect()
    rows = {r["trial_id"]: r for r in df.iter_rows(named=True)}
    assert rows["old"]["g23"] == 5.0 and rows["old"]["grad_norm"] is None and rows["old"]["sigma"] is None
    assert rows["newer"]["curvature"] == 7.0 and rows["new"]["curvature"] is None
    assert rows["new"]["sigma"] == [3.0, 2.0, 1.0]


def test_temp_files_of_writers_are_ignored_and_old_ones_cleaned_by_compaction(tmp_path):
    write_trial(tmp_path, "sw", "t", 0, P1, [0])
    d = next((tmp_path / "sw" / "features").glob("*/*/*"))
    old = d / ".t.a001.s0000000010-0000000020.parquet.tmp-1234"
    new = d / ".t.a001.s0000000030-0000000040.parquet.tmp-5678"
    other = d / ".u.a001.s0000000010-0000000020.parquet.tmp-9999"
    for p in (old, new, other):
        p.write_bytes(b"PAR1 half a file")
    os.utime(old, (0, 0))
    os.utime(other, (0, 0))
    assert scan(tmp_path, "features").collect().height == 1
    compact_trial(tmp_path, "sw", "features", P1, "t")
    assert not old.exists()  # this trial's, old: a killed writer's leftover
    assert new.exists()      # recent: could be a live writer's in-flight seal
    assert other.exists()    # another trial's


def test_empty_sweep_scans_to_an_empty_frame_with_the_schema(tmp_path):
    (tmp_path / "sw" / "features").mkdir(parents=True)
    df = scan(tmp_path, "features").collect()
    assert df.height == 0 and {"sweep", "trial_id", "g23", "sigma"} <= set(df.columns)


# ------------------------------------------------------------------------------- bad input
def _features_dir(root):
    return next((Path(root) / "sw" / "features").glob("*/*/*"))


def _bad_cases():
    def garbage(d):
        p = d / "x.a001.s0000000000-0000000001.parquet"
        p.write_bytes(b"this is not parquet at all")
        return p, "unreadable Parquet"

    def truncated(d):
        good = next(d.glob("t.*.parquet"))
        p = d / "x.a001.s0000000000-0000000001.parquet"
        p.write_bytes(good.read_bytes()[:-20])
        return p, "unreadable Parquet"

    def unreadable(d):
        p = d / "x.a001.s0000000000-0000000001.parquet"
        p.mkdir()  # a name the listing yields but that cannot be read as a file
        (p / "inner.parquet").write_bytes(b"")
        return p / "inner.parquet", "unexpected location"

    def foreign(d):
        p = d / "x.a001.s0000000000-0000000001.parquet"
        pq.write_table(pa.table({"trial_id": ["x"], "step": [1]}), p)
        return p, "foreign Parquet file"

    def wrong_schema(d):
        good = next(d.glob("t.*.parquet"))
        t = pq.read_table(good)
        t = t.set_column(t.schema.get_field_index("step"), "step", pa.array(["zero", "ten"]))
        p = d / "t.a009.s0000000000-0000000000.parquet"
        meta = json.loads(t.schema.metadata[b"edgesweep"]) | {"attempt": 9}
        pq.write_table(t.replace_schema_metadata({b"edgesweep": json.dumps(meta).encode()}), p)
        return p, "column 'step' is string, expected int64"

    def other_table(d):
        p = d / "x.a001.s0000000000-0000000001.parquet"
        t = pa.table({"trial_id": ["x"]}).replace_schema_metadata(
            {b"edgesweep": json.dumps({"schema_version": 1, "table": "evals"}).encode()})
        pq.write_table(t, p)
        return p, "file of table 'evals'"

    def moved(d):
        good = next(d.glob("t.*.parquet"))
        other = d.parent / "weight_decay=0.0"
        other.mkdir()
        p = other / good.name
        p.write_bytes(good.read_bytes())
        return p, "does not match its directory"

    def stray(d):
        p = d / "notes.txt"
        p.write_text("hello")
        return p, "not a .parquet file"

    def bad_name(d):
        p = d / "random.parquet"
        p.write_bytes(next(d.glob("t.*.parquet")).read_bytes())
        return p, "unexpected file name"

    def mislabeled(d):
        # steps 0..10 inside, but the name claims 500..600: its overlaps would go unseen
        good = next(d.glob("t.*.parquet"))
        t = pq.read_table(good)
        meta = json.loads(t.schema.metadata[b"edgesweep"]) | {"attempt": 5}
        p = d / "t.a005.s0000000500-0000000600.parquet"
        pq.write_table(t.replace_schema_metadata({b"edgesweep": json.dumps(meta).encode()}), p)
        return p, "lie outside the range 500..600"

    return [garbage, truncated, unreadable, foreign, wrong_schema, other_table, moved, stray,
            bad_name, mislabeled]


@pytest.mark.parametrize("make_bad", _bad_cases(), ids=lambda f: f.__name__)
def test_bad_files_are_reported_by_path_or_skipped_with_a_warning(tmp_path, make_bad):
    write_trial(tmp_path, "sw", "t", 0, P1, [0, 10])
    bad_path, reason = make_bad(_features_dir(tmp_path))
    with pytest.raises(StorageError) as err:
        scan(tmp_path, "features")
    assert str(bad_path) in str(err.value) and reason in str(err.value)
    assert err.value.paths == [str(bad_path)]
    with pytest.warns(StorageWarning) as rec:
        df = scan(tmp_path, "features", on_error="skip").collect()
    assert [str(bad_path) in str(w.message) for w in rec] == [True]
    assert sorted(df["step"].to_list()) == [0, 10] and set(df["trial_id"]) == {"t"}


def test_missing_root_and_unknown_table(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(StorageError, match=f"storage root not found: {missing}"):
        scan(missing, "features")
    with pytest.raises(StorageError, match="unknown table 'feature'.*features"):
        scan(tmp_path, "feature")
    (tmp_path / "f").write_text("x")
    with pytest.raises(StorageError, match="not a directory"):
        scan(tmp_path / "f", "features")
    with pytest.raises(ValueError):
        scan(tmp_path, "features", on_error="ignore")


# ----------------------------------------------------------------------------- write_table
def trial_rows(**over):
    base = {"trial_id": "t1", "workload": "mod_add", "optimizer": "adamw", "weight_decay": 1,
            "attempt": 0, "seed": 42, "status": "running", "steps": 0,
            "config": json.dumps({"lr": 1e-3}), "started_at": datetime(2026, 3, 1, tzinfo=timezone.utc)}
    return pl.DataFrame([base | over])


def test_trials_one_file_per_trial_replaced_atomically(tmp_path):
    write_table(tmp_path, "sw", "trials", trial_rows())
    write_table(tmp_path, "sw", "trials", trial_rows(trial_id="t2", weight_decay=0.0))
    write_table(tmp_path, "sw", "trials", trial_rows(status="finished", steps=500, attempt=1))
    assert visible_files(tmp_path / "sw" / "trials") == ["t1.parquet", "t2.parquet"]
    df = scan(tmp_path, "trials").sort("trial_id").collect()
    assert df.select("trial_id", "status", "steps", "weight_decay", "sweep").rows() == [
        ("t1", "finished", 500, 1.0, "sw"), ("t2", "running", 0, 0.0, "sw")]
    assert df.schema["weight_decay"] == pl.Float64
    assert df["started_at"][0] == datetime(2026, 3, 1, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="unknown column"):
        write_table(tmp_path, "sw", "trials", trial_rows(favourite_colour="blue"))
    with pytest.raises(ValueError, match="streamed"):
        write_table(tmp_path, "sw", "features", trial_rows())


def test_runs_and_summary_take_any_columns_but_check_keys(tmp_path):
    runs = pl.DataFrame({"trial_id": ["t1", "t2"], "weight_decay": [1, 0], "grok_step": [3400, None],
                         "preceded": [True, False]})
    write_table(tmp_path, "sw", "runs", runs)
    write_table(tmp_path, "sw", "summary", pl.DataFrame({"weight_decay": [1.0], "preceded": [1], "n": [1]}))
    got = scan(tmp_path, "runs").sort("trial_id").collect()
    assert got.select("trial_id", "weight_decay", "grok_step").rows() == [("t1", 1.0, 3400), ("t2", 0.0, None)]
    assert scan(tmp_path / "sw", "summary").collect()["n"].to_list() == [1]
    # An all-null column (Polars dtype Null) in one sweep's runs reads as the other sweep's type.
    write_table(tmp_path, "sw2", "runs", pl.DataFrame({"trial_id": ["t9"], "grok_step": [None]}))
    both = scan(tmp_path, "runs").sort("sweep", "trial_id").collect()
    assert both.schema["grok_step"] == pl.Int64
    assert both.select("sweep", "grok_step").rows() == [("sw", 3400), ("sw", None), ("sw2", None)]
    # A column whose type differs between files is reported, naming the file.
    write_table(tmp_path, "sw3", "runs", pl.DataFrame({"trial_id": ["t8"], "grok_step": ["late"]}))
    with pytest.raises(StorageError, match=r"sw3/runs/runs.parquet: column 'grok_step' is string"):
        scan(tmp_path, "runs")
    with pytest.raises(ValueError, match="trial_id"):
        write_table(tmp_path, "sw", "runs", pl.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="seed"):
        write_table(tmp_path, "sw", "runs", pl.DataFrame({"trial_id": ["a"], "seed": ["x"]}))


# ----------------------------------------------------------------------------------- query
def test_query_joins_tables_by_name(tmp_path):
    make_sweeps(tmp_path)
    for sweep, tid, wd in (("alpha", "a1", 1.0), ("alpha", "a0", 0.0)):
        write_table(tmp_path, sweep, "trials", trial_rows(trial_id=tid, weight_decay=wd, status="finished"))
    df = query(tmp_path, """
        SELECT t.trial_id, t.status, count(*) AS n, max(f.g23) AS g23_max
        FROM features f JOIN trials t ON f.sweep = t.sweep AND f.trial_id = t.trial_id
        GROUP BY t.trial_id, t.status ORDER BY t.trial_id""")
    assert df.rows() == [("a0", "finished", 3, 200.0), ("a1", "finished", 3, 200.0)]


def test_query_does_not_touch_tables_it_does_not_name(tmp_path):
    make_sweeps(tmp_path)
    d = next((tmp_path / "alpha" / "evals").glob("*/*/*"))
    (d / "x.a001.s0000000000-0000000001.parquet").write_bytes(b"junk")
    assert query(tmp_path, "SELECT count(*) AS n FROM features").item() == 8
    with pytest.raises(StorageError, match="x.a001"):
        query(tmp_path, "SELECT count(*) FROM evals")


def test_query_main_formats_and_errors(tmp_path, capsys):
    make_sweeps(tmp_path)
    sql = "SELECT sweep, count(*) AS n FROM features GROUP BY sweep ORDER BY sweep"
    assert query_main([str(tmp_path), sql]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "│" in out
    assert query_main([str(tmp_path), sql, "--format", "csv"]) == 0
    assert capsys.readouterr().out == "sweep,n\nalpha,6\nbeta,2\n"
    assert query_main([str(tmp_path), sql, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"sweep": "alpha", "n": 6}, {"sweep": "beta", "n": 2}]
    out_file = tmp_path / "out.parquet"
    assert query_main([str(tmp_path), sql, "--format", "parquet", "--output", str(out_file)]) == 0
    assert pl.read_parquet(out_file).rows() == [("alpha", 6), ("beta", 2)]
    csv_file = tmp_path / "lists.csv"
    assert query_main([str(tmp_path), "SELECT sigma FROM features LIMIT 1", "--format", "csv",
                       "-o", str(csv_file)]) == 0
    assert csv_file.read_text() == 'sigma\n"[3.0, 2.0, 1.0]"\n'
    # errors: one line naming the path, exit status 2, no traceback
    assert query_main([str(tmp_path / "missing"), sql]) == 2
    err = capsys.readouterr().err
    assert f"storage root not found: {tmp_path / 'missing'}" in err and "Traceback" not in err
    assert query_main([str(tmp_path), "SELECT nope FROM features"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Resolved plan" not in err and len(err.splitlines()) == 1, err
    assert "In the SQL statement" not in err  # Polars ≥ 2.2 repeats the statement: the user typed it
    # a failing comparison: one line, and the expression that failed (which of a long query's)
    assert query_main([str(tmp_path), "SELECT step FROM features WHERE sweep > 3"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Resolved plan" not in err, err
    assert err.startswith("edgesweep query: error: ") and '(in [(col("sweep")) > (' in err, err
    assert query_main([str(tmp_path), "SELEC x"]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        query_main([str(tmp_path), sql, "--format", "parquet"])  # parquet needs --output


def test_query_output_never_lands_in_the_tables_it_reads(tmp_path, capsys):
    """`--output` inside a table folder, edgesweep's own folders or over a sweep's aggregation
    outputs would replace or shadow stored data: refused before anything is read or written."""
    make_sweeps(tmp_path)
    sql = "SELECT count(*) AS n FROM features"
    part = next((tmp_path / "alpha" / "features").rglob("*.parquet"))
    before = part.read_bytes()
    for target in (part, tmp_path / "alpha" / "runs" / "x.parquet", tmp_path / "alpha" / "_sealed" / "x.csv",
                   tmp_path / "alpha" / "scorecard.json", tmp_path / "alpha" / "Features" / "x.parquet"):
        with pytest.raises(SystemExit) as exc:
            query_main([str(tmp_path / "alpha"), sql, "--format", "parquet", "--output", str(target)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"--output {target}: inside the tables or outputs" in err, err
    assert part.read_bytes() == before and not (tmp_path / "alpha" / "scorecard.json").exists()
    # another sweep than the one queried, reached through "..", is just as much stored data
    beta_part = next((tmp_path / "beta" / "features").rglob("*.parquet"))
    for target in (tmp_path / "alpha" / ".." / "beta" / "features" / "x.parquet", beta_part,
                   tmp_path / "beta" / "scorecard.json"):
        with pytest.raises(SystemExit) as exc:
            query_main([str(tmp_path / "alpha"), sql, "--format", "parquet", "--output", str(target)])
        assert exc.value.code == 2
        assert f"--output {target}: inside the tables or outputs" in capsys.readouterr().err
    assert not (tmp_path / "beta" / "features" / "x.parquet").exists()
    # beside the sweeps is fine, and so is a folder of one's own
    assert query_main([str(tmp_path), sql, "--format", "csv", "--output", str(tmp_path / "n.csv")]) == 0
    (tmp_path / "_exports").mkdir()
    assert query_main([str(tmp_path), sql, "--format", "csv", "--output", str(tmp_path / "_exports" / "n.csv")]) == 0
    assert query_main([str(tmp_path / "alpha"), sql, "--format", "csv", "--output", str(tmp_path / "alpha" / "n.csv")]) == 0
    with pytest.raises(SystemExit):
        query_main([str(tmp_path), sql, "--max-rows", "-5"])
    assert "--max-rows -5" in capsys.readouterr().err


def test_query_table_on_screen_is_a_sample_and_in_a_file_is_every_row(tmp_path, capsys):
    """The table format shows 50 rows on stdout; written to a file by name it holds every
    row (it kept 50 of 2,822 without a word); --max-rows sets either."""
    sweep, sql = str(REPO / "docs" / "results" / "grokking-laptop"), "SELECT step FROM features ORDER BY trial_id, step"
    n = query(sweep, "SELECT count(*) AS n FROM features")["n"].item()
    assert n > 100

    def data_lines(text: str) -> int:
        return sum(1 for line in text.splitlines() if line.strip("│ ").isdigit())

    assert query_main([sweep, sql]) == 0
    assert data_lines(capsys.readouterr().out) == 50
    out = tmp_path / "steps.txt"
    assert query_main([sweep, sql, "-o", str(out)]) == 0
    assert data_lines(out.read_text()) == n
    assert query_main([sweep, sql, "-o", str(out), "--max-rows", "7"]) == 0
    assert data_lines(out.read_text()) == 7
    assert query_main([sweep, sql, "--max-rows", "-1"]) == 0
    assert data_lines(capsys.readouterr().out) == n


@pytest.mark.parametrize("argv, says", [
    (["query", "", "SELECT 1"], "argument ROOT: '' is not a path: it is empty or blank"),
    (["query", "docs/results/grokking-laptop", "SELECT 1", "-o", " "], "argument --output/-o: ' ' is not a path"),
    (["query", "docs/results/grokking-laptop", "SELECT \udcff FROM runs"],
     "argument SQL: the SQL is not UTF-8 text (byte 0xff at character 8)"),
    (["verify", ""], "argument ROOT: '' is not a path"),
])
def test_the_storage_entry_point_refuses_what_the_cli_refuses(argv, says):
    """`python -m edgesweep.storage query|verify` (no torch, no Ray) takes the same arguments as
    `edgesweep query|verify`, and refuses the same bad ones in one line (non-UTF-8 SQL was an
    uncaught UnicodeEncodeError there)."""
    proc = subprocess.run([sys.executable, "-m", "edgesweep.storage", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and says in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_the_storage_entry_points_help_lists_every_query_option():
    """Its usage came from a hand-written string that had fallen behind (no --keep-nan); now
    from query's own parser. --help exits 0, no command exits 2 with the same text."""
    from edgesweep.storage.query import _parser

    helped = subprocess.run([sys.executable, "-m", "edgesweep.storage", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    bare = subprocess.run([sys.executable, "-m", "edgesweep.storage"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert helped.returncode == 0 and bare.returncode == 2 and bare.stderr == helped.stdout
    options = [o for a in _parser()._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    assert len(options) >= 5 and all(o in helped.stdout for o in options), (options, helped.stdout)
    assert "verify ROOT [--quick] [--quiet]" in helped.stdout


def test_query_reads_an_undefined_float_as_null_so_sql_skips_it(tmp_path, capsys):
    """Undefined floats are stored as NaN (CONTRACTS.md), and Polars orders NaN above every
    number: `WHERE g23 > 15` kept the undefined rows, ORDER BY … DESC put them first, COUNT
    counted them and AVG was NaN. `query` reads them as NULL, which SQL skips; NaN inside a
    list stays; --keep-nan (nan_as_null=False) reads what is stored."""
    nan = float("nan")
    w = TrialWriter(tmp_path, "sw", "t", 0, P1)
    for step, g23 in [(10, 12.0), (20, nan), (30, 40.0), (40, nan)]:
        w.add("features", {**feature(step, 0), "g23": g23, "sigma": [3.0, nan]})
    w.flush()
    sql = "SELECT COUNT(*) AS n_over, (SELECT COUNT(g23) FROM features) AS n_defined, " \
          "(SELECT AVG(g23) FROM features) AS mean FROM features WHERE g23 > 15"
    assert query(tmp_path, sql).rows() == [(1, 2, 26.0)]
    raw = query(tmp_path, sql, nan_as_null=False).row(0)
    assert raw[:2] == (3, 4) and math.isnan(raw[2])  # the trap, read as stored
    top = query(tmp_path, "SELECT step, g23 FROM features ORDER BY g23 DESC NULLS LAST LIMIT 1")
    assert top.rows() == [(30, 40.0)]
    sigma = query(tmp_path, "SELECT sigma FROM features WHERE step = 10")["sigma"][0].to_list()
    assert sigma[0] == 3.0 and math.isnan(sigma[1])
    assert query_main([str(tmp_path), "SELECT step FROM features WHERE g23 > 15", "--format", "csv"]) == 0
    assert capsys.readouterr().out == "step\n30\n"
    assert query_main([str(tmp_path), "SELECT step FROM features WHERE g23 > 15", "--format", "csv",
                       "--keep-nan"]) == 0
    assert capsys.readouterr().out == "step\n20\n30\n40\n"


def test_the_cli_query_of_the_committed_laptop_sweep_counts_the_papers_criterion_right():
    """`edgesweep query` (the CLI, which forwards --keep-nan) on the committed laptop sweep:
    the runs whose g23 declined more than 1.5× are the runs the aggregation marked
    `preceded` (12), not every run (30: the 18 that never grokked have an undefined decline)."""
    sql = ("SELECT COUNT(*) AS n, (SELECT COUNT(*) FROM runs WHERE preceded) AS preceded "
           "FROM runs WHERE g23_decline > 1.5")
    outs = []
    for extra in ([], ["--keep-nan"]):
        proc = subprocess.run([sys.executable, "-m", "edgesweep", "query", "docs/results/grokking-laptop", sql,
                               "--format", "csv", *extra], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout)
    assert outs == ["n,preceded\n12,12\n", "n,preceded\n30,12\n"]
    # The CLI's sub-command is the storage command's own parser: its checks and messages too.
    proc = subprocess.run([sys.executable, "-m", "edgesweep", "query", "docs/results/grokking-laptop", "SELECT 1",
                           "--format", "parquet"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1] == \
        "edgesweep query: error: --format parquet needs --output FILE", proc.stderr
    proc = subprocess.run([sys.executable, "-m", "edgesweep", "query", "docs/results/grokking-laptop",
                           "SELECT trial_id FROM runs ORDER BY trial_id", "--max-rows", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "shape: (30, 1)" in proc.stdout and proc.stdout.count("adamw") == 2, proc.stdout


def test_a_query_across_sweeps_says_which_sweeps_lack_a_column_it_names(tmp_path, capsys):
    """A column an older sweep's files lack reads as null there: the query says so when its SQL
    names the column (and only then), so a count of nulls is not taken for a finding."""
    write_table(tmp_path, "new", "runs", pl.DataFrame({"trial_id": ["a", "b"], "family": ["modular", "sparse"]}))
    write_table(tmp_path, "old", "runs", pl.DataFrame({"trial_id": ["c"]}))
    sql = "SELECT sweep, count(family) AS n FROM runs GROUP BY sweep ORDER BY sweep"
    with pytest.warns(StorageWarning) as caught:
        assert query(tmp_path, sql).rows() == [("new", 2), ("old", 0)]
    assert [str(w.message) for w in caught] == [
        "column 'family' of table 'runs' is not in the files of sweep(s) old (written before it existed): "
        "it reads as null there"]
    assert query_main([str(tmp_path), "SELECT count(*) AS n FROM runs", "--format", "csv"]) == 0
    assert capsys.readouterr().err == ""  # the SQL names no such column


def test_a_query_of_summaries_aggregated_under_the_old_hit_definition_says_so():
    """The committed grokking-corpus and grokking-eval summaries were aggregated when an alarm at
    the grok step counted as a hit (they still have hits_with_lead) and have no raw tables to
    re-derive them from. A query of runs or summary that reads them says so, naming them."""
    sql = "SELECT sweep, sum(hits) AS hits FROM summary WHERE scope = 'all' GROUP BY sweep ORDER BY sweep"
    proc = subprocess.run([sys.executable, "-m", "edgesweep", "query", "docs/results", sql, "--format", "csv"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "sweep,hits" and len(proc.stdout.splitlines()) == 6
    notes = [ln for ln in proc.stderr.splitlines() if "aggregated before 2026-12-07" in ln]
    assert len(notes) == 1 and notes[0].startswith(
        "edgesweep query: warning: sweep(s) grokking-corpus, grokking-eval: aggregated before 2026-12-07"), proc.stderr
    for root, sql, told in (("docs/results/grokking-eval", "SELECT count(*) FROM runs", True),
                            ("docs/results/grokking-laptop", "SELECT count(*) FROM runs", False),
                            ("docs/results/grokking-corpus", "SELECT count(*) FROM detection", False)):
        proc = subprocess.run([sys.executable, "-m", "edgesweep", "query", root, sql, "--format", "csv"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and ("aggregated before 2026-12-07" in proc.stderr) == told, (root, proc.stderr)


def test_query_main_takes_the_format_from_the_output_file(tmp_path, capsys, monkeypatch):
    """Without --format, --output's extension chooses it: the screen table written into
    n.csv or n.parquet would be a file no reader takes. An extension that says nothing is
    refused before anything is read; a quoted ~ is the home folder."""
    make_sweeps(tmp_path)
    sql = "SELECT sweep, count(*) AS n FROM features GROUP BY sweep ORDER BY sweep"
    out = tmp_path / "out"
    out.mkdir()
    for name in ("n.csv", "n.parquet", "n.pq", "n.json", "n.txt"):
        assert query_main([str(tmp_path), sql, "--output", str(out / name)]) == 0
    assert (out / "n.csv").read_text() == "sweep,n\nalpha,6\nbeta,2\n"
    assert pl.read_parquet(out / "n.parquet").rows() == pl.read_parquet(out / "n.pq").rows() == [("alpha", 6), ("beta", 2)]
    assert json.loads((out / "n.json").read_text()) == [{"sweep": "alpha", "n": 6}, {"sweep": "beta", "n": 2}]
    assert "│" in (out / "n.txt").read_text()
    # an explicit --format wins over the extension
    assert query_main([str(tmp_path), sql, "--format", "csv", "--output", str(out / "n.json")]) == 0
    assert (out / "n.json").read_text().startswith("sweep,n")
    with pytest.raises(SystemExit) as exc:
        query_main([str(tmp_path), sql, "--output", str(out / "n.dat")])
    assert exc.value.code == 2 and not (out / "n.dat").exists()
    assert f"--output {out / 'n.dat'}: its extension does not say the format" in capsys.readouterr().err
    monkeypatch.setenv("HOME", str(out))
    assert query_main([str(tmp_path), sql, "--output", "~/home.csv"]) == 0
    assert (out / "home.csv").read_text() == "sweep,n\nalpha,6\nbeta,2\n"


def test_query_main_refuses_what_it_cannot_answer(tmp_path, capsys):
    """One line and exit 2 where a query could only print an empty or misleading answer: a
    folder holding no tables (a table folder given as the root, an empty folder), a statement
    that would write, and SQL over a table no sweep holds yet (the derived ones name the
    command that writes them); a query of such a table that succeeds warns."""
    make_sweeps(tmp_path)
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "empty"), "SELECT count(*) FROM runs"], f"{tmp_path / 'empty'}: no edgesweep tables here"),
        ([str(tmp_path / "alpha" / "features"), "SELECT count(*) FROM features"],
         f"{tmp_path / 'alpha' / 'features'}: no edgesweep tables here"),
        ([str(tmp_path / "alpha" / "features"), "SELECT count(*) FROM features"],
         f"it is the 'features' table folder of sweep {tmp_path / 'alpha'}: give that sweep's folder"),
        ([str(tmp_path), ""], "SQL: no statement (the SQL is empty or only comments)"),
        ([str(tmp_path), " -- nothing\n ; "], "SQL: no statement"),
        ([str(tmp_path), "SELECT * FROM feature"],
         "relation 'feature' was not found (the tables: trials, evals, features, runs, summary, detection)"),
        ([str(tmp_path), "  DELETE FROM features"], "DELETE: edgesweep query only reads the tables"),
        ([str(tmp_path), "-- tidy up\n/* old rows */ DELETE FROM features"], "DELETE: edgesweep query only reads"),
        # an alias named like an absent table is no reason to blame that table
        ([str(tmp_path / "alpha"), "SELECT trial_id AS detection FROM features WHERE nosuch = 1"],
         "ColumnNotFoundError: unable to find column \"nosuch\""),
        ([str(tmp_path), "SELECT trial_id, grok_step FROM runs"],
         f"no 'runs' table under {tmp_path} yet: it is computed from the others, `edgesweep aggregate "
         "ROOT/SWEEP` writes it (ColumnNotFoundError"),
        ([str(tmp_path / "alpha"), "SELECT trial_id, grok_step FROM runs"],
         f"`edgesweep aggregate {tmp_path / 'alpha'}` writes it"),
    ]
    if Path("/dev/full").exists():  # a write that fails after the query succeeded: the disk is full
        cases.append(([str(tmp_path / "alpha"), "SELECT count(*) AS n FROM features", "-o", "/dev/full", "--format", "csv"],
                      "--output /dev/full: cannot write: No space left on device"))
    for argv, says in cases:
        assert query_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("edgesweep query: error") and says in err and "Traceback" not in err, err
        assert len(err.splitlines()) == 1, err
        assert "'detection' table" not in err  # the alias is neither blamed nor warned about
    assert query_main([str(tmp_path / "alpha"), "SELECT * FROM detection", "--format", "csv"]) == 0
    cap = capsys.readouterr()
    assert (f"edgesweep query: warning: no 'detection' table under {tmp_path / 'alpha'} yet: it is computed "
            f"from the others, `edgesweep detect {tmp_path / 'alpha'}` writes it") in cap.err


def test_query_main_skip_bad_files_warns_on_stderr(tmp_path, capsys):
    make_sweeps(tmp_path)
    d = next((tmp_path / "alpha" / "features").glob("*/*/*"))
    bad = d / "x.a001.s0000000000-0000000001.parquet"
    bad.write_bytes(b"junk")
    assert query_main([str(tmp_path), "SELECT count(*) AS n FROM features", "--format", "csv",
                       "--skip-bad-files"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "n\n8\n" and str(bad) in cap.err


def test_module_entry_point(tmp_path):
    make_sweeps(tmp_path)
    out = subprocess.run([sys.executable, "-m", "edgesweep.storage", "query", str(tmp_path),
                          "SELECT count(*) AS n FROM evals", "--format", "csv"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "n\n8\n"


def test_the_table_view_shows_a_long_trial_id_whole(tmp_path, capsys, monkeypatch):
    """Trial ids name their varied axes and run past 60 characters in large sweeps (82 in the
    development corpus); the screen table showed them cut, and a cut id cannot be pasted back
    into a query. Shown whole up to 120 characters; $POLARS_FMT_STR_LEN still decides."""
    monkeypatch.delenv("POLARS_FMT_STR_LEN", raising=False)
    long_id = "mod_sq_cross-adamw-wd0.716-s63227-data_seed449-n_layers2-lr0.00302-train_frac0.634"
    write_trial(tmp_path, "sw", long_id, 0, P1, range(0, 20, 10))
    assert query_main([str(tmp_path), "SELECT DISTINCT trial_id FROM features"]) == 0
    assert long_id in capsys.readouterr().out
    # beside other columns: one line per row, the id whole (Polars wrapped it at 100 characters)
    assert query_main([str(tmp_path), "SELECT trial_id, step, g23, gap_ratio, k_star, lr, sigma FROM features"]) == 0
    out = capsys.readouterr().out
    assert sum(long_id in line for line in out.splitlines()) == 2 and "shape: (2, 7)" in out
    monkeypatch.setenv("POLARS_FMT_STR_LEN", "20")
    assert query_main([str(tmp_path), "SELECT DISTINCT trial_id FROM features"]) == 0
    assert long_id not in capsys.readouterr().out


def test_a_raw_table_of_a_folder_kept_without_its_raw_tables_is_named_as_not_kept(tmp_path, capsys):
    """A results folder holding only the aggregation's outputs (docs/results/grokking-corpus):
    a query of a raw table warned "no sweep there has stored any of its rows yet", as if a
    sweep had not started. It says what the folder holds instead."""
    write_table(tmp_path, "kept", "runs", pl.DataFrame({"trial_id": ["t"], "grok_step": [10]}))
    assert query_main([str(tmp_path / "kept"), "SELECT COUNT(*) AS n FROM features", "--format", "csv"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "n\n0\n"
    assert (f"warning: no 'features' table under {tmp_path / 'kept'}: it holds runs — an aggregation's outputs, "
            "kept without the raw tables they were computed from") in cap.err


def test_the_plain_polars_recipe_in_tables_md_reads_what_scan_reads(tmp_path):
    """docs/TABLES.md shows how to read `features` with plain Polars. Run as written on a sweep
    with a restarted trial (its attempt 1 rewrites steps of attempt 0), a compacted trial, a
    trial compacted over a still-present part, an in-flight temp file, a hidden file named like
    data, and an older file without a column, sorting first: the rows are `scan`'s, value for
    value."""
    import re
    import shutil

    text = (REPO / "docs" / "TABLES.md").read_text()
    [code] = re.findall(r"```python\n(.*?)```", text.split("### Reading the files without edgesweep")[1]
                        .split("\n## ")[0], re.S)
    write_trial(tmp_path, "sw", "restarted", 0, P1, range(0, 60, 10), flush_every=2)
    write_trial(tmp_path, "sw", "restarted", 1, P1, range(30, 90, 10), flush_every=2)
    write_trial(tmp_path, "sw", "compacted", 0, P0, range(0, 40, 10), flush_every=1)
    compact_trial(tmp_path, "sw", "features", P0, "compacted")
    write_trial(tmp_path, "sw", "copied", 0, P0, range(0, 30, 10), flush_every=1)
    # as if compaction had died before removing its parts: both copies of each row are there
    compact_trial(tmp_path, "sw", "features", P0, "copied", delete_inputs=False)
    [folder] = {p.parent for p in (tmp_path / "sw" / "features").rglob("copied.*.parquet")}
    parts = sorted(folder.glob("copied.a000.*.parquet"))
    assert len(parts) == 3 and len(list(folder.glob("copied.c000.*.parquet"))) == 1
    shutil.copy(parts[0], folder / f".{parts[0].name}.tmp-0123456789ab")  # an upload in flight
    (pl.read_parquet(parts[0]).with_columns(pl.lit("ghost").alias("trial_id"))  # hidden, named like data
     .write_parquet(folder / ".ghost.a000.s0000000000-0000000010.parquet"))
    # a file from before a column was added, sorting first (rewritten here without `lr`, so
    # scan, which checks it against its seal record, skips it; its rows are checked by hand)
    write_trial(tmp_path, "sw", "aa_old", 0, P0, range(0, 20, 10))  # P0's folder sorts before P1's
    [old] = (tmp_path / "sw" / "features").rglob("aa_old.*.parquet")
    pq.write_table(pq.read_table(old).drop_columns(["lr"]), old)
    namespace: dict = {}
    exec(code.replace("ROOT/SWEEP", str(tmp_path / "sw")), namespace)
    plain = namespace["features"].collect().sort("trial_id", "step")
    with pytest.warns(StorageWarning, match="aa_old"):
        stored = scan(tmp_path / "sw", "features", on_error="skip").collect().drop("sweep").sort("trial_id", "step")
    old_rows = plain.filter(pl.col("trial_id") == "aa_old")
    assert old_rows.select("step", "g23", "lr").rows() == [(0, 0.0, None), (10, 100.0, None)]
    plain = plain.filter(pl.col("trial_id") != "aa_old")
    assert plain.height == stored.height == 6 + 3 + 4 + 3
    assert plain.filter(pl.col("trial_id") == "restarted")["attempt"].to_list() == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert plain.select(stored.columns).equals(stored)


@pytest.mark.parametrize("text, line", [
    # Polars 2.2's column error: the statement repeated, the plan, the expression
    ('unable to find column "nope"; valid columns: ["a"]\n\nIn the SQL statement: SELECT nope FROM t\n\n'
     'Resolved plan until failure:\n\n\t---> FAILED HERE RESOLVING THIS_NODE <---\nDF ["a"]; PROJECT */1 COLUMNS\n\n'
     'This error occurred in the following expression:\n\tcol("nope")\n',
     'unable to find column "nope"; valid columns: ["a"] (in col("nope"))'),
    # Polars 2.1's comparison error
    ('cannot compare string with numeric type (i64)\n\nThis error occurred in the following expression:\n'
     '\t[(col("a")) > ("x")]\n', 'cannot compare string with numeric type (i64) (in [(col("a")) > ("x")])'),
    # an object store's error: the cause is what says why
    ("Generic S3 error: Error performing GET http://127.0.0.1:8333/b/x.parquet in 2.1s, after 3 retries\n\n"
     "Caused by:\n    0: HTTP error: request error\n    1: connection refused",
     "Generic S3 error: Error performing GET http://127.0.0.1:8333/b/x.parquet in 2.1s, after 3 retries "
     "(caused by: 0: HTTP error: request error 1: connection refused)"),
    ("", "ComputeError"),
])
def test_a_polars_error_becomes_one_line_that_keeps_what_names_the_cause(text, line):
    from edgesweep.storage.query import _without_plan

    assert _without_plan(pl.exceptions.ComputeError(text)) == line


def test_a_sweep_missing_one_raw_table_is_not_called_kept_without_raw_tables(tmp_path, capsys):
    """The 'kept without the raw tables' wording is for a folder holding only the aggregation's
    outputs; a sweep that has features and runs but no evals yet gets the usual one."""
    write_trial(tmp_path, "sw", "t", 0, P1, range(0, 20, 10), evals=False)
    write_table(tmp_path, "sw", "runs", pl.DataFrame({"trial_id": ["t"], "grok_step": [10]}))
    assert query_main([str(tmp_path / "sw"), "SELECT COUNT(*) AS n FROM evals", "--format", "csv"]) == 0
    err = capsys.readouterr().err
    assert "no sweep there has stored any of its rows yet" in err and "kept without" not in err
