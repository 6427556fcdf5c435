"""The sweep report: ``report.md`` and PNG figures in the sweep folder (local or s3://).

Reads only what the aggregation stored — ``runs``, ``summary``, ``scorecard.json`` — plus the
``trials``, ``features`` and ``evals`` tables for the curves, so ``edgesweep report`` can be
rerun at any time without recomputing events. Figures are drawn with matplotlib's object API
on an Agg canvas (no pyplot, no global backend switch: safe inside a Ray driver or a server).

Contents of report.md, in order: trial statuses and wall time; the precedence table (paper
criterion) with exact intervals and Fisher tests; the prospective detector's hits, false
alarms and lead times; the scorecard; k* by optimizer; the adiabatic parameter 𝒜 by training
phase; per-run events; overview grids per workload family and one figure per trial.
"""

from __future__ import annotations

import io
import json
import math
import sys
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..spectral.detector import DetectorConfig
from ..storage import StorageError, scan
from .aggregate import AggregateConfig, SweepPath, _fmt_p, _trial_settings, precedence_sentence

__all__ = ["write_report", "report_main", "phase_of"]

DPI = 90
MAX_OVERVIEW_PANELS = 48     # a family grid beyond this is unreadable; the rest are in trials/
MAX_RUN_TABLE_ROWS = 200
COLORS = {"grok": "#2ca02c", "alarm": "#d62728", "memo": "#7f7f7f"}
PHASES = ("before memorisation", "memorised, not grokked", "after grok")


# ------------------------------------------------------------------------------------------
# Small formatting helpers
# ------------------------------------------------------------------------------------------


def _isnum(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _f(x: Any, fmt: str = ".3g") -> str:
    """A number for a table: '—' for missing/NaN, '∞' for inf."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    return format(x, fmt)


def _ci(lo: Any, hi: Any) -> str:
    if lo is None or hi is None:
        return "—"
    return f"[{lo:.2f}, {hi:.2f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# Phase of a window, for the adiabatic distribution
# ------------------------------------------------------------------------------------------


def phase_of(step: np.ndarray, memorization_step: int | None, grok_step: int | None) -> np.ndarray:
    """Phase index per window step: 0 before memorisation, 1 memorised but not (yet) grokked,
    2 at or after the grok step. A run that groks without ever memorising goes 0 → 2."""
    s = np.asarray(step)
    out = np.zeros(s.shape, dtype=np.int64)
    if memorization_step is not None:
        out[s >= memorization_step] = 1
    if grok_step is not None:
        out[s >= grok_step] = 2
    return out


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def _log_if_wide(ax, y: np.ndarray, factor: float = 20.0) -> None:
    """Log y-axis when the positive values span ≥ ``factor`` (g23 falls by 8–111× in the
    paper's runs); a narrow range reads better on a linear axis."""
    v = y[np.isfinite(y) & (y > 0)]
    if v.size and v.max() / v.min() >= factor:
        ax.set_yscale("log")


def _mark_events(ax, run: dict, labels: bool = False) -> None:
    for key, col, style, name in (("memorization_step", COLORS["memo"], ":", "memorised"),
                                  ("grok_step", COLORS["grok"], "-", "grok"),
                                  ("alarm_step", COLORS["alarm"], "--", "detector alarm")):
        if run.get(key) is not None:
            ax.axvline(run[key], color=col, ls=style, lw=1.3, label=f"{name} ({run[key]})" if labels else None)


def _trial_title(run: dict) -> str:
    lead = "" if run.get("lead_steps") is None else f", lead {run['lead_steps']}"
    prec = "preceded" if run.get("preceded") else "not preceded"
    return (f"{run['trial_id']} — {run.get('workload')}, {run.get('optimizer')}, "
            f"wd={_f(run.get('weight_decay'), 'g')}, seed {_f(run.get('seed'))}\n"
            f"{run.get('status')}; grok {_f(run.get('grok_step'))}; alarm {_f(run.get('alarm_step'))}"
            f"{lead} ({run.get('detector_outcome')}); g23 decline {_f(run.get('g23_decline'))}× ({prec})")


def trial_figure(run: dict, f: pl.DataFrame, e: pl.DataFrame) -> bytes:
    """Test/train accuracy, g23 and gap ratio R against step, events marked. f, e: the trial's
    finite-training feature rows and eval rows, sorted by step."""
    fig = Figure(figsize=(8.5, 8.0))
    fig.subplots_adjust(left=0.1, right=0.97, top=0.9, bottom=0.07, hspace=0.12)
    axes = fig.subplots(3, 1, sharex=True)
    ax = axes[0]
    if e.height:
        es = e["step"].to_numpy()
        ax.plot(es, e["grok_acc"].cast(pl.Float64).to_numpy(), color="#1f77b4", lw=1.5, label="test accuracy (grok criterion)")
        ax.plot(es, e["memo_acc"].cast(pl.Float64).to_numpy(), color="#ff7f0e", lw=1.2, alpha=0.8, label="train accuracy")
    thr = run.get("grok_threshold")
    if thr is not None:
        ax.axhline(thr, color="#1f77b4", ls=":", lw=0.8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    _mark_events(ax, run, labels=True)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=7, ncol=2)
    ax.set_title(_trial_title(run), fontsize=8.5)

    fs = f["step"].to_numpy() if f.height else np.empty(0)
    for ax, col, label in ((axes[1], "g23", "g23 = σ2² − σ3²"), (axes[2], "gap_ratio", "gap ratio R = σk*/σk*+1")):
        y = f[col].cast(pl.Float64).to_numpy() if f.height else np.empty(0)
        ax.plot(fs, y, color="#444444", lw=1.2, marker=".", ms=3)
        _log_if_wide(ax, y)
        ax.set_ylabel(label)
        _mark_events(ax, run)
    early = run.get("g23_early")
    if early is not None and math.isfinite(early) and early > 0:
        axes[1].axhline(early / 1.5, color=COLORS["alarm"], ls=":", lw=0.8,
                        label="pre-grok peak / 1.5 (paper criterion)")
        axes[1].legend(loc="upper right", fontsize=7)
    axes[2].set_xlabel("optimizer step")
    return _png(fig)


def overview_figure(family: str, runs: list[dict], feats: dict, evals: dict) -> bytes:
    """Grid of small panels, one per run: g23 (log, left) and test accuracy (right)."""
    shown = runs[:MAX_OVERVIEW_PANELS]
    n = len(shown)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    height = 2.4 * nrows + 0.6
    fig = Figure(figsize=(3.2 * ncols, height))
    # Fixed margins (constrained layout costs seconds per grid on a small CPU).
    fig.subplots_adjust(left=0.06 * 4 / ncols, right=1 - 0.06 * 4 / ncols, bottom=0.35 / height,
                        top=1 - 0.75 / height, wspace=0.45, hspace=0.75)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, run in zip(axes, shown):
        f = feats.get(run["trial_id"])
        e = evals.get(run["trial_id"])
        if f is not None and f.height:
            y = f["g23"].cast(pl.Float64).to_numpy()
            ax.plot(f["step"].to_numpy(), y, color="#444444", lw=1)
            _log_if_wide(ax, y)
        ax.tick_params(which="both", labelsize=6)
        ax2 = ax.twinx()
        if e is not None and e.height:
            ax2.plot(e["step"].to_numpy(), e["grok_acc"].cast(pl.Float64).to_numpy(), color="#1f77b4", lw=1)
        ax2.set_ylim(-0.02, 1.02)
        ax2.tick_params(labelsize=6, colors="#1f77b4")
        _mark_events(ax, run)
        ax.set_title(f"{run['trial_id']}\nwd={_f(run.get('weight_decay'), 'g')} · {run.get('detector_outcome')}"
                     f"{' · preceded' if run.get('preceded') else ''}", fontsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    more = f" (first {n} of {len(runs)})" if len(runs) > n else ""
    fig.suptitle(f"{family}: g23 (black) and test accuracy (blue); grok green, alarm red{more}", fontsize=9)
    return _png(fig)


def k_star_figure(counts: dict[str, dict[int, int]]) -> bytes:
    """Fraction of full windows at each k*, one bar group per k, one colour per optimizer."""
    fig = Figure(figsize=(7, 3.6), layout="tight")
    ax = fig.subplots()
    opts = sorted(counts)
    ks = sorted({k for c in counts.values() for k in c})
    width = 0.8 / max(1, len(opts))
    for i, opt in enumerate(opts):
        total = sum(counts[opt].values())
        ax.bar([k + (i - (len(opts) - 1) / 2) * width for k in ks],
               [counts[opt].get(k, 0) / total if total else 0 for k in ks], width=width,
               label=f"{opt} ({total} windows)")
    ax.set_xticks(ks)
    ax.set_xlabel("k* (gap position)")
    ax.set_ylabel("fraction of full windows")
    ax.legend(fontsize=8)
    ax.set_title("k* distribution by optimizer", fontsize=10)
    return _png(fig)


def adiabatic_figure(values: list[np.ndarray]) -> bytes:
    """log10 𝒜 per phase (box plot; finite positive values)."""
    fig = Figure(figsize=(7, 3.6), layout="tight")
    ax = fig.subplots()
    data = [np.log10(v[np.isfinite(v) & (v > 0)]) for v in values]
    pos = [i for i, d in enumerate(data) if d.size]
    if pos:
        ax.boxplot([data[i] for i in pos], positions=pos, widths=0.5, showfliers=False)
    ax.set_xticks(range(len(PHASES)))
    ax.set_xticklabels([f"{p}\n(n={data[i].size})" for i, p in enumerate(PHASES)], fontsize=8)
    ax.axhline(0.0, color="#999999", ls=":", lw=0.8)
    ax.set_ylabel(r"$\log_{10}\,\mathcal{A}$,  $\mathcal{A} = \|\Delta G\|_F / (\eta g^2)$")
    ax.set_title(r"adiabatic parameter $\mathcal{A}$ by training phase ($\ll 1$ plateau, $\sim 1$ transition)", fontsize=10)
    return _png(fig)


def decline_figure(runs: pl.DataFrame) -> bytes:
    """Per run and weight-decay arm: the paper's pre-grok decline (grokking runs) and the
    peak-to-final decline (every run) — the caveat: controls decline too."""
    fig = Figure(figsize=(7, 3.6), layout="tight")
    ax = fig.subplots()
    arms = sorted(runs["weight_decay"].drop_nulls().unique().to_list(), reverse=True)
    rng = np.random.default_rng(0)  # jitter only; fixed so reruns draw the same figure
    shown = []
    for i, wd in enumerate(arms):
        arm = runs.filter(pl.col("weight_decay") == wd)
        for col, dx, marker, label in (("g23_decline", -0.15, "o", "g23_early / g23_grok (grokked)"),
                                       ("decline_peak_to_final", 0.15, "x", "peak / final (all runs)")):
            v = arm[col].cast(pl.Float64).to_numpy()
            v = v[np.isfinite(v) & (v > 0)]
            shown.append(v)
            ax.scatter(i + dx + rng.uniform(-0.05, 0.05, v.size), v, marker=marker, s=18,
                       color="#1f77b4" if marker == "o" else "#ff7f0e", label=label if i == 0 else None)
    ax.axhline(1.5, color=COLORS["alarm"], ls="--", lw=0.8, label="paper threshold 1.5")
    _log_if_wide(ax, np.concatenate(shown + [np.array([1.5])]))
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels([f"wd={wd:g}" for wd in arms])
    ax.set_ylabel("g23 decline factor")
    ax.legend(fontsize=7)
    ax.set_title("g23 declines by weight-decay arm", fontsize=10)
    return _png(fig)


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------

REPORT_FEATURES = ["trial_id", "step", "window", "k_star", "g23", "gap_ratio", "adiabatic", "nonfinite"]
REPORT_EVALS = ["trial_id", "step", "grok_acc", "memo_acc"]


def _collect(uri: str, table: str, cols: list[str]) -> pl.DataFrame:
    lf = scan(uri, table)
    names = lf.collect_schema().names()
    return lf.select([c for c in cols if c in names]).collect()


def _load(sp: SweepPath) -> dict[str, Any]:
    uri = sp.uri
    runs = scan(uri, "runs").collect()
    if runs.height == 0 or "trial_id" not in runs.columns:
        raise StorageError(f"no aggregation results at {uri} (runs table missing or empty): "
                           f"run `edgesweep aggregate {sp.text}` first", uri)
    runs = runs.sort("trial_id")
    summary = scan(uri, "summary").collect()
    raw = sp.read_bytes("scorecard.json")
    card = json.loads(raw) if raw else None
    trials = scan(uri, "trials").collect()
    feats = _collect(uri, "features", REPORT_FEATURES)
    if "nonfinite" in feats.columns:
        feats = feats.filter(~pl.col("nonfinite").fill_null(False))
    evals = _collect(uri, "evals", REPORT_EVALS)
    return {"runs": runs, "summary": summary, "scorecard": card, "trials": trials,
            "features": feats.sort("trial_id", "step"), "evals": evals.sort("trial_id", "step")}


def _by_trial(df: pl.DataFrame) -> dict[str, pl.DataFrame]:
    if df.height == 0:
        return {}
    return {k[0]: v for k, v in df.partition_by("trial_id", as_dict=True).items()}


# ------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------


def _status_section(trials: pl.DataFrame, runs: pl.DataFrame) -> str:
    out = ["## Trials and wall time", ""]
    counts = runs.group_by("status").len().sort("status")
    out.append(_table(["status", "trials"], [[s or "—", n] for s, n in counts.iter_rows()]))
    out.append("")
    if trials.height and "started_at" in trials.columns:
        start = trials["started_at"].drop_nulls()
        end = trials["finished_at"].drop_nulls() if "finished_at" in trials.columns else pl.Series([])
        running = runs.filter(pl.col("running").fill_null(False)).height
        if start.len():
            t0 = start.min()
            if running or not end.len():
                out.append(f"Started {t0:%Y-%m-%d %H:%M:%S} UTC; **{running} trial(s) still running** — "
                           f"every number below is provisional for them.")
            else:
                wall = (end.max() - t0).total_seconds()
                busy = trials["wall_s"].drop_nulls().sum() if "wall_s" in trials.columns else None
                line = f"Sweep wall time {wall:,.0f} s (first trial start → last trial end)"
                if busy:
                    line += (f"; sum of trial wall times {busy:,.0f} s "
                             f"(×{busy / wall:.1f} parallelism)" if wall > 0 else "")
                out.append(line + ".")
    errs = runs.filter(pl.col("error").is_not_null()) if "error" in runs.columns else runs.clear()
    if errs.height:
        out += ["", f"{errs.height} trial(s) could not be evaluated:", ""]
        out += [f"* `{r['trial_id']}`: {r['error']}" for r in errs.iter_rows(named=True)]
    return "\n".join(out)


def _precedence_section(summary: pl.DataFrame) -> str:
    rows = [[r["scope"], _f(r["weight_decay"], "g"), r["n_runs"], r["n_running"], r["n_grokked"],
             f"**{r['precedence']}**", r["preceded_of_grokked"], _ci(r["preceded_lo"], r["preceded_hi"]),
             _fmt_p(r["fisher_p_preceded"])] for r in summary.iter_rows(named=True)]
    return "\n".join([
        "## Grokking precedence (paper criterion, retrospective)", "",
        f"**{precedence_sentence(summary)}.**", "",
        "A run counts when it grokked (first eval with test accuracy ≥ threshold) and "
        "g23_early / g23_grok > 1.5, g23_early being the largest g23 of the windows ending before "
        "the grok step. Denominator: every run of the arm (controls that never grok count as "
        "negatives). 95 % Clopper–Pearson intervals; Fisher exact p (two-sided) against the "
        "weight_decay = 0 arm of the same scope.", "",
        _table(["scope", "weight decay", "runs", "running", "grokked", "preceded", "preceded / grokked",
                "95 % CI", "Fisher p vs wd 0"], rows),
    ])


def _detector_section(summary: pl.DataFrame) -> str:
    cfg = DetectorConfig()
    rows = []
    for r in summary.iter_rows(named=True):
        lead = "—" if not r["lead_n"] else (f"{_f(r['lead_median'], '.0f')} [{_f(r['lead_q1'], '.0f')}, "
                                             f"{_f(r['lead_q3'], '.0f')}] ({_f(r['lead_min'], '.0f')}–"
                                             f"{_f(r['lead_max'], '.0f')})")
        rows.append([r["scope"], _f(r["weight_decay"], "g"), r["hits"], r["hits_with_lead"], r["late"],
                     r["misses"], r["false_alarms"], r["quiet"],
                     f"{r['hits']}/{r['n_grokked']} {_ci(r['hit_lo'], r['hit_hi'])}",
                     f"{r['false_alarms']}/{r['n_runs'] - r['n_grokked']} "
                     f"{_ci(r['false_alarm_lo'], r['false_alarm_hi'])}", lead, _fmt_p(r["fisher_p_alarm"])])
    return "\n".join([
        "## Prospective detector (causal g23-collapse alarm)", "",
        f"Rule: after {cfg.warmup_windows} finite windows, g23 ≤ running peak / {cfg.decline_factor:g} "
        f"while the last {cfg.stability_windows} gap ratios have relative std ≤ {cfg.max_rel_std:g}, "
        f"on {cfg.persistence} consecutive windows. hit: alarm at or before the grok step; late: after "
        "it; miss: grokked without alarm; false alarm: alarm on a run that did not grok (within its "
        "budget). Lead = grok step − alarm step, in optimizer steps: median [q1, q3] (min–max). "
        "Fisher p compares runs with any alarm against the weight_decay = 0 arm.", "",
        _table(["scope", "weight decay", "hits", "with lead > 0", "late", "misses", "false alarms", "quiet",
                "hit rate [95 % CI]", "false-alarm rate [95 % CI]", "lead (steps)", "Fisher p (alarm)"], rows),
    ])


def _scalars(measured: dict, limit: int = 8) -> str:
    items = []
    for k, v in measured.items():
        if _isnum(v):
            items.append(f"{k}={_f(v)}")
        if len(items) >= limit:
            break
    return ", ".join(items)


def _scorecard_section(card: list[dict] | None) -> str:
    out = ["## Scorecard (predictions of the Spectral Edge Thesis this sweep can test)", ""]
    if not card:
        return "\n".join(out + ["No scorecard.json (aggregated with the scorecard turned off)."])
    n = {v: sum(p["verdict"] == v for p in card) for v in ("PASS", "FAIL", "NOT-TESTABLE")}
    out.append(f"{n['PASS']} PASS, {n['FAIL']} FAIL, {n['NOT-TESTABLE']} NOT-TESTABLE.")
    out.append("")
    rows = [[p["name"], p["claim"], f"**{p['verdict']}**", p["reason"], _scalars(p.get("measured") or {})]
            for p in card]
    out.append(_table(["prediction", "claim", "verdict", "measured", "numbers"], rows))
    return "\n".join(out)


def _k_star_counts(feats: pl.DataFrame, runs: pl.DataFrame, trials: pl.DataFrame) -> dict[str, dict[int, int]]:
    """k* counts over full windows, per optimizer. Full: the trial's configured window size
    (else the largest seen) — the same rule as the runs table's k_star_mode."""
    if feats.height == 0 or "k_star" not in feats.columns:
        return {}
    cfg_w = {t["trial_id"]: _trial_settings(t, AggregateConfig())[2] for t in trials.iter_rows(named=True)}
    maxw = feats.group_by("trial_id").agg(pl.col("window").max().alias("_wmax"))
    wmap = pl.DataFrame({"trial_id": list(cfg_w), "_wcfg": list(cfg_w.values())},
                        schema={"trial_id": pl.String, "_wcfg": pl.Int64})
    f = (feats.join(maxw, on="trial_id", how="left").join(wmap, on="trial_id", how="left")
              .join(runs.select("trial_id", "optimizer"), on="trial_id", how="left")
              .filter(pl.col("window") == pl.coalesce("_wcfg", "_wmax"))
              .filter(pl.col("k_star").is_not_null()))
    counts: dict[str, dict[int, int]] = {}
    for opt, k, n in f.group_by("optimizer", "k_star").len().iter_rows():
        counts.setdefault(opt or "—", {})[int(k)] = int(n)
    return counts


def _k_star_section(counts: dict[str, dict[int, int]], runs: pl.DataFrame, have_fig: bool) -> str:
    out = ["## k* by optimizer", ""]
    if not counts:
        return "\n".join(out + ["No full windows with a k* yet."])
    ks = sorted({k for c in counts.values() for k in c})
    rows = []
    for opt in sorted(counts):
        total = sum(counts[opt].values())
        modes = runs.filter(pl.col("optimizer") == opt)["k_star_mode"].drop_nulls().to_list()
        mode_counts = ", ".join(f"k*={k}: {modes.count(k)}" for k in sorted(set(modes)))
        rows.append([opt, total] + [f"{counts[opt].get(k, 0) / total:.2f}" for k in ks] + [mode_counts or "—"])
    out.append(_table(["optimizer", "full windows"] + [f"k*={k}" for k in ks] + ["runs by modal k*"], rows))
    if have_fig:
        out += ["", "![k* by optimizer](figures/k_star_by_optimizer.png)"]
    return "\n".join(out)


def _adiabatic_values(feats: pl.DataFrame, runs: pl.DataFrame) -> list[np.ndarray]:
    vals: list[list[np.ndarray]] = [[], [], []]
    if feats.height == 0 or "adiabatic" not in feats.columns:
        return [np.empty(0)] * 3
    ev = {r["trial_id"]: r for r in runs.iter_rows(named=True)}
    for tid, f in _by_trial(feats).items():
        r = ev.get(tid)
        if r is None:
            continue
        ph = phase_of(f["step"].to_numpy(), r.get("memorization_step"), r.get("grok_step"))
        a = f["adiabatic"].cast(pl.Float64).to_numpy()
        for i in range(3):
            vals[i].append(a[ph == i])
    return [np.concatenate(v) if v else np.empty(0) for v in vals]


def _adiabatic_section(values: list[np.ndarray], have_fig: bool) -> str:
    rows = []
    for name, v in zip(PHASES, values):
        v = v[~np.isnan(v)]
        if v.size:
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            rows.append([name, v.size, _f(float(med)), _f(float(q1)), _f(float(q3)), f"{np.mean(v < 1):.2f}"])
        else:
            rows.append([name, 0, "—", "—", "—", "—"])
    out = ["## Adiabatic parameter 𝒜 by phase", "",
           "Windows by the phase their step falls in: before the memorisation step (train accuracy ≥ "
           "0.99), memorised but not grokked, at or after the grok step. Absolute levels depend on "
           "the logging interval and learning rate (𝒜 carries 1/η); compare phases, not runs.", "",
           _table(["phase", "windows", "median 𝒜", "q1", "q3", "fraction < 1"], rows)]
    if have_fig:
        out += ["", "![adiabatic by phase](figures/adiabatic_by_phase.png)"]
    return "\n".join(out)


def _runs_section(runs: pl.DataFrame) -> str:
    shown = runs.head(MAX_RUN_TABLE_ROWS)
    rows = [[f"[`{r['trial_id']}`](figures/trials/{r['trial_id']}.png)", r["workload"], r["optimizer"],
             _f(r["weight_decay"], "g"), _f(r["seed"]), r["status"], _f(r["steps"]), _f(r["memorization_step"]),
             _f(r["grok_step"]), _f(r["g23_decline"]), "yes" if r["preceded"] else "no", _f(r["alarm_step"]),
             _f(r["lead_steps"]), r["detector_outcome"] or "—", _f(r["k_star_mode"])]
            for r in shown.iter_rows(named=True)]
    more = (f"\n\n({runs.height - MAX_RUN_TABLE_ROWS} more runs: query the `runs` table.)"
            if runs.height > MAX_RUN_TABLE_ROWS else "")
    return "\n".join(["## Per-run events", "",
                      _table(["trial", "workload", "optimizer", "wd", "seed", "status", "steps", "memorised",
                              "grok", "g23 decline", "preceded", "alarm", "lead", "detector", "modal k*"],
                             rows)]) + more


# ------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------


def write_report(path: str, trial_figures: bool = True) -> str:
    """Write ``report.md`` and ``figures/`` into the sweep folder at ``path``; return the URI
    of report.md. Needs a prior aggregation (runs, summary, scorecard.json)."""
    sp = SweepPath.parse(path)
    sp.check()
    d = _load(sp)
    runs, summary = d["runs"], d["summary"]
    feats, evals = _by_trial(d["features"]), _by_trial(d["evals"])
    empty_f, empty_e = d["features"].clear(), d["evals"].clear()

    run_dicts = runs.to_dicts()
    if trial_figures:
        for r in run_dicts:
            png = trial_figure(r, feats.get(r["trial_id"], empty_f), evals.get(r["trial_id"], empty_e))
            sp.write_bytes(f"figures/trials/{r['trial_id']}.png", png)
    families = sorted({r["family"] for r in run_dicts if r.get("family")})
    for fam in families:
        members = sorted((r for r in run_dicts if r.get("family") == fam),
                         key=lambda r: (-(r.get("weight_decay") or 0.0), r["trial_id"]))
        sp.write_bytes(f"figures/overview_{fam}.png", overview_figure(fam, members, feats, evals))

    k_counts = _k_star_counts(d["features"], runs, d["trials"])
    if k_counts:
        sp.write_bytes("figures/k_star_by_optimizer.png", k_star_figure(k_counts))
    a_vals = _adiabatic_values(d["features"], runs)
    have_a = any(v.size for v in a_vals)
    if have_a:
        sp.write_bytes("figures/adiabatic_by_phase.png", adiabatic_figure(a_vals))
    sp.write_bytes("figures/decline_by_arm.png", decline_figure(runs))

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        f"# edgesweep report — sweep `{sp.sweep}`", "",
        f"{runs.height} trials at `{sp.uri}`; generated {now}. Tables: `runs`, `summary` "
        f"(`edgesweep query {sp.text} \"SELECT * FROM summary\"`), `scorecard.json`.",
        "", _status_section(d["trials"], runs),
        "", _precedence_section(summary),
        "", "![g23 declines by arm](figures/decline_by_arm.png)",
        "", _detector_section(summary),
        "", _scorecard_section(d["scorecard"]),
        "", _k_star_section(k_counts, runs, bool(k_counts)),
        "", _adiabatic_section(a_vals, have_a),
        "", _runs_section(runs),
        "", "## Figures", "",
        "Per family (g23 and test accuracy per run; grok green, alarm red):", "",
    ]
    parts += [f"![{fam}](figures/overview_{fam}.png)" for fam in families]
    if trial_figures:
        parts += ["", "One figure per trial (accuracy, g23, gap ratio against step) in `figures/trials/`, "
                      "linked from the per-run table."]
    return sp.write_bytes("report.md", ("\n".join(parts) + "\n").encode())


def report_main(path: str) -> int:
    """``edgesweep report ROOT/SWEEP``: regenerate report.md and figures; 2 on a missing sweep
    or missing aggregation, with one message and no traceback."""
    try:
        uri = write_report(path)
    except StorageError as exc:
        print(f"edgesweep report: error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {uri}")
    return 0
