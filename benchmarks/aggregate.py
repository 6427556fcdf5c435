"""Sweep aggregation: Ray + Polars (edgesweep) against a single-process pandas loop, one run.

    unshare -n bash -c 'ip link set lo up && RAY_AUTH_MODE=disabled \
        .venv/bin/python benchmarks/aggregate.py [--trials 1000] [--reps 3] [--cpus 2]'

1. Writes a synthetic sweep with the real storage writer — ``--trials`` trials × 200 feature
   rows (every 100 steps, W = 10, sigma/alpha lists included) + 50 eval rows each — and
   compacts every trial, as the trainable does when a trial finishes. Cached in ``--dir``
   (rebuilt when the parameters differ).
2. Times, alternating so that drift on a shared machine hits both alike:
   * **ray+polars** — ``aggregate_sweep(use_ray=True)`` on a local Ray cluster with ``--cpus``
     CPUs (started once, outside the timed region; its start-up time is printed separately):
     ``storage.scan`` lists and validates the files, Ray tasks read their own trials' rows with
     a pushed-down filter and compute events, Polars builds ``runs``/``summary``, both are
     written. Scorecard and report off (neither has a pandas counterpart here).
   * **polars, 1 process** — the same with ``use_ray=False``.
   * **pandas loop** — the naive route: ``pd.read_parquet`` every file of the three tables,
     concatenate, drop duplicate (trial_id, step) rows keeping the newest attempt, then a Python
     loop over ``groupby("trial_id")`` computing the same events with the same
     ``edgesweep.analysis`` functions; nothing written.
3. Checks that the pandas loop's runs table equals edgesweep's on every event column (an
   independent re-implementation of the per-trial logic on 1,000 random trials), prints the
   medians and the ratio pandas / ray+polars.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time

import numpy as np
import pandas as pd
import polars as pl
from polars.testing import assert_frame_equal

from edgesweep.platform.aggregate import AggregateConfig, aggregate_sweep
from edgesweep.analysis.detectors import make_detector, replay
from edgesweep.analysis.evaluation import classify_run
from edgesweep.analysis.events import g23_precedence, grok_step, memorization_step
from edgesweep.analysis.stats import mode_int
from edgesweep.storage import TrialWriter, scan, write_table

SWEEP = "bench"
W = 10
EVERY = 100
N_FEATURES = 200
N_EVALS = 50
WORKLOADS = ["mod_add", "mod_sub", "mod_mul", "mod_sq", "multitask_2", "multitask_3", "dyck", "scan"]


# ------------------------------------------------------------------------------------------
# Synthetic sweep
# ------------------------------------------------------------------------------------------


def trial_rows(i: int):
    """Features and evals of trial i: g23 rises to a peak, weight-decay runs decline by 2–20×
    and grok; about a third of the controls decline too (the caveat) and few grok."""
    rng = np.random.default_rng(i)
    wd = 1.0 if i % 2 == 0 else 0.0
    steps = np.arange(1, N_FEATURES + 1) * EVERY
    peak_at = rng.integers(20, 60) * EVERY
    grok = None
    if wd > 0 or rng.random() < 0.1:
        grok = int(rng.integers(90, 180)) * EVERY * 1  # multiple of 100; evals every 400 round it up
    declines = wd > 0 or rng.random() < 0.35
    factor = rng.uniform(2, 20) if declines else 1.0
    start = (grok - rng.integers(10, 40) * EVERY) if (declines and grok) else rng.integers(80, 150) * EVERY
    base = np.where(steps < peak_at, steps / peak_at, 1.0) * 10.0
    decay = np.where(steps > start, np.minimum((steps - start) / (20 * EVERY), 1.0), 0.0)
    g23 = base / (1 + (factor - 1) * decay) * rng.lognormal(0, 0.05, steps.size)
    ratio = 1.4 * rng.lognormal(0, 0.04, steps.size)
    features = []
    for j, s in enumerate(steps):
        window = min(j + 2, W)
        sig = np.sort(rng.lognormal(0, 1, window))[::-1]
        features.append({
            "step": int(s), "window": window, "sigma": sig.tolist(),
            "k_star": int(rng.choice([1, 2, 2, 3])), "k_star_weighted": int(rng.choice([1, 2])),
            "gap_ratio": float(ratio[j]), "gap": float(sig[0] - sig[1]) if window > 1 else math.nan,
            "g23": float(g23[j]) if window >= 3 else math.nan,
            "delta_gram_fro": float(rng.lognormal()), "adiabatic": float(rng.lognormal(-1, 1)),
            "alpha": rng.random(window).tolist(), "subspace_rotation": float(rng.random()),
            "bbp_ratio": float(rng.lognormal(3, 0.5)), "lr": 1e-3, "update_norm": 1.0,
            "gram_ms": 0.1, "nonfinite": bool(rng.random() < 0.002), "loss": 1.0, "grad_norm": 1.0,
        })
    evals = []
    for s in np.arange(1, N_EVALS + 1) * (N_FEATURES * EVERY // N_EVALS):
        test = 0.97 if grok is not None and s >= grok else float(rng.uniform(0, 0.5))
        memo = 1.0 if s >= 3000 else float(rng.uniform(0.5, 0.98))
        evals.append({"step": int(s), "train_loss": 1 - memo, "test_loss": 1 - test, "train_acc": memo,
                      "test_acc": test, "grok_acc": test, "memo_acc": memo})
    trial = {"trial_id": f"t{i:05d}", "workload": WORKLOADS[i % len(WORKLOADS)], "optimizer": "adamw",
             "weight_decay": wd, "attempt": 0, "seed": i, "status": "completed",
             "steps": int(steps[-1]),
             "config": json.dumps({"monitor": {"window": W}, "stop": {"grok_threshold": 0.95,
                                                                      "memo_threshold": 0.99}})}
    return trial, features, evals


def build(root: str, n: int) -> str:
    stamp = os.path.join(root, f".built-{n}")
    path = os.path.join(root, SWEEP)
    if os.path.exists(stamp):
        return path
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    t0 = time.perf_counter()
    trials = []
    for i in range(n):
        trial, features, evals = trial_rows(i)
        w = TrialWriter(root, SWEEP, trial["trial_id"], 0,
                        {k: trial[k] for k in ("workload", "optimizer", "weight_decay")})
        # two flushes, like a trial that checkpointed once, then compaction
        for rows, table in ((features, "features"), (evals, "evals")):
            for r in rows[: len(rows) // 2]:
                w.add(table, r)
        w.flush()
        for rows, table in ((features, "features"), (evals, "evals")):
            for r in rows[len(rows) // 2:]:
                w.add(table, r)
        w.compact()
        trials.append(trial)
    write_table(root, SWEEP, "trials", pl.DataFrame(trials))
    open(stamp, "w").close()
    print(f"built {n} trials in {time.perf_counter() - t0:.1f}s → {path}")
    return path


# ------------------------------------------------------------------------------------------
# The naive pandas route
# ------------------------------------------------------------------------------------------


def read_table_pandas(path: str, table: str, columns: list[str]) -> pd.DataFrame:
    files = sorted(glob.glob(os.path.join(path, table, "**", "*.parquet"), recursive=True))
    return pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)


def pandas_runs(path: str) -> pd.DataFrame:
    trials = read_table_pandas(path, "trials", ["trial_id", "workload", "optimizer", "weight_decay",
                                                 "seed", "attempt", "config"])
    trials = trials.sort_values("attempt").drop_duplicates("trial_id", keep="last")
    feats = read_table_pandas(path, "features", ["trial_id", "attempt", "step", "window", "k_star",
                                                  "gap_ratio", "g23", "nonfinite"])
    feats = feats.sort_values("attempt").drop_duplicates(["trial_id", "step"], keep="last")
    evals = read_table_pandas(path, "evals", ["trial_id", "attempt", "step", "grok_acc", "memo_acc"])
    evals = evals.sort_values("attempt").drop_duplicates(["trial_id", "step"], keep="last")
    fgroups = dict(tuple(feats.groupby("trial_id")))
    egroups = dict(tuple(evals.groupby("trial_id")))
    rows = []
    for t in trials.itertuples(index=False):
        conf = json.loads(t.config)
        f = fgroups[t.trial_id].sort_values("step")
        f = f[~f["nonfinite"].fillna(False).astype(bool)]
        e = egroups[t.trial_id].sort_values("step")
        gs = grok_step(e["step"].to_numpy(), e["grok_acc"].to_numpy(float), conf["stop"]["grok_threshold"])
        ms = memorization_step(e["step"].to_numpy(), e["memo_acc"].to_numpy(float), conf["stop"]["memo_threshold"])
        steps, g23, ratio = f["step"].to_numpy(), f["g23"].to_numpy(float), f["gap_ratio"].to_numpy(float)
        full = f["window"].to_numpy() == conf["monitor"]["window"]  # the default: full windows only
        prec = g23_precedence(steps[full], g23[full], gs)
        alarm = replay(make_detector(window=conf["monitor"]["window"]), f.to_dict("records"), [])
        out = classify_run(alarm, gs)
        pre = full & (steps < gs if gs is not None else True)
        r = ratio[pre]
        r = r[np.isfinite(r)]
        rows.append({"trial_id": t.trial_id, "grok_step": gs, "memorization_step": ms,
                     "g23_early": prec.g23_early, "g23_grok": prec.g23_grok, "g23_decline": prec.decline,
                     "preceded": prec.preceded, "g23_peak": prec.g23_peak, "g23_final": prec.g23_final,
                     "decline_peak_to_final": prec.decline_peak_to_final, "alarm_step": out.alarm_step,
                     "lead_steps": out.lead, "detector_outcome": out.outcome,
                     "k_star_mode": mode_int(f["k_star"].to_numpy(float)[full]),
                     "gap_ratio_pre_grok": float(r.mean()) if r.size else math.nan,
                     "n_windows": len(f)})
    # The table as pandas holds it, plus the rows: pandas turns None in integer columns into
    # NaN, so the comparison below rebuilds the typed table from the rows instead.
    return pd.DataFrame(rows), rows


COMPARE = ["trial_id", "grok_step", "memorization_step", "g23_early", "g23_grok", "g23_decline",
           "preceded", "g23_peak", "g23_final", "decline_peak_to_final", "alarm_step", "lead_steps",
           "detector_outcome", "k_star_mode", "gap_ratio_pre_grok", "n_windows"]


def same_runs(path: str, rows: list[dict]) -> tuple[bool, str]:
    ours = scan(path, "runs").collect().select(COMPARE).sort("trial_id")
    theirs = pl.DataFrame(rows, schema=ours.schema).sort("trial_id")
    try:
        assert_frame_equal(ours, theirs)
    except AssertionError as exc:
        return False, str(exc)[:2000]
    return True, ""


# ------------------------------------------------------------------------------------------


def machine() -> str:
    model = "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, {platform.platform()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "esagg-bench"))
    args = ap.parse_args()

    print(f"machine: {machine()}")
    print(f"polars {pl.__version__}, pandas {pd.__version__}")
    path = build(os.path.join(args.dir, str(args.trials)), args.trials)
    n_files = sum(len(glob.glob(os.path.join(path, t, "**", "*.parquet"), recursive=True))
                  for t in ("trials", "features", "evals"))
    print(f"sweep: {args.trials} trials, {n_files} Parquet files")

    import ray
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    tmp = tempfile.mkdtemp(prefix="esagg-", dir="/tmp")
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, _temp_dir=tmp, log_to_driver=False)
    t_init = time.perf_counter() - t0
    cfg = AggregateConfig(scorecard=False)
    try:
        # warm-up: Ray worker processes start (and import edgesweep) on first use
        t0 = time.perf_counter()
        aggregate_sweep(path, use_ray=True, report=False, config=cfg)
        t_warm = time.perf_counter() - t0
        times = {"ray+polars": [], "polars, 1 process": [], "pandas loop": []}
        rows = None
        for _ in range(args.reps):
            t0 = time.perf_counter()
            _, rows = pandas_runs(path)
            times["pandas loop"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            aggregate_sweep(path, use_ray=False, report=False, config=cfg)
            times["polars, 1 process"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            aggregate_sweep(path, use_ray=True, report=False, config=cfg)
            times["ray+polars"].append(time.perf_counter() - t0)
        ok, why = same_runs(path, rows)
        t0 = time.perf_counter()
        aggregate_sweep(path, use_ray=True, report=False, config=AggregateConfig(scorecard=True))
        t_card = time.perf_counter() - t0
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"ray.init: {t_init:.1f}s; first ray aggregation (workers start): {t_warm:.1f}s")
    print(f"{'method':<20} {'median s':>9}   runs (s)")
    for k, v in times.items():
        print(f"{k:<20} {med[k]:>9.2f}   {', '.join(f'{x:.2f}' for x in v)}")
    print(f"ratio pandas loop / ray+polars:        {med['pandas loop'] / med['ray+polars']:.2f}x")
    print(f"ratio pandas loop / polars, 1 process: {med['pandas loop'] / med['polars, 1 process']:.2f}x")
    print(f"ray+polars with the scorecard on (every run's columns gathered in the driver): {t_card:.2f}s")
    print(f"same runs table (pandas loop vs edgesweep, {len(COMPARE)} columns): {'YES' if ok else 'NO'}")
    if not ok:
        print(why)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
