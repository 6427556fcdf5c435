"""Storage benchmark: sealing writer throughput, Polars query vs a pandas row loop, compaction.

    python benchmarks/storage.py [--trials 48] [--rows 20000] [--output benchmarks/storage.md]

One run measures, on one machine, with the same data:

1. rows/s through ``TrialWriter.add`` + ``flush`` (every flush seals a Parquet part: temp file,
   fsync, rename, fsync dir), at two flush cadences;
2. a sweep of ``--trials`` trials × ``--rows`` feature rows written with that writer (a flush per
   1,000 rows; 1 in 8 trials also has a second attempt replaying its last 2,000 rows), then
   the query "newest attempt per (trial, step); weight_decay = 1.0 and step ≥ half; per trial:
   row count, max g23, mean gap_ratio" timed
   a. with ``edgesweep.storage.scan`` + Polars (listing, footer checks, dedupe included),
   b. with a plain pandas read of the same files + a Python row loop doing the same dedupe,
      filter and aggregation (given the column projection for free);
   the results of a and b are checked equal;
3. the same Polars query on a compacted copy of the sweep, file counts and bytes per row
   before and after.

The query variants run interleaved, round after round, so that each ratio compares runs made
under the same machine load; reported times and ratios are medians over rounds. Ratios are
what to compare across machines.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

from edgesweep.storage import TrialWriter, compact_sweep, scan

SWEEP = "bench"
EVERY = 50  # optimizer steps between snapshots


def feature_rows(n: int, seed: int, start: int = 0) -> list[dict]:
    """Realistic feature rows: W = 10 singular values and alphas, the scalar features."""
    rng = np.random.default_rng(seed)
    sigma = np.sort(rng.random((n, 10)), axis=1)[:, ::-1].tolist()
    alpha = rng.random((n, 10)).tolist()
    g23 = (np.exp(-np.arange(n) / n * 3) * rng.lognormal(0, 0.1, n)).tolist()
    gap = rng.random(n).tolist()
    rows = []
    for i in range(n):
        rows.append({
            "step": (start + i) * EVERY, "window": 10, "sigma": sigma[i], "k_star": 2,
            "k_star_weighted": 2, "gap_ratio": 1.0 + gap[i], "gap": gap[i], "g23": g23[i],
            "delta_gram_fro": gap[i] * 0.1, "delta_gram_fro_exact": gap[i] * 0.1,
            "adiabatic": gap[i] * 2, "alpha": alpha[i], "subspace_rotation": gap[i] * 0.5,
            "bbp_ratio": 50.0 + gap[i], "lr": 1e-3, "update_norm": 0.01, "gram_ms": 0.2,
            "nonfinite": False, "loss": 1.0 - i / n, "grad_norm": 0.5,
        })
    return rows


def partition(i: int) -> dict:
    workloads = ["mod_add", "mod_sub", "mod_mul", "mod_sq", "multitask_2", "multitask_3", "dyck", "scan"]
    return {"workload": workloads[i % 8], "optimizer": "adamw", "weight_decay": 1.0 if (i // 8) % 2 == 0 else 0.0}


def write_rows(root, trial_id, attempt, part, rows, flush_every) -> float:
    """Seconds to add + seal `rows`."""
    t0 = time.perf_counter()
    w = TrialWriter(root, SWEEP, trial_id, attempt, part)
    for i, row in enumerate(rows):
        w.add("features", row)
        if (i + 1) % flush_every == 0:
            w.flush()
    w.flush()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- the query
def polars_query(root, half_step: int) -> pl.DataFrame:
    return (scan(root, "features")
            .filter(pl.col("weight_decay") == 1.0, pl.col("step") >= half_step)
            .group_by("trial_id")
            .agg(n=pl.len(), g23_max=pl.col("g23").max(), gap_ratio_mean=pl.col("gap_ratio").mean())
            .sort("trial_id")
            .collect())


def pandas_row_loop(root, half_step: int) -> pl.DataFrame:
    """What one writes without a query engine: read every file, loop over rows."""
    files = sorted(p for p in Path(root, SWEEP, "features").rglob("*.parquet")
                   if not p.name.startswith("."))
    cols = ["trial_id", "step", "attempt", "weight_decay", "g23", "gap_ratio"]
    frame = pd.concat([pd.read_parquet(f, columns=cols) for f in files], ignore_index=True)
    newest: dict[tuple, tuple] = {}
    for row in frame.itertuples(index=False):
        key = (row.trial_id, row.step)
        kept = newest.get(key)
        if kept is None or row.attempt > kept[0]:
            newest[key] = (row.attempt, row.weight_decay, row.g23, row.gap_ratio)
    agg: dict[str, list] = {}
    for (trial_id, step), (_, wd, g23, gap_ratio) in newest.items():
        if wd == 1.0 and step >= half_step:
            a = agg.setdefault(trial_id, [0, float("-inf"), 0.0])
            a[0] += 1
            a[1] = max(a[1], g23)
            a[2] += gap_ratio
    ids = sorted(agg)
    return pl.DataFrame({"trial_id": ids, "n": [agg[t][0] for t in ids],
                         "g23_max": [agg[t][1] for t in ids],
                         "gap_ratio_mean": [agg[t][2] / agg[t][0] for t in ids]},
                        schema_overrides={"n": pl.UInt32})


def check_same(a: pl.DataFrame, b: pl.DataFrame) -> None:
    """Same trials and counts; float aggregates equal up to summation order."""
    assert a["trial_id"].to_list() == b["trial_id"].to_list()
    assert a["n"].to_list() == b["n"].to_list()
    for col in ("g23_max", "gap_ratio_mean"):
        assert np.allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-12, atol=0), col


def median_time(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def dataset_stats(root) -> tuple[int, int]:
    files = [p for p in Path(root, SWEEP, "features").rglob("*.parquet") if not p.name.startswith(".")]
    return len(files), sum(p.stat().st_size for p in files)


def machine() -> str:
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                      if line.startswith("Model name")), "?")
    except (OSError, subprocess.SubprocessError):
        pass
    return (f"nproc {os.cpu_count()}, CPU {model}, Python {platform.python_version()}, "
            f"polars {pl.__version__}, pyarrow {pa.__version__}, pandas {pd.__version__}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=48)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", help="work directory (default: a temp dir, removed afterwards)")
    ap.add_argument("--output", help="also write the markdown table to this file")
    args = ap.parse_args(argv)

    work = Path(args.dir or tempfile.mkdtemp(prefix="edgesweep-bench-"))
    parts_root, compact_root = work / "parts", work / "compacted"
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    try:
        # 1. writer throughput; the two cadences interleaved so they see the same disk weather
        wroot = work / "writer"
        rows = feature_rows(args.rows, seed=1)
        write_rows(wroot, "warmup", 0, partition(0), rows[:2000], 1000)  # imports, codecs
        rates = {200: [], 1000: []}
        for rep in range(3):
            for flush_every in rates:
                secs = write_rows(wroot, f"w{flush_every}-{rep}", 0, partition(0), rows, flush_every)
                rates[flush_every].append(args.rows / secs)
        shutil.rmtree(wroot)

        # 2. the sweep, as parts
        t0 = time.perf_counter()
        total_rows = 0
        for i in range(args.trials):
            rows = feature_rows(args.rows, seed=100 + i)
            write_rows(parts_root, f"trial{i:02d}", 0, partition(i), rows, 1000)
            total_rows += len(rows)
            if i % 8 == 0:  # a restored trial: attempt 1 replays the last 2,000 rows
                replay = feature_rows(2000, seed=1000 + i, start=args.rows - 2000)
                write_rows(parts_root, f"trial{i:02d}", 1, partition(i), replay, 1000)
                total_rows += len(replay)
        build_s = time.perf_counter() - t0
        half = args.rows // 2 * EVERY
        unique_rows = args.trials * args.rows

        # 3. a compacted copy of the same sweep
        shutil.copytree(parts_root, compact_root)
        t0 = time.perf_counter()
        compact_sweep(compact_root, SWEEP, tables=("features",))
        compact_s = time.perf_counter() - t0
        files_before, bytes_before = dataset_stats(parts_root)
        files_after, bytes_after = dataset_stats(compact_root)

        # 4. the query: rounds interleave the three ways so each ratio compares like with like
        t_parts, t_comp, t_loop, t_scan_parts, t_scan_comp = [], [], [], [], []
        ratio_loop, ratio_compact = [], []
        reference = None
        for rep in range(args.repeats):
            tp, res_p = median_time(lambda: polars_query(parts_root, half), 1)
            tc, res_c = median_time(lambda: polars_query(compact_root, half), 1)
            t_parts.append(tp)
            t_comp.append(tc)
            ratio_compact.append(tp / tc)
            check_same(res_p, res_c)
            t_scan_parts.append(median_time(lambda: scan(parts_root, "features"), 1)[0])
            t_scan_comp.append(median_time(lambda: scan(compact_root, "features"), 1)[0])
            if rep % 2 == 0:  # the row loop is slow; every other round
                tl, res_l = median_time(lambda: pandas_row_loop(parts_root, half), 1)
                t_loop.append(tl)
                ratio_loop.append(tl / tp)
                check_same(res_p, res_l)
            reference = res_p
        assert reference is not None and reference.height > 0
        med = statistics.median

        say("| measurement | value |")
        say("|---|---|")
        say(f"| writer: rows/s, add + seal a part every 200 rows (fsync each) | {med(rates[200]):,.0f} |")
        say(f"| writer: rows/s, add + seal a part every 1,000 rows | {med(rates[1000]):,.0f} |")
        say(f"| sweep written: trials × rows (+ replayed rows) | {args.trials} × {args.rows:,} "
            f"(+{total_rows - unique_rows:,}) in {build_s:.1f} s |")
        say(f"| query, Polars `scan` + collect, parts | {med(t_parts) * 1000:,.0f} ms "
            f"(of which `scan()` listing + footer checks {med(t_scan_parts) * 1000:,.0f} ms) |")
        say(f"| query, pandas read + Python row loop, parts | {med(t_loop) * 1000:,.0f} ms |")
        say(f"| **ratio row loop / Polars** (median of per-round ratios) | **{med(ratio_loop):.1f}×** |")
        say(f"| feature files before → after compaction | {files_before:,} → {files_after:,} "
            f"(compaction {compact_s:.1f} s) |")
        say(f"| query, Polars `scan` + collect, compacted | {med(t_comp) * 1000:,.0f} ms "
            f"(of which `scan()` {med(t_scan_comp) * 1000:,.0f} ms) |")
        say(f"| **query time ratio parts / compacted** (median of per-round ratios) | "
            f"**{med(ratio_compact):.1f}×** |")
        say(f"| bytes per row, parts / compacted (zstd; sigma + alpha are 20 random "
            f"doubles per row) | {bytes_before / total_rows:.1f} / {bytes_after / unique_rows:.1f} |")
        say()
        say(f"Machine: {machine()}. {args.repeats} interleaved rounds (row loop: "
            f"{len(t_loop)}); writer rates: median of 3. Each round checks that the Polars "
            f"query on parts, on the compacted copy and the row loop return the same result.")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
