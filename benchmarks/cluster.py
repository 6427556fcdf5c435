"""Cluster shape against one node: the same sweep on 3 Ray worker nodes + an S3 root (with node
losses) and on a single local node with local-disk storage, side by side in one run.

    unshare -n bash -c 'ip link set lo up && .venv/bin/python benchmarks/cluster.py'
    # options: --workers 3 --seeds 42,137,2024 --max-steps 600 --checkpoint-every 100 --kills 1

Both arms are submitted with `ray job submit` (the README's cluster path) and timed from the
submission to SUCCEEDED:

1. **single node**: one `ray start --head` with as many CPUs as the cluster has workers, storage
   on local disk;
2. **cluster**: a head with 0 CPUs (only the driver, as in deploy/cluster-aws.yaml) and
   `--workers` nodes of 1 CPU each, every node its own `ray start` and temp dir; a SeaweedFS
   server (tests/s3server.py) as the `s3://` root for the tables and Tune's state and
   checkpoints. `--kills` times, a worker node running a trial that has just written its first
   checkpoint is SIGKILLed whole (tests/raycluster.py: kill_node) and a replacement node joins.

Reported per arm: trials, nodes, kills, wall time, Σ and mean trial time (trials table wall_s:
a restarted trial counts its last attempt), overhead per trial ((wall × concurrency − Σ trial
time) / trials: slot time not spent training), and storage: objects and bytes left at the end
under the sweep (files on disk / S3 objects) and, for S3, what the server counted during the
run (SeaweedFS's Prometheus counters, read before and after: objects uploaded, bytes received,
requests by type) — more than what is left, since Tune rewrites its state and keeps only the
last 2 checkpoints, and compaction replaces parts.
Every trial runs max_steps (no early stop) so both arms do equal work. The uninterrupted arm's
science is the reference: the cluster arm's feature rows must equal it (timings aside).

Run it inside `unshare -n` (as scripts/test.sh does) so Ray binds loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import polars as pl
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests")]

from raycluster import RAY_BIN, VENV_BIN, RayCluster, only_loopback, ray_env  # noqa: E402
from s3server import SeaweedS3  # noqa: E402

from edgesweep.storage import resolve_root, scan  # noqa: E402

SWEEP = "bench"
HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5",
          "RAY_health_check_timeout_ms": "5000"}
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
NOT_SCIENCE = {"attempt", "gram_ms"}


def job(cluster, command, *args) -> str:
    out = subprocess.run([RAY_BIN, "job", command, "--address", cluster.dashboard, *args],
                         env=ray_env(), capture_output=True, text=True, timeout=180)
    return out.stdout + out.stderr


def job_status(cluster, sid) -> str:
    from ray.job_submission import JobSubmissionClient
    return str(JobSubmissionClient(cluster.dashboard).get_job_status(sid).value)


def submit(cluster, job_dir: Path, storage: str) -> str:
    sid = f"bench-{os.getpid()}-{int(time.time())}"
    t_end = time.monotonic() + 90
    while "No available agent" in (out := job(
            cluster, "submit", "--submission-id", sid, "--no-wait", "--working-dir", str(job_dir),
            "--", "python", "-m", "edgesweep", "run", f"{SWEEP}.yaml", "--storage", storage,
            "--no-aggregate")):
        if time.monotonic() > t_end:
            raise RuntimeError(out)
        time.sleep(1)
    if f"'{sid}' submitted successfully" not in out:
        raise RuntimeError(out)
    return sid


def checkpoints(root, tid) -> list[int]:
    try:
        files = root.list_files(root.path(SWEEP, "_tune", tid))
    except Exception:
        return []
    return sorted({int(m.group(1)) for f in files if (m := re.search(r"/checkpoint_(\d+)/state\.pt$", f.path))})


def s3_counters(srv: SeaweedS3) -> dict[str, float]:
    """SeaweedFS's own counters (Prometheus text on its metrics port): objects uploaded, bytes
    received, and S3 requests by type (summed over response codes)."""
    port = srv._ports[-1]  # the metrics port (tests/s3server.py lists it last)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        key = {"SeaweedFS_s3_uploaded_objects": "objects written",
               "SeaweedFS_s3_bucket_traffic_received_bytes_total": "bytes written"}.get(name)
        if name == "SeaweedFS_s3_request_total" and (m := re.search(r'type="([^"]+)"', line)):
            key = f"{m.group(1)} requests"
        if key:
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def stored(storage: str) -> tuple[int, int]:
    """(objects, bytes) under the sweep folder at the end."""
    root = resolve_root(storage)
    files = root.list_files(root.path(SWEEP))
    return len(files), sum(f.size or 0 for f in files)


def run_arm(name, cluster, job_dir, storage, kills, workers_running) -> dict:
    """Submit the sweep, lose `kills` nodes on the way, wait for the end; the arm's figures."""
    t0 = time.monotonic()
    sid = submit(cluster, job_dir, storage)
    root = resolve_root(storage)
    uri = f"{storage}/{SWEEP}"
    killed, lost = 0, []
    while (status := job_status(cluster, sid)) not in TERMINAL:
        if killed < kills:
            names = {v: k for k, v in cluster.node_ids().items()}
            try:
                running = scan(uri, "trials").filter(pl.col("status") == "running").collect()
            except Exception:
                running = pl.DataFrame()
            for row in running.iter_rows(named=True):
                node = names.get(row["node_id"])
                if node in workers_running and checkpoints(root, row["trial_id"]) == [0]:
                    pids = cluster.kill_node(node)
                    workers_running.remove(node)
                    new = f"{node}r"
                    cluster.add_node(new)
                    workers_running.append(new)
                    killed += 1
                    lost.append((row["trial_id"], node, len(pids), round(time.monotonic() - t0, 1)))
                    break
        time.sleep(0.5)
    wall = time.monotonic() - t0
    logs = job(cluster, "logs", sid)
    if status != "SUCCEEDED":
        raise RuntimeError(f"{name}: job {status}\n{logs[-4000:]}")
    trials = scan(uri, "trials").collect()
    objects, nbytes = stored(storage)
    return {"arm": name, "trials": trials.height, "status": sorted(set(trials["status"])),
            "kills": killed, "lost": lost, "wall_s": wall, "trial_s_sum": float(trials["wall_s"].sum()),
            "attempts": int(trials["attempt"].sum()), "objects": objects, "bytes": nbytes,
            "nodes_used": trials["node_id"].n_unique(), "uri": uri}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--seeds", default="42,137,2024")
    ap.add_argument("--max-steps", type=int, default=600)
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--kills", type=int, default=1)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if not only_loopback():
        sys.exit("run inside a loopback-only network namespace: unshare -n bash -c 'ip link set lo up && ...'")
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")

    raw = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    raw.update(name=SWEEP, storage="./unused", max_failures=args.kills + 2)
    raw["grid"]["seed"] = [int(s) for s in args.seeds.split(",")]
    raw["train"].update(max_steps=args.max_steps, checkpoint_every=args.checkpoint_every)
    raw["stop"] = {"after_grok": None}  # equal work in both arms
    work = Path(tempfile.mkdtemp(prefix="es-bench-cluster-"))
    job_dir = work / "job"
    job_dir.mkdir()
    (job_dir / f"{SWEEP}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    n_trials = len(raw["grid"]["seed"]) * len(raw["grid"]["weight_decay"])
    path_env = {"PATH": VENV_BIN + os.pathsep + os.environ["PATH"]}
    print(f"{n_trials} trials of sweeps/smoke.yaml ({args.max_steps} steps, checkpoint every "
          f"{args.checkpoint_every}, no early stop); {os.cpu_count()} CPUs here; load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    results = []
    try:
        # 1. one node, local disk
        single = RayCluster(num_cpus=args.workers, env=path_env)
        try:
            t = time.monotonic()
            single.start_head(warm_up=False)
            up = time.monotonic() - t
            r = run_arm("single node, local disk", single, job_dir, str(work / "local"), 0, [])
            r.update(nodes=1, concurrency=args.workers, start_s=up)
            results.append(r)
        finally:
            single.stop()
        print(json.dumps({k: v for k, v in r.items() if k != "uri"}), flush=True)

        # 2. head + workers, S3
        with SeaweedS3(work / "s3") as srv:
            os.environ.update(srv.env)
            cluster = RayCluster(num_cpus=1, env=dict(HEALTH, **path_env))
            try:
                t = time.monotonic()
                cluster.start_head(num_cpus=0, warm_up=False)
                names = [f"w{i + 1}" for i in range(args.workers)]
                cluster.add_nodes(names)
                up = time.monotonic() - t
                before = s3_counters(srv)
                r = run_arm(f"{args.workers} nodes + S3", cluster, job_dir, f"s3://{srv.bucket}/bench",
                            args.kills, names)
                after = s3_counters(srv)
                r.update(nodes=args.workers, concurrency=args.workers, start_s=up,
                         s3={k: after.get(k, 0) - before.get(k, 0) for k in after})
                results.append(r)
                # the cluster arm's science equals the single-node arm's (each trial exactly once)
                a = scan(r["uri"], "features").collect()
                b = scan(results[0]["uri"], "features").collect()
                cols = [c for c in b.columns if c not in NOT_SCIENCE]
                same = a.select(cols).sort("trial_id", "step").equals(b.select(cols).sort("trial_id", "step"))
                r["same_features_as_single"] = same
                r["feature_rows"] = a.height
            finally:
                cluster.stop()
        print(json.dumps({k: v for k, v in r.items() if k != "uri"}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    hdr = f"{'':<34}" + "".join(f"{r['arm']:>26}" for r in results)
    print(hdr)

    def line(label, fn):
        print(f"{label:<34}" + "".join(f"{fn(r):>26}" for r in results))
    line("trials", lambda r: r["trials"])
    line("nodes running trials", lambda r: r["nodes"])
    line("CPUs for trials (concurrency)", lambda r: r["concurrency"])
    line("node kills", lambda r: r["kills"])
    line("trial restarts (attempts > 0)", lambda r: r["attempts"])
    line("cluster start, s", lambda r: f"{r['start_s']:.1f}")
    line("sweep wall (submit→done), s", lambda r: f"{r['wall_s']:.1f}")
    line("Σ trial time, s", lambda r: f"{r['trial_s_sum']:.1f}")
    line("mean trial time, s", lambda r: f"{r['trial_s_sum'] / r['trials']:.1f}")
    line("overhead per trial, s", lambda r: f"{(r['wall_s'] * r['concurrency'] - r['trial_s_sum']) / r['trials']:.1f}")
    line("objects stored / trial", lambda r: f"{r['objects'] / r['trials']:.1f}")
    line("bytes stored / trial", lambda r: f"{r['bytes'] / r['trials']:,.0f}")
    if len(results) > 1:
        n = results[1]["trials"]
        print("\nS3 traffic of the cluster arm, per trial (SeaweedFS counters): "
              + ", ".join(f"{k} {v / n:,.1f}" for k, v in sorted(results[1]["s3"].items())))
    for r in results:
        for tid, node, npids, at in r["lost"]:
            print(f"{r['arm']}: killed {node} ({npids} processes) at {at}s while {tid} ran past its first checkpoint")
    if len(results) > 1:
        print(f"cluster arm feature rows equal the single-node arm's: {results[1]['same_features_as_single']} "
              f"({results[1]['feature_rows']} rows)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
