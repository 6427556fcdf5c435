"""Trials whose owner died read as ``interrupted``; the driver reports what is stored.

The owner rule (storage/liveness.py) is checked against real processes started and ended here;
the aggregate of the hand-built sweep shows the mark in ``runs`` and the report; the driver's
accounting (platform/outcome.py) is checked against a trials table written here.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from conftest import SPEC, SWEEP, build_sweep
from raycluster import REPO
from edgesweep.storage import SweepPath, scan, write_table
from edgesweep.storage.liveness import (DRIVER_FILE, DriverRecord, owner_gone, process_alive,
                                        process_identity, read_driver_record, write_driver_record)

HOST = socket.gethostname()
NOW = datetime.now(timezone.utc)


@pytest.fixture
def child():
    """A real process of ours, and a function that ends it (reaped: no zombie left)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _driver(**kw) -> DriverRecord:
    d = DriverRecord.start()
    if "pid" in kw:  # a driver record of that process, as its own DriverRecord.start() writes
        kw.setdefault("pid_start", process_identity(kw["pid"]))
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def test_process_alive_follows_a_real_process_and_sees_a_reused_pid(child):
    me, it = process_identity(), process_identity(child.pid)
    assert it is not None and it != me and it == process_identity(child.pid)  # stable, distinct
    assert process_alive(child.pid)
    assert process_alive(child.pid, it)
    # The same pid recorded with another process's identity: a reused pid.
    assert not process_alive(child.pid, me)
    child.kill()
    child.wait()
    assert not process_alive(child.pid)


def test_a_zombie_is_not_alive():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(600):  # exited but not reaped: a zombie until wait() (≤ 30 s on a loaded machine)
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        import time
        time.sleep(0.05)
    assert not process_alive(proc.pid)
    proc.wait()


def test_worker_rule_on_this_host(child):
    row = {"started_at": NOW, "pid": child.pid, "hostname": HOST,
           "pid_start": process_identity(child.pid)}
    assert owner_gone(row, None) is None
    # Rows written before pid_start existed: existence of the pid is all that is checked.
    assert owner_gone(dict(row, pid_start=None), None) is None
    # A live process under that pid that is not the trial's worker: the worker is gone.
    assert owner_gone(dict(row, pid_start=process_identity()), None) is not None
    child.kill()
    child.wait()
    assert owner_gone(row, None) == f"its worker (pid {child.pid} on {HOST}) is not running"
    # On another host the pid says nothing: without a driver record the trial stays running.
    assert owner_gone(dict(row, hostname="elsewhere"), None) is None


def test_driver_rules(child):
    now = datetime.now(timezone.utc)  # after the child started: the driver's pid is not "reused"
    row = {"started_at": now, "pid": 1, "hostname": "worker-node"}  # a worker on another host
    alive = _driver(pid=child.pid, started_at=now.isoformat())
    assert owner_gone(row, alive) is None
    # started by an earlier driver (a --resume has begun but not yet reached this trial)
    later = _driver(pid=child.pid, started_at=(now + timedelta(minutes=1)).isoformat())
    assert "earlier driver" in owner_gone(row, later)
    # a driver that ended (Ctrl-C, or it finished) owns nothing that still runs
    ended = _driver(pid=child.pid, started_at=alive.started_at)
    ended.end("interrupted", {})
    assert owner_gone(row, ended).startswith("its driver ended at ") and "(interrupted)" in owner_gone(row, ended)
    # the driver on this host, killed
    child.kill()
    child.wait()
    assert owner_gone(row, alive) == f"its driver (pid {child.pid} on {HOST}) is not running"
    # a driver on another host: only its heartbeat tells, stale after STALE_HEARTBEATS intervals
    remote = _driver(pid=child.pid, hostname="head-node", started_at=alive.started_at,
                     heartbeat_at=now.isoformat(), heartbeat_s=30.0)
    assert owner_gone(row, remote, now=now + timedelta(seconds=119)) is None
    assert "no heartbeat from its driver" in owner_gone(row, remote, now=now + timedelta(seconds=121))


def test_driver_record_round_trip_and_unreadable_record(tmp_path):
    build_sweep(tmp_path)
    sp = SweepPath.parse(tmp_path / SWEEP)
    assert read_driver_record(sp) is None
    rec = DriverRecord.start()
    write_driver_record(sp, rec)
    assert read_driver_record(sp) == rec
    (tmp_path / SWEEP / DRIVER_FILE).write_text("{ not json")
    assert read_driver_record(sp) is None  # then only the worker rule applies
    assert DRIVER_FILE.startswith("_")  # hidden from scans and verify's table walk


@pytest.mark.parametrize("field, value", [("pid", None), ("pid", "12"), ("pid", True), ("hostname", 5),
                                          ("started_at", None), ("heartbeat_s", None), ("heartbeat_s", "x"),
                                          ("heartbeat_s", 0), ("counts", [1]), ("outcome", 3)])
def test_a_driver_record_with_a_field_of_the_wrong_type_is_unreadable_not_a_traceback(tmp_path, field, value):
    """JSON that parses but holds ``"pid": null`` (a hand edit, a foreign writer) is as unusable
    as JSON that does not parse: read as no record, not passed on to fail in os.kill or float()."""
    build_sweep(tmp_path)
    sp = SweepPath.parse(tmp_path / SWEEP)
    doc = json.loads(json.dumps(asdict(DriverRecord.start()))) | {field: value}
    (tmp_path / SWEEP / DRIVER_FILE).write_text(json.dumps(doc))
    assert read_driver_record(sp) is None
    if (field, value) == ("pid", None):  # once end to end: status printed a TypeError traceback
        res = subprocess.run([sys.executable, "-m", "edgesweep", "status", str(tmp_path / SWEEP), "--plain"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and res.stderr == "" and "I_" in res.stdout, res.stdout + res.stderr


def test_runs_and_report_mark_a_dead_owners_trial_interrupted(tmp_path, child):
    """Trial I of the hand-built sweep says running. With its worker alive it is running; once
    that process is gone it is interrupted in runs, summary and the report — no --resume needed."""
    from edgesweep.platform.aggregate import aggregate_sweep

    build_sweep(tmp_path)
    running = next(s for s in SPEC if s.status == "running")
    row = running.trial_row()
    row.update(started_at=datetime.now(timezone.utc), pid=child.pid, hostname=HOST)  # after the worker started
    write_table(tmp_path, SWEEP, "trials", pl.DataFrame([row]))

    uri = aggregate_sweep(tmp_path / SWEEP, use_ray=False, report=False)
    r = scan(uri, "runs").filter(pl.col("trial_id") == running.trial_id).collect().to_dicts()[0]
    assert (r["status"], r["running"], r["status_note"]) == ("running", True, None)

    child.kill()
    child.wait()
    uri = aggregate_sweep(tmp_path / SWEEP, use_ray=False, report=True)
    runs = scan(uri, "runs").collect()
    r = runs.filter(pl.col("trial_id") == running.trial_id).to_dicts()[0]
    assert (r["status"], r["running"]) == ("interrupted", False)
    assert r["status_note"] == f"its worker (pid {child.pid} on {HOST}) is not running"
    assert r["steps"] == running.last  # its rows are kept, up to where it stopped
    assert runs.filter(pl.col("trial_id") != running.trial_id)["status_note"].null_count() == runs.height - 1
    summary = scan(uri, "summary").collect()
    assert summary.filter(pl.col("scope") == "all")["n_interrupted"].sum() == 1
    assert summary.filter(pl.col("scope") == "all")["n_running"].sum() == 0
    report = (tmp_path / SWEEP / "report.md").read_text()
    assert "**1 trial(s) interrupted**" in report and running.trial_id in report


def test_driver_outcome_counts_what_is_stored(tmp_path, make_sweep):
    """finished / failed / interrupted / never started, per trial of the spec, from the trials
    table — the counts the driver prints and closes its record with."""
    from edgesweep.platform.outcome import sweep_outcome
    from edgesweep.platform.spec import load_spec

    spec = load_spec(str(make_sweep(tmp_path / "s.yaml", "acct", tmp_path / "r", seeds=(1, 2), wds=(1.0, 0.0))))
    ids = [t.trial_id for t in spec.trials]
    assert len(ids) == 4
    assert sweep_outcome(spec, str(tmp_path / "r")).counts() == {
        "finished": 0, "failed": 0, "interrupted": 0, "never_started": 4}
    rows = []
    for t, status in zip(spec.trials[:3], ("completed", "failed", "running")):
        rows.append({"trial_id": t.trial_id, **t.partition, "attempt": 0, "seed": t.seed,
                     "status": status, "steps": 10, "config": json.dumps(t.as_dict())})
    write_table(str(tmp_path / "r"), "acct", "trials", pl.DataFrame(rows))
    out = sweep_outcome(spec, str(tmp_path / "r"))
    assert (out.finished, out.failed, out.interrupted, out.never_started) == ([ids[0]], [ids[1]], [ids[2]], [ids[3]])
    assert out.sentence() == "1 finished, 1 failed, 1 interrupted, 1 never started (of 4)"
    assert out.verdict == "interrupted" and not out.complete


@pytest.mark.ray
def test_unsatisfiable_trial_resources_fail_before_scheduling(local_ray, tmp_path, make_sweep):
    """cpu: 64 on a 2-CPU cluster: a SpecError naming trial_resources at once; with a timeout
    (an autoscaling cluster) a warning, the wait, then the same error."""
    import time

    import yaml

    from edgesweep.platform.resources import check_trial_resources
    from edgesweep.platform.spec import SpecError, load_spec

    path = make_sweep(tmp_path / "big.yaml", "big", tmp_path / "r")
    doc = yaml.safe_load(path.read_text())
    doc["trial_resources"] = {"cpu": 64, "gpu": 4}
    path.write_text(yaml.safe_dump(doc))
    spec = load_spec(str(path))
    logged = []
    t0 = time.monotonic()
    with pytest.raises(SpecError) as err:
        check_trial_resources(local_ray, spec, 0, log=logged.append)
    assert time.monotonic() - t0 < 30  # at once (one look at the nodes), not after a wait
    msg = str(err.value)
    assert msg.startswith(f"{path}: trial_resources: one trial needs 64 CPU and 4 GPU") and "2 CPU and 0 GPU" in msg
    assert logged == []
    t0 = time.monotonic()
    with pytest.raises(SpecError, match=r"waited 2 s"):
        check_trial_resources(local_ray, spec, 2.0, log=logged.append, poll_s=0.5)
    assert 2.0 <= time.monotonic() - t0 < 40  # waited its 2 s, then gave up (no hang)
    assert len(logged) == 1 and logged[0].startswith("WARNING: no node can hold one trial yet")
    # what fits passes at once
    doc["trial_resources"] = {"cpu": 2, "gpu": 0}
    path.write_text(yaml.safe_dump(doc))
    check_trial_resources(local_ray, load_spec(str(path)), 0, log=logged.append)
    assert len(logged) == 1


def test_workers_are_reused_on_one_node_only():
    # The node-loss rehearsal showed why: with reuse on, Tune fed the surviving node's worker
    # and never used the node that replaced the lost one.
    from edgesweep.platform.resources import reuse_workers

    assert reuse_workers(1, autoscaling=False)
    assert not reuse_workers(3, autoscaling=False)
    assert not reuse_workers(1, autoscaling=True)   # nodes will join
    assert reuse_workers(3, autoscaling=False, env="1") and not reuse_workers(1, autoscaling=False, env="0")
    assert reuse_workers(1, autoscaling=False, env="yes")  # not 0/1: the rule decides
