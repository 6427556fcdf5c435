"""``edgesweep.open(ROOT)``: a sweep in a notebook — its tables as Polars LazyFrames, and one
trial's curves as an inline figure.

    import edgesweep
    sweep = edgesweep.open("results/grokking")           # a sweep folder, or a root of sweeps
    sweep.runs.filter(pl.col("preceded")).collect()       # every table is a LazyFrame
    sweep.plot("mod_add-adamw-wd1.0-s42")                 # accuracy, g23, R; grok/alarm marked

Each table attribute scans storage when it is read (:func:`edgesweep.storage.scan`:
deduplicated, validated, lazily), so a sweep that is still running shows its newest sealed rows
on the next access; nothing is cached. The figure's events (memorisation, grok, alarm) are
computed from the trial's stored rows by the aggregation's own rules
(:func:`edgesweep.analysis.run_row`), so they match ``runs`` and the report even before the
sweep is aggregated. Storage and analysis only: no torch, no Ray.
"""

from __future__ import annotations

import difflib
import io
import math
import os
import warnings

import polars as pl

from .storage import StorageError, StorageWarning, scan
from .storage.fs import resolve_root
from .storage.integrity import sweep_started
from .storage.query import absent_text, outputs_only, require_tables, tables_held
from .storage.scan import sweep_dirs

__all__ = ["Sweep"]  # plot() returns a TrialFigure (a matplotlib Figure made on first use)

COLORS = {"test": "#1f77b4", "train": "#ff7f0e", "grok": "#2ca02c", "alarm": "#d62728", "memo": "#7f7f7f"}


def _figure_class():
    from matplotlib.figure import Figure

    class TrialFigure(Figure):
        """A matplotlib Figure that shows itself inline in Jupyter (``_repr_png_``) without
        pyplot or a configured backend."""

        def _repr_png_(self) -> bytes:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            FigureCanvasAgg(self)
            buf = io.BytesIO()
            self.savefig(buf, format="png", dpi=90)
            return buf.getvalue()

    return TrialFigure


class Sweep:
    """The tables under a storage root (one sweep folder or a folder of sweeps; local or s3://)."""

    def __init__(self, root: str | os.PathLike, on_error: str = "raise"):
        self.root = os.fspath(root)
        self.on_error = on_error
        r = resolve_root(self.root)
        sweeps = sweep_dirs(r)  # a missing root fails now, naming it
        # A table folder or an unrelated folder would give empty tables without a word; a sweep
        # whose driver has started but sealed nothing yet is fine (its tables fill as it runs).
        if not sweep_started(self.root):
            require_tables(r, sweeps)

    def table(self, name: str) -> pl.LazyFrame:
        return scan(self.root, name, on_error=self.on_error)

    def _derived(self, name: str, schema: dict) -> pl.LazyFrame:
        """``runs``/``summary`` — or, before the first aggregation wrote it, an empty frame with
        its columns (so that filters on them run) and a warning naming the command."""
        r = resolve_root(self.root)
        sweeps = sweep_dirs(r)
        if tables_held(r, sweeps, [name]):
            return self.table(name)
        warnings.warn(absent_text(r, name, sweeps), StorageWarning, stacklevel=3)
        return pl.LazyFrame(schema={"sweep": pl.String, **schema})

    @property
    def trials(self) -> pl.LazyFrame:
        return self.table("trials")

    @property
    def evals(self) -> pl.LazyFrame:
        return self.table("evals")

    @property
    def features(self) -> pl.LazyFrame:
        return self.table("features")

    @property
    def runs(self) -> pl.LazyFrame:
        from .analysis import RUNS_SCHEMA
        return self._derived("runs", RUNS_SCHEMA)

    @property
    def summary(self) -> pl.LazyFrame:
        from .analysis import SUMMARY_SCHEMA
        return self._derived("summary", SUMMARY_SCHEMA)

    def trial_ids(self) -> list[str]:
        return sorted(self.trials.select("trial_id").unique().collect()["trial_id"].to_list())

    def __repr__(self) -> str:
        try:
            counts = self.trials.group_by("status").len().sort("status").collect()
            text = ", ".join(f"{n} {s}" for s, n in counts.iter_rows())
            return f"<edgesweep sweep {self.root!r}: {counts['len'].sum()} trials ({text})>"
        except (StorageError, pl.exceptions.PolarsError, OSError) as exc:
            return f"<edgesweep sweep {self.root!r}: unreadable ({exc})>"

    # ---------------------------------------------------------------------------------------

    def events(self, trial_id: str) -> dict:
        """The trial's ``runs`` row, computed now from its stored rows (memorization_step,
        grok_step, alarm_step, g23_decline, preceded, …): the row ``aggregate`` would write."""
        return self._events(trial_id)[0]

    def _sweeps_whose_runs_list(self, trial_id: str) -> list[str]:
        """Sweeps whose ``runs`` table lists the trial, when the root holds no raw table at all
        (a results folder kept without them); [] otherwise."""
        r = resolve_root(self.root)
        held = tables_held(r, sweep_dirs(r))
        if "runs" not in held or not outputs_only(held):
            return []
        found = self.table("runs").filter(pl.col("trial_id") == trial_id).select("sweep").unique().collect()
        return sorted(found["sweep"].to_list())

    def _events(self, trial_id: str):
        """(the trial's runs row, its TrialRecord), read the way ``aggregate`` reads them: the
        newest attempt's trials row, marked interrupted when its owner is gone, and the family
        from the workload catalogue."""
        from .analysis import AnalysisConfig, read_records, read_trials, run_row
        from .storage import SweepPath
        from .workloads.catalog import family

        rows = self.trials.filter(pl.col("trial_id") == trial_id).select("sweep").unique().collect()
        if rows.height == 0:
            in_runs = self._sweeps_whose_runs_list(trial_id)
            if in_runs:  # an aggregation kept without the raw tables it was computed from
                raise KeyError(f"trial {trial_id!r} is in the runs table of {', '.join(in_runs)}, but its raw "
                               f"tables (trials, features, evals) are not stored under {self.root}: its events "
                               "and plots are computed from them")
            ids = self.trial_ids()
            close = difflib.get_close_matches(trial_id, ids, n=3, cutoff=0.4)
            raise KeyError(f"no trial {trial_id!r} under {self.root}"
                           + (f"; closest: {', '.join(close)}" if close else f" ({len(ids)} trials)"))
        if rows.height > 1:
            raise KeyError(f"trial {trial_id!r} is in several sweeps under {self.root} "
                           f"({', '.join(sorted(rows['sweep']))}): open one sweep folder")
        r = resolve_root(self.root)
        folder = dict(sweep_dirs(r)).get(rows["sweep"][0])
        if folder is None:  # the trials row names a sweep that is not a folder here
            raise KeyError(f"trial {trial_id!r} belongs to sweep {rows['sweep'][0]!r}, which is not a folder "
                           f"under {self.root}")
        sp = SweepPath.parse(r.uri(folder))
        trial = read_trials(sp, scan(sp.uri, "trials", on_error=self.on_error)).filter(
            pl.col("trial_id") == trial_id).row(0, named=True)
        trial = dict(trial, family=family(trial["workload"] or "unknown"))
        cfg = AnalysisConfig()
        plans = {"features": scan(sp.uri, "features", on_error=self.on_error),
                 "evals": scan(sp.uri, "evals", on_error=self.on_error)}
        rec = read_records(plans, [trial], cfg)[0]
        return run_row(rec, cfg), rec

    def plot(self, trial_id: str, figsize=(8.5, 7.5)):
        """Test/train accuracy, g23 (log) and gap ratio R against the step, memorisation (grey),
        grok (green) and alarm (red) marked. Returns a matplotlib Figure (inline in Jupyter)."""
        ev, rec = self._events(trial_id)
        fig = _figure_class()(figsize=figsize)
        fig.subplots_adjust(left=0.11, right=0.97, top=0.92, bottom=0.08, hspace=0.1)
        ax_acc, ax_g, ax_r = fig.subplots(3, 1, sharex=True)
        e, f = rec.evals, rec.finite
        if e.height:
            ax_acc.plot(e["step"], e["grok_acc"].cast(pl.Float64), color=COLORS["test"], label="test accuracy")
            ax_acc.plot(e["step"], e["memo_acc"].cast(pl.Float64), color=COLORS["train"], ls=":", label="train accuracy")
        ax_acc.axhline(rec.settings.grok_threshold, color=COLORS["test"], lw=0.7, ls=":")
        ax_acc.set_ylim(-0.02, 1.02)
        ax_acc.set_ylabel("accuracy")
        if f.height:
            g23 = f["g23"].cast(pl.Float64)
            ax_g.plot(f["step"], g23, color="#444444", marker=".", ms=3, lw=1)
            pos = g23.filter(g23 > 0)
            if pos.len() and pos.max() / pos.min() >= 20:
                ax_g.set_yscale("log")
            ax_r.plot(f["step"], f["gap_ratio"].cast(pl.Float64), color="#444444", lw=1)
        ax_g.set_ylabel("g23 = σ2² − σ3²")
        ax_r.set_ylabel("gap ratio R")
        ax_r.set_xlabel("optimizer step")
        for key, col, style in (("memorization_step", COLORS["memo"], ":"), ("grok_step", COLORS["grok"], "-"),
                                ("alarm_step", COLORS["alarm"], "--")):
            if ev.get(key) is not None:
                for ax in (ax_acc, ax_g, ax_r):
                    ax.axvline(ev[key], color=col, ls=style, lw=1.2,
                               label=f"{key.removesuffix('_step').replace('memorization', 'memorised')} "
                                     f"({ev[key]})" if ax is ax_acc else None)
        ax_acc.legend(loc="lower right", fontsize=7, ncol=2)
        decline = ev.get("g23_decline")
        fig.suptitle(f"{trial_id} — {ev.get('workload')}, wd {ev.get('weight_decay')}, seed {ev.get('seed')} · "
                     f"{ev.get('status')}" + (f" · g23 decline {decline:.3g}×" if decline is not None
                                              and math.isfinite(decline) else ""), fontsize=9)
        return fig
