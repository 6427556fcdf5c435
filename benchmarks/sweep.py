"""Sweep wall time on Ray against the sum of its trials' times and a bare Python loop.

    python benchmarks/sweep.py [--spec sweeps/smoke.yaml] [--seeds 42,137] [--max-steps N]

The issue-12 configuration, 16 trials of ~60 s on 2 slots (smoke grid: 2 weight decays × 8
seeds; ~12,000 steps take ~60 s on one quiet core of the development machine):

    python benchmarks/sweep.py --seeds 1,2,3,4,5,6,7,8 --max-steps 12000

Runs the same trials three times in one process tree, side by side:
1. a bare loop: each trial's exact code path (train + monitor + Parquet writer,
   ``execute_trial``) called sequentially in this process, no Ray;
2. bare, in parallel: the same calls on as many plain processes as the sweep has slots, no
   Ray — what the machine's slots give when trials share it (on a 2-vCPU VM two trials slow
   each other down: caches, memory bandwidth, the host);
3. the sweep on a fresh local Ray cluster (``run_sweep``; the cluster start is timed on its
   own), trials in parallel.

Prints the wall times, the sum of the Ray trials' own times (from the trials table), the
parallel speed-up (bare total / Ray wall, ideal = slots), Ray's cost at equal parallelism
(Ray wall / bare-parallel wall, ideal 1) and the Ray overhead per trial ((Ray wall × slots −
Σ Ray trial time) / trials). Run it inside `unshare -n` (see scripts/test.sh) so Ray binds
loopback only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

from edgesweep.platform.driver import run_sweep
from edgesweep.platform.spec import parse_spec
from edgesweep.platform.trainable import execute_trial
from edgesweep.storage import scan


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="sweeps/smoke.yaml")
    ap.add_argument("--seeds", default="42,137", help="seeds to put on the grid (more trials)")
    ap.add_argument("--max-steps", type=int, default=None, help="override train.max_steps (longer trials)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    raw = yaml.safe_load(Path(args.spec).read_text())
    raw["grid"]["seed"] = [int(s) for s in args.seeds.split(",")]
    raw["stop"] = {"after_grok": None}  # equal work in both arms: every trial runs max_steps
    if args.max_steps:
        raw["train"]["max_steps"] = args.max_steps
    work = Path(tempfile.mkdtemp(prefix="es-bench-sweep-"))
    try:
        raw["storage"] = str(work / "ray")
        raw["name"] = "bench"
        spec_path = work / "bench.yaml"
        spec_path.write_text(yaml.safe_dump(raw))
        spec = parse_spec(raw, str(spec_path))
        n = len(spec.trials)
        cpus = os.cpu_count() or 1
        concurrency = min(n, int(cpus // spec.trial_resources["cpu"]))
        print(f"{n} trials of {args.spec} (seeds {args.seeds}, no early stop), {cpus} CPUs, "
              f"{spec.trial_resources['cpu']:g} CPU per trial → {concurrency} concurrent; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)

        # Bare loop: same per-trial code, one thread each like a 1-CPU Ray worker.
        import torch
        threads = torch.get_num_threads()
        torch.set_num_threads(int(spec.trial_resources["cpu"]))
        bare = []
        t0 = time.perf_counter()
        for i, trial in enumerate(spec.trials, 1):
            bare.append(_timed_trial(trial, str(work / "bare")))
            print(f"  bare loop {i}/{n}: {trial.trial_id} {bare[-1]:.1f} s", flush=True)
        bare_total = time.perf_counter() - t0
        torch.set_num_threads(threads)
        load_mid = os.getloadavg()[0]

        # Bare, in parallel: the same trials on `concurrency` plain processes, no Ray — what
        # this machine's slots give when trials share it (cores, caches, memory bandwidth).
        par_dir = str(work / "bare-parallel")
        ctx = multiprocessing.get_context("spawn")
        t0 = time.perf_counter()
        with ProcessPoolExecutor(concurrency, mp_context=ctx,
                                 initializer=_one_torch_thread, initargs=(int(spec.trial_resources["cpu"]),)) as pool:
            par = []
            for i, secs in enumerate(pool.map(_timed_trial, spec.trials, [par_dir] * n), 1):
                par.append(secs)
                print(f"  bare parallel {i}/{n}: {secs:.1f} s", flush=True)
        par_wall = time.perf_counter() - t0
        load_par = os.getloadavg()[0]

        t0 = time.perf_counter()
        import ray
        ray.init(address="local", include_dashboard=False)  # timed separately from the sweep
        t_start = time.perf_counter() - t0
        print(f"Ray cluster up in {t_start:.1f} s; the sweep (its own progress lines follow):", flush=True)
        t0 = time.perf_counter()
        rc = run_sweep(str(spec_path), aggregate=False)
        ray_wall = time.perf_counter() - t0
        ray.shutdown()
        assert rc == 0, "the Ray sweep failed"
        trials = scan(work / "ray" / "bench", "trials").collect()
        ray_trial = trials["wall_s"].sum()
        bare_rows = scan(work / "bare" / "bench", "features").collect().height
        ray_rows = scan(work / "ray" / "bench", "features").collect().height
        par_rows = scan(work / "bare-parallel" / "bench", "features").collect().height
        assert bare_rows == ray_rows == par_rows, (bare_rows, ray_rows, par_rows)

        print()
        print(f"{'':<44}{'seconds':>10}")
        print(f"{'bare loop, total (sequential)':<44}{bare_total:>10.1f}")
        print(f"{'bare loop, mean per trial':<44}{bare_total / n:>10.1f}")
        print(f"{'Ray cluster start (ray.init)':<44}{t_start:>10.1f}")
        print(f"{'Ray sweep, wall (cluster already up)':<44}{ray_wall:>10.1f}")
        print(f"{'Ray sweep, Σ trial times':<44}{ray_trial:>10.1f}")
        print(f"{'Ray sweep, mean trial time':<44}{ray_trial / n:>10.1f}")
        print()
        print(f"{'bare, ' + str(concurrency) + ' processes in parallel, wall':<44}{par_wall:>10.1f}")
        print(f"{'bare, in parallel, mean trial time':<44}{sum(par) / n:>10.1f}")
        print()
        print(f"speed-up, bare total / Ray wall: {bare_total / ray_wall:.2f}× (ideal {concurrency}×)")
        print(f"speed-up, bare total / bare-parallel wall: {bare_total / par_wall:.2f}× "
              f"(what {concurrency} slots give on this machine without Ray)")
        print(f"Ray wall / bare-parallel wall: {ray_wall / par_wall:.3f} "
              f"(Ray's cost at equal parallelism; {(ray_wall - par_wall) * concurrency / n:+.1f} s of slot time per trial)")
        print(f"per-trial time, bare in parallel / bare alone: {sum(par) / bare_total:.2f}; "
              f"inside Ray / bare in parallel: {ray_trial / sum(par):.2f}")
        print(f"Ray wall / Σ trial times: {ray_wall / ray_trial:.2f}")
        print(f"per-trial time inside Ray / bare: {ray_trial / bare_total:.2f}")
        print(f"Ray overhead per trial: {(ray_wall * concurrency - ray_trial) / n:.1f}s of idle/occupied "
              f"slot time beyond training; same feature rows in both ({ray_rows})")
        print(f"Ray worker processes that ran the {n} trials: {trials['pid'].n_unique()}")
        print(f"load average: {load_mid:.1f} after the bare loop, {load_par:.1f} after the parallel one, "
              f"{os.getloadavg()[0]:.1f} at the end")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _one_torch_thread(n: int) -> None:
    import torch
    torch.set_num_threads(n)


def _timed_trial(trial, storage: str) -> float:
    t0 = time.perf_counter()
    execute_trial(trial, "bench", storage)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
