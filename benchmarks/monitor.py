"""Monitor cost per snapshot against the memory-bandwidth bound, measured side by side.

    python benchmarks/monitor.py [--sizes 1e5,1e6,1e7,1e8] [--window 10] [--reps 7]

For each P: the time of one pass reading the (W+1)·P ring once (``ring.sum()``, the
bandwidth bound on this machine), the monitor's cost per snapshot in its two exact-window
modes — "float64" (the default: every block upcast, exact products and sums) and "block"
(float32 dot products per block, float64 across blocks) — their ratios to the bound, and the sketched mode (count-sketch to d = 10W): cost and gap-ratio error against
the exact path on the same stream. A second table compares count-sketch with a dense
Gaussian Johnson–Lindenstrauss projection (cost per row and gap-ratio error), which is the
measurement behind the choice of count-sketch.

All times are medians over --reps snapshots after the window is full; ratios are computed
within one run because the machine is shared and absolute times drift.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import numpy as np
import torch

from edgesweep.spectral import CountSketch, MonitorConfig, SpectralMonitor, window_features


def median_time(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class SnapshotStream:
    """θ_t of a random walk with a 3-direction backbone (so spectra have an edge); the
    next snapshot is made outside the timed region."""

    def __init__(self, p, seed=0):
        self.gen = torch.Generator().manual_seed(seed)
        self.basis = torch.randn(3, p, generator=self.gen)
        self.theta = torch.randn(p, generator=self.gen)
        self.noise = torch.empty(p)

    def next(self):
        coef = torch.randn(3, generator=self.gen) * torch.tensor([3.0, 1.5, 0.7])
        self.noise.normal_(generator=self.gen)
        self.theta.add_(coef @ self.basis, alpha=1e-3).add_(self.noise, alpha=3e-4)
        return self.theta


def monitor_cost(cfg, p, reps):
    """Median seconds per observe() once the window is full, and the rows it produced."""
    mon = SpectralMonitor(cfg)
    stream = SnapshotStream(p)
    for i in range(cfg.window + 1):
        mon.observe(stream.next(), step=i, lr=1e-3)
    rows, times = [], []
    for i in range(reps):
        snap = stream.next()
        t0 = time.perf_counter()
        rows.append(mon.observe(snap, step=cfg.window + 1 + i, lr=1e-3))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), rows, mon


def gaussian_project(vec, d, seed, chunk=1 << 16):
    """Dense Gaussian JL row: y = A δ / √d with A generated chunk by chunk from a seed
    (the only way a dense map fits in memory at large P)."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(d, dtype=torch.float64)
    for a in range(0, vec.numel(), chunk):
        part = vec[a:a + chunk]
        mat = torch.randn(d, part.numel(), generator=gen, dtype=vec.dtype)
        out += (mat @ part).double()
    return out / math.sqrt(d)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e5,1e6,1e7,1e8")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); "
                    "a 1-CPU Ray trial runs with 1")
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    W = args.window
    d = 10 * W
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}; W={W}, float32 snapshots, d={d}")
    header = (f"{'P':>11} | {'read (W+1)P':>11} | {'float64*':>10} {'ratio':>6} | {'block':>9} {'ratio':>6} "
              f"| {'sketch':>9} {'ratio':>6} | {'sketch gap-ratio err':>20}")
    print(header)
    print("-" * len(header))
    for p in sizes:
        need = (W + 1 + 7) * p * 4 + 8 * p  # ring, prev, stream, scratch, sketch hash
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        if need > 0.7 * avail:
            print(f"{p:>11,} | skipped: needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB free")
            continue
        t_exact, rows_exact, mon = monitor_cost(MonitorConfig(window=W, params="all"), p, args.reps)
        t_read = min(median_time(mon.ring.sum, args.reps), median_time(mon.ring.sum, args.reps))
        del mon
        t_block, _, mon = monitor_cost(MonitorConfig(window=W, params="all", accumulate="block"), p, args.reps)
        del mon
        t_sketch, rows_sketch, mon = monitor_cost(
            MonitorConfig(window=W, params="all", sketch_dim=d, sketch_seed=1), p, args.reps)
        del mon
        errs = [abs(b["gap_ratio"] / a["gap_ratio"] - 1) for a, b in zip(rows_exact, rows_sketch)
                if math.isfinite(a["gap_ratio"]) and math.isfinite(b["gap_ratio"])]
        print(f"{p:>11,} | {t_read * 1e3:>9.2f}ms | {t_exact * 1e3:>8.2f}ms {t_exact / t_read:>6.2f} | "
              f"{t_block * 1e3:>7.2f}ms {t_block / t_read:>6.2f} | {t_sketch * 1e3:>7.2f}ms "
              f"{t_sketch / t_read:>6.2f} | median {statistics.median(errs):.3f} max {max(errs):.3f}")

    print("* float64 = the default accumulation; ratio = monitor time per snapshot / read time")
    print()
    print("count-sketch vs dense Gaussian JL, d = 10W, one row, same windows (20 seeds, P=20,000 for errors)")
    print(f"{'P':>11} | {'count-sketch':>12} | {'gaussian JL':>12} | {'JL/CS':>6}")
    for p in (10**5, 10**6):
        vec = torch.randn(p)
        cs = CountSketch(p, d, seed=0)
        t_cs = median_time(lambda: cs.project(vec), 3)
        t_g = median_time(lambda: gaussian_project(vec, d, 0), 3)
        print(f"{p:>11,} | {t_cs * 1e3:>10.2f}ms | {t_g * 1e3:>10.2f}ms | {t_g / t_cs:>6.0f}")
    e_cs, e_g = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        u, _ = np.linalg.qr(rng.standard_normal((W, W)))
        v, _ = np.linalg.qr(rng.standard_normal((20000, 2)))
        rows = torch.from_numpy((u[:, :2] * [10.0, 3.0]) @ v.T + 0.02 * rng.standard_normal((W, 20000)))
        exact = window_features(rows)["gap_ratio"]
        cs = CountSketch(20000, d, seed=seed)
        e_cs.append(abs(window_features(torch.stack([cs.project(r) for r in rows]))["gap_ratio"] / exact - 1))
        e_g.append(abs(window_features(torch.stack([gaussian_project(r, d, seed) for r in rows]))["gap_ratio"] / exact - 1))
    print(f"gap-ratio error, median (max): count-sketch {statistics.median(e_cs):.3f} ({max(e_cs):.3f}), "
          f"gaussian {statistics.median(e_g):.3f} ({max(e_g):.3f})")


if __name__ == "__main__":
    main()
