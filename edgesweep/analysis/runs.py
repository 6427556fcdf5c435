"""The two cross-run tables: ``runs`` (one row per trial) and ``summary`` (one row per scope ×
weight-decay arm), each computed here once and carrying the config that produced it.

* :func:`run_row` — pure, one :class:`.record.TrialRecord`: grok and memorisation steps, how it
  generalised (grokked / immediate / censored / diverged), the
  paper's g23-precedence criterion on full windows (and, beside it, on every window, as the
  paper computes it), the detector's alarm and outcome, window counts, modal k*.
* :func:`summary_table` — pure: counts per (scope, arm) with exact intervals and Fisher tests
  between the arms. The arms are the paper's: every run with weight decay > 0 pooled, and the
  weight-decay-0 controls (a random search draws a different weight decay for every run).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from .detectors import make_detector, replay
from .evaluation import classify_run, compare_arms, evaluate_detector
from .events import GROKKED, classify_generalisation, g23_precedence
from .record import INCOMPLETE, INTERRUPTED, NOT_EVIDENCE, AnalysisConfig, TrialRecord, column
from .stats import fisher_exact_2x2, mode_int, proportion

__all__ = ["RUNS_SCHEMA", "SUMMARY_SCHEMA", "delayed_precedence", "run_row", "error_row", "incomplete_row",
           "runs_table", "summary_table"]

RUNS_SCHEMA: dict[str, pl.DataType] = {
    "trial_id": pl.String, "sweep": pl.String, "workload": pl.String, "family": pl.String,
    "optimizer": pl.String, "weight_decay": pl.Float64, "seed": pl.Int64, "status": pl.String,
    "running": pl.Boolean, "steps": pl.Int64, "n_windows": pl.Int64, "n_full_windows": pl.Int64,
    "n_nonfinite": pl.Int64, "n_evals": pl.Int64, "grok_threshold": pl.Float64,
    "memo_threshold": pl.Float64, "grok_step": pl.Int64, "memorization_step": pl.Int64,
    "generalisation": pl.String, "fit_step": pl.Int64, "grok_delay": pl.Int64,
    "g23_early": pl.Float64, "g23_grok": pl.Float64, "g23_decline": pl.Float64,
    "preceded": pl.Boolean, "monotone": pl.Boolean, "g23_decline_all_windows": pl.Float64,
    "preceded_all_windows": pl.Boolean, "g23_peak": pl.Float64, "g23_final": pl.Float64,
    "decline_peak_to_final": pl.Float64, "detector": pl.String, "alarm_step": pl.Int64,
    "lead_steps": pl.Int64, "detector_outcome": pl.String, "k_star_mode": pl.Int64,
    "k_star_weighted_mode": pl.Int64, "gap_ratio_pre_grok": pl.Float64, "error": pl.String,
    "status_note": pl.String, "analysis_config": pl.String,
}


def _identity(t: dict, cfg: AnalysisConfig) -> dict:
    return {"trial_id": t["trial_id"], "sweep": t.get("sweep"), "workload": t.get("workload"),
            "family": t.get("family") or t.get("workload"), "optimizer": t.get("optimizer"),
            "weight_decay": None if t.get("weight_decay") is None else float(t["weight_decay"]),
            "seed": None if t.get("seed") is None else int(t["seed"]), "status": t.get("status"),
            "running": t.get("status") == "running", "status_note": t.get("status_note"),
            "analysis_config": cfg.to_json()}


def run_row(rec: TrialRecord, cfg: AnalysisConfig) -> dict:
    """One trial's ``runs`` row (columns: :data:`RUNS_SCHEMA`).

    precedence (``g23_early`` … ``monotone``): :func:`events.g23_precedence` over full finite
    windows (all finite windows when ``cfg.full_windows_only`` is off); ``*_all_windows``: the
    same over every finite window, the way the paper's scripts include filling windows.
    alarm: the configured detector replayed over the trial's rows (full windows only by the
    same switch); lead = grok − alarm; outcome hit (lead > 0) / late / miss / false_alarm / quiet
    (:func:`evaluation.classify_run`).
    k_star_mode, gap_ratio_pre_grok: over full windows (ending before the grok step for R).
    """
    gap = rec.incompleteness()
    if gap is not None:
        return incomplete_row(rec.trial, cfg, f"stored data incomplete: {gap}", rec.steps)
    gs = rec.grok_step
    gen = classify_generalisation(rec.evals["step"].to_numpy(), column(rec.evals, "memo_acc"),
                                  column(rec.evals, "grok_acc"), rec.settings.grok_threshold,
                                  diverged=rec.trial.get("status") == "diverged") if rec.evals.height else None
    full = rec.windows(full_only=True)
    used = full if cfg.full_windows_only else rec.finite
    prec = g23_precedence(used["step"].to_numpy(), column(used, "g23"), gs, ratio=cfg.precedence_ratio)
    every = g23_precedence(rec.finite["step"].to_numpy(), column(rec.finite, "g23"), gs,
                           ratio=cfg.precedence_ratio)
    det = make_detector(cfg.detector, cfg.detector_params, window=rec.full_window if cfg.full_windows_only else None,
                        context={"weight_decay": rec.trial.get("weight_decay")})
    outcome = classify_run(replay(det, rec.features.iter_rows(named=True), rec.evals.iter_rows(named=True)), gs)
    pre = full.filter(pl.col("step") < gs) if gs is not None else full
    r_pre = column(pre, "gap_ratio")
    r_pre = r_pre[np.isfinite(r_pre)]
    return {
        **_identity(rec.trial, cfg),
        "steps": rec.steps, "n_windows": rec.finite.height, "n_full_windows": full.height,
        "n_nonfinite": rec.features.height - rec.finite.height, "n_evals": rec.evals.height,
        "grok_threshold": rec.settings.grok_threshold, "memo_threshold": rec.settings.memo_threshold,
        "grok_step": gs, "memorization_step": rec.memorization_step,
        "generalisation": gen.outcome if gen else ("diverged" if rec.trial.get("status") == "diverged" else "censored"),
        "fit_step": gen.fit_step if gen else None, "grok_delay": gen.delay if gen else None,
        "g23_early": prec.g23_early, "g23_grok": prec.g23_grok, "g23_decline": prec.decline,
        "preceded": prec.preceded, "monotone": prec.monotone,
        "g23_decline_all_windows": every.decline, "preceded_all_windows": every.preceded,
        "g23_peak": prec.g23_peak, "g23_final": prec.g23_final,
        "decline_peak_to_final": prec.decline_peak_to_final,
        "detector": cfg.detector, "alarm_step": outcome.alarm_step, "lead_steps": outcome.lead,
        "detector_outcome": outcome.outcome,
        "k_star_mode": mode_int(column(full, "k_star")),
        "k_star_weighted_mode": mode_int(column(full, "k_star_weighted")),
        "gap_ratio_pre_grok": float(r_pre.mean()) if r_pre.size else math.nan,
        "error": None,
    }


def error_row(trial: dict, cfg: AnalysisConfig, exc: BaseException) -> dict:
    """The row of a trial whose analysis raised: identity kept, the error recorded, every
    measurement null, so one bad trial never takes the aggregate down."""
    row = dict.fromkeys(RUNS_SCHEMA)
    row.update(_identity(trial, cfg), steps=trial.get("steps"), detector=cfg.detector,
               error=f"{type(exc).__name__}: {exc}")
    return row


def incomplete_row(trial: dict, cfg: AnalysisConfig, why: str, steps: int | None = None) -> dict:
    """A trial whose stored data is damaged or missing: status ``incomplete``, the reason in
    ``error``, no measurement — left out of every count while the others aggregate."""
    row = error_row(trial, cfg, ValueError(why))
    row.update(status=INCOMPLETE, running=False, steps=steps if steps is not None else trial.get("steps"),
               error=why)
    return row


def runs_table(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RUNS_SCHEMA, orient="row").sort("trial_id")


# ------------------------------------------------------------------------------------------
# Summary: per scope × weight-decay arm
# ------------------------------------------------------------------------------------------

SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "scope": pl.String, "arm": pl.String, "weight_decay": pl.Float64, "wd_min": pl.Float64,
    "wd_max": pl.Float64, "n_runs": pl.Int64, "n_running": pl.Int64, "n_interrupted": pl.Int64,
    "n_grokked": pl.Int64, "n_preceded": pl.Int64, "precedence": pl.String,
    "preceded_rate": pl.Float64, "preceded_lo": pl.Float64, "preceded_hi": pl.Float64,
    "preceded_of_grokked": pl.String, "n_preceded_all_windows": pl.Int64,
    "precedence_all_windows": pl.String, "detector": pl.String, "n_alarmed": pl.Int64,
    "hits": pl.Int64, "late": pl.Int64, "misses": pl.Int64,
    "false_alarms": pl.Int64, "quiet": pl.Int64, "hit_rate": pl.Float64, "hit_lo": pl.Float64,
    "hit_hi": pl.Float64, "false_alarm_rate": pl.Float64, "false_alarm_lo": pl.Float64,
    "false_alarm_hi": pl.Float64, "lead_n": pl.Int64, "lead_median": pl.Float64,
    "lead_q1": pl.Float64, "lead_q3": pl.Float64, "lead_min": pl.Float64, "lead_max": pl.Float64,
    "decline_peak_to_final_median": pl.Float64, "fisher_p_preceded": pl.Float64, "fisher_odds_preceded": pl.Float64,
    "fisher_p_alarm": pl.Float64, "fisher_odds_alarm": pl.Float64, "analysis_config": pl.String,
}


def _arm_counts(arm: pl.DataFrame, conf: float) -> tuple[dict, Any]:
    n = arm.height
    wds = arm["weight_decay"]
    dec = arm["decline_peak_to_final"].drop_nulls().drop_nans() if "decline_peak_to_final" in arm.columns else None
    g = int(arm["grok_step"].is_not_null().sum())
    k = int(arm["preceded"].fill_null(False).sum())
    k_all = int(arm["preceded_all_windows"].fill_null(False).sum()) if "preceded_all_windows" in arm.columns else k
    prec = proportion(k, n, conf)
    det = evaluate_detector(zip(arm["alarm_step"].to_list(), arm["grok_step"].to_list()), conf)
    return {
        "weight_decay": wds[0] if wds.n_unique() == 1 else None, "wd_min": wds.min(), "wd_max": wds.max(),
        "decline_peak_to_final_median": dec.median() if dec is not None and dec.len() else None,
        "n_runs": n, "n_running": int(arm["running"].fill_null(False).sum()),
        "n_interrupted": int((arm["status"] == INTERRUPTED).sum()) if "status" in arm.columns else 0,
        "n_grokked": g,
        "n_preceded": k,
        # The paper's count: controls count only if they grok *and* meet the criterion, so the
        # denominator is every run of the arm ("24/24 with weight decay, 0/24 without").
        "precedence": f"{k}/{n}", "preceded_rate": prec.rate, "preceded_lo": prec.lo,
        "preceded_hi": prec.hi, "preceded_of_grokked": f"{k}/{g}",
        "n_preceded_all_windows": k_all, "precedence_all_windows": f"{k_all}/{n}",
        "n_alarmed": det.hits + det.late + det.false_alarms,
        "hits": det.hits, "late": det.late,
        "misses": det.misses, "false_alarms": det.false_alarms, "quiet": det.quiet,
        "hit_rate": det.hit_rate.rate, "hit_lo": det.hit_rate.lo, "hit_hi": det.hit_rate.hi,
        "false_alarm_rate": det.false_alarm_rate.rate, "false_alarm_lo": det.false_alarm_rate.lo,
        "false_alarm_hi": det.false_alarm_rate.hi,
        "lead_n": det.lead.n, "lead_median": det.lead.median, "lead_q1": det.lead.q25,
        "lead_q3": det.lead.q75, "lead_min": det.lead.min, "lead_max": det.lead.max,
    }, det


def delayed_precedence(runs: pl.DataFrame) -> dict[str, dict]:
    """The paper's count with only *delayed* generalisation taken as grokking (DESIGN.md 1.3).

    The paper, and the summary table, count every run whose test accuracy crossed the threshold;
    a run that generalised without a delay (``generalisation`` = immediate: Dyck-1, x²+y² mod p)
    is then "preceded" as well. Per arm ("wd>0", "wd=0") of the :func:`evidence` runs: ``n_runs``,
    ``n_preceded`` (the paper's count), ``n_preceded_delayed`` (those that also grokked) and
    ``undelayed`` (trial ids counted by the paper but not delayed). Empty without a
    ``generalisation`` column (runs tables written before it existed)."""
    if "generalisation" not in runs.columns:
        return {}
    ok = evidence(runs)
    out = {}
    for name, cond in (("wd>0", pl.col("weight_decay") > 0), ("wd=0", pl.col("weight_decay") == 0)):
        arm = ok.filter(cond)
        if not arm.height:
            continue
        counted = arm.filter(pl.col("preceded").fill_null(False))
        delayed = counted.filter(pl.col("generalisation") == GROKKED)
        out[name] = {"n_runs": arm.height, "n_preceded": counted.height, "n_preceded_delayed": delayed.height,
                     "undelayed": sorted(set(counted["trial_id"]) - set(delayed["trial_id"]))}
    return out


def evidence(runs: pl.DataFrame) -> pl.DataFrame:
    """Runs that count: evaluated without error, and not failed/unknown trials. A trial that
    crashed is no evidence either way (counting it "not preceded" would turn 24/24 into 23/24);
    diverged runs stay in: divergence is an outcome of the protocol."""
    ok = runs.filter(pl.col("error").is_null()) if "error" in runs.columns else runs
    if "status" in ok.columns:
        ok = ok.filter(~pl.col("status").is_in(list(NOT_EVIDENCE)) | pl.col("status").is_null())
    return ok


def summary_table(runs: pl.DataFrame, cfg: AnalysisConfig | None = None) -> pl.DataFrame:
    """Precedence and detector statistics per (scope, arm).

    Scopes: "all", then each family (sorted); arms: "wd>0" (weight decay > 0, pooled) and "wd=0";
    ``weight_decay`` is the arm's value when it has one (else null; ``wd_min``/``wd_max`` give
    the range). Only :func:`evidence` runs count. Intervals: Clopper–Pearson at ``cfg.conf``.
    Fisher p (two-sided) compares the arms of a scope — preceded vs not, and any alarm vs none —
    on the "wd>0" row; null on the control row and in scopes without both arms.
    """
    cfg = cfg if cfg is not None else AnalysisConfig()
    ok = evidence(runs)
    scopes = [("all", ok)] + [(fam, ok.filter(pl.col("family") == fam))
                              for fam in sorted(ok["family"].drop_nulls().unique().to_list())]
    rows = []
    for scope, df in scopes:
        arms = {name: df.filter(cond) for name, cond in (("wd>0", (pl.col("weight_decay") > 0)  # NaN > 0 in Polars
                                                                   & pl.col("weight_decay").is_finite()),
                                                          ("wd=0", pl.col("weight_decay") == 0))}
        stats = {name: _arm_counts(arm, cfg.conf) for name, arm in arms.items() if arm.height}
        for name, (row, det) in stats.items():
            row = {"scope": scope, "arm": name, **row, "detector": cfg.detector, "fisher_p_preceded": None,
                   "fisher_odds_preceded": None, "fisher_p_alarm": None, "fisher_odds_alarm": None,
                   "analysis_config": cfg.to_json()}
            if name == "wd>0" and "wd=0" in stats:
                c_row, c_det = stats["wd=0"]
                odds, p = fisher_exact_2x2(row["n_preceded"], row["n_runs"] - row["n_preceded"],
                                           c_row["n_preceded"], c_row["n_runs"] - c_row["n_preceded"])
                a_odds, a_p = compare_arms(det, c_det)
                row.update(fisher_p_preceded=p, fisher_odds_preceded=odds, fisher_p_alarm=a_p,
                           fisher_odds_alarm=a_odds)
            rows.append(row)
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA, orient="row") if rows else pl.DataFrame(schema=SUMMARY_SCHEMA)
