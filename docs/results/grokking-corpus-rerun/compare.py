"""Committed corpus runs table vs a rerun's: which per-trial values agree exactly."""
import sys
import polars as pl

old = pl.read_parquet(sys.argv[1])
new = pl.read_parquet(sys.argv[2])
print(f"committed {old.height} trials, rerun {new.height}")
cols = ["status", "steps", "grok_step", "memorization_step", "alarm_step", "n_windows", "n_evals",
        "g23_early", "g23_grok", "g23_decline", "g23_peak", "g23_final", "k_star_mode", "gap_ratio_pre_grok"]
j = old.select(["trial_id"] + cols).join(new.select(["trial_id"] + cols), on="trial_id", how="full", suffix="_new")
print("trials only in one:", j.filter(pl.col("trial_id").is_null() | pl.col("trial_id_new").is_null()).height
      if "trial_id_new" in j.columns else 0)
for c in cols:
    a, b = j[c], j[f"{c}_new"]
    same = [(x == y) or (x is None and y is None) or (isinstance(x, float) and isinstance(y, float) and x != x and y != y)
            for x, y in zip(a.to_list(), b.to_list())]
    n = sum(same)
    print(f"{c:20s} {n}/{len(same)} identical")
    if n < len(same):
        bad = [(t, x, y) for t, x, y, s in zip(j["trial_id"].to_list(), a.to_list(), b.to_list(), same) if not s]
        for t, x, y in bad[:5]:
            print(f"    {t}: {x} -> {y}")
