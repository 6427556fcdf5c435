"""Chaos run: a small sweep with random SIGKILLs of trial workers, one of the driver, and
(``--s3``) a restart of the S3 server mid-sweep — its results must equal an uninterrupted run's.

    RAY_AUTH_MODE=disabled unshare -n bash -c 'ip link set lo up && \\
        .venv/bin/python benchmarks/chaos.py --kills 12 --s3 --json benchmarks/results/chaos.json'

What it does, on a real `ray start --head` (2 CPUs, tests/raycluster.py) inside a loopback-only
network namespace:

1. **reference** — the sweep (modular addition, 2 seeds × weight decay {1, 0}, CPU,
   deterministic) run once without faults into local storage.
2. **chaos** — the same sweep again. A killer picks, every 3–12 s (seeded), a trial whose row
   says running and whose sealed rows have advanced since its last kill, and SIGKILLs its
   worker process (Tune restarts it from its last checkpoint). Half-way through the kills it
   SIGKILLs the driver's process group, aggregates (the unfinished trials must read
   ``interrupted``), and starts the driver again with ``--resume``; the kills go on.
3. **s3** (``--s3``) — the sweep into ``s3://`` on a SeaweedFS server that is stopped for
   ``--s3-down`` seconds once the first rows are sealed, then started again on the same ports.
   Writes during the outage are retried (storage/fs.py); nothing may be lost or doubled.

Every run is compared with the reference: the ``features`` and ``evals`` rows value for value
(attempt and timing columns aside), the science columns of ``runs``, duplicate (trial, step)
keys in a scan (must be 0) and steps missing against the reference (must be 0). Exit status 0
only when all hold and at least ``--kills`` worker kills landed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from raycluster import VENV_BIN, RayCluster, cluster_env, only_loopback  # noqa: E402

from edgesweep.platform.aggregate import aggregate_sweep  # noqa: E402
from edgesweep.storage import scan  # noqa: E402
from edgesweep.storage.liveness import process_alive  # noqa: E402

SCIENCE = ["trial_id", "status", "steps", "grok_step", "memorization_step", "g23_early", "g23_grok",
           "g23_decline", "preceded", "alarm_step", "lead_steps", "generalisation"]
IGNORED = ("attempt", "gram_ms", "sweep")


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_spec(path: Path, name: str, storage: str, max_steps: int, max_failures: int) -> Path:
    doc = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    doc.update(name=name, storage=storage, max_failures=max_failures)
    doc["grid"].update(seed=[42, 137], weight_decay=[1.0, 0.0])
    doc["train"].update(max_steps=max_steps, checkpoint_every=250)
    doc["stop"] = {"after_grok": None}  # every trial runs its whole budget: more time to kill in
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def driver(spec: Path, address: str, log_path: Path, *extra: str) -> subprocess.Popen:
    out = open(log_path, "a")
    return subprocess.Popen([sys.executable, "-m", "edgesweep", "run", str(spec), "--address", address, *extra],
                            cwd=REPO, env=cluster_env(), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def running_trials(sweep: str) -> list[dict]:
    try:
        t = scan(sweep, "trials").filter(pl.col("status") == "running").select("trial_id", "pid", "hostname",
                                                                                 "pid_start").collect()
        f = scan(sweep, "features").group_by("trial_id").agg(pl.col("step").max()).collect()
    except Exception:  # nothing sealed yet
        return []
    top = dict(zip(f["trial_id"].to_list(), f["step"].to_list()))
    return [dict(r, sealed=top.get(r["trial_id"], 0)) for r in t.to_dicts()]


class Killer:
    """SIGKILLs a running trial's worker every 3–12 s once its sealed rows moved on."""

    def __init__(self, sweep: str, rng: random.Random):
        self.sweep, self.rng = sweep, rng
        self.kills: list[dict] = []
        self.seen: dict[str, int] = {}  # trial → sealed step at its last kill
        self.next_at = time.monotonic() + rng.uniform(3, 12)

    def tick(self) -> bool:
        if time.monotonic() < self.next_at:
            return False
        ready = [t for t in running_trials(self.sweep)
                 if t["sealed"] > self.seen.get(t["trial_id"], -1) and t["pid"]
                 and process_alive(int(t["pid"]), t["pid_start"])]
        if not ready:
            return False
        t = self.rng.choice(ready)
        try:
            os.kill(int(t["pid"]), signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.seen[t["trial_id"]] = t["sealed"]
        self.kills.append({"trial_id": t["trial_id"], "pid": int(t["pid"]), "sealed_step": t["sealed"],
                           "t": round(time.time(), 1)})
        log(f"kill {len(self.kills)}: worker pid {t['pid']} of {t['trial_id']} (sealed to step {t['sealed']})")
        self.next_at = time.monotonic() + self.rng.uniform(3, 12)
        return True


def comparable(df: pl.DataFrame) -> pl.DataFrame:
    return df.select([c for c in df.columns if c not in IGNORED]).sort("trial_id", "step")


def compare(sweep: str, ref: str) -> dict:
    """Value-for-value comparison with the reference, and the duplicate / missing counts."""
    out = {}
    for table in ("features", "evals"):
        got, want = scan(sweep, table).collect(), scan(ref, table).collect()
        keys = got.select("trial_id", "step")
        out[f"{table}_rows"] = got.height
        out[f"{table}_duplicates"] = keys.height - keys.unique().height
        out[f"{table}_missing"] = want.select("trial_id", "step").join(keys, on=["trial_id", "step"], how="anti").height
        out[f"{table}_equal"] = comparable(got).equals(comparable(want))
    raw = pl.read_parquet(f"{sweep}/features/**/*.parquet", hive_partitioning=False) if "://" not in sweep else None
    if raw is not None:
        out["features_raw_rows"] = raw.height  # re-written rows of later attempts included
        out["features_max_attempt"] = int(raw["attempt"].max())
    runs = scan(sweep, "runs").collect().select(SCIENCE).sort("trial_id")
    out["runs_equal"] = runs.equals(scan(ref, "runs").collect().select(SCIENCE).sort("trial_id"))
    out["ok"] = (out["runs_equal"] and all(out[f"{t}_equal"] for t in ("features", "evals"))
                 and not any(out[f"{t}_{k}"] for t in ("features", "evals") for k in ("duplicates", "missing")))
    return out


def wait(proc: subprocess.Popen, killer: Killer | None, until_kills: int | None, timeout: float) -> bool:
    """Wait for the driver (True when it exited), killing workers on the way; returns False
    early once ``until_kills`` kills have landed."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            return True
        if killer is not None and (until_kills is None or len(killer.kills) < until_kills):
            killer.tick()
        elif until_kills is not None:
            return False
        time.sleep(0.5)
    raise TimeoutError(f"driver still running after {timeout:.0f} s")


def run_reference(cluster, work: Path, max_steps: int) -> tuple[str, float]:
    spec = write_spec(work / "ref.yaml", "chaos", str(work / "reference"), max_steps, 30)
    t0 = time.time()
    p = driver(spec, cluster.address, work / "reference.log")
    wait(p, None, None, 3600)
    assert p.returncode == 0, (work / "reference.log").read_text()[-3000:]
    return str(work / "reference" / "chaos"), time.time() - t0


def run_chaos(cluster, work: Path, ref: str, kills: int, max_steps: int, seed: int) -> dict:
    spec = write_spec(work / "chaos.yaml", "chaos", str(work / "chaos"), max_steps, 30)
    sweep = str(work / "chaos" / "chaos")
    logp = work / "chaos.log"
    killer = Killer(sweep, random.Random(seed))
    t0 = time.time()
    p = driver(spec, cluster.address, logp)
    exited = wait(p, killer, kills // 2, 3600)
    if exited:
        raise RuntimeError(f"the sweep finished after {len(killer.kills)} kills, before the driver kill; "
                           "raise --max-steps")
    time.sleep(killer.rng.uniform(2, 6))
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    log(f"driver SIGKILLed (pid {p.pid}) after {len(killer.kills)} worker kills")
    time.sleep(3)
    runs = scan(aggregate_sweep(sweep, use_ray=False, report=False), "runs").collect()
    interrupted = runs.filter(pl.col("status") == "interrupted").height
    still_running = int(runs["running"].sum())
    log(f"before --resume: {interrupted} trial(s) interrupted, {still_running} say running")
    p = driver(spec, cluster.address, logp, "--resume")
    wait(p, killer, None, 3600)
    wall = time.time() - t0
    text = logp.read_text(errors="replace")
    res = {"kills": len(killer.kills), "driver_kills": 1, "kill_log": killer.kills, "wall_s": round(wall, 1),
           "driver_exit": p.returncode, "interrupted_before_resume": interrupted,
           "running_before_resume": still_running, "retries_logged": text.count("RETRY "),
           **compare(sweep, ref)}
    res["ok"] = res["ok"] and p.returncode == 0 and res["kills"] >= kills and still_running == 0
    return res


def run_s3(cluster_factory, work: Path, ref: str, max_steps: int, down_s: float) -> dict:
    from s3server import SeaweedS3

    with SeaweedS3(work / "s3") as s3:
        os.environ.update(s3.env)  # the cluster's workers inherit it from `ray start`
        cluster = cluster_factory()
        try:
            root = f"s3://{s3.bucket}/chaos"
            spec = write_spec(work / "s3.yaml", "chaos", root, max_steps, 30)
            sweep = f"{root}/chaos"
            logp = work / "s3.log"
            t0 = time.time()
            p = driver(spec, cluster.address, logp)
            t_end = time.monotonic() + 1800
            while not any(t["sealed"] > 0 for t in running_trials(sweep)):
                if p.poll() is not None or time.monotonic() > t_end:
                    raise RuntimeError("no rows sealed before the outage:\n" + logp.read_text()[-3000:])
                time.sleep(1)
            log(f"stopping the S3 server for {down_s:g} s")
            t_out = time.time()
            s3.restart(down_s=down_s)
            outage = time.time() - t_out  # stop + down_s + start until it answers
            log(f"S3 server back after {outage:.1f} s")
            wait(p, None, None, 3600)
            text = logp.read_text(errors="replace")
            res = {"outage_s": round(outage, 1), "down_s": down_s,
                   "wall_s": round(time.time() - t0, 1), "driver_exit": p.returncode,
                   "storage_retries_logged": text.count("retrying in"), "trial_retries_logged": text.count("RETRY "),
                   **compare(sweep, ref)}
            res["ok"] = res["ok"] and p.returncode == 0
            return res
        finally:
            cluster.stop()
            for k in s3.env:
                os.environ.pop(k, None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=12, help="worker SIGKILLs (the driver is killed once half-way)")
    ap.add_argument("--max-steps", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--s3", action="store_true", help="also the S3-restart run")
    ap.add_argument("--skip-chaos", action="store_true", help="only the reference (and --s3) runs")
    ap.add_argument("--s3-down", type=float, default=15.0, help="seconds the S3 server stays down")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if not only_loopback():
        print("chaos.py: run inside a loopback-only network namespace: "
              "unshare -n bash -c 'ip link set lo up && ...'", file=sys.stderr)
        return 2
    os.environ["PATH"] = VENV_BIN + os.pathsep + os.environ.get("PATH", "")
    work = Path(tempfile.mkdtemp(prefix="es-chaos-"))
    log(f"work dir {work}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_at_start": round(os.getloadavg()[0], 1)},
                     "max_steps": args.max_steps, "seed": args.seed}

    def save() -> None:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))

    ref = run_faulty_parts(args, work, results, save)
    if args.s3:
        results["s3"] = run_s3(lambda: RayCluster(num_cpus=2).start_head(), work, ref, args.max_steps, args.s3_down)
        s = results["s3"]
        log(f"s3 restart: server down {args.s3_down:g} s mid-sweep, {s['wall_s']:.0f} s; "
            f"{s['storage_retries_logged']} storage retries logged; features equal {s['features_equal']}, "
            f"evals equal {s['evals_equal']}, runs equal {s['runs_equal']}; duplicates "
            f"{s['features_duplicates']}/{s['evals_duplicates']}, missing {s['features_missing']}/{s['evals_missing']}")
    ok = all(results[k]["ok"] for k in ("chaos", "s3") if k in results)
    results["ok"] = ok
    save()
    log("PASS" if ok else "FAIL")
    return 0 if ok else 1


def run_faulty_parts(args, work: Path, results: dict, save) -> str:
    """The reference run and (unless --skip-chaos) the chaos run on one head; the reference's
    sweep path."""
    cluster = RayCluster(num_cpus=2).start_head()
    try:
        ref, wall = run_reference(cluster, work, args.max_steps)
        results["reference"] = {"wall_s": round(wall, 1)}
        log(f"reference: {wall:.0f} s")
        if args.skip_chaos:
            return ref
        results["chaos"] = run_chaos(cluster, work, ref, args.kills, args.max_steps, args.seed)
        c = results["chaos"]
        log(f"chaos: {c['kills']} worker kills + 1 driver kill, {c['wall_s']:.0f} s "
            f"(reference {wall:.0f} s, ×{c['wall_s'] / wall:.2f}); features equal {c['features_equal']}, "
            f"evals equal {c['evals_equal']}, runs equal {c['runs_equal']}; duplicates "
            f"{c['features_duplicates']}/{c['evals_duplicates']}, missing {c['features_missing']}/{c['evals_missing']}")
        save()
        return ref
    finally:
        cluster.stop()
        save()


if __name__ == "__main__":
    sys.exit(main())
