"""Integrity of stored files: page checksums, sealed-file records, and what every reader
(scan, query, compaction, check_sweep, verify) makes of missing, truncated, corrupt, stray and
legacy files. The random-corruption campaign is at the end.

Expected values come from the tests' own bookkeeping (hashlib over the bytes on disk, the rows
they wrote), never from the code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_storage import P0, P1, REPO, feature, trial_rows, visible_files, write_trial

from edgesweep.storage import (StorageError, StorageWarning, TrialWriter, check_sweep,
                               compact_sweep, compact_trial, query, scan, verify, verify_main,
                               write_table)
from edgesweep.storage.fs import Root

FEATURES = "sw/features/workload=mod_add/optimizer=adamw/weight_decay=1.0"
EVALS = "sw/evals/workload=mod_add/optimizer=adamw/weight_decay=1.0"


def part(root: Path, trial: str, attempt: int, lo: int, hi: int, table_dir=FEATURES,
         kind="a") -> Path:
    return root / table_dir / f"{trial}.{kind}{attempt:03d}.s{lo:010d}-{hi:010d}.parquet"


def records(directory: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((directory / "_sealed").glob("*.json"))}


def sweep_of_two(root: Path):
    """Trial t: features 0..90 in two parts (0..40, 50..90) + evals; trial u: one part."""
    write_trial(root, "sw", "t", 0, P1, range(0, 100, 10), flush_every=5)
    write_trial(root, "sw", "u", 0, P1, range(0, 30, 10))


def chunk_end(col) -> int:
    """Offset just past a column chunk (its pages start at the dictionary page, if any)."""
    start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
    return start + col.total_compressed_size


def crc_failure(path: Path) -> str:
    """Flip the last byte of the first column chunk (inside its last data page) and read the
    file back with page-checksum verification: the error pyarrow raises, or "" if it read."""
    raw = bytearray(path.read_bytes())
    col = pq.read_metadata(pa.BufferReader(bytes(raw))).row_group(0).column(0)
    raw[chunk_end(col) - 1] ^= 0xFF
    try:
        pq.read_table(pa.BufferReader(bytes(raw)), page_checksum_verification=True)
    except OSError as exc:
        return str(exc)
    return ""


# --------------------------------------------------------------------------- checksums
def test_every_parquet_file_edgesweep_writes_carries_page_checksums(tmp_path):
    sweep_of_two(tmp_path)
    write_table(tmp_path, "sw", "trials", trial_rows(trial_id="t"))
    write_table(tmp_path, "sw", "runs", pl.DataFrame({"trial_id": ["t"], "grok_step": [10]}))
    write_table(tmp_path, "sw", "summary", pl.DataFrame({"n": [1]}))
    compact_trial(tmp_path, "sw", "evals", P1, "t")
    files = [part(tmp_path, "t", 0, 0, 40), part(tmp_path, "t", 0, 0, 90, EVALS, kind="c"),
             tmp_path / "sw/trials/workload=mod_add/optimizer=adamw/weight_decay=1.0/t.parquet",
             tmp_path / "sw/runs/runs.parquet", tmp_path / "sw/summary/summary.parquet"]
    for f in files:
        assert "CRC checksum verification failed" in crc_failure(f), f


def test_polars_does_not_verify_page_checksums_so_scan_hashes_the_bytes(tmp_path):
    # Why scan() hashes every file: Polars reads the damage back as other numbers, no error.
    w = TrialWriter(tmp_path, "sw", "t", 0, P1)
    rng = random.Random(0)
    for s in range(0, 100, 10):  # random doubles: zstd stores them raw, so damage survives
        w.add("features", feature(s, 0, sigma=[rng.random() for _ in range(10)]))
    w.flush()
    f = part(tmp_path, "t", 0, 0, 90)
    good = pl.read_parquet(f)
    md = pq.read_metadata(f)
    sigma = next(md.row_group(0).column(j) for j in range(md.num_columns)
                 if md.row_group(0).column(j).path_in_schema == "sigma.list.element")
    raw = bytearray(f.read_bytes())
    raw[chunk_end(sigma) - sigma.total_compressed_size + 100] ^= 0x10  # inside the values
    f.write_bytes(bytes(raw))
    silently = pl.read_parquet(f)  # no error from Polars ...
    assert silently.height == good.height and not silently.equals(good)  # ... other numbers
    with pytest.raises(OSError, match="CRC checksum verification failed"):  # pyarrow would see it
        pq.read_table(f, page_checksum_verification=True)
    with pytest.raises(StorageError) as err:
        scan(tmp_path, "features")
    assert err.value.paths == [str(f)] and "corrupt: content differs" in str(err.value)


# ----------------------------------------------------------------------------- records
def test_each_seal_is_listed_in_its_attempts_record_with_rows_bytes_steps_and_hash(tmp_path):
    sweep_of_two(tmp_path)
    recs = records(tmp_path / FEATURES)
    assert sorted(recs) == ["t.a000.json", "u.a000.json"]
    listed = {e["name"]: e for e in recs["t.a000.json"]["files"]}
    for lo, hi, n in ((0, 40, 5), (50, 90, 5)):
        f = part(tmp_path, "t", 0, lo, hi)
        data = f.read_bytes()
        assert listed[f.name] == {"name": f.name, "rows": n, "bytes": len(data), "lo": lo, "hi": hi,
                                  "sha256": hashlib.sha256(data).hexdigest(), "state": "sealed"}
    assert sorted(listed) == sorted(p.name for p in (tmp_path / FEATURES).glob("t.*.parquet"))
    assert list(records(tmp_path / EVALS)) == ["t.a000.json", "u.a000.json"]
    assert check_sweep(tmp_path, "sw").problems == []


def test_a_deleted_part_is_reported_missing_by_name(tmp_path):
    sweep_of_two(tmp_path)
    gone = part(tmp_path, "t", 0, 50, 90)
    gone.unlink()
    with pytest.raises(StorageError) as err:
        scan(tmp_path, "features")
    assert err.value.paths == [str(gone)] and "missing: sealed (5 rows, steps 50..90" in str(err.value)
    with pytest.warns(StorageWarning, match=str(gone)):
        df = scan(tmp_path, "features", on_error="skip").collect()
    assert sorted(df.filter(pl.col("trial_id") == "t")["step"]) == [0, 10, 20, 30, 40]
    report = check_sweep(tmp_path, "sw")
    assert [(p.kind, p.path, p.trial_id) for p in report.problems] == [("missing", str(gone), "t")]
    assert report.damaged_trials() == {"t"} and not report.ok
    # Compaction refuses to bake the loss into a file that would hide it, and changes nothing.
    before = sorted(p.name for p in (tmp_path / FEATURES).rglob("*"))
    with pytest.raises(StorageError, match=f"not compacted:\n  {gone}: missing"):
        compact_trial(tmp_path, "sw", "features", P1, "t")
    assert sorted(p.name for p in (tmp_path / FEATURES).rglob("*")) == before
    with pytest.warns(StorageWarning, match=str(gone)):
        out = compact_sweep(tmp_path, "sw", on_error="skip")
    assert [Path(p).name for p in out if "/features/" in p] == ["u.c000.s0000000000-0000000020.parquet"]


def test_a_truncated_part_is_reported_truncated_by_name(tmp_path):
    sweep_of_two(tmp_path)
    f = part(tmp_path, "t", 0, 0, 40)
    size = f.stat().st_size
    f.write_bytes(f.read_bytes()[: size // 2])
    with pytest.raises(StorageError) as err:
        scan(tmp_path, "features", verify_content=False)  # seen from the listing alone
    assert f"{f}: truncated: {size // 2} bytes, {size} sealed" in str(err.value)
    [p] = check_sweep(tmp_path, "sw").problems
    assert (p.kind, p.path, p.trial_id) == ("truncated", str(f), "t")


def _as_an_ordinary_user(cmd: list[str]) -> list[str]:
    """`cmd` without the capabilities that let root bypass file permissions (setpriv)."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced here")
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", "--bounding-set", drop, "--inh-caps", drop] + cmd


def test_a_part_without_read_permission_is_unreadable_not_corrupt(tmp_path):
    """No permission to read a part says nothing about its bytes: `verify` reports it as
    `unreadable` (fix access; do not delete it), not `corrupt`, and still exits 1 (its trial's
    data cannot be used). As root the check runs without the capabilities that bypass file
    permissions (setpriv), the way an ordinary user would."""
    sweep_of_two(tmp_path)
    f = part(tmp_path, "t", 0, 0, 40)
    cmd = _as_an_ordinary_user([sys.executable, "-m", "edgesweep", "verify", str(tmp_path)])
    f.chmod(0)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    finally:
        f.chmod(0o644)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"{f}: unreadable: no permission to read it" in res.stdout and "corrupt" not in res.stdout, res.stdout
    assert "1 unreadable; 1 trial damaged" in res.stdout


@pytest.mark.parametrize("table", ["features", "trials"])
def test_a_partition_folder_that_cannot_be_listed_is_reported_and_the_rest_still_checked(tmp_path, table):
    """A folder without permission to list it (one partition of one table) is one `unreadable`
    problem naming the folder; verify checks every other file, and says nothing is missing from
    rows that may lie in that folder — it does not stop at the folder, and does not call a
    trial whose rows it cannot see damaged. `aggregate`, whose counts need every trial, refuses
    and names the folder."""
    config = json.dumps({"monitor": {"every": 10}})
    for tid, p in (("t", P1), ("v", P0)):
        write_trial(tmp_path, "sw", tid, 0, p, range(10, 100, 10))
        write_table(tmp_path, "sw", "trials", trial_rows(trial_id=tid, weight_decay=p["weight_decay"],
                                                         status="completed", steps=90, config=config))
    every_file = [f for f in (tmp_path / "sw").rglob("*.parquet")]
    folder = tmp_path / "sw" / table / "workload=mod_add" / "optimizer=adamw" / "weight_decay=1.0"
    hidden = [f for f in every_file if folder in f.parents]
    assert hidden and len(hidden) < len(every_file)
    cmd = _as_an_ordinary_user([sys.executable, "-m", "edgesweep", "verify", str(tmp_path)])
    aggregate = _as_an_ordinary_user([sys.executable, "-m", "edgesweep", "aggregate", str(tmp_path / "sw")])
    folder.chmod(0)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
        agg = subprocess.run(aggregate, capture_output=True, text=True, timeout=300, cwd=REPO)
    finally:
        folder.chmod(0o755)
    # A count over the sweep cannot be trusted while some of its trials are out of sight.
    assert agg.returncode == 2, agg.stdout + agg.stderr
    assert f"{folder}: unreadable: folder cannot be listed (no permission)" in agg.stderr, agg.stderr
    assert not (tmp_path / "sw" / "runs").exists()
    assert res.returncode == 1, res.stdout + res.stderr
    problems = [ln for ln in res.stdout.splitlines() if ": " in ln and not ln.startswith(("OK", "DAMAGED"))]
    assert problems == [f"{folder}: unreadable: folder cannot be listed (no permission): its files are not "
                        "checked; fix access, do not delete it"], res.stdout + res.stderr
    assert f"DAMAGED: {len(every_file) - len(hidden)} files" in res.stdout, res.stdout
    # With access back, the same sweep verifies clean: the report was about the folder alone.
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0 and f"OK: {len(every_file)} files" in res.stdout, res.stdout + res.stderr


def test_a_name_that_is_not_utf8_is_reported_with_its_folder_and_the_rest_still_checked(tmp_path):
    """pyarrow decodes every listed name as UTF-8; one stray name that is not (a file copied
    from another system) made verify, status, query and aggregate end in a UnicodeDecodeError
    naming nothing. Now its folder is `unreadable`, naming the entry, and the rest is checked."""
    import os

    sweep_of_two(tmp_path)
    write_trial(tmp_path, "sw", "v", 0, {**P1, "weight_decay": 0.0}, range(0, 30, 10))
    folder = tmp_path / FEATURES
    os.close(os.open(os.path.join(os.fsencode(folder), b"\xfestray.parquet"), os.O_CREAT | os.O_WRONLY))
    report = verify(tmp_path)
    [p] = report.damage
    assert (p.kind, p.path) == ("unreadable", str(folder)), p.line()
    assert p.detail == (f"folder cannot be listed ('{folder}/\ufffdstray.parquet' is not a UTF-8 name): its files "
                        "are not checked; rename or remove that entry")
    checked = [f for f in (tmp_path / "sw").rglob("*.parquet") if folder not in f.parents]
    assert report.files == len(checked) > 0


def test_a_part_replaced_by_another_trials_part_is_reported_by_name(tmp_path):
    sweep_of_two(tmp_path)
    f = part(tmp_path, "t", 0, 0, 40)
    shutil.copyfile(part(tmp_path, "u", 0, 0, 20), f)
    with pytest.raises(StorageError, match=str(f)):
        scan(tmp_path, "features")
    [p] = check_sweep(tmp_path, "sw").problems
    assert (p.path, p.trial_id) == (str(f), "t") and p.kind in ("truncated", "corrupt")
    assert verify_main([str(tmp_path), "--quiet"]) == 1


def rewrite_and_reseal(path: Path, change) -> None:
    """What a writer bug (or a hand edit) would leave: the part rewritten with ``change(table)``
    and its record updated to match, so sizes and hashes verify and only the rows are wrong."""
    from edgesweep.storage.records import Record, replace

    table = pq.read_table(path)
    new = change(table).replace_schema_metadata(table.schema.metadata)
    sink = pa.BufferOutputStream()
    pq.write_table(new, sink)
    data = sink.getvalue().to_pybytes()
    path.write_bytes(data)
    for rec_path in (path.parent / "_sealed").glob("*.json"):
        rec = Record.from_bytes(rec_path.read_bytes())
        if path.name in rec.entries:
            rec.entries[path.name] = replace(rec.entries[path.name], bytes=len(data),
                                             sha256=hashlib.sha256(data).hexdigest(), rows=new.num_rows)
            rec_path.write_bytes(rec.to_bytes())


def _set(column: str, value):
    def change(t: pa.Table) -> pa.Table:
        values = t.column(column).to_pylist()
        values[1] = value
        return t.set_column(t.schema.get_field_index(column), column, pa.array(values, t.schema.field(column).type))
    return change


@pytest.mark.parametrize("change, says", [
    (_set("step", None), "1 row(s) without a step"),
    (_set("trial_id", "u"), "rows of trial 'u' in a file of trial 't'"),
    (_set("attempt", 3), "rows of attempt 0..3 in a file of attempt 0"),
])
def test_rows_that_do_not_belong_to_their_part_are_named_though_the_record_matches(tmp_path, change, says):
    """The part's rows are checked against its name from the footer's statistics (free): rows
    of another trial used to be merged into that trial, a row without a step crashed `status`
    and `detect` — while `verify` said OK."""
    sweep_of_two(tmp_path)
    f = part(tmp_path, "t", 0, 0, 40)
    rewrite_and_reseal(f, change)
    [p] = check_sweep(tmp_path, "sw").problems
    assert (p.path, p.kind, p.trial_id) == (str(f), "corrupt", "t") and says in p.detail, p
    with pytest.raises(StorageError, match=says.replace("(", r"\(").replace(")", r"\)")):
        scan(tmp_path, "features")
    with pytest.warns(StorageWarning, match=str(f)):
        assert scan(tmp_path, "features", on_error="skip").collect()["trial_id"].to_list().count("u") == 3


def test_a_part_that_repeats_a_step_is_named_by_the_deep_check(tmp_path):
    """A file that overlaps no other is read without deduplication (the fast path): a step in it
    twice would count twice. The deep check (`verify`) decodes the file and names it."""
    sweep_of_two(tmp_path)
    f = part(tmp_path, "t", 0, 0, 40)
    rewrite_and_reseal(f, lambda t: pa.concat_tables([t, t.slice(0, 2)]))
    assert check_sweep(tmp_path, "sw").problems == []  # sizes, hashes, statistics: all as recorded
    [p] = check_sweep(tmp_path, "sw", deep=True).problems
    assert (p.path, p.kind, p.detail) == (str(f), "corrupt", "2 row(s) repeat a step")
    assert verify_main([str(tmp_path), "--quiet"]) == 1


def test_a_stray_part_no_record_lists_is_reported_unrecorded(tmp_path):
    # A copy of t's part under a newer attempt number (metadata made to match) would win the
    # dedupe with whatever it holds; no record lists it.
    sweep_of_two(tmp_path)
    t = pq.read_table(part(tmp_path, "t", 0, 0, 40))
    meta = json.loads(t.schema.metadata[b"edgesweep"]) | {"attempt": 7, "record": "a007"}
    t = t.set_column(t.schema.get_field_index("attempt"), "attempt", pa.array([7] * t.num_rows))
    stray = part(tmp_path, "t", 7, 0, 40)
    pq.write_table(t.replace_schema_metadata({b"edgesweep": json.dumps(meta).encode()}), stray)
    with pytest.raises(StorageError) as err:
        scan(tmp_path, "features")
    assert err.value.paths == [str(stray)] and "unrecorded" in str(err.value)
    with pytest.warns(StorageWarning, match=str(stray)):
        df = scan(tmp_path, "features", on_error="skip").filter(pl.col("trial_id") == "t").collect()
    assert set(df["attempt"]) == {0}
    [p] = check_sweep(tmp_path, "sw").problems
    assert (p.kind, p.path) == ("unrecorded", str(stray))


def test_a_lost_record_makes_its_parts_unrecorded_and_a_damaged_record_is_named(tmp_path):
    sweep_of_two(tmp_path)
    rec = tmp_path / FEATURES / "_sealed" / "t.a000.json"
    text = rec.read_text()
    rec.write_text(text.replace('"rows": 5', '"rows": 6', 1))
    kinds = {(p.kind, Path(p.path).name) for p in check_sweep(tmp_path, "sw").problems}
    assert ("corrupt", "t.a000.json") in kinds  # the record's own digest fails
    assert {("unrecorded", "t.a000.s0000000000-0000000040.parquet"),
            ("unrecorded", "t.a000.s0000000050-0000000090.parquet")} <= kinds
    rec.unlink()
    kinds = {(p.kind, Path(p.path).name) for p in check_sweep(tmp_path, "sw").problems}
    assert kinds == {("unrecorded", "t.a000.s0000000000-0000000040.parquet"),
                     ("unrecorded", "t.a000.s0000000050-0000000090.parquet")}


def test_files_written_before_records_read_as_legacy_with_a_warning_from_verify(tmp_path):
    # A sweep written by the previous edgesweep: no _sealed/ folders, no "record" key.
    sweep_of_two(tmp_path)
    for d in tmp_path.rglob("_sealed"):
        shutil.rmtree(d)
    for f in (tmp_path / "sw").rglob("*.parquet"):
        t = pq.read_table(f)
        meta = json.loads(t.schema.metadata[b"edgesweep"])
        del meta["record"]
        pq.write_table(t.replace_schema_metadata({b"edgesweep": json.dumps(meta).encode()}), f)
    assert scan(tmp_path, "features").collect().height == 13
    report = check_sweep(tmp_path, "sw")
    assert report.ok and {p.kind for p in report.problems} == {"legacy"}
    assert len(report.problems) == 6  # 3 features + 3 evals parts, each named
    assert verify_main([str(tmp_path)]) == 0


def test_a_seal_that_never_completed_is_a_note_and_the_next_attempt_replays(tmp_path, monkeypatch):
    w = write_trial(tmp_path, "sw", "t", 0, P1, range(0, 50, 10), evals=False)
    for s in range(50, 100, 10):
        w.add("features", feature(s, 0))
    real = Root.write_bytes

    def full_disk_for_parts(self, path, data):
        if path.endswith(".parquet"):
            raise StorageError(f"{path}: cannot write: [Errno 28] No space left on device", path)
        return real(self, path, data)

    monkeypatch.setattr(Root, "write_bytes", full_disk_for_parts)
    with pytest.raises(StorageError, match="No space left"):
        w.flush()
    monkeypatch.undo()
    # The record says "sealing" for a part that never landed: nothing is missing, the rows
    # were never acknowledged.
    assert sorted(scan(tmp_path, "features").collect()["step"]) == [0, 10, 20, 30, 40]
    [p] = check_sweep(tmp_path, "sw").problems
    assert (p.kind, Path(p.path).name) == ("interrupted", "t.a000.s0000000050-0000000090.parquet")
    assert check_sweep(tmp_path, "sw").ok
    write_trial(tmp_path, "sw", "t", 1, P1, range(50, 100, 10), evals=False)
    assert sorted(scan(tmp_path, "features").collect()["step"]) == list(range(0, 100, 10))


# ---------------------------------------------------------------------------- compaction
def test_compaction_records_the_compacted_file_and_retires_the_parts(tmp_path):
    write_trial(tmp_path, "sw", "t", 1, P1, range(0, 100, 10), flush_every=4, evals=False)
    write_trial(tmp_path, "sw", "t", 2, P1, range(60, 120, 10), flush_every=3, evals=False)
    before = scan(tmp_path, "features").sort("step").collect()
    out = Path(compact_trial(tmp_path, "sw", "features", P1, "t"))
    recs = records(tmp_path / FEATURES)
    assert list(recs) == ["t.c002.s0000000000-0000000110.json"]  # attempt records retired
    data = out.read_bytes()
    assert recs["t.c002.s0000000000-0000000110.json"]["files"] == [{
        "name": out.name, "rows": 12, "bytes": len(data), "lo": 0, "hi": 110,
        "sha256": hashlib.sha256(data).hexdigest(), "state": "sealed"}]
    assert scan(tmp_path, "features").sort("step").collect().equals(before)
    assert check_sweep(tmp_path, "sw").problems == []
    # Compacting a compacted trial with a newer part: the old compacted file and its record go.
    write_trial(tmp_path, "sw", "t", 3, P1, [120, 130], evals=False)
    compact_trial(tmp_path, "sw", "features", P1, "t")
    assert list(records(tmp_path / FEATURES)) == ["t.c003.s0000000000-0000000130.json"]
    assert visible_files(tmp_path / FEATURES) == ["t.c003.s0000000000-0000000130.parquet"]
    assert check_sweep(tmp_path, "sw").problems == []


def test_interrupted_compaction_reads_and_checks_clean_and_a_rerun_cleans_up(tmp_path):
    write_trial(tmp_path, "sw", "t", 0, P1, range(0, 100, 10), flush_every=3, evals=False)
    compact_trial(tmp_path, "sw", "features", P1, "t", delete_inputs=False)
    assert len(visible_files(tmp_path / FEATURES)) == 5
    assert check_sweep(tmp_path, "sw").problems == []
    assert scan(tmp_path, "features").collect().height == 10
    # Killed after deleting two of the inputs: the records still list them, retired.
    for f in sorted((tmp_path / FEATURES).glob("t.a000.*.parquet"))[:2]:
        f.unlink()
    assert check_sweep(tmp_path, "sw").problems == []
    compact_trial(tmp_path, "sw", "features", P1, "t")
    assert list(records(tmp_path / FEATURES)) == ["t.c000.s0000000000-0000000090.json"]
    assert visible_files(tmp_path / FEATURES) == ["t.c000.s0000000000-0000000090.parquet"]


def test_compaction_refuses_a_corrupt_input_naming_it(tmp_path):
    sweep_of_two(tmp_path)
    f = part(tmp_path, "t", 0, 50, 90)
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    f.write_bytes(bytes(raw))
    with pytest.raises(StorageError, match=f"{f}: corrupt: content differs"):
        compact_trial(tmp_path, "sw", "features", P1, "t")
    assert f.exists() and part(tmp_path, "t", 0, 0, 40).exists()


# --------------------------------------------------------------------- whole-table files
def test_trials_rows_are_recorded_and_rewrites_keep_verifying(tmp_path):
    write_table(tmp_path, "sw", "trials", trial_rows(trial_id="t"))
    write_table(tmp_path, "sw", "trials", trial_rows(trial_id="t", status="finished", steps=900))
    d = tmp_path / "sw/trials/workload=mod_add/optimizer=adamw/weight_decay=1.0"
    [rec] = records(d).values()
    data = (d / "t.parquet").read_bytes()
    assert rec["files"] == [{"name": "t.parquet", "rows": 1, "bytes": len(data),
                             "sha256": hashlib.sha256(data).hexdigest(), "state": "sealed"}]
    assert scan(tmp_path, "trials").collect()["status"].to_list() == ["finished"]
    raw = bytearray(data)
    raw[len(raw) // 3] ^= 0x01
    (d / "t.parquet").write_bytes(bytes(raw))
    with pytest.raises(StorageError, match=f"{d / 't.parquet'}: corrupt"):
        scan(tmp_path, "trials")
    (d / "t.parquet").unlink()
    [p] = check_sweep(tmp_path, "sw").problems
    assert (p.kind, p.path, p.trial_id) == ("missing", str(d / "t.parquet"), "t")


def test_runs_and_summary_are_recorded_too(tmp_path):
    write_table(tmp_path, "sw", "runs", pl.DataFrame({"trial_id": ["t"], "grok_step": [10]}))
    write_table(tmp_path, "sw", "summary", pl.DataFrame({"n": [1]}))
    assert list(records(tmp_path / "sw/runs")) == ["runs.table.json"]
    (tmp_path / "sw/summary/summary.parquet").unlink()
    [p] = check_sweep(tmp_path, "sw").problems
    assert (p.kind, p.path, p.trial_id) == ("missing", str(tmp_path / "sw/summary/summary.parquet"), None)


# --------------------------------------------------------------------- verify and query
def test_verify_of_a_folder_without_edgesweep_files_is_an_error_not_ok(tmp_path, capsys):
    """The wrong folder level (a folder above the storage root, an empty one) checks nothing:
    that is exit 2 with the path, not a green "OK: 0 files"."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "above" / "root" / "sweep" / "features").mkdir(parents=True)
    for folder in (tmp_path / "empty", tmp_path / "above"):
        assert verify_main([str(folder), "--quick"]) == 2
        out, err = capsys.readouterr()
        assert f"{folder}: no edgesweep files found" in err and "OK" not in out
    # a report's figures/ folder: its trials/ of PNGs is named like a table, but holds no data
    (tmp_path / "figures" / "trials").mkdir(parents=True)
    (tmp_path / "figures" / "trials" / "t.png").write_bytes(b"\x89PNG")
    assert verify_main([str(tmp_path / "figures")]) == 2
    out, err = capsys.readouterr()
    assert (f"{tmp_path / 'figures'}: no edgesweep files found in 1 folder(s) checked (1 other file(s) in "
            f"folders named like tables, such as {tmp_path / 'figures' / 'trials' / 't.png'})") in err
    assert "DAMAGED" not in out
    # one table folder of a real sweep: the message names the sweep folder to give instead
    write_table(tmp_path / "real", "sw", "runs", pl.DataFrame({"trial_id": ["t"], "grok_step": [10]}))
    assert verify_main([str(tmp_path / "real" / "sw" / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"it is the 'runs' table folder of sweep {tmp_path / 'real' / 'sw'}: give that sweep's folder" in err
    # a sweep whose driver started but that has sealed nothing yet is fine, not an error
    (tmp_path / "fresh" / "sw" / "_tune").mkdir(parents=True)
    for folder in (tmp_path / "fresh", tmp_path / "fresh" / "sw"):
        assert verify_main([str(folder)]) == 0
        assert "OK: nothing stored yet" in capsys.readouterr().out


def test_verify_main_prints_one_line_per_problem_and_exits_nonzero_on_damage(tmp_path, capsys):
    sweep_of_two(tmp_path)
    write_trial(tmp_path, "other", "x", 0, P0, [0, 10])
    assert verify_main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: ") and "2 sweeps" in out
    gone = part(tmp_path, "t", 0, 0, 40)
    gone.unlink()
    cut = tmp_path / "other/evals/workload=mod_add/optimizer=adamw/weight_decay=0.0" / \
        "x.a000.s0000000000-0000000010.parquet"
    cut.write_bytes(cut.read_bytes()[:-7])
    assert verify_main([str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    size = cut.stat().st_size
    assert lines[:2] == [
        f"{gone}: missing: sealed (5 rows, steps 0..40, {_sealed_bytes(gone)} bytes) but not found",
        f"{cut}: truncated: {size} bytes, {size + 7} sealed"]
    assert lines[2].startswith("DAMAGED: ") and "1 missing, 1 truncated; 2 trials damaged" in lines[2]
    assert verify_main([str(tmp_path / "nope")]) == 2
    assert "storage root not found" in capsys.readouterr().err
    out = subprocess.run([sys.executable, "-m", "edgesweep.storage", "verify", str(tmp_path), "--quiet"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 1 and str(gone) in out.stdout


def _sealed_bytes(path: Path) -> int:
    [rec] = [r for n, r in records(path.parent).items() if n.startswith(path.name.split(".")[0] + ".a")]
    return next(e["bytes"] for e in rec["files"] if e["name"] == path.name)


def test_query_names_a_file_that_went_bad_after_the_scan(tmp_path, monkeypatch):
    sweep_of_two(tmp_path)
    f = part(tmp_path, "t", 0, 0, 40)
    good = f.read_bytes()
    q = sys.modules["edgesweep.storage.query"]
    real_scan = q.scan_inspected

    def scan_then_damage(*args, **kwargs):
        lf = real_scan(*args, **kwargs)
        f.write_bytes(good[:100] + bytes(len(good) - 100))  # zeroes after the scan checked it
        return lf

    monkeypatch.setattr(q, "scan_inspected", scan_then_damage)
    with pytest.raises(StorageError) as err:
        query(tmp_path, "SELECT sum(g23) AS s FROM features")
    assert err.value.paths == [str(f)] and "reading failed" in str(err.value)


# ------------------------------------------------------------------ the corruption campaign
CAMPAIGN_SEED = 20260330
CAMPAIGN_OFFSETS = 64
CAMPAIGN_SQL = "SELECT trial_id, step, attempt, g23, sigma FROM features ORDER BY trial_id, step"


def campaign_sweep(root: Path) -> Path:
    """Trials t (features in two parts) and u; returns t's second features part, the target:
    120 rows of random doubles in sigma and alpha (as a real window's are)."""
    rng = random.Random(1)
    for trial, n in (("t", 240), ("u", 40)):
        w = TrialWriter(root, "sw", trial, 0, P1)
        for i in range(n):
            w.add("features", feature(i * 10, 0, g23=rng.random(), sigma=[rng.random() for _ in range(10)],
                                      alpha=[rng.random() for _ in range(10)]))
            if i % 5 == 0:
                w.add("evals", {"step": i * 10, "test_acc": rng.random()})
            if i + 1 == n // 2:
                w.flush()
        w.flush()
    return part(root, "t", 0, 1200, 2390)


def pyarrow_layer(data: bytes, original: pa.Table) -> str:
    """What pyarrow alone makes of the damaged bytes (edgesweep's record not consulted)."""
    try:
        pq.read_metadata(pa.BufferReader(data))
    except (OSError, pa.ArrowException):
        return "thrift"  # footer no longer decodes
    try:
        with pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True) as f:
            table = f.read()
    except (OSError, pa.ArrowException) as exc:
        return "checksum" if "CRC" in str(exc) else "decode"
    return "harmless" if table.equals(original) else "silent"


def polars_alone(path: Path, original: pl.DataFrame) -> str:
    try:
        df = pl.read_parquet(path)
    except BaseException:  # noqa: BLE001 - Polars may even panic (PanicException) on such input
        return "error"
    return "same" if df.equals(original) else "different"


def test_random_bytes_at_random_offsets_never_give_a_silently_different_answer(tmp_path, capsys):
    """8 random bytes at 64 random offsets of a sealed features part, each on a fresh copy,
    then every reader: scan().collect(), query, compaction, check_sweep, verify. A read equals
    the original exactly or raises/reports an error naming the file; never anything else."""
    t0 = time.monotonic()
    pristine = tmp_path / "pristine"
    target_rel = campaign_sweep(pristine).relative_to(pristine)
    original_bytes = (pristine / target_rel).read_bytes()
    original_table = pq.read_table(pristine / target_rel)
    original_polars = pl.read_parquet(pristine / target_rel)
    expect_scan = scan(pristine, "features").sort("trial_id", "step").collect()
    expect_query = query(pristine, CAMPAIGN_SQL)

    rng = random.Random(CAMPAIGN_SEED)
    layers: dict[str, int] = {}
    polars_counts: dict[str, int] = {}
    kinds: dict[str, int] = {}
    silent: list[str] = []
    for k in range(CAMPAIGN_OFFSETS):
        root = tmp_path / f"copy{k}"
        shutil.copytree(pristine, root)
        target = root / target_rel
        offset = rng.randrange(0, len(original_bytes) - 8)
        damaged = bytearray(original_bytes)
        damaged[offset:offset + 8] = bytes(rng.randrange(256) for _ in range(8))
        assert bytes(damaged) != original_bytes  # (a 2^-64 chance; then pick another seed)
        target.write_bytes(bytes(damaged))
        layer = pyarrow_layer(bytes(damaged), original_table)
        layers[layer] = layers.get(layer, 0) + 1
        pol = polars_alone(target, original_polars)
        polars_counts[pol] = polars_counts.get(pol, 0) + 1
        where = f"offset {offset} ({layer})"

        def named(exc: StorageError) -> None:
            assert str(target) in exc.paths and str(target) in str(exc), (where, str(exc))

        # 1. scan().collect()
        try:
            got = scan(root, "features").sort("trial_id", "step").collect()
            if not got.equals(expect_scan):
                silent.append(f"scan at {where}")
        except StorageError as exc:
            named(exc)
        # 2. query
        try:
            if not query(root, CAMPAIGN_SQL).equals(expect_query):
                silent.append(f"query at {where}")
        except StorageError as exc:
            named(exc)
        # 3. check_sweep: the record tells, whatever pyarrow makes of the bytes
        report = check_sweep(root, "sw")
        bad = [p for p in report.damage if p.path == str(target)]
        assert [p.path for p in report.damage] == [str(target)], (where, report.problems)
        kinds[bad[0].kind] = kinds.get(bad[0].kind, 0) + 1
        # 4. verify (deep) and its command
        assert [p.path for p in verify(root).damage] == [str(target)], where
        # 5. compaction: refuses, naming the file, and leaves the files as they were
        with pytest.raises(StorageError) as err:
            compact_trial(root, "sw", "features", P1, "t")
        named(err.value)
        assert target.read_bytes() == bytes(damaged)
        shutil.rmtree(root)
    elapsed = time.monotonic() - t0
    with capsys.disabled():
        print(f"\ncorruption campaign: {CAMPAIGN_OFFSETS} offsets × 8 random bytes in a "
              f"{len(original_bytes)}-byte features part (seed {CAMPAIGN_SEED}), {elapsed:.1f} s\n"
              f"  pyarrow alone: {layers.get('thrift', 0)} footer (Thrift) decode errors, "
              f"{layers.get('checksum', 0)} page-checksum failures, {layers.get('decode', 0)} other "
              f"decode errors, {layers.get('harmless', 0)} read back identical (bytes no read uses), "
              f"{layers.get('silent', 0)} read back different without error\n"
              f"  Polars alone: {polars_counts.get('error', 0)} errors, {polars_counts.get('same', 0)} "
              f"identical, {polars_counts.get('different', 0)} silently different\n"
              f"  edgesweep: record mismatch on all {sum(kinds.values())} ({kinds}); every reader "
              f"(scan, query, compaction, check_sweep, verify) raised or reported the file; "
              f"{len(silent)} silent differences")
    assert silent == []
    assert sum(kinds.values()) == CAMPAIGN_OFFSETS
    assert elapsed < 60


@pytest.mark.parametrize("damage", ["deleted", "truncated", "swapped"])
def test_deleted_truncated_and_swapped_parts_are_named_by_check_sweep_and_verify(tmp_path, damage):
    target = campaign_sweep(tmp_path)
    if damage == "deleted":
        target.unlink()
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:-100])
    else:  # another trial's part under this name
        shutil.copyfile(part(tmp_path, "u", 0, 0, 190), target)
    expect_kind = {"deleted": "missing", "truncated": "truncated", "swapped": "truncated"}[damage]
    for report in (check_sweep(tmp_path, "sw"), verify(tmp_path)):
        assert [(p.kind, p.path, p.trial_id) for p in report.damage] == [(expect_kind, str(target), "t")]
        assert report.damaged_trials() == {"t"}
    assert verify_main([str(tmp_path), "--quiet"]) == 1


def test_a_part_sealed_between_the_listing_and_the_record_read_is_not_missing(tmp_path, monkeypatch):
    # A live sweep: the checker lists, a writer seals its next part, the checker reads the
    # (newer) record — which lists a part the listing did not see.
    w = write_trial(tmp_path, "sw", "t", 0, P1, range(0, 50, 10), evals=False)
    stale = {}
    real = Root.list_files

    def listed_before_the_seal(self, path):
        return stale.setdefault(path, real(self, path))

    monkeypatch.setattr(Root, "list_files", listed_before_the_seal)
    assert check_sweep(tmp_path, "sw").problems == []  # the listings are taken here
    for s in range(50, 100, 10):
        w.add("features", feature(s, 0))
    w.flush()
    assert check_sweep(tmp_path, "sw").problems == []


# --------------------------------------------------------------------------- a reader racing a writer
def test_a_row_rewritten_while_it_is_read_is_not_reported_as_damage(tmp_path, monkeypatch):
    """The interleaving CI once hit: a reader lists a running trial's trials row (old size),
    the worker rewrites the row and seals its record, then the reader checks the old listing
    against the new record. Replayed here with the real writer between the listing and the
    record read; the reader must return the new row, not "corrupt"."""
    write_table(tmp_path, "sw", "trials", trial_rows(trial_id="t", status="running", steps=0))
    real = Root.list_files
    rewrites = []

    def list_then_rewrite(self, path):
        listing = real(self, path)
        if path.endswith("/trials") and not rewrites:  # only after the first listing
            rewrites.append(path)
            write_table(tmp_path, "sw", "trials",
                        trial_rows(trial_id="t", status="completed", steps=500, grok_step=450))
        return listing

    monkeypatch.setattr(Root, "list_files", list_then_rewrite)
    row = scan(tmp_path, "trials").collect().row(0, named=True)
    assert rewrites, "the rewrite was not replayed between listing and reading"
    assert (row["status"], row["steps"], row["grok_step"]) == ("completed", 500, 450)
    monkeypatch.setattr(Root, "list_files", real)
    # and nothing is left damaged (the trials table alone: this sweep has no evaluations, which
    # verify reports for a completed trial, tested in test_aggregate.py)
    assert check_sweep(tmp_path, "sw", tables=("trials",)).damage == []
