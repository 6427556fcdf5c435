"""The numbers of docs/RESULTS.md that no table of this sweep holds, computed from its committed
tables with edgesweep's own analysis code (the same records, windows and statistics that
`edgesweep aggregate` uses). Its output is committed beside it as untabled_numbers.txt.

    python docs/results/grokking-laptop/untabled_numbers.py > docs/results/grokking-laptop/untabled_numbers.txt
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import polars as pl

from edgesweep.analysis.events import g23_precedence
from edgesweep.analysis.record import AnalysisConfig, column, read_checked, read_records
from edgesweep.analysis.runs import evidence
from edgesweep.analysis.scorecard import check_stability_ordering
from edgesweep.spectral.gram import stability_alpha
from edgesweep.storage import SweepPath, StorageWarning, scan

#: alpha recomputed from the stored sigma (lambda = sigma^2) matches the stored one to rounding; the
#: count of rows that differ is the same for any tolerance from 1e-12 to 1e-3.
TOL = 1e-9
HERE = Path(__file__).resolve().parent


def median(xs) -> float:
    return float(np.median(np.asarray(xs, dtype=float)))


def main() -> None:
    sp = SweepPath.parse(str(HERE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StorageWarning)  # its 90 legacy files: `verify --quick` names them
        checked = read_checked(sp, "untabled_numbers")
    trials = checked.trials.to_dicts()
    records = {r.trial_id: r for r in read_records(checked.plans, trials, AnalysisConfig())}
    modular = [r for r in records.values() if r.trial["workload"] != "dyck"]
    print(f"{len(records)} runs, {len(modular)} of them modular")

    # 1. The controls' peak-to-final g23 decline, full windows vs every finite window.
    #    (Over full windows the first equals summary.decline_peak_to_final_median of the wd-0 arm.)
    controls = [r for r in records.values() if r.trial["weight_decay"] == 0.0]
    for who, group in (("all", controls), ("modular", [r for r in controls if r.trial["workload"] != "dyck"])):
        for label, full in (("full windows", True), ("every window", False)):
            d = [g23_precedence(w["step"].to_numpy(), column(w, "g23"), r.grok_step).decline_peak_to_final
                 for r in group for w in [r.windows(full_only=full)]]
            print(f"controls ({who}, wd 0, n={len(d)}): median peak-to-final g23 decline over {label}: "
                  f"{median(d):.0f}x")

    # 2. Where the pre-grok peak of g23 sits on full windows (the peak over windows ending
    #    before the grok step; over the whole run for a run that never grokked).
    peaks = []
    for r in modular:
        w = r.windows(full_only=True)
        p = g23_precedence(w["step"].to_numpy(), column(w, "g23"), r.grok_step)
        peaks.append(p.early_step if r.grok_step is not None else p.peak_step)
    first_full = [int(r.windows(full_only=True)["step"].min()) for r in modular]
    memo = [r.memorization_step for r in modular]
    counts = {s: peaks.count(s) for s in sorted(set(peaks))}
    print(f"modular runs: step of the pre-grok g23 peak on full windows: {counts} "
          f"(first full window ends at {sorted(set(first_full))}; memorisation steps {min(memo)}-{max(memo)})")

    # 3. The decline factors of the runs the criterion marks preceded, by family, both ways.
    runs = scan(sp.uri, "runs").collect()
    pre = runs.filter(pl.col("preceded"))
    for name, sub in (("modular", pre.filter(pl.col("workload") != "dyck")),
                      ("Dyck-1", pre.filter(pl.col("workload") == "dyck"))):
        full, every = sub["g23_decline"], sub["g23_decline_all_windows"]
        print(f"preceded {name} runs (n={sub.height}): g23_decline {full.min():.1f}-{full.max():.0f}x on full windows, "
              f"{every.min():.1f}-{every.max():.0f}x on every window")

    # 4. How often the edge is at k* = 1, over every run's full windows.
    ks = np.concatenate([column(r.windows(full_only=True), "k_star") for r in records.values()])
    ks = ks[np.isfinite(ks)]
    print(f"full windows with k* = 1: {int((ks == 1).sum())}/{ks.size} = {100 * np.mean(ks == 1):.0f} %")

    # 5. The stored alpha against the current Davis-Kahan definition (the operator's zero
    #    eigenvalues are neighbours of lambda_W), and what that moves in the stability check.
    n_rows = n_condition = n_differ = 0
    stored_alpha, current_alpha, k_star = [], [], []
    counted = set(evidence(runs)["trial_id"].to_list())
    # P, the length of a row: only P > W matters (the operator then has zero eigenvalues).
    n_params = dict(scan(sp.uri, "trials").select("trial_id", "n_params").collect().iter_rows())
    def current(w: pl.DataFrame, p: int) -> list[np.ndarray]:
        return [np.asarray(stability_alpha(np.asarray(sigma, dtype=float) ** 2, float(dg), p))
                for sigma, dg in zip(w["sigma"].to_list(), column(w, "delta_gram_fro"))]

    for r in sorted(records.values(), key=lambda r: r.trial_id):
        w = r.finite  # every feature row of finite training, filling windows included
        for sigma, now, alpha in zip(w["sigma"].to_list(), current(w, n_params[r.trial_id]), w["alpha"].to_list()):
            lam = np.asarray(sigma, dtype=float) ** 2
            n_rows += 1
            n_condition += bool(lam.size >= 2 and lam[-1] < lam[-2] / 2)
            n_differ += bool(not np.allclose(np.asarray(alpha, dtype=float), now, rtol=0, atol=TOL, equal_nan=True))
        if r.trial_id in counted:  # the stability check's runs and windows (scorecard.py)
            full = r.windows(full_only=True)
            stored_alpha.append([np.asarray(a, dtype=float) for a in full["alpha"].to_list()])
            current_alpha.append(current(full, n_params[r.trial_id]))
            k_star.append(column(full, "k_star"))
    print(f"feature rows of finite training: {n_rows}; lambda_W < lambda_(W-1)/2 in {n_condition}; "
          f"the stored alpha differs from the current definition in {n_differ}")
    for label, alpha in (("stored", stored_alpha), ("current", current_alpha)):
        m = check_stability_ordering(alpha, k_star).measured
        print(f"stability ordering, {label} alpha: dominant {m['alpha_dominant']:.4f} > gap {m['alpha_gap']:.4f} "
              f"> sub {m['alpha_sub']:.4f} over {m['n_windows']} windows; "
              f"alpha_sub_all_windows {m['alpha_sub_all_windows']:.4f}")


if __name__ == "__main__":
    main()
