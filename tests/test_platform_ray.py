"""The platform on real Ray clusters: `ray job submit`, two nodes, killed workers and drivers.

Each test starts its own `ray start --head` (tests/raycluster.py) inside the loopback-only
network namespace that scripts/test.sh creates, and stops only the processes it started.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest

from edgesweep.storage import scan
from edgesweep.storage.liveness import process_alive

from raycluster import REPO, RAY_BIN, VENV_BIN, RayCluster, check_tables, cluster_env, require_loopback_namespace

pytestmark = [pytest.mark.ray, pytest.mark.slow]

@pytest.fixture(scope="module")
def head():
    """One head node shared by the end-to-end and fault tests (each uses its own storage)."""
    require_loopback_namespace()
    cluster = RayCluster(num_cpus=2)
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = VENV_BIN + os.pathsep + old_path  # inherited by `ray start`
    try:
        cluster.start_head()
        yield cluster
    finally:
        os.environ["PATH"] = old_path
        cluster.stop()
        assert cluster.our_pids() == [], "Ray processes of this test survived teardown"


def test_ray_job_submit_end_to_end(head, tmp_path):
    """`ray job submit --working-dir . -- python -m edgesweep run sweeps/smoke.yaml`."""
    storage = tmp_path / "results"
    cmd = [RAY_BIN, "job", "submit", f"--address={head.dashboard}", "--working-dir", str(REPO),
           "--", "python", "-m", "edgesweep", "run", "sweeps/smoke.yaml", "--storage", str(storage)]
    out = subprocess.run(cmd, cwd=REPO, env=cluster_env(), capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:] + head.tail()
    assert "succeeded" in log.lower()
    trials, evals, feats = check_tables(storage / "smoke", {"mod_add-adamw-wd1.0-s42", "mod_add-adamw-wd0.0-s42"})
    groks = dict(zip(trials["trial_id"], trials["grok_step"]))
    assert groks["mod_add-adamw-wd1.0-s42"] is not None  # the smoke sweep has a run that groks
    assert groks["mod_add-adamw-wd0.0-s42"] is None
    assert trials["code_version"].null_count() == 0 and trials["ray_version"][0]
    # the driver also aggregated and reported
    runs = scan(storage / "smoke", "runs").collect()
    assert set(runs["trial_id"]) == set(trials["trial_id"])
    assert set(runs["status"]) <= {"completed", "stopped"}, runs.select("trial_id", "status", "error").to_dicts()
    assert (storage / "smoke" / "report.md").exists()
    # a real sweep meets every rule verify applies (seal records, rows reaching the trials rows)
    from edgesweep.storage import verify
    report = verify(str(storage / "smoke"))
    assert report.ok and not report.problems, report.problems


def run_driver(spec: Path, address: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgesweep", "run", str(spec), "--address", address, *extra],
                            cwd=REPO, env=cluster_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def wait_for(predicate, timeout, what):
    t_end = time.time() + timeout
    while time.time() < t_end:
        value = predicate()
        if value is not None and value is not False:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def settled(read, timeout=60):
    """read() retried: a reader can meet a row that a worker is rewriting at that moment (the
    listing and the seal record disagree for a few ms) — what the test needs is the next read."""
    def attempt():
        try:
            return read()
        except Exception:  # noqa: BLE001 — retried until the timeout, then the wait fails
            return None
    return wait_for(attempt, timeout, "a consistent read of the trials table")


def sealed_max_step(sweep_dir: Path, trial_id: str) -> int:
    try:
        f = scan(sweep_dir, "features").filter(pl.col("trial_id") == trial_id).select(pl.col("step").max()).collect()
        return f.item() or 0
    except Exception:
        return 0


def comparable(df: pl.DataFrame) -> pl.DataFrame:
    keep = [c for c in df.columns if c not in ("attempt", "gram_ms", "sweep")]
    return df.select(keep).sort("trial_id", "step")


@pytest.fixture(scope="module")
def reference_run(head, tmp_path_factory, make_sweep):
    """The fault sweep run once without faults: what every faulty run must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    storage = tmp / "reference"
    spec = make_sweep(tmp / "ref.yaml", "faults", storage, seeds=(42, 137), wds=(1.0, 0.0))
    proc = run_driver(spec, head.address)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    return storage / "faults", spec


def test_killed_worker_restarts_from_checkpoint(head, reference_run, tmp_path, make_sweep):
    ref_dir, _ = reference_run
    storage = tmp_path / "results"
    spec = make_sweep(tmp_path / "faults.yaml", "faults", storage, seeds=(42, 137), wds=(1.0, 0.0))
    victim = "mod_add-adamw-wd0.0-s42"
    # What a worker killed inside save_checkpoint leaves: its scratch directory and an unlocked
    # lock file beside it. The next trial to start on this machine removes them.
    orphan = Path(tempfile.gettempdir()) / f"edgesweep-ckpt-{socket.gethostname()}@killedworker"
    orphan.mkdir()
    (orphan / "state.pt").write_bytes(b"x" * 1000)
    Path(f"{orphan}.lock").touch()
    proc = run_driver(spec, head.address)
    try:
        sweep_dir = storage / "faults"
        wait_for(lambda: sealed_max_step(sweep_dir, victim) >= 500, 600, "two sealed checkpoints")
        pid = settled(lambda: scan(sweep_dir, "trials").filter(pl.col("trial_id") == victim).collect()["pid"][0])
        os.kill(pid, signal.SIGKILL)  # the trial's worker process, on this machine
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        removed = not orphan.exists() and not Path(f"{orphan}.lock").exists()
        shutil.rmtree(orphan, ignore_errors=True)
        Path(f"{orphan}.lock").unlink(missing_ok=True)
    assert proc.returncode == 0, out[-4000:]
    assert "RETRY" in out and victim in out
    assert removed, "the orphaned checkpoint scratch directory is still there"
    trials, _, feats = check_tables(sweep_dir, set(scan(ref_dir, "trials").collect()["trial_id"]))
    assert trials.filter(pl.col("trial_id") == victim)["attempt"][0] >= 1
    raw = pl.read_parquet(sweep_dir / "features" / "**" / "*.parquet", hive_partitioning=False)
    # rows after the restored checkpoint were written again by a later attempt
    assert raw.filter(pl.col("trial_id") == victim)["attempt"].max() >= 1
    # Deterministic CPU training: the restarted trial reproduces the uninterrupted run exactly.
    ref = scan(ref_dir, "features").collect()
    assert comparable(feats).equals(comparable(ref))
    assert comparable(scan(sweep_dir, "evals").collect()).equals(comparable(scan(ref_dir, "evals").collect()))


def test_killed_driver_resumes_without_rerunning_finished_trials(head, reference_run, tmp_path, make_sweep):
    ref_dir, _ = reference_run
    storage = tmp_path / "results"
    spec = make_sweep(tmp_path / "faults.yaml", "faults", storage, seeds=(42, 137), wds=(1.0, 0.0))
    sweep_dir = storage / "faults"
    proc = run_driver(spec, head.address)

    def one_finished():
        try:
            t = scan(sweep_dir, "trials").filter(pl.col("status").is_in(["completed", "stopped"])).collect()
        except Exception:  # nothing written yet
            return None
        return t if t.height >= 1 else None

    wait_for(one_finished, 600, "a finished trial")
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-sweep
    proc.wait(timeout=30)
    # Ray ends the job's workers only once it notices the driver is gone, and a trial can finish
    # in that window (CI saw one): what counts as finished is read once those workers are gone.
    workers = settled(lambda: scan(sweep_dir, "trials").select("pid", "pid_start").unique().collect().rows())
    wait_for(lambda: not any(process_alive(pid, start) for pid, start in workers), 120,
             "the dead driver's workers to end")
    finished = one_finished()
    done_before = finished.select("trial_id", "started_at", "pid").sort("trial_id")

    # Before any --resume, a reader sees the unfinished trials as interrupted, not running.
    from edgesweep.platform.aggregate import aggregate_sweep
    runs = scan(aggregate_sweep(sweep_dir, use_ray=False, report=False), "runs").collect()
    assert runs.filter(pl.col("running"))["trial_id"].to_list() == []
    stopped = runs.filter(pl.col("status") == "interrupted")
    # every trial that started and had not finished (trials never started have no row)
    assert stopped.height == runs.height - finished.height, runs.select("trial_id", "status", "status_note").to_dicts()
    assert all("not running" in note for note in stopped["status_note"]), stopped["status_note"].to_list()

    resumed = run_driver(spec, head.address, "--resume")
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out[-4000:]
    # The progress view counts the trials that finished before the kill as done, too.
    progress = re.findall(r"\] trials (\d+)/(\d+) done", out)
    assert progress and progress[-1][0] == progress[-1][1], progress
    trials, _, feats = check_tables(sweep_dir, set(scan(ref_dir, "trials").collect()["trial_id"]))
    # finished trials were not rerun: same start time and worker pid as before the kill
    again = trials.filter(pl.col("trial_id").is_in(done_before["trial_id"].to_list())).select(
        "trial_id", "started_at", "pid").sort("trial_id")
    assert again.equals(done_before)
    # and the aggregate equals the uninterrupted run's
    cols = ["trial_id", "grok_step", "memorization_step", "g23_early", "g23_grok", "g23_decline",
            "preceded", "alarm_step", "lead_steps"]
    got = scan(sweep_dir, "runs").collect().select(cols).sort("trial_id")
    want = scan(ref_dir, "runs").collect().select(cols).sort("trial_id")
    assert got.equals(want), (got, want)
    assert comparable(feats).equals(comparable(scan(ref_dir, "features").collect()))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_reports_exactly_what_finished_and_never_started(head, tmp_path, make_sweep, sig):
    """One trial at a time (cpu: 2 on a 2-CPU head). Ctrl-C while the first runs: the driver
    says 0 finished, 1 interrupted, 1 never started — counted from storage — exits 130, and
    closes its record; the trial is interrupted in runs without a --resume. SIGTERM (`ray job
    stop`, a scheduler) does the same: it used to exit 134 with Ray's native stack dump, no
    summary, no resume command and the record saying "error: SystemExit"."""
    import json

    import yaml

    storage = tmp_path / "results"
    spec = make_sweep(tmp_path / "ctrlc.yaml", "ctrlc", storage)
    doc = yaml.safe_load(spec.read_text())
    doc["trial_resources"] = {"cpu": 2, "gpu": 0}
    spec.write_text(yaml.safe_dump(doc))
    sweep_dir = storage / "ctrlc"
    proc = run_driver(spec, head.address)
    try:
        wait_for(lambda: sealed_max_step(sweep_dir, "mod_add-adamw-wd1.0-s42") > 0
                 or sealed_max_step(sweep_dir, "mod_add-adamw-wd0.0-s42") > 0, 600, "a trial's first rows")
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-4000:]
    assert "0 finished, 0 failed, 1 interrupted, 1 never started (of 2)" in out, out[-4000:]
    assert "--resume" in out and "finished, 0 failed\n" not in out
    assert "*** SIGTERM received" not in out
    record = json.loads((sweep_dir / "_driver.json").read_text())
    assert record["outcome"] == "interrupted" and record["ended_at"]
    assert record["counts"] == {"finished": 0, "failed": 0, "interrupted": 1, "never_started": 1}
    from edgesweep.platform.aggregate import aggregate_sweep
    runs = scan(aggregate_sweep(sweep_dir, use_ray=False, report=False), "runs").collect()
    assert runs["status"].to_list() == ["interrupted"], runs
    assert runs["status_note"][0].startswith("its driver ended at ")


def test_unsatisfiable_trial_resources_are_an_error_not_a_hang(head, tmp_path, make_sweep):
    import yaml

    spec = make_sweep(tmp_path / "gpu.yaml", "gpu4", tmp_path / "results")
    doc = yaml.safe_load(spec.read_text())
    doc["trial_resources"] = {"cpu": 1, "gpu": 4}
    spec.write_text(yaml.safe_dump(doc))
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "edgesweep", "run", str(spec), "--address", head.address],
                         cwd=REPO, env=cluster_env(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    err = out.stderr.strip().splitlines()
    assert err[-1].startswith(f"edgesweep run: error: {spec}: trial_resources: one trial needs 1 CPU and 4 GPU")
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "results" / "gpu4" / "_tune").exists()  # Tune never started
    assert time.time() - t0 < 120
