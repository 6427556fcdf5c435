"""Report generation for a synthetic 1,000-trial sweep (issue 12: ≤ 60 s), one run.

    .venv/bin/python benchmarks/report.py [--trials 1000] [--dir /tmp/esagg-bench] [--reps 2]

Builds the synthetic sweep of benchmarks/aggregate.py with the real storage writer (``--trials``
trials × 200 feature rows + 50 eval rows, 8 workloads in 4 families; cached in ``--dir``),
aggregates it once in this process (scorecard on, report off), then times, ``--reps`` times:

* ``edgesweep report ROOT/SWEEP`` — the real command in a fresh process (interpreter start,
  imports, reading the tables, 4 family grids of 48 panels, 3 summary figures, report.md and
  report.html); at this size per-trial figures are off by default;
* one per-trial figure (``trial_figure``), in this process, over ``--figure-sample`` trials: what
  ``edgesweep report --trial-figures`` adds per trial.

Prints the medians, the load average before and after, and the extrapolated cost of per-trial
figures for every trial. ``--compare-rev REV`` also times, interleaved with the above, the
``edgesweep report`` of the package as it was at git revision REV (extracted with ``git
archive`` into a temporary folder and put first on PYTHONPATH) on the same sweep.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks")]

from aggregate import build, machine  # noqa: E402  (benchmarks/aggregate.py: the synthetic sweep)

from edgesweep.platform import report  # noqa: E402
from edgesweep.platform.aggregate import aggregate_sweep  # noqa: E402
from edgesweep.storage import SweepPath  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--figure-sample", type=int, default=20)
    ap.add_argument("--compare-rev", help="also time `edgesweep report` of this git revision")
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "esagg-bench"))
    args = ap.parse_args()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    path = build(os.path.join(args.dir, str(args.trials)), args.trials)
    t0 = time.perf_counter()
    aggregate_sweep(path, use_ray=False, report=False)
    print(f"aggregated {args.trials} trials in {time.perf_counter() - t0:.1f}s (one process)")

    cmd = [sys.executable, "-m", "edgesweep", "report", path]
    sp = SweepPath.parse(path)
    d = report._load(sp)
    runs = d["runs"].to_dicts()
    feats, evals = report._by_trial(d["features"]), report._by_trial(d["evals"])
    ratio = float(d["config"].get("precedence_ratio", 1.5))
    t_report, t_fig, t_old, loads = [], [], [], []
    old_env = None
    if args.compare_rev:
        old = tempfile.mkdtemp(prefix="es-report-old-")
        subprocess.run(f"git -C {REPO} archive {args.compare_rev} edgesweep | tar -x -C {old}",
                       shell=True, check=True)
        old_env = dict(os.environ, PYTHONPATH=old)
    for _ in range(args.reps):
        if old_env is not None:
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=old_env, cwd=old)
            t_old.append(time.perf_counter() - t0)
            shutil.rmtree(Path(path, "figures", "trials"), ignore_errors=True)  # drawn by REV's default
        loads.append(os.getloadavg()[0])
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        t_report.append(time.perf_counter() - t0)
        loads.append(os.getloadavg()[0])
        t0 = time.perf_counter()
        for r in runs[: args.figure_sample]:
            report.trial_figure(r, feats[r["trial_id"]], evals[r["trial_id"]], ratio)
        t_fig.append((time.perf_counter() - t0) / args.figure_sample)
    if old_env is not None:
        # the revision's own report: reproduce this revision's before the check below
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    md = Path(path, "report.md").read_text()
    assert not Path(path, "figures", "trials").exists() and "--trial-figures" in md
    rep, fig = statistics.median(t_report), statistics.median(t_fig)
    print(f"load average during the runs: {', '.join(f'{x:.1f}' for x in loads)}")
    print(f"`edgesweep report` ({args.trials} trials, fresh process, default: no per-trial figures): "
          f"median {rep:.1f}s ({', '.join(f'{x:.1f}' for x in t_report)}) — goal ≤ 60 s")
    print(f"one per-trial figure: median {fig:.2f}s ({', '.join(f'{x:.2f}' for x in t_fig)}); "
          f"`--trial-figures` for all {args.trials}: ≈ {rep + fig * args.trials:.0f}s")
    if t_old:
        print(f"`edgesweep report` at {args.compare_rev}: median {statistics.median(t_old):.1f}s "
              f"({', '.join(f'{x:.1f}' for x in t_old)}); ratio {statistics.median(t_old) / rep:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
