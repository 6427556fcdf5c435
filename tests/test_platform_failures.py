"""A trial that fails does not take the sweep down: it is recorded with its error, the other
trials finish, aggregation runs, and the driver exits non-zero."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from edgesweep.platform.driver import run_sweep
from edgesweep.storage import scan

from raycluster import REPO, ray_env

pytestmark = [pytest.mark.ray]

# The language-model trial's corpus file does not exist on the worker: the trial raises when it
# builds its data, every time (a deterministic failure that passes spec validation — the file
# is the workers' business; the driver only notes that it is missing on its own machine).
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
    assert "train.task.corpus: /nonexistent/corpus.txt is not a file on this machine" in out
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


FULL_DISK_SPEC = """\
name: fd
storage: {storage}
max_failures: 1
grid:
  workload: [mod_add]
  weight_decay: [1.0, 0.0]
train: {{preset: tiny, max_steps: 4000, eval_every: 50, checkpoint_every: 100}}
monitor: {{window: 4, every: 5, params: all}}
"""


def _in_mount_namespace(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``script`` (sh) in a private mount namespace, with a Ray of its own: a driver that starts
    its local cluster there gives its workers the same mounts."""
    import tempfile
    ray_tmp = tempfile.mkdtemp(prefix="es-fd-", dir="/tmp")  # short: Ray's socket paths have a limit
    try:
        env = ray_env({"RAY_TMPDIR": ray_tmp, "PATH": str(Path(sys.executable).parent) + os.pathsep
                       + os.environ.get("PATH", "")})
        return subprocess.run(["unshare", "-m" if os.geteuid() == 0 else "-rm", "sh", "-c", script, "sh", *args],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_a_sweep_whose_disk_fills_stops_with_its_outcome_and_resumes_once_there_is_space(tmp_path):
    """A real sweep on a 1.2 MB tmpfs: the trials fail on ENOSPC naming the file, Tune then fails
    reading back the empty error files it wrote (EOFError) — the driver still ends with the
    outcome read from storage, the resume command and exit 1, and status names the full disk.
    Copied to a disk with room at the same path, `--resume` finishes every trial exactly once."""
    if not (shutil.which("unshare") and shutil.which("mount")):
        pytest.skip("no unshare/mount here to make a small file system")
    disk, saved = tmp_path / "disk", tmp_path / "saved"
    disk.mkdir()
    spec = tmp_path / "fd.yaml"
    spec.write_text(FULL_DISK_SPEC.format(storage=disk))
    full = _in_mount_namespace(
        'mount -t tmpfs -o size=1200k tmpfs "$1" || exit 97; "$3" -m edgesweep run "$2"; echo "RUN RC $?"; '
        '"$3" -m edgesweep status "$1/fd"; cp -r "$1/fd" "$4"', str(disk), str(spec), sys.executable, str(saved))
    if full.returncode == 97 or "unshare failed" in full.stderr:
        pytest.skip(f"cannot mount a small tmpfs here: {full.stderr.strip()[-300:]}")
    out = full.stdout + full.stderr
    # 1 when Tune itself failed (as seen here every time: EOFError), else 130: stopped, resumable
    assert re.search(r"RUN RC 1\n" if "ERROR: Tune stopped with" in out else r"RUN RC 130\n", out), out[-6000:]
    assert re.search(rf"FAIL  mod_add-adamw-wd\S+: \S*StorageError: {re.escape(str(disk))}/fd/\S+: cannot write: "
                     r"\[Errno 28\] No space left on device", out), out[-6000:]
    tail = full.stdout[full.stdout.index("training stopped after"):]  # (Tune logs to stderr)
    assert "Traceback" not in tail, tail  # the driver ends with its own lines, not a crash
    assert "`edgesweep run " in tail and "--resume` continues it" in tail
    assert re.search(rf"note: {re.escape(str(disk))}: only \d+ KiB free on its disk", out), out[-3000:]

    resumed = _in_mount_namespace(
        'mount -t tmpfs -o size=64m tmpfs "$1" || exit 97; cp -r "$4" "$1/fd" && "$3" -m edgesweep run "$2" --resume; '
        'echo "RUN RC $?"; "$3" -m edgesweep verify "$1/fd"; "$3" -m edgesweep query "$1/fd" '
        '"SELECT trial_id, status, steps FROM trials ORDER BY trial_id" --format csv; '
        '"$3" -m edgesweep query "$1/fd" "SELECT (SELECT count(*) FROM evals) AS n, count(*) AS k '
        'FROM (SELECT DISTINCT trial_id, step FROM evals)" '
        '--format csv', str(disk), str(spec), sys.executable, str(saved))
    out = resumed.stdout + resumed.stderr
    assert "RUN RC 0" in out and "OK: " in out and "no problems" in out, out[-6000:]
    assert "mod_add-adamw-wd0.0-s42,completed,4000\nmod_add-adamw-wd1.0-s42,completed,4000" in out, out[-3000:]
    assert "n,k\n162,162" in out, out[-3000:]  # evaluations 0, 50, …, 4000 of each trial, once
