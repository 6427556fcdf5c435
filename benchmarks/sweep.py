"""Sweep wall time on Ray against the sum of its trials' times and a bare Python loop.

    python benchmarks/sweep.py [--spec sweeps/smoke.yaml] [--seeds 42,137]

Runs the same trials twice in one process tree, side by side:
1. a bare loop: each trial's exact code path (train + monitor + Parquet writer,
   ``execute_trial``) called sequentially in this process, no Ray;
2. the sweep on a fresh local Ray cluster (``run_sweep``; the cluster start is timed on its
   own), trials in parallel.

Prints the Ray sweep's wall time, the sum of its trials' own times (from the trials table),
the bare loop's total, the parallel speed-up (bare total / Ray wall) and the Ray overhead per
trial ((Ray wall × concurrency − Σ Ray trial time) / trials, and Ray trial time − bare trial
time). Run it inside `unshare -n` (see scripts/test.sh) so Ray binds loopback only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
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
              f"{spec.trial_resources['cpu']:g} CPU per trial → {concurrency} concurrent")

        # Bare loop: same per-trial code, one thread each like a 1-CPU Ray worker.
        import torch
        threads = torch.get_num_threads()
        torch.set_num_threads(int(spec.trial_resources["cpu"]))
        bare = []
        t0 = time.perf_counter()
        for trial in spec.trials:
            t1 = time.perf_counter()
            execute_trial(trial, "bench", str(work / "bare"))
            bare.append(time.perf_counter() - t1)
        bare_total = time.perf_counter() - t0
        torch.set_num_threads(threads)

        t0 = time.perf_counter()
        import ray
        ray.init(address="local", include_dashboard=False)  # timed separately from the sweep
        t_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        rc = run_sweep(str(spec_path), aggregate=False)
        ray_wall = time.perf_counter() - t0
        ray.shutdown()
        assert rc == 0, "the Ray sweep failed"
        trials = scan(work / "ray" / "bench", "trials").collect()
        ray_trial = trials["wall_s"].sum()
        bare_rows = scan(work / "bare" / "bench", "features").collect().height
        ray_rows = scan(work / "ray" / "bench", "features").collect().height
        assert bare_rows == ray_rows, (bare_rows, ray_rows)

        print()
        print(f"{'':<44}{'seconds':>10}")
        print(f"{'bare loop, total (sequential)':<44}{bare_total:>10.1f}")
        print(f"{'bare loop, mean per trial':<44}{bare_total / n:>10.1f}")
        print(f"{'Ray cluster start (ray.init)':<44}{t_start:>10.1f}")
        print(f"{'Ray sweep, wall (cluster already up)':<44}{ray_wall:>10.1f}")
        print(f"{'Ray sweep, Σ trial times':<44}{ray_trial:>10.1f}")
        print(f"{'Ray sweep, mean trial time':<44}{ray_trial / n:>10.1f}")
        print()
        print(f"speed-up, bare total / Ray wall: {bare_total / ray_wall:.2f}× (ideal {concurrency}×)")
        print(f"Ray wall / Σ trial times: {ray_wall / ray_trial:.2f}")
        print(f"per-trial time inside Ray / bare: {ray_trial / bare_total:.2f}")
        print(f"Ray overhead per trial: {(ray_wall * concurrency - ray_trial) / n:.1f}s of idle/occupied "
              f"slot time beyond training; same feature rows in both ({ray_rows})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
