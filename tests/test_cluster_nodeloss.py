"""A sweep on a three-node Ray cluster with an S3 root survives losing a worker node.

The cluster user's path (README "Cluster-scale reproduction"), rehearsed on one machine: a head
(0 CPUs: only the job driver runs there, as in deploy/cluster-aws.yaml) and two worker nodes of
1 CPU each, every node its own `ray start` with its own temp dir; a real SeaweedFS server as the
`s3://` storage root, holding the Parquet tables and Tune's experiment state and checkpoints;
the sweep submitted with `ray job submit`. Four smoke-sized trials, so two wait in the queue:
Tune reuses a finished trial's worker for the next one (reuse_actors), and with one queued
trial the surviving node could take all remaining work before the replacement registered.

When a trial has a checkpoint in S3, every process of its node is SIGKILLed at once (raylet,
workers, agents) and the node's temp dir deleted — a preempted spot instance. A fresh node then
joins. The sweep must finish: the lost trial restarted on another node from its checkpoint in
S3, every (trial_id, step) present exactly once with none missing, the job driver on the head
unharmed (SUCCEEDED), the rejoined node given work; and the tables and the aggregate equal an
uninterrupted run of the same trials (tests/bare_sweep.py, started beside the cluster: CPU
training with one thread is deterministic per seed, so the reference is a fixed expectation).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from raycluster import (RAY_BIN, REPO, VENV_BIN, RayCluster, check_tables, ray_env,
                        require_loopback_namespace)

from edgesweep.storage import resolve_root, scan

pytestmark = [pytest.mark.ray, pytest.mark.s3, pytest.mark.slow]

SWEEP = "nodeloss"
STEPS, CKPT = 300, 100
# The GCS declares a node dead after `threshold` failed health checks `period` apart (Ray's
# defaults, 3 s × 5, make the test wait ~15 s longer). The 5 s timeout per check is generous, so a
# live raylet on this loaded machine is not mistaken for a dead one.
HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5",
          "RAY_health_check_timeout_ms": "5000"}
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Row bookkeeping and timings: everything else in features/evals is a measured value that must
# equal the uninterrupted run's bit for bit.
NOT_SCIENCE = {"attempt", "gram_ms"}


def _job(cluster, command, *args) -> str:
    """`ray job COMMAND --address … ARGS` (the address before a `--` entrypoint)."""
    out = subprocess.run([RAY_BIN, "job", command, "--address", cluster.dashboard, *args], env=ray_env(),
                         capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr


def _job_status(cluster, sid) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(cluster.dashboard).get_job_status(sid).value)


def _checkpoints(root, tid) -> list[int]:
    """Indices of the trial's Tune checkpoints that are complete in S3 (state.pt written)."""
    try:
        files = root.list_files(root.path(SWEEP, "_tune", tid))
    except Exception:
        return []
    return sorted({int(m.group(1)) for f in files
                   if (m := re.search(r"/checkpoint_(\d+)/state\.pt$", f.path))})


def _running_trials(uri) -> pl.DataFrame:
    try:
        return scan(uri, "trials").filter(pl.col("status") == "running").collect()
    except Exception:  # no trials table yet
        return pl.DataFrame()


def test_sweep_survives_losing_a_worker_node(tmp_path, make_sweep, s3_env, s3_root):
    require_loopback_namespace()
    t0 = time.monotonic()
    job_dir = tmp_path / "job"  # the job's --working-dir: just the spec
    job_dir.mkdir()
    spec = make_sweep(job_dir / f"{SWEEP}.yaml", SWEEP, "./unused", seeds=(42,), wds=(1.0, 0.0, 0.3, 0.1),
                      max_steps=STEPS, checkpoint_every=CKPT)
    uri = f"{s3_root}/{SWEEP}"
    root = resolve_root(s3_root)

    # The uninterrupted reference, on local disk, while the cluster starts.
    ref = subprocess.Popen([sys.executable, str(REPO / "tests" / "bare_sweep.py"), str(spec),
                            str(tmp_path / "ref")], cwd=REPO, env=ray_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    # Nodes get the S3 endpoint and credentials from their own environment (s3_env put them in
    # ours), as a cluster's instances get them from an instance profile; `python` is this venv's.
    cluster = RayCluster(num_cpus=1, env=dict(HEALTH, PATH=VENV_BIN + os.pathsep + os.environ["PATH"]))
    try:
        cluster.start_head(num_cpus=0, warm_up=False)
        cluster.add_nodes(["w1", "w2"])
        t_up = time.monotonic() - t0
        sid = f"nodeloss-{os.getpid()}"
        t_end = time.monotonic() + 60
        # A just-started head answers "No available agent to submit job" for a few seconds.
        while "No available agent" in (out := _job(
                cluster, "submit", "--submission-id", sid, "--no-wait", "--working-dir", str(job_dir),
                "--", "python", "-m", "edgesweep", "run", spec.name, "--storage", s3_root)):
            assert time.monotonic() < t_end, out
            time.sleep(1)
        assert f"'{sid}' submitted successfully" in out, out

        # Wait for a trial on a worker node with a checkpoint in S3; then lose that node.
        names = {v: k for k, v in cluster.wait_node_ids(["head", "w1", "w2"]).items()}
        victim = node = None
        t_end = time.monotonic() + 150
        while victim is None:
            assert time.monotonic() < t_end, "no trial checkpointed in time\n" + _job(cluster, "logs", sid)
            status = _job_status(cluster, sid)
            assert status not in TERMINAL, f"job {status} before a node could be lost\n" + _job(cluster, "logs", sid)
            for row in _running_trials(uri).iter_rows(named=True):
                seen = _checkpoints(root, row["trial_id"])
                # Only its first checkpoint (step CKPT) done: two thirds of the trial are still
                # to run, so the kill lands mid-trial, not while it writes its final rows.
                if seen == [0] and names.get(row["node_id"], "head") != "head":
                    victim, node, ckpts_seen = row["trial_id"], names[row["node_id"]], seen
                    break
            time.sleep(0.5)
        lost_id = {v: k for k, v in names.items()}[node]
        killed = cluster.kill_node(node)
        t_kill = time.monotonic() - t0
        assert cluster.our_pids_of(node) == [], "a process of the lost node survived"
        cluster.add_node("rejoined")  # a replacement instance: a new node, a new temp dir
        rejoined_id = cluster.wait_node_ids(["rejoined"])["rejoined"]
        t_rejoined = time.monotonic() - t0

        t_end = time.monotonic() + 240
        while (status := _job_status(cluster, sid)) not in TERMINAL:
            assert time.monotonic() < t_end, "the sweep did not finish\n" + _job(cluster, "logs", sid)
            time.sleep(1)
        t_done = time.monotonic() - t0
        logs = _job(cluster, "logs", sid)
        # The driver on the head lived through the loss and saw the trial fail over.
        assert status == "SUCCEEDED", logs[-4000:] + cluster.tail()
        assert f"RETRY {victim}" in logs, logs[-4000:]

        trials, evals, feats = check_tables(uri, {t.trial_id for t in _spec_trials(spec)})
        lost = trials.filter(pl.col("trial_id") == victim).row(0, named=True)
        assert lost["attempt"] >= 1 and lost["node_id"] != lost_id, lost
        # Restarted from a checkpoint in S3, not from scratch: the new attempt's first row is the
        # snapshot right after a checkpoint step (the node's local disk was deleted).
        redo = feats.filter((pl.col("trial_id") == victim) & (pl.col("attempt") == lost["attempt"]))
        first = redo["step"].min()
        assert first > 50 and (first - 25) % CKPT == 0, first
        # The replacement node was used: some trial ran there (the queue had work for it).
        assert rejoined_id in set(trials["node_id"]), trials.select("trial_id", "node_id", "attempt")

        assert ref.wait(timeout=300) == 0, ref.stdout.read()
        _assert_same_science(uri, str(tmp_path / "ref" / SWEEP), feats, evals)
        print(f"\nnode-loss: cluster up at {t_up:.0f}s; {trials.height} trials; killed node {node} "
              f"({len(killed)} processes) at {t_kill:.0f}s, replacement joined at {t_rejoined:.0f}s, "
              f"job done at {t_done:.0f}s, while {victim} had checkpoint(s) {ckpts_seen}; it resumed at step {first} "
              f"on another node; {feats.height} feature and {evals.height} eval rows, each (trial, step) "
              f"once, 0 missing; total {time.monotonic() - t0:.0f}s")
    finally:
        if ref.poll() is None:
            ref.kill()
        cluster.stop(grace=5)  # nothing to save: the results are in S3 and checked
        assert cluster.our_pids() == []


def _spec_trials(spec: Path):
    from edgesweep.platform.spec import load_spec
    return load_spec(spec).trials


def _assert_same_science(uri, ref_uri, feats, evals):
    """Every feature and eval value, and the aggregate's runs and summary, equal the reference."""
    ref_f = scan(ref_uri, "features").collect()
    ref_e = scan(ref_uri, "evals").collect()
    for got, want in ((feats, ref_f), (evals, ref_e)):
        cols = [c for c in want.columns if c not in NOT_SCIENCE]
        a = got.select(cols).sort("trial_id", "step")
        b = want.select(cols).sort("trial_id", "step")
        assert a.select("trial_id", "step").equals(b.select("trial_id", "step"))
        differ = {c: sorted(set(a.filter(a[c].ne_missing(b[c]))["trial_id"])) for c in cols
                  if not a[c].equals(b[c])}
        assert differ == {}, f"columns that differ from the reference, with the trials: {differ}"
    # Bookkeeping differs by construction (the sweep's name is the same; where it ran is not).
    runs, ref_runs = scan(uri, "runs").collect().sort("trial_id"), scan(ref_uri, "runs").collect().sort("trial_id")
    assert runs.height == ref_runs.height == feats["trial_id"].n_unique()
    assert runs.equals(ref_runs), (runs, ref_runs)
    summ, ref_summ = scan(uri, "summary").collect(), scan(ref_uri, "summary").collect()
    assert summ.sort("scope", "arm").equals(ref_summ.sort("scope", "arm"))
