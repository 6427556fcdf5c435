"""Monitor cost per snapshot against the memory-bandwidth bound, measured side by side.

    python benchmarks/monitor.py [--sizes 1e7,1e8] [--window 10] [--reps 7] [--threads 1]
    python benchmarks/monitor.py --views 150 --sizes 1e7     # per-parameter calls vs a gather
    python benchmarks/monitor.py --sketch-1e9                # P = 10⁹ sketched, memory (heavy)
    python benchmarks/monitor.py --compile                   # numba compile / cache-load time
    python benchmarks/monitor.py --state-sizes               # checkpointed state per preset
    python benchmarks/monitor.py --jl                        # count-sketch vs dense Gaussian JL

Exact table, for each P (W = 10, float32 snapshots of a random walk with a 3-direction
backbone, times are medians over --reps snapshots once the window is full). Every variant's
time is paired with a read of its own ring taken right before it, and its ratio is the median
of the per-pair ratios, because the machine is shared and absolute times drift:

* read (W+1)P — ``ring.sum()``: one pass over the window, the bandwidth bound;
* copy part — a kernel that only reads θ and θ_prev and writes δ and θ_prev (the traffic a
  snapshot adds to the read, whatever computes the dots);
* dot part — a kernel that only computes the W+1 float64 dot products (reads the ring);
* fused — the monitor's kernel alone (both parts in one pass);
* monitor — ``SpectralMonitor.observe`` with the numba backend: everything (kernel, eigen-
  decompositions, subspace rotation, features);
* torch path — ``observe`` on the torch path (what CUDA and numba-less CPUs run);
* old block — the removed ``accumulate: block`` mode's P-length work (float32 products per
  64k block, blocks summed in float64), to show whether it still buys anything;
* sketch — ``observe`` with a count-sketch to d = 10W, and its gap-ratio error against the
  exact monitor on the same stream.
"""

from __future__ import annotations

import argparse
import gc
import io
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from edgesweep.spectral import CountSketch, MonitorConfig, SpectralMonitor, kernels, window_features
from edgesweep.spectral.monitor import monitor_state_bytes

FASTMATH = {"reassoc", "contract"}


def _diagnostic_kernels():
    """The two halves of the fused pass, compiled the same way (block slices, fixed parts)."""
    from numba import njit, prange

    from edgesweep.spectral._numba_kernels import _dots_into

    @njit(parallel=True, fastmath=FASTMATH)
    def copy_part(view, prev, ring, slot, block, nparts):
        n = view.shape[0]
        nblocks = (n + block - 1) // block
        parts = min(nparts, nblocks)
        per = (nblocks + parts - 1) // parts
        for p in prange(parts):
            for b in range(p * per, min(nblocks, (p + 1) * per)):
                a, e = b * block, min(n, (b + 1) * block)
                src, old, x = view[a:e], prev[a:e], ring[slot, a:e]
                for i in range(src.shape[0]):
                    t = src[i]
                    x[i] = t - old[i]
                    old[i] = t

    @njit(parallel=True, fastmath=FASTMATH)
    def dot_part(ring, slot, block, nparts):
        rows, n = ring.shape
        nblocks = (n + block - 1) // block
        parts = min(nparts, nblocks)
        per = (nblocks + parts - 1) // parts
        partial = np.zeros((parts, rows))
        for p in prange(parts):
            for b in range(p * per, min(nblocks, (p + 1) * per)):
                a, e = b * block, min(n, (b + 1) * block)
                _dots_into(ring, a, e, ring[slot, a:e], partial[p])
        return partial.sum(axis=0)

    return copy_part, dot_part


class SnapshotStream:
    """θ_t of a random walk with a 3-direction backbone (so spectra have an edge); the
    next snapshot is made outside the timed region. Same seed → same snapshots."""

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


def paired(read, fn, reps, prepare=None):
    """Median time of fn and median of per-pair ratios fn/read, read measured just before."""
    t_fn, ratios = [], []
    for _ in range(reps):
        if prepare is not None:
            prepare()
        t0 = time.perf_counter()
        read()
        t1 = time.perf_counter()
        fn()
        t2 = time.perf_counter()
        t_fn.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    return statistics.median(t_fn), statistics.median(ratios)


def filled_monitor(cfg, p, seed=0):
    mon = SpectralMonitor(cfg)
    stream = SnapshotStream(p, seed)
    for i in range(cfg.window + 1):
        mon.observe(stream.next(), step=i, lr=1e-3)
    return mon, stream


def observe_cost(cfg, p, reps, backend):
    """(median observe seconds, median ratio to a read of its ring, rows, monitor)."""
    os.environ[kernels.BACKEND_ENV] = backend
    mon, stream = filled_monitor(cfg, p)
    rows, step = [], [cfg.window + 1]
    snap = {}

    def prepare():
        snap["x"] = stream.next()

    def fn():
        rows.append(mon.observe(snap["x"], step=step[0], lr=1e-3))
        step[0] += 1

    t, ratio = paired(mon.ring.sum, fn, reps, prepare)
    os.environ[kernels.BACKEND_ENV] = "auto"
    return t, ratio, rows, mon, stream


def old_block_work(mon, view, block=1 << 16):
    """The removed accumulate: block mode's P-length work, as it was written."""
    slot = 0
    torch.sub(view, mon.prev, out=mon.ring[slot])
    mon.prev.copy_(view)
    ring, x = mon.ring, mon.ring[slot]
    parts = [ring[:, a:a + block] @ x[a:a + block] for a in range(0, ring.shape[1], block)]
    return torch.stack(parts).double().sum(0).numpy()


def exact_table(sizes, W, reps):
    copy_part, dot_part = _diagnostic_kernels()
    nk = kernels.numba_kernels()
    d = 10 * W
    with kernels.threads() as numba_threads:
        pass
    print(f"exact monitor, W={W}, float32, threads {torch.get_num_threads()} (numba {numba_threads}); "
          f"ratio = time / one read of the (W+1)·P ring, paired")
    cols = ["P", "read (W+1)P", "copy part", "dot part", "fused kernel", "monitor", "torch path",
            "old block", f"sketch d={d}", "sketch gap-ratio err"]
    print(" | ".join(cols))
    for p in sizes:
        need = ((W + 1) + 1 + 5) * p * 4
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        if need > 0.7 * avail:
            print(f"{p:,} | skipped: needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB free")
            continue
        cfg = MonitorConfig(window=W, params="all")
        t_torch, r_torch, _, mon, stream = observe_cost(cfg, p, reps, "torch")
        del mon, stream
        gc.collect()
        t_mon, r_mon, rows_exact, mon, stream = observe_cost(cfg, p, reps, "numba")
        ring, prev = mon.ring.numpy(), mon.prev.numpy()
        view = stream.next().numpy()
        read = mon.ring.sum  # the exact window's read pairs every variant below, the sketch's too
        block = cfg.block
        with kernels.threads():  # compile outside the timing
            copy_part(view, prev, ring, 0, block, 64)
            dot_part(ring, 0, block, 64)
        t_read = statistics.median([_time(read) for _ in range(reps)])
        t_copy, r_copy = paired(read, guarded(lambda: copy_part(view, prev, ring, 0, block, 64)), reps)
        t_dot, r_dot = paired(read, guarded(lambda: dot_part(ring, 0, block, 64)), reps)
        t_fused, r_fused = paired(read, guarded(lambda: nk.exact_update(view, prev, ring, 0, 0, block, 64)),
                                  reps)
        vt = torch.from_numpy(view)
        t_old, r_old = paired(read, lambda: old_block_work(mon, vt), reps)
        stream = view = vt = None  # free P-length arrays (rebinding: closures above name them)
        gc.collect()
        sk_cfg = MonitorConfig(window=W, params="all", sketch_dim=d, sketch_seed=1)
        os.environ[kernels.BACKEND_ENV] = "numba"
        sk, sk_stream = filled_monitor(sk_cfg, p)
        rows_sketch, snap, step = [], {}, [W + 1]

        def sk_prepare():
            snap["x"] = sk_stream.next()

        def sk_fn():
            rows_sketch.append(sk.observe(snap["x"], step=step[0], lr=1e-3))
            step[0] += 1

        t_sk, r_sk = paired(read, sk_fn, reps, sk_prepare)
        os.environ[kernels.BACKEND_ENV] = "auto"
        errs = [abs(b["gap_ratio"] / a["gap_ratio"] - 1) for a, b in zip(rows_exact, rows_sketch)
                if math.isfinite(a["gap_ratio"]) and math.isfinite(b["gap_ratio"])]
        mon = ring = prev = read = sk = sk_stream = None
        gc.collect()
        cell = lambda t, r: f"{t * 1e3:.1f} ms ({r:.2f}×)"  # noqa: E731
        print(" | ".join([f"{p:,}", f"{t_read * 1e3:.1f} ms", cell(t_copy, r_copy), cell(t_dot, r_dot),
                          cell(t_fused, r_fused), cell(t_mon, r_mon), cell(t_torch, r_torch),
                          cell(t_old, r_old), cell(t_sk, r_sk),
                          f"median {statistics.median(errs):.3f} max {max(errs):.3f}"]))
    print("copy part: reads θ and θ_prev, writes δ and θ_prev; dot part: W+1 float64 dot products "
          "(reads the ring); fused = both in one pass")


def guarded(fn):
    """fn under kernels.threads(): numba threads = torch's, torch's count restored after."""
    def run():
        with kernels.threads():
            return fn()
    return run


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def views_table(sizes, W, reps, n_views):
    """observe(module with n_views parameters) — one kernel call per parameter — against a flat
    snapshot (one call) and a gather (torch.cat into one buffer, then one call)."""
    os.environ[kernels.BACKEND_ENV] = "numba"
    print(f"per-parameter kernel calls vs one flat call vs gather, {n_views} parameters, W={W}")
    print("P | flat (1 call) | per-parameter | gather (cat + 1 call)")
    for p in sizes:
        rng = np.random.default_rng(0)
        cuts = np.sort(rng.choice(np.arange(1, p), n_views - 1, replace=False))
        bounds = [0, *cuts.tolist(), p]
        stream = SnapshotStream(p)

        class Params(torch.nn.Module):
            def __init__(self):
                super().__init__()
                # parameters that are views into the stream's flat θ (shared storage)
                self.ps = torch.nn.ParameterList(
                    [torch.nn.Parameter(stream.theta[a:b], requires_grad=False)
                     for a, b in zip(bounds[:-1], bounds[1:])])

        model = Params()
        cfg = MonitorConfig(window=W, params="all")
        per, flat, gath = SpectralMonitor(cfg), SpectralMonitor(cfg), SpectralMonitor(cfg)
        buf = torch.empty(p)
        times = {"flat": [], "per": [], "gather": []}
        for i in range(W + 1 + reps):
            stream.next()
            t = {}
            t0 = time.perf_counter()
            flat.observe(stream.theta, step=i)
            t["flat"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            per.observe(model, step=i)
            t["per"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            torch.cat([q.detach() for q in model.parameters()], out=buf)
            gath.observe(buf, step=i)
            t["gather"] = time.perf_counter() - t0
            if i > W:
                for k in times:
                    times[k].append(t[k])
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{p:,} | {med['flat']:.1f} ms | {med['per']:.1f} ms | {med['gather']:.1f} ms")
        per = flat = gath = model = stream = buf = None
        gc.collect()
    os.environ[kernels.BACKEND_ENV] = "auto"


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def sketch_1e9(W, reps, p=10**9):
    """A sketched monitor (d = 10W) on a flat float32 snapshot of P coordinates, allocated once
    and perturbed in place; peak RSS beyond the snapshot itself."""
    d = 10 * W
    kernels.warm_up(torch.float32)
    rss0 = _status_kib("VmRSS")
    snap = torch.empty(p)
    gen = torch.Generator().manual_seed(0)
    chunk = 1 << 24
    for a in range(0, p, chunk):  # fill in place: no P-length temporary
        snap[a:a + chunk].normal_(generator=gen)
    rss_snap = _status_kib("VmRSS")
    try:  # reset the peak to the current RSS (Linux ≥ 4.0), so the peak below is the monitor's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    hwm_start = _status_kib("VmHWM")
    mon = SpectralMonitor(MonitorConfig(window=W, params="all", sketch_dim=d))
    pert = torch.empty(1 << 22)
    starts = [k * (p // 8) for k in range(8)]
    times, reads = [], []
    for i in range(W + 1 + reps):
        coef = torch.randn(3, generator=gen)
        for k, a in enumerate(starts):  # a 3-direction backbone on 8 chunks of 4M coordinates
            pert.normal_(generator=gen)
            snap[a:a + pert.numel()].add_(pert, alpha=float(coef[k % 3]) * 1e-3)
        t0 = time.perf_counter()
        snap.sum()
        t1 = time.perf_counter()
        row = mon.observe(snap, step=i)
        t2 = time.perf_counter()
        if i > W:
            reads.append(t1 - t0)
            times.append(t2 - t1)
    hwm = _status_kib("VmHWM")
    buf = io.BytesIO()
    torch.save(mon.state_dict(), buf)
    extra = (hwm - (hwm_start if reset else rss_snap)) * 1024
    print(f"sketched monitor, P = {p:,} float32 ({p * 4 / 2**30:.2f} GiB snapshot), W = {W}, d = {d}, "
          f"threads {torch.get_num_threads()}")
    print(f"  RSS before the snapshot {rss0 / 2**20:.2f} GiB (interpreter, torch, numba); with it "
          f"{rss_snap / 2**20:.2f} GiB; peak during {len(times) + W + 1} snapshots {hwm / 2**20:.2f} GiB "
          f"(peak {'reset' if reset else 'not reset'} after allocating the snapshot)")
    print(f"  peak RSS beyond the snapshot and the process before it: {extra / 2**20:.1f} MiB "
          f"({'≤' if extra <= 2**30 else '>'} 1 GiB); monitor state {buf.tell() / 1024:.1f} KiB")
    print(f"  observe {statistics.median(times):.2f} s per snapshot; one read of the snapshot "
          f"{statistics.median(reads):.2f} s (ratio {statistics.median(times) / statistics.median(reads):.1f}×); "
          f"last row window {row['window']}, k* {row['k_star']}")


def compile_times():
    """Cold compile (empty cache dir) and cache load, each in a fresh process."""
    code = ("import time; t0 = time.perf_counter(); import torch; t1 = time.perf_counter(); "
            "from edgesweep.spectral import kernels; kernels.numba_kernels(); t2 = time.perf_counter(); "
            "kernels.warm_up(torch.float32); t3 = time.perf_counter(); "
            "print(f'{t1 - t0:.2f} {t2 - t1:.2f} {t3 - t2:.2f}')")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold (compile, empty cache)", "warm (load from cache)", "warm again"):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                 check=True).stdout.split()
            print(f"{label:30s} import torch {out[0]} s, import numba + kernels {out[1]} s, "
                  f"first kernel calls {out[2]} s")


# W per workload as the shipped sweeps and DESIGN §1.1 set it (paper: 10, Dyck-1 3, SCAN 5)
WINDOWS = {"dyck": 3, "scan": 5}


def state_sizes():
    from edgesweep.workloads import parameter_counts
    from edgesweep.workloads.registry import PRESETS, WORKLOADS

    print("monitor state per checkpoint (float32 snapshots): exact = (W+1)·P ring + θ_prev; "
          "sketch d = 10W: (W+1)·d + d float64")
    print("workload | preset | W | attention P | state (attention) | all P | state (all) | "
          "sketch state | old checkpoint copies (all)")
    for w in WORKLOADS:
        for preset in PRESETS:
            total, attn = parameter_counts(w, preset)
            W = WINDOWS.get(w, 10)
            ex = lambda n: monitor_state_bytes(n, MonitorConfig(window=W))  # noqa: E731
            sk = monitor_state_bytes(total, MonitorConfig(window=W, sketch_dim=10 * W))
            print(f"{w} | {preset} | {W} | {attn:,} | {_fmt_bytes(ex(attn))} | {total:,} | "
                  f"{_fmt_bytes(ex(total))} | {_fmt_bytes(sk)} | {_fmt_bytes(2 * ex(total))}")
    print("old checkpoint copies: before, state_dict() cloned the ring and θ_prev to the CPU and the "
          "training loop's _cpu_copy copied them again (2×); now state_dict() returns them and the "
          "loop copies once (1× = 'state')")


def _fmt_bytes(n):
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


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


def jl_table(W):
    d = 10 * W
    print(f"count-sketch vs dense Gaussian JL, d = 10W = {d}, one row; errors over 20 windows (P=20,000)")
    print("P | count-sketch (numba) | count-sketch (torch path) | gaussian JL | JL/CS numba | JL/CS torch")
    for p in (10**5, 10**6):
        vec = torch.randn(p)
        cs = CountSketch(p, d, seed=0)
        t = {}
        for backend in ("numba", "torch"):
            cs.project(vec, backend)
            t[backend] = statistics.median([_time(lambda: cs.project(vec, backend)) for _ in range(5)])
        t_g = statistics.median([_time(lambda: gaussian_project(vec, d, 0)) for _ in range(3)])
        print(f"{p:,} | {t['numba'] * 1e3:.2f} ms | {t['torch'] * 1e3:.2f} ms | {t_g * 1e3:.1f} ms | "
              f"{t_g / t['numba']:.0f} | {t_g / t['torch']:.0f}")
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e7,1e8")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch (and so numba) threads; a 1-CPU "
                    "Ray trial runs with 1; 0: torch's default")
    ap.add_argument("--views", type=int, default=0, help="only the per-parameter vs gather table")
    ap.add_argument("--sketch-1e9", action="store_true", help="only the P = 10⁹ sketched run (heavy)")
    ap.add_argument("--compile", action="store_true", help="only the compile/cache-load times")
    ap.add_argument("--state-sizes", action="store_true", help="only the state-size table")
    ap.add_argument("--jl", action="store_true", help="only count-sketch vs Gaussian JL")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    if args.state_sizes:
        return state_sizes()
    if args.compile:
        return compile_times()
    if args.jl:
        return jl_table(args.window)
    if args.sketch_1e9:
        return sketch_1e9(args.window, min(args.reps, 3))
    if args.views:
        return views_table(sizes, args.window, args.reps, args.views)
    exact_table(sizes, args.window, args.reps)


if __name__ == "__main__":
    main()
