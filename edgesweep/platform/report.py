"""The sweep report: ``report.md`` and PNG figures in the sweep folder (local or s3://).

Presentation only: it reads what the aggregation stored — ``runs``, ``summary``,
``scorecard.json`` (predictions, distributions and the analysis config that produced them) —
plus the ``trials``, ``features`` and ``evals`` tables for the curves; it computes no event,
statistic or rule of its own, and states the configuration the aggregation actually used.
``edgesweep report`` can be rerun at any time. Figures are drawn with matplotlib's object API
on an Agg canvas (no pyplot, no global backend switch: safe inside a Ray driver or a server).

Contents of report.md, in order: trial statuses and wall time; the precedence table (paper
criterion) with exact intervals and Fisher tests; the prospective detector's hits, false
alarms and lead times; the scorecard; k* by optimizer; the adiabatic parameter 𝒜 by training
phase; per-run events; overview grids per workload family and one figure per trial (by default
only up to TRIAL_FIGURES_AUTO_MAX trials; `edgesweep report --trial-figures` for any size).
"""

from __future__ import annotations

import io
import json
import math
import shlex
import sys
import warnings
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, LogLocator, MaxNLocator, NullLocator

from ..analysis.events import PHASES
from ..analysis.runs import delayed_precedence, evidence
from ..storage import StorageError, StorageWarning, SweepPath, scan
from .report_html import write_report_html

__all__ = ["write_report", "report_main", "precedence_sentence", "precedence_text", "delayed_sentence"]

DPI = 90
MAX_OVERVIEW_PANELS = 48     # a family grid beyond this is unreadable; the rest are in trials/
MAX_RUN_TABLE_ROWS = 200
#: Per-trial figures are drawn by default up to this many trials. Each costs ~0.3–0.8 s on a
#: small CPU, so a 1,000-trial sweep would spend minutes on PNGs nobody opens one by one (the
#: overview grids and report.html's per-trial curves cover them); ``edgesweep report
#: --trial-figures`` draws them anyway.
TRIAL_FIGURES_AUTO_MAX = 100
COLORS = {"grok": "#2ca02c", "alarm": "#d62728", "memo": "#7f7f7f"}


# ------------------------------------------------------------------------------------------
# Small formatting helpers
# ------------------------------------------------------------------------------------------


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
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _fmt_p(p: Any) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "—"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def precedence_sentence(summary: pl.DataFrame, n_running: int = 0) -> str:
    """The paper's sentence from the "all" scope: weight_decay > 0 arms pooled vs = 0, with what
    qualifies it in one parenthesis: no run grokked, ``n_running`` trials still running."""
    allr = summary.filter(pl.col("scope") == "all")
    wd, ctrl = allr.filter(pl.col("arm") == "wd>0"), allr.filter(pl.col("arm") == "wd=0")
    parts = []
    if wd.height:
        parts.append(f"{int(wd['n_preceded'].sum())}/{int(wd['n_runs'].sum())} runs with weight decay")
    if ctrl.height:
        parts.append(f"{int(ctrl['n_preceded'].sum())}/{int(ctrl['n_runs'].sum())} without")
    if not parts:
        return "gap dynamics preceded grokking in no run (no arm with a weight decay value)"
    notes = []
    if not int(allr["n_grokked"].sum()):  # "0/6" would read as a failed test, not as no test
        notes.append("no run grokked: the count tests nothing")
    if n_running:
        notes.append(f"{n_running} trial(s) still running: provisional")
    return "gap dynamics preceded grokking in " + ", ".join(parts) + (f" ({'; '.join(notes)})" if notes else "")


def delayed_sentence(runs: pl.DataFrame) -> str | None:
    """How much of the paper's count is delayed generalisation: the counted runs that
    generalised without a delay, and the count with only delayed runs (DESIGN.md 1.3's meaning
    of grokking). None where the runs table has no ``generalisation`` or nothing was counted."""
    arms = delayed_precedence(runs)
    counted = sum(a["n_preceded"] for a in arms.values())
    if not counted:
        return None
    undelayed = [t for a in arms.values() for t in a["undelayed"]]
    counts = ", ".join(f"{a['n_preceded_delayed']}/{a['n_runs']} {'with weight decay' if name == 'wd>0' else 'without'}"
                       for name, a in arms.items())
    if not undelayed:
        return f"All {counted} counted runs generalised with a delay (`generalisation` = grokked)."
    by_workload = (runs.filter(pl.col("trial_id").is_in(undelayed)).group_by("workload").len().sort("workload")
                   if "workload" in runs.columns else None)
    which = (": " + ", ".join(f"{r['workload']} × {r['len']}" for r in by_workload.iter_rows(named=True))
             if by_workload is not None else "")
    return (f"{len(undelayed)} of the {counted} counted runs generalised without a delay (`generalisation` = "
            f"immediate{which}); counting only delayed generalisation, the meaning of grokking in DESIGN.md "
            f"1.3, gives {counts}.")


def _wd(r: dict) -> str:
    """An arm's weight decay: its value, or the range of a pooled arm."""
    if r["weight_decay"] is not None:
        return f"{r['weight_decay']:g}"
    return f"{r['wd_min']:.3g}–{r['wd_max']:.3g}"


def precedence_text(summary: pl.DataFrame) -> str:
    """Fixed-width table of the summary for a terminal."""
    head = (f"{'scope':<10} {'wd':>9} {'runs':>5} {'live':>4} {'grok':>5} {'preceded':>9} "
            f"{'95% CI':>13} {'all win.':>8} {'hits':>5} {'late':>4} {'miss':>4} {'FA':>4} "
            f"{'lead med':>9} {'p(prec)':>8} {'p(alarm)':>8}")
    lines = [head, "-" * len(head)]
    for r in summary.iter_rows(named=True):
        lead = "—" if r["lead_median"] is None or math.isnan(r["lead_median"]) else f"{r['lead_median']:.0f}"
        ci = f"[{r['preceded_lo']:.2f}, {r['preceded_hi']:.2f}]"
        lines.append(
            f"{r['scope']:<10} {_wd(r):>9} {r['n_runs']:>5} {r['n_running']:>4} "
            f"{r['n_grokked']:>5} {r['precedence']:>9} {ci:>13} {r['precedence_all_windows']:>8} "
            f"{r['hits']:>5} {r['late']:>4} {r['misses']:>4} {r['false_alarms']:>4} {lead:>9} "
            f"{_fmt_p(r['fisher_p_preceded']):>8} {_fmt_p(r['fisher_p_alarm']):>8}")
    return "\n".join(lines)


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
            f"{lead} ({run.get('detector_outcome')}); g23 decline {_times(run.get('g23_decline'))} ({prec})")


def _times(x: Any) -> str:
    """A ratio as '52×', or '—' when there is none (no '—×')."""
    text = _f(x)
    return text if text == "—" else f"{text}×"


def trial_figure(run: dict, f: pl.DataFrame, e: pl.DataFrame, ratio: float) -> bytes:
    """Test/train accuracy, g23 and gap ratio R against step, events marked. f, e: the trial's
    finite-training feature rows and eval rows, sorted by step; ratio: the precedence ratio
    the aggregation used."""
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
        axes[1].axhline(early / ratio, color=COLORS["alarm"], ls=":", lw=0.8,
                        label=f"pre-grok peak / {ratio:g} (paper criterion)")
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
        _few_ticks(ax)
        ax.tick_params(which="both", labelsize=6)
        ax2 = ax.twinx()
        if e is not None and e.height:
            ax2.plot(e["step"].to_numpy(), e["grok_acc"].cast(pl.Float64).to_numpy(), color="#1f77b4", lw=1)
        ax2.set_ylim(-0.02, 1.02)
        ax2.yaxis.set_major_locator(FixedLocator([0.0, 0.5, 1.0]))
        ax2.yaxis.set_minor_locator(NullLocator())
        ax2.tick_params(labelsize=6, colors="#1f77b4")
        _mark_events(ax, run)
        ax.set_title(f"{run['trial_id']}\nwd={_f(run.get('weight_decay'), 'g')} · {run.get('detector_outcome')}"
                     f"{' · preceded' if run.get('preceded') else ''}", fontsize=7,
                     y=1.0)  # a fixed y: automatic title placement measures every twin's ticks
    for ax in axes[n:]:
        ax.set_visible(False)
    more = f" (first {n} of {len(runs)})" if len(runs) > n else ""
    fig.suptitle(f"{family}: g23 (black) and test accuracy (blue); grok green, alarm red{more}", fontsize=9)
    return _png(fig)


def _few_ticks(ax) -> None:
    """Three or four major ticks and no minor ones on a small panel. Tick objects dominate a
    grid's drawing time (a log axis makes ~20 minor ticks per decade; 96 axes per family grid),
    and a 3-inch panel cannot show more labels anyway."""
    ax.xaxis.set_major_locator(MaxNLocator(3))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(numticks=4) if ax.get_yscale() == "log" else MaxNLocator(4))
    ax.yaxis.set_minor_locator(NullLocator())


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


def adiabatic_figure(phases: dict[str, dict]) -> bytes:
    """log10 𝒜 per phase as boxes (5–95 % whiskers) from the aggregation's quantiles."""
    fig = Figure(figsize=(7, 3.6), layout="tight")
    ax = fig.subplots()
    stats = [(i, phases[p]["log10_box"]) for i, p in enumerate(PHASES) if phases.get(p, {}).get("log10_box")]
    ax.bxp([{"whislo": b[0], "q1": b[1], "med": b[2], "q3": b[3], "whishi": b[4], "label": ""}
            for _, b in stats], positions=[i for i, _ in stats], widths=0.5, showfliers=False)
    ax.set_xticks(range(len(PHASES)))
    ax.set_xticklabels([f"{p}\n(n={phases.get(p, {}).get('n', 0)})" for p in PHASES], fontsize=8)
    ax.axhline(0.0, color="#999999", ls=":", lw=0.8)
    ax.set_ylabel(r"$\log_{10}\,\mathcal{A}$,  $\mathcal{A} = \|\Delta G\|_F / (\eta g^2)$")
    ax.set_title(r"adiabatic parameter $\mathcal{A}$ by training phase ($\ll 1$ plateau, $\sim 1$ transition)", fontsize=10)
    return _png(fig)


def decline_figure(runs: pl.DataFrame, ratio: float) -> bytes:
    """Per run, weight decay > 0 vs = 0: the paper's pre-grok decline (grokking runs) and the
    peak-to-final decline (every run) — the caveat: controls decline too."""
    fig = Figure(figsize=(7, 3.6), layout="tight")
    ax = fig.subplots()
    rng = np.random.default_rng(0)  # jitter only; fixed so reruns draw the same figure
    arms = [("weight decay > 0", pl.col("weight_decay") > 0), ("weight decay = 0", pl.col("weight_decay") == 0)]
    shown = [np.array([ratio])]
    for i, (_, cond) in enumerate(arms):
        arm = runs.filter(cond)
        for col, dx, marker, color, label in (("g23_decline", -0.15, "o", "#1f77b4", "g23_early / g23_grok (grokked)"),
                                              ("decline_peak_to_final", 0.15, "x", "#ff7f0e", "peak / final (all runs)")):
            v = arm[col].cast(pl.Float64).to_numpy()
            v = v[np.isfinite(v) & (v > 0)]
            shown.append(v)
            ax.scatter(i + dx + rng.uniform(-0.05, 0.05, v.size), v, marker=marker, s=18, color=color,
                       label=label if i == 0 else None)
    ax.axhline(ratio, color=COLORS["alarm"], ls="--", lw=0.8, label=f"paper threshold {ratio:g}")
    _log_if_wide(ax, np.concatenate(shown))
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels([name for name, _ in arms])
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
    # A damaged part is skipped with a StorageWarning naming it: its trial is `incomplete` in
    # runs (aggregate found it first), and the rest of the report still stands.
    lf = scan(uri, table, on_error="skip")
    names = lf.collect_schema().names()
    return lf.select([c for c in cols if c in names]).collect()


#: What the report reads of detection.json (criterion and runs only where present).
DETECTION_KEYS = ("detector", "params", "labels", "config", "outcomes_by_threshold", "longest_positive_grok",
                  "results")


def _json_document(sp: SweepPath, name: str, keys: tuple[str, ...], writer: str) -> dict | None:
    """A JSON object written beside the tables (scorecard.json, detection.json); None when the
    sweep has none. Anything else — empty, not JSON, not an object, a key the report reads
    missing — is one StorageError naming the file and the command (``writer``) that writes it
    again, not a traceback or a report that quietly leaves the section out."""
    raw = sp.read_bytes(name)
    if raw is None:
        return None
    where = f"{sp.uri}/{name}"
    try:
        doc = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError included
        raise StorageError(f"{where}: not valid JSON ({exc}); {writer} writes it again", where) from None
    missing = [k for k in keys if k not in doc] if isinstance(doc, dict) else None
    if missing is None or missing:
        what = f"a JSON {type(doc).__name__}, not an object" if missing is None else f"no {', '.join(missing)}"
        raise StorageError(f"{where}: not what {writer} writes ({what}); it writes it again", where)
    return doc


def _load(sp: SweepPath) -> dict[str, Any]:
    uri = sp.uri
    runs, summary = scan(uri, "runs").collect(), scan(uri, "summary").collect()
    if runs.height == 0 or "trial_id" not in runs.columns:
        raise StorageError(f"no aggregation results at {uri} (runs table missing or empty): "
                           f"run `edgesweep aggregate {shlex.quote(sp.text)}` first", uri)
    if "scope" not in summary.columns:  # runs without summary: an aggregation cut short, or a folder removed
        raise StorageError(f"no summary table at {uri}/summary (the runs table is there): run "
                           f"`edgesweep aggregate {shlex.quote(sp.text)}` to write both again", uri)
    runs = runs.sort("trial_id")
    card = _json_document(sp, "scorecard.json", ("predictions",), f"`edgesweep aggregate {shlex.quote(sp.text)}`") or {}
    detection = _json_document(sp, "detection.json", DETECTION_KEYS, f"`edgesweep detect {shlex.quote(sp.text)}`")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StorageWarning)
        trials = scan(uri, "trials", on_error="skip").collect()
        feats = _collect(uri, "features", REPORT_FEATURES)
        evals = _collect(uri, "evals", REPORT_EVALS)
    skipped = []
    for w in caught:  # passed on as they came (stderr), and named in report.md itself
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if issubclass(w.category, StorageWarning):
            skipped.append(str(w.message).removeprefix("skipping "))
    if "nonfinite" in feats.columns:
        feats = feats.filter(~pl.col("nonfinite").fill_null(False))
    config = json.loads(runs["analysis_config"].drop_nulls()[0]) if "analysis_config" in runs.columns \
        and runs["analysis_config"].drop_nulls().len() else card.get("analysis_config", {})
    return {"runs": runs, "summary": summary, "card": card, "config": config, "trials": trials,
            "features": feats.sort("trial_id", "step"), "evals": evals.sort("trial_id", "step"),
            "skipped": list(dict.fromkeys(skipped)), "detection": detection}


def _skipped_lines(skipped: list[str], sp: SweepPath) -> list[str]:
    """A note under the title when stored files could not be read: the figures lack them, and
    the tables are only as current as the last aggregation."""
    if not skipped:
        return []
    more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
    where = shlex.quote(sp.text)
    return ["", f"**{len(skipped)} stored file(s) could not be read** and are left out of the figures: "
                f"{skipped[0]}{more}. `edgesweep verify {where}` names every one; their trials are "
                f"`incomplete` in the tables below once `edgesweep aggregate {where}` has run since the damage."]


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
    out += _compute_lines(trials)
    gone = runs.filter(pl.col("status") == "interrupted") if "status_note" in runs.columns else runs.clear()
    if gone.height:
        out += ["", f"**{gone.height} trial(s) interrupted**: their rows say running but their worker or "
                "driver is gone, so their results stop where it died (`edgesweep run SPEC --resume` "
                "continues them):", ""]
        out += [f"* `{r['trial_id']}` at step {r['steps']}: {r['status_note']}" for r in gone.iter_rows(named=True)]
    errs = runs.filter(pl.col("error").is_not_null()) if "error" in runs.columns else runs.clear()
    if errs.height:
        out += ["", f"{errs.height} trial(s) could not be evaluated:", ""]
        out += [f"* `{r['trial_id']}`: {r['error']}" for r in errs.iter_rows(named=True)]
    return "\n".join(out)


def _compute_lines(trials: pl.DataFrame) -> list[str]:
    """Where the trials ran (processor, kernels, threads or GPU; torch): what a rerun must match
    for identical rows. Nothing for trials recorded before the ``compute`` column existed."""
    if "compute" not in trials.columns or trials["compute"].drop_nulls().len() == 0:
        return []
    cols = ["compute"] + (["torch_version"] if "torch_version" in trials.columns else [])
    groups = (trials.filter(pl.col("compute").is_not_null()).group_by(cols).len()
              .sort(["len", "compute"], descending=[True, False]))
    out = ["", "Ran on:", ""]
    for r in groups.iter_rows(named=True):
        torch_text = f" — torch {r['torch_version']}" if r.get("torch_version") else ""
        out.append(f"* {r['len']} trial(s): {r['compute']}{torch_text}")
    if groups.height > 1:
        out += ["", "The trials ran on different hardware, kernels or thread counts: their "
                "floating-point results differ in the last bits, and a grok step can move by one "
                "evaluation between two such runs of one seed."]
    return out


def _precedence_section(summary: pl.DataFrame, runs: pl.DataFrame, config: dict) -> str:
    rows = [[r["scope"], _wd(r), r["n_runs"], r["n_running"], r["n_grokked"],
             f"**{r['precedence']}**", r["preceded_of_grokked"], _ci(r["preceded_lo"], r["preceded_hi"]),
             _fmt_p(r["fisher_p_preceded"]), r["precedence_all_windows"]] for r in summary.iter_rows(named=True)]
    ratio = config.get("precedence_ratio", "?")
    windows = ("full windows only (W rows; windows still filling are left out)"
               if config.get("full_windows_only", True) else "every window, filling ones included")
    return "\n".join([
        "## Grokking precedence (paper criterion, retrospective)", "",
        f"**{precedence_sentence(summary)}.**", "",
        f"A run counts when it grokked (first eval with test accuracy ≥ threshold) and "
        f"g23_early / g23_grok > {ratio}, g23_early being the largest g23 of the windows ending before "
        f"the grok step; computed on {windows}. The last column is the same count over every window, "
        "the way the paper's scripts include filling windows. Denominator: every run of the arm "
        "(controls that never grok count as negatives). 95 % Clopper–Pearson intervals; Fisher exact "
        "p (two-sided) against the weight_decay = 0 arm of the same scope; runs with weight decay > 0 "
        "form one arm (its range is shown when it holds several values).", "",
        _table(["scope", "weight decay", "runs", "running", "grokked", "preceded", "preceded / grokked",
                "95 % CI", "Fisher p vs wd 0", "preceded, all windows"], rows),
    ] + (["", delayed] if (delayed := delayed_sentence(runs)) else [])
      + (["", untested] if (untested := untestable_sentence(runs)) else []))


def untestable_sentence(runs: pl.DataFrame) -> str | None:
    """The grokked runs whose criterion could not be computed (no full window before the grok
    step, or none at it): they count as not preceded — the paper's count has them in its
    denominator — and the reader should see that it is for want of data, not a measured
    absence of a decline. None when there are none."""
    need = {"trial_id", "grok_step", "g23_decline"}
    if not need <= set(runs.columns):
        return None
    ok = evidence(runs)
    none = ok.filter(pl.col("grok_step").is_not_null() & (pl.col("g23_decline").is_null() | pl.col("g23_decline").is_nan()))
    if not none.height:
        return None
    ids = none["trial_id"].sort().to_list()
    return (f"{none.height} grokked run(s) had no window with a usable g23 before or at the grok step, so the "
            f"criterion could not be computed for them; they count as not preceded: {', '.join(ids[:5])}"
            + (f" (and {len(ids) - 5} more)" if len(ids) > 5 else "") + ".")


def _rate(k: int, n: int, lo: Any, hi: Any) -> str:
    """'k/n [lo, hi]', or '—' for a rate over no runs (its interval would be all of [0, 1])."""
    return "—" if not n else f"{k}/{n} {_ci(lo, hi)}"


HIT_DEFINITION = "hit: alarm strictly before the grok step; late: at or after it;"
#: A summary aggregated before one definition held everywhere (it still has ``hits_with_lead``)
#: counted an alarm at the grok step as a hit; its report says so rather than misdescribe it.
HIT_DEFINITION_BEFORE_2026_12_07 = ("hit: alarm at or before the grok step (this summary was aggregated "
                                    "before 2026-12-07; `edgesweep aggregate` re-derives it with an alarm "
                                    "at the grok step as late); late: after it;")


def _detector_section(summary: pl.DataFrame, config: dict) -> str:
    rows = []
    for r in summary.iter_rows(named=True):
        lead = "—" if not r["lead_n"] else (f"{_f(r['lead_median'], '.0f')} [{_f(r['lead_q1'], '.0f')}, "
                                             f"{_f(r['lead_q3'], '.0f')}] ({_f(r['lead_min'], '.0f')}–"
                                             f"{_f(r['lead_max'], '.0f')})")
        rows.append([r["scope"], _wd(r), r["hits"], r["late"],
                     r["misses"], r["false_alarms"], r["quiet"],
                     _rate(r["hits"], r["n_grokked"], r["hit_lo"], r["hit_hi"]),
                     _rate(r["false_alarms"], r["n_runs"] - r["n_grokked"], r["false_alarm_lo"], r["false_alarm_hi"]),
                     lead, _fmt_p(r["fisher_p_alarm"])])
    params = ", ".join(f"{k}={v}" for k, v in sorted((config.get("detector_params") or {}).items())) or "defaults"
    return "\n".join([
        f"## Prospective detector `{config.get('detector', '?')}` (causal)", "",
        f"Parameters: {params} (see `edgesweep.analysis.detectors`); "
        f"{'full windows only' if config.get('full_windows_only', True) else 'every window'}. "
        f"{HIT_DEFINITION_BEFORE_2026_12_07 if 'hits_with_lead' in summary.columns else HIT_DEFINITION} "
        "miss: grokked without alarm; false "
        "alarm: alarm on a run that did not grok (within its budget). Lead = grok step − alarm step, "
        "in optimizer steps: median [q1, q3] (min–max). Fisher p compares runs with any alarm against "
        "the weight_decay = 0 arm.", "",
        _table(["scope", "weight decay", "hits", "late", "misses", "false alarms", "quiet",
                "hit rate [95 % CI]", "false-alarm rate [95 % CI]", "lead (steps)", "Fisher p (alarm)"], rows),
    ])


def _scalars(measured: dict, limit: int = 8) -> str:
    nums = [(k, v) for k, v in measured.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{k}={_f(v)}" for k, v in nums[:limit])


def _scorecard_section(card: list[dict]) -> str:
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


def _adiabatic_section(phases: dict[str, dict], have_fig: bool) -> str:
    rows = [[name, ph.get("n", 0), _f(ph.get("median")), _f(ph.get("q1")), _f(ph.get("q3")),
             _f(ph.get("fraction_below_1"), ".2f")] for name, ph in ((p, phases.get(p, {})) for p in PHASES)]
    out = ["## Adiabatic parameter 𝒜 by phase", "",
           "Full windows by the phase their step falls in: before the memorisation step (train accuracy ≥ "
           "threshold), memorised but not grokked, at or after the grok step. Absolute levels depend on "
           "the logging interval and learning rate (𝒜 carries 1/η); compare phases, not runs.", "",
           _table(["phase", "windows", "median 𝒜", "q1", "q3", "fraction < 1"], rows)]
    if have_fig:
        out += ["", "![adiabatic by phase](figures/adiabatic_by_phase.png)"]
    return "\n".join(out)


def _p(p: dict | None, k: str) -> str:
    n = p[f"{k}_n"]
    return "—" if not n else f"{p[f'{k}_k']}/{n} [{p[f'{k}_lo']:.2f}, {p[f'{k}_hi']:.2f}]"


def _num(x, fmt) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def detection_rows(rows: list[dict]) -> list[list[str]]:
    """The benchmark's table (rows of the ``detection`` table or ``detection.json``)."""
    out = []
    for r in rows:
        out.append([r["detector"], r["evaluation"], _p(r, "hits"), _p(r, "false_alarms"),
                    _p(r, "hard_false_alarms"), f"{_num(r['lead_median'], '.0f')} [{_num(r['lead_q1'], '.0f')}, "
                    f"{_num(r['lead_q3'], '.0f')}]", _num(r["lead_fraction_median"], ".2f"),
                    _p(r, "p_grok_within_delta"),
                    f"{_num(r['auroc'], '.2f')} [{_num(r['auroc_lo'], '.2f')}, {_num(r['auroc_hi'], '.2f')}]"])
    return out


CRITERION_HEADER = ["runs", "n", "peak / at T > 1.5", "at memorisation / at T > 1.5"]
CRITERION_TEXT = ("The paper's criterion over a comparable span (T = the grok step, or, for a run that never "
                  "grokked, its memorisation step + the median delay of the grokked runs; a run counts when "
                  "followed to T): runs whose g23 falls more than 1.5× by T, from its peak before T (the "
                  "paper's reference) and from its value at memorisation.")


#: A detection.json from before ``detect`` evaluated the criterion (or a document assembled
#: without it) says so, rather than showing a table of zeros.
CRITERION_MISSING = ("The paper's criterion over a comparable span: not in this detection.json (written before "
                     "`edgesweep detect` computed it; run `edgesweep detect` again for it)")


def criterion_rows(criterion: list[dict]) -> list[list]:
    """DESIGN 1.3's "controls' statistic over the same span": per group of runs (grokked, not
    grokked with and without weight decay) how many meet the paper's criterion at a comparable
    step T (``criterion`` of ``detection.json``, from ``analysis.detection.criterion_over_spans``)."""
    groups = (("grokked", lambda c: c["label"] == "positive"),
              ("not grokked, weight decay > 0", lambda c: c["label"] == "negative" and (c["weight_decay"] or 0) > 0),
              ("not grokked, weight decay 0", lambda c: c["label"] == "negative" and not c["weight_decay"]))
    rows = []
    for name, sel in groups:
        cs = [c for c in criterion if sel(c) and c["observed"]]
        rows.append([name, len(cs), sum(c["peak_met"] for c in cs), sum(c["memo_met"] for c in cs)])
    return rows


DETECTION_HEADER = ["detector", "evaluation", "hits / grokked", "false alarms / negatives", "hard negatives alarmed",
          "lead, steps: median [q1, q3]", "lead / grok step", "P(grok within Δ | alarm)", "AUROC [95 % CI]"]


def _detection_is_stale(doc: dict, runs: pl.DataFrame) -> bool:
    """Whether ``detection.json`` scored other runs than the ``runs`` table holds now — other
    trials, or trials since grown (the sweep was aggregated again after ``detect`` ran). By
    content, not file times: a copied or cloned sweep's times say nothing."""
    scored = {r["trial_id"]: r.get("last_step") for r in doc.get("runs") or []}
    now = dict(zip(runs["trial_id"].to_list(), runs["steps"].to_list()))
    return set(scored) != set(now) or any(scored[t] is not None and now[t] is not None and scored[t] != now[t]
                                          for t in scored)


def _detection_section(doc: dict | None, stale: bool = False, sp_text: str = "ROOT/SWEEP") -> str:
    """The early-warning benchmark (``edgesweep detect``), when it was run on this sweep."""
    if not doc:
        return ""
    lab, cfg = doc["labels"], doc["config"]
    counts = _table(["threshold"] + list(next(iter(doc["outcomes_by_threshold"].values()))),
                    [[t] + list(c.values()) for t, c in doc["outcomes_by_threshold"].items()])
    if "criterion" not in doc:
        criterion = [CRITERION_MISSING + "."]
    elif lab.get("positive"):
        criterion = [CRITERION_TEXT, "", _table(CRITERION_HEADER, criterion_rows(doc["criterion"]))]
    else:
        criterion = [f"The paper's criterion over a comparable span needs positives (runs that grokked after "
                     f"a delay and were followed ≥ {cfg.get('post_grok', '?')} steps past it) to measure the span "
                     "by: none here."]
    return "\n".join([
        "## Early-warning benchmark", "",
        *([f"**Older than the aggregation above**: `edgesweep detect` scored other runs than the `runs` "
           f"table now holds (trials added or grown since); `edgesweep detect {shlex.quote(sp_text)}` "
           "scores the current ones.", ""] if stale else []),
        f"`edgesweep detect` with detector `{doc['detector']}` {json.dumps(doc['params'])}: "
        f"{lab.get('positive', 0)} runs grokked (delayed generalisation), {lab.get('negative', 0)} did not "
        f"grok by their last step ({lab.get('hard', 0)} hard: weight decay > 0, observed ≥ "
        f"{cfg['hard_factor']:g} × the longest positive's grok step"
        f"{'' if doc['longest_positive_grok'] is None else ', ' + str(doc['longest_positive_grok'])}), "
        f"{lab.get('excluded', 0)} excluded (immediate, diverged, failed, running, or followed for fewer than "
        f"{cfg.get('post_grok', '?')} steps after its grok). A hit is an alarm "
        f"strictly before the grok step; Δ = {cfg['delta']} steps; cross-validation leaves one "
        f"{cfg['group']} out and tunes each detector's parameters on the rest. Baselines beside it, always."
        + ("" if lab.get("positive") else " **No positives**: hits, leads and AUROC cannot be measured on this "
           "sweep."), "",
        _table(DETECTION_HEADER, detection_rows(doc["results"])), "",
        "![ROC](figures/detection_roc.png) ![lead](figures/detection_lead.png) "
        "![alarm vs grok](figures/detection_alarm_vs_grok.png)", "",
        "Outcomes by the test-accuracy threshold of the grok criterion:", "", counts, "",
        *criterion,
    ])


def _runs_section(runs: pl.DataFrame, linked: bool = True) -> str:
    """The per-run table; ``linked``: trial ids link to their figures/trials/ PNG."""
    shown = runs.head(MAX_RUN_TABLE_ROWS)
    rows = [[f"[`{r['trial_id']}`](figures/trials/{r['trial_id']}.png)" if linked else f"`{r['trial_id']}`",
             r["workload"], r["optimizer"],
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


def write_report(path: str, trial_figures: bool | None = None) -> str:
    """Write ``report.md`` and ``figures/`` into the sweep folder at ``path``; return the URI
    of report.md. Needs a prior aggregation (runs, summary, scorecard.json).

    trial_figures: one PNG per trial in ``figures/trials/`` — True always, False never, None
    (the default) when the sweep has at most :data:`TRIAL_FIGURES_AUTO_MAX` trials."""
    sp = SweepPath.parse(path)
    sp.check()
    d = _load(sp)
    runs, summary = d["runs"], d["summary"]
    auto = trial_figures is None
    if auto:
        trial_figures = runs.height <= TRIAL_FIGURES_AUTO_MAX
    feats, evals = _by_trial(d["features"]), _by_trial(d["evals"])
    empty_f, empty_e = d["features"].clear(), d["evals"].clear()

    config, card = d["config"], d["card"]
    ratio = float(config.get("precedence_ratio", 1.5))
    run_dicts = runs.to_dicts()
    if trial_figures:
        for r in run_dicts:
            png = trial_figure(r, feats.get(r["trial_id"], empty_f), evals.get(r["trial_id"], empty_e), ratio)
            sp.write_bytes(f"figures/trials/{r['trial_id']}.png", png)
    families = sorted({r["family"] for r in run_dicts if r.get("family")})
    for fam in families:
        members = sorted((r for r in run_dicts if r.get("family") == fam),
                         key=lambda r: (-(r.get("weight_decay") or 0.0), r["trial_id"]))
        sp.write_bytes(f"figures/overview_{fam}.png", overview_figure(fam, members, feats, evals))

    dist = card.get("distributions", {})
    k_counts = {opt: {int(k): n for k, n in c.items()}  # JSON object keys are strings
                for opt, c in dist.get("k_star_by_optimizer", {}).items()}
    if k_counts:
        sp.write_bytes("figures/k_star_by_optimizer.png", k_star_figure(k_counts))
    phases = dist.get("adiabatic_by_phase", {})
    have_a = any(ph.get("log10_box") for ph in phases.values())
    if have_a:
        sp.write_bytes("figures/adiabatic_by_phase.png", adiabatic_figure(phases))
    sp.write_bytes("figures/decline_by_arm.png", decline_figure(runs, ratio))

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        f"# edgesweep report — sweep `{sp.sweep}`", "",
        f"{runs.height} trials at `{sp.uri}`; generated {now}. Tables: `runs`, `summary` "
        f"(`edgesweep query {shlex.quote(sp.text)} \"SELECT * FROM summary\"`), `scorecard.json`.",
        *_skipped_lines(d["skipped"], sp),
        "", _status_section(d["trials"], runs),
        "", _precedence_section(summary, runs, config),
        "", "![g23 declines by arm](figures/decline_by_arm.png)",
        "", _detector_section(summary, config),
        "", _scorecard_section(card.get("predictions", [])),
        "", _k_star_section(k_counts, runs, bool(k_counts)),
        "", _adiabatic_section(phases, have_a),
        "", _detection_section(det := d["detection"], stale=bool(det) and _detection_is_stale(det, runs),
                               sp_text=sp.text),
        "", _runs_section(runs, linked=trial_figures),
        "", "## Figures", "",
        "Per family (g23 and test accuracy per run; grok green, alarm red):", "",
    ]
    parts += [f"![{fam}](figures/overview_{fam}.png)" for fam in families]
    if trial_figures:
        parts += ["", "One figure per trial (accuracy, g23, gap ratio against step) in `figures/trials/`, "
                      "linked from the per-run table."]
    else:
        why = (f"this sweep has {runs.height} trials (more than {TRIAL_FIGURES_AUTO_MAX}); " if auto else "")
        parts += ["", f"No per-trial figures: {why}`edgesweep report {shlex.quote(sp.text)} --trial-figures` draws one per "
                      "trial into `figures/trials/`. report.html shows every trial's curves."]
    write_report_html(sp, d, parts)  # report.html beside it: the same sections, interactive curves
    return sp.write_bytes("report.md", ("\n".join(parts) + "\n").encode())


def report_main(path: str, trial_figures: bool | None = None) -> int:
    """``edgesweep report ROOT/SWEEP [--trial-figures | --no-trial-figures]``: regenerate
    report.md and figures; 2 on a missing sweep or missing aggregation, with one message and no
    traceback."""
    try:
        uri = write_report(path, trial_figures=trial_figures)
    except StorageError as exc:
        print(f"edgesweep report: error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {uri}")
    return 0
