"""``edgesweep.open(ROOT)`` on the hand-built sweep of tests/conftest.py (events known by
construction): the tables are LazyFrames straight from storage, the figure marks the events the
aggregation computes, and ``import edgesweep`` stays cheap."""

from __future__ import annotations

import math
import subprocess
import sys

import polars as pl
import pytest
from matplotlib.figure import Figure

import edgesweep
from edgesweep.platform.aggregate import aggregate_sweep
from edgesweep.storage import StorageError, scan


@pytest.fixture(scope="module")
def sweep_path(tmp_path_factory, synth) -> str:
    path = synth.build_sweep(str(tmp_path_factory.mktemp("nb")))
    aggregate_sweep(path, use_ray=False, report=False)
    return path


def test_import_edgesweep_loads_nothing_heavy():
    code = "import sys, edgesweep; print(sorted(m for m in ('torch', 'ray', 'polars', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_tables_are_lazyframes_from_storage(sweep_path, synth):
    sweep = edgesweep.open(sweep_path)
    for name in ("trials", "evals", "features", "runs", "summary"):
        lf = getattr(sweep, name)
        assert isinstance(lf, pl.LazyFrame), name
        got, want = lf.collect(), scan(sweep_path, name).collect()
        keys = [c for c in ("trial_id", "step", "scope", "arm") if c in want.columns]
        assert got.height == want.height > 0 and got.sort(keys).equals(want.sort(keys)), name
    assert sweep.trial_ids() == sorted(s.trial_id for s in synth.SPEC)
    assert "10 trials (9 completed, 1 running)" in repr(sweep)
    with pytest.raises(StorageError, match="storage root not found"):
        edgesweep.open(sweep_path + "-missing")


def test_a_running_sweep_shows_new_rows_on_the_next_access(tmp_path, synth):
    s = synth.BY_ID["I_mul_wd1_s2024"]
    w = synth.write_trial(tmp_path, s, upto=1000, compact=False)
    synth.write_trials(tmp_path, [s], status="running", steps=0)
    sweep = edgesweep.open(tmp_path / synth.SWEEP)
    assert sweep.evals.select(pl.col("step").max()).collect().item() == 1000
    synth.write_trial(tmp_path, s, upto=2000, start=1100, writer=w, compact=False)
    assert sweep.evals.select(pl.col("step").max()).collect().item() == 2000


def test_before_aggregation_runs_and_summary_have_their_columns_and_a_wrong_folder_is_refused(tmp_path, synth):
    """A running sweep has no runs/summary yet: the README's `sweep.runs.filter(pl.col("preceded"))`
    gives no rows and a warning naming the command, not a ColumnNotFoundError. A table folder or
    an unrelated folder is refused as query refuses it (it gave empty tables silently); a sweep
    whose driver has started but sealed nothing yet opens."""
    from edgesweep.analysis import RUNS_SCHEMA, SUMMARY_SCHEMA
    from edgesweep.storage import StorageWarning

    s = synth.BY_ID["I_mul_wd1_s2024"]
    synth.write_trial(tmp_path, s, upto=1000, compact=False)
    synth.write_trials(tmp_path, [s], status="running", steps=0)
    sweep = edgesweep.open(tmp_path / synth.SWEEP)
    with pytest.warns(StorageWarning, match=f"no 'runs' table under {tmp_path / synth.SWEEP} yet: it is computed "
                                            f"from the others, `edgesweep aggregate {tmp_path / synth.SWEEP}` writes it"):
        runs = sweep.runs.filter(pl.col("preceded")).collect()
    assert runs.height == 0 and set(runs.columns) == set(RUNS_SCHEMA)
    with pytest.warns(StorageWarning, match="no 'summary' table"):
        assert set(sweep.summary.collect().columns) == {"sweep", *SUMMARY_SCHEMA}
    assert sweep.events(s.trial_id)["grok_step"] is None  # computed from the rows meanwhile
    with pytest.raises(StorageError, match="no edgesweep tables here"):
        edgesweep.open(tmp_path / synth.SWEEP / "features")
    (tmp_path / "empty" / "started").mkdir(parents=True)
    with pytest.raises(StorageError, match="no edgesweep tables here"):
        edgesweep.open(tmp_path / "empty")
    (tmp_path / "empty" / "started" / "_driver.json").write_text("{}")
    assert edgesweep.open(tmp_path / "empty" / "started").trials.collect().height == 0


def test_plot_marks_the_aggregations_events(sweep_path):
    sweep = edgesweep.open(sweep_path)
    fig = sweep.plot("A_add_wd1_s42")
    assert isinstance(fig, Figure)
    acc, g23, ratio = fig.axes
    assert [ax.get_ylabel() for ax in fig.axes] == ["accuracy", "g23 = σ2² − σ3²", "gap ratio R"]
    # by construction (tests/test_aggregate.py): memorised 1000, grok 3000, alarm 1700 — and the
    # same numbers the runs table holds
    runs = sweep.runs.filter(pl.col("trial_id") == "A_add_wd1_s42").collect().row(0, named=True)
    assert (runs["memorization_step"], runs["grok_step"], runs["alarm_step"]) == (1000, 3000, 1700)
    vlines = sorted({ln.get_xdata()[0] for ln in acc.get_lines() if len(set(ln.get_xdata())) == 1
                     and ln.get_ydata()[0] == 0})
    assert vlines == [1000, 1700, 3000]
    test_line = acc.get_lines()[0]
    assert list(test_line.get_xdata()) == list(range(100, 4001, 100))
    assert 1200 not in list(g23.get_lines()[0].get_xdata())        # the non-finite window left out
    png = fig._repr_png_()                                          # what Jupyter shows inline
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_plot_names_the_closest_trials_for_a_typo(sweep_path):
    with pytest.raises(KeyError, match="closest: A_add_wd1_s42"):
        edgesweep.open(sweep_path).plot("A_add_wd1_s4")


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_events_is_the_runs_row_aggregate_wrote(sweep_path, synth):
    """sweep.events(trial) is computed now, but by aggregate's reading: for every trial the
    row equals the one in ``runs`` (family from the catalogue, newest attempt, interrupted
    marks), opened from the sweep folder or from the root above it; nothing internal leaks."""
    runs = {r["trial_id"]: r for r in scan(sweep_path, "runs").collect().to_dicts()}
    for root in (sweep_path, sweep_path.rsplit("/", 1)[0]):
        sweep = edgesweep.open(root)
        for s in synth.SPEC:
            ev = sweep.events(s.trial_id)
            assert not [k for k in ev if k.startswith("_")], s.trial_id
            want = runs[s.trial_id]
            differ = {k: (ev.get(k), v) for k, v in want.items() if not _same(ev.get(k), v)}
            assert not differ, (s.trial_id, differ)
    assert runs["A_add_wd1_s42"]["family"] == "modular"


def test_a_trial_listed_in_runs_but_without_raw_tables_is_named_as_such(tmp_path, synth):
    """A results folder kept without its raw tables (docs/results/grokking-corpus) still lists
    its trials in `runs`; events/plot of one said "no trial … (0 trials)" as if it had never
    existed. They say the raw tables it needs are not stored there."""
    import shutil
    from pathlib import Path

    path = synth.build_sweep(str(tmp_path))
    aggregate_sweep(path, use_ray=False, report=False)
    for table in ("trials", "features", "evals"):
        shutil.rmtree(Path(path) / table)
    tid = synth.SPEC[0].trial_id
    sweep = edgesweep.open(path)
    for call in (sweep.events, sweep.plot):
        with pytest.raises(KeyError, match=f"trial '{tid}' is in the runs table of {Path(path).name}, but its raw "
                                           r"tables \(trials, features, evals\) are not stored under"):
            call(tid)
    with pytest.raises(KeyError, match="no trial 'nope'"):
        sweep.events("nope")
