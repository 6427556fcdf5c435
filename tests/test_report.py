"""The sweep report on the hand-built sweep of tests/conftest.py (answers known by
construction): files exist and are real PNGs, report.md carries the measured tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from scipy import stats as sps

from edgesweep.platform.aggregate import aggregate_sweep
from edgesweep.platform.report import report_main, write_report
from edgesweep.storage import scan

EXPECTED_FIGURES = ["figures/overview_modular.png", "figures/overview_dyck.png",
                    "figures/k_star_by_optimizer.png", "figures/adiabatic_by_phase.png",
                    "figures/decline_by_arm.png"]


@pytest.fixture(scope="module")
def reported(tmp_path_factory, synth) -> Path:
    root = tmp_path_factory.mktemp("rep")
    path = synth.build_sweep(str(root))
    aggregate_sweep(path, use_ray=False, report=True)
    return Path(path)


def test_report_files_exist_and_are_pngs(reported, synth):
    assert (reported / "report.md").is_file()
    for rel in EXPECTED_FIGURES + [f"figures/trials/{s.trial_id}.png" for s in synth.SPEC]:
        p = reported / rel
        assert p.is_file(), rel
        img = mpimg.imread(p)  # decodes: a truncated or non-PNG file raises
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400, (rel, img.shape)
        assert float(np.std(img[..., :3])) > 0.01, f"{rel} is blank"
    # no stray temp files left behind by the atomic writes
    assert not [p for p in reported.rglob(".*") if p.is_file()]


def test_report_precedence_table_has_measured_numbers(reported, synth):
    cp = synth.cp
    md = (reported / "report.md").read_text()
    assert "**gap dynamics preceded grokking in 3/6 runs with weight decay, 1/4 without.**" in md
    lo, hi = cp(3, 6)
    p = sps.fisher_exact([[3, 3], [1, 3]]).pvalue
    # scope all, wd 1: 6 runs, 1 running, 5 grokked, 3/6 preceded, 3/5 of grokked; 3/6 over all windows
    assert f"| all | 1 | 6 | 1 | 5 | **3/6** | 3/5 | [{lo:.2f}, {hi:.2f}] | {p:.2g} | 3/6 |" in md
    lo0, hi0 = cp(1, 4)
    assert f"| all | 0 | 4 | 0 | 1 | **1/4** | 1/1 | [{lo0:.2f}, {hi0:.2f}] | — | 1/4 |" in md
    # the report states the criterion the aggregation used, not a constant of its own
    assert "g23_early / g23_grok > 1.5" in md and "full windows only" in md
    assert "| modular | 1 | 4 | 1 | 3 | **3/4** |" in md
    # A B J and G, the counted runs, all generalised with a delay (tests/test_aggregate.py)
    assert "\nAll 4 counted runs generalised with a delay (`generalisation` = grokked).\n" in md


def test_report_detector_table(reported, synth):
    cp = synth.cp
    md = (reported / "report.md").read_text()
    hlo, hhi = cp(3, 5)
    flo, fhi = cp(1, 1)
    p = sps.fisher_exact([[5, 1], [2, 2]]).pvalue
    # hits 3, late 1, miss 1, false alarm 1, quiet 0; leads 1300/900/500
    assert (f"| all | 1 | 3 | 1 | 1 | 1 | 0 | 3/5 [{hlo:.2f}, {hhi:.2f}] | 1/1 [{flo:.2f}, {fhi:.2f}] "
            f"| 900 [700, 1100] (500–1300) | {p:.2g} |") in md
    assert "## Prospective detector `g23_collapse` (causal)" in md
    # a rate over no runs is a dash, not "0/0 [0.00, 1.00]": E (false alarm) and F (quiet) never grok
    lo, hi = cp(1, 2)
    assert f"| modular | 0 | 0 | 0 | 0 | 1 | 1 | — | 1/2 [{lo:.2f}, {hi:.2f}] | — | — |" in md
    assert "0/0" not in md.split("## Prospective detector")[1].split("## Scorecard")[0]


def test_report_runs_scorecard_and_status(reported):
    md = (reported / "report.md").read_text()
    assert ("| [`A_add_wd1_s42`](figures/trials/A_add_wd1_s42.png) | mod_add | adamw | 1 | 42 | completed "
            "| 4000 | 1000 | 3000 | 2 | yes | 1700 | 1300 | hit | 2 |") in md
    assert "| I_mul_wd1_s2024" not in md  # ids are links, checked above; this one too:
    assert "[`I_mul_wd1_s2024`](figures/trials/I_mul_wd1_s2024.png) | mod_mul | adamw | 1 | 2024 | running" in md
    assert "| grokking_precedence |" in md and "| **FAIL** | weight decay: 3/5 grokking runs preceded" in md
    assert "| bbp_vacuous |" in md and "| **PASS** |" in md
    assert "| completed | 9 |" in md and "| running | 1 |" in md
    assert "1 trial(s) still running" in md


def test_report_k_star_and_adiabatic_tables(reported, synth):
    md = (reported / "report.md").read_text()
    # Independent count over the constructed full windows (steps ≥ 900, nonfinite row dropped)
    k = {2: 0, 3: 0}
    phase = [0, 0, 0]
    for s in synth.SPEC:
        for step in range(900, s.last + 1, 100):
            if step == s.nonfinite_at:
                continue
            k[s.k_star(step)] += 1
            grok = s.grok
            if s.grok_threshold is not None and s.grok_early is not None:
                grok = s.grok_early  # its own threshold 0.9 is met at grok_early
            if grok is not None and step >= grok:
                phase[2] += 1
            elif s.memo is not None and step >= s.memo:
                phase[1] += 1
            else:
                phase[0] += 1
    total = k[2] + k[3]
    assert f"| adamw | {total} | {k[2] / total:.2f} | {k[3] / total:.2f} | k*=2: 10 |" in md
    assert f"| before memorisation | {phase[0]} | 0.5 | 0.5 | 0.5 | 1.00 |" in md
    assert f"| memorised, not grokked | {phase[1]} | 0.5 |" in md
    assert f"| after grok | {phase[2]} | 0.5 |" in md


def test_wall_time_when_finished(tmp_path, synth):
    done = [s for s in synth.SPEC if s.status != "running"]  # 9 trials, each 100 s, all started at T0
    path = synth.build_sweep(str(tmp_path), done)
    aggregate_sweep(path, use_ray=False, report=False)
    write_report(path, trial_figures=False)
    md = Path(path, "report.md").read_text()
    assert "Sweep wall time 100 s (first trial start → last trial end); sum of trial wall times 900 s (×9.0 parallelism)." in md
    assert not Path(path, "figures", "trials").exists()


def test_report_says_where_the_trials_ran(tmp_path, synth):
    """`compute` of the trials rows, grouped, with a warning when they differ; nothing for
    trials recorded before the column existed."""
    import polars as pl

    from edgesweep.storage import write_table

    done = [s for s in synth.SPEC if s.status != "running"][:3]
    path = synth.build_sweep(str(tmp_path), done)
    aggregate_sweep(path, use_ray=False, report=False)
    write_report(path, trial_figures=False)
    assert "Ran on:" not in Path(path, "report.md").read_text()

    machines = ["cpu: Zen 3, ATen AVX2 kernels, 1 thread", "cpu: Zen 3, ATen AVX2 kernels, 1 thread",
                "cpu: Zen 4, ATen AVX512 kernels, 1 thread"]
    rows = [dict(s.trial_row(), compute=c, torch_version="2.13.0+cpu") for s, c in zip(done, machines)]
    write_table(str(tmp_path), synth.SWEEP, "trials", pl.DataFrame(rows))
    write_report(path, trial_figures=False)
    md = Path(path, "report.md").read_text()
    assert ("Ran on:\n\n* 2 trial(s): cpu: Zen 3, ATen AVX2 kernels, 1 thread — torch 2.13.0+cpu\n"
            "* 1 trial(s): cpu: Zen 4, ATen AVX512 kernels, 1 thread — torch 2.13.0+cpu\n") in md
    assert "ran on different hardware" in md


def test_trial_figures_default_off_above_the_limit_and_on_demand(tmp_path, monkeypatch, synth):
    """A large sweep gets no per-trial PNGs unless asked (`edgesweep report --trial-figures`):
    1,000 of them cost minutes. The per-run table then links to nothing that is missing."""
    from edgesweep import cli
    from edgesweep.platform import report

    path = synth.build_sweep(str(tmp_path))
    aggregate_sweep(path, use_ray=False, report=False)
    n = len(synth.SPEC)
    monkeypatch.setattr(report, "TRIAL_FIGURES_AUTO_MAX", n - 1)  # this sweep is "large"
    write_report(path)
    trials_dir = Path(path, "figures", "trials")
    md = Path(path, "report.md").read_text()
    assert not trials_dir.exists()
    assert "](figures/trials/" not in md  # no link
    assert f"| `{synth.SPEC[0].trial_id}` | mod_add |" in md
    assert f"this sweep has {n} trials (more than {n - 1}); `edgesweep report {path} --trial-figures`" in md
    assert Path(path, "figures", "overview_modular.png").is_file()

    assert cli.main(["report", path, "--trial-figures"]) == 0
    assert sorted(p.name for p in trials_dir.iterdir()) == sorted(f"{s.trial_id}.png" for s in synth.SPEC)
    md = Path(path, "report.md").read_text()
    assert f"[`{synth.SPEC[0].trial_id}`](figures/trials/{synth.SPEC[0].trial_id}.png)" in md

    monkeypatch.setattr(report, "TRIAL_FIGURES_AUTO_MAX", n)  # at the limit: drawn by default
    Path(trials_dir, f"{synth.SPEC[0].trial_id}.png").unlink()
    write_report(path)
    assert Path(trials_dir, f"{synth.SPEC[0].trial_id}.png").is_file()
    assert cli.main(["report", path, "--no-trial-figures"]) == 0
    assert "](figures/trials/" not in Path(path, "report.md").read_text()


def test_report_main_errors(tmp_path, capsys, synth):
    missing = tmp_path / "nope" / synth.SWEEP
    assert report_main(str(missing)) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    path = synth.build_sweep(str(tmp_path / "root"), synth.SPEC[:1])  # data, but never aggregated
    assert report_main(path) == 2
    assert "edgesweep aggregate" in capsys.readouterr().err
    # a damaged runs table: named, and the fix is to aggregate again (not --skip-bad-files)
    aggregate_sweep(path, use_ray=False, report=False)
    runs = next(Path(path, "runs").glob("*.parquet"))
    runs.write_bytes(runs.read_bytes()[:100])
    assert report_main(path) == 2
    err = capsys.readouterr().err
    assert f"{runs}: truncated" in err and "`edgesweep aggregate ROOT/SWEEP` writes it again" in err, err
    aggregate_sweep(path, use_ray=False, report=False)
    assert report_main(path) == 0


def test_report_commands_paste_into_a_shell_and_a_renamed_copy_is_named(tmp_path, capsys, synth):
    """A root with a space: the commands report.md gives quote the path, so they paste into a
    shell. A copied sweep folder whose name is no valid sweep name ("synth (copy)") is refused
    saying to rename it — the folder's name is the sweep's, written into its tables."""
    import shlex
    import shutil

    path = synth.build_sweep(str(tmp_path / "my results"), synth.SPEC[:2])
    aggregate_sweep(path, use_ray=False, report=True)
    md = Path(path, "report.md").read_text()
    assert f"`edgesweep query {shlex.quote(path)} \"SELECT * FROM summary\"`" in md and "'" in shlex.quote(path)
    copy = tmp_path / "synth (copy)"
    shutil.copytree(path, copy)
    assert report_main(str(copy)) == 2
    err = capsys.readouterr().err
    assert f"{copy}: sweep 'synth (copy)' is not a valid name" in err and "rename the folder" in err, err


def test_every_table_of_a_report_with_detection_has_as_many_cells_per_row_as_its_header(tmp_path, synth):
    """A `|` inside a cell (the benchmark's "P(grok within Δ | alarm)" header) must be escaped,
    or the table does not render in Markdown and its columns shift in report.html."""
    import re

    from edgesweep.platform.detect import run_detection

    path = synth.build_sweep(str(tmp_path))
    aggregate_sweep(path, use_ray=False, report=False)
    run_detection(path)
    write_report(path)
    md = Path(path, "report.md").read_text()
    assert "## Early-warning benchmark" in md
    assert "| runs | n | peak / at T > 1.5 | at memorisation / at T > 1.5 |" in md
    assert "| grokked | 6 |" in md  # the six positives, each judged at its own grok step
    tables, current = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            current.append(len(re.split(r"(?<!\\)\|", line.strip().strip("|"))))
        elif current:
            tables.append(current)
            current = []
    assert len(tables) >= 8
    for counts in tables:
        assert len(set(counts)) == 1, counts
    assert "P(grok within Δ \\| alarm)" in md
    assert "Older than the aggregation" not in md


def test_a_detection_older_than_the_aggregation_is_said(tmp_path, synth):
    """detect, then more trials and aggregate again: the benchmark section scored other runs
    than the report's tables, and says so (by content: a cloned sweep's file times say nothing)."""
    from edgesweep.platform.detect import run_detection

    path = synth.build_sweep(str(tmp_path), synth.SPEC[:4])
    aggregate_sweep(path, use_ray=False, report=False)
    run_detection(path)
    synth.build_sweep(str(tmp_path), synth.SPEC[4:6])  # two more trials, then a new aggregation
    aggregate_sweep(path, use_ray=False, report=True)
    bench = Path(path, "report.md").read_text().split("## Early-warning benchmark")[1]
    assert ("**Older than the aggregation above**: `edgesweep detect` scored other runs than the `runs` table "
            f"now holds (trials added or grown since); `edgesweep detect {path}` scores the current ones.") in bench
    run_detection(path)
    write_report(path)
    assert "Older than the aggregation" not in Path(path, "report.md").read_text()


def test_a_damaged_scorecard_or_detection_json_is_named_not_a_traceback_or_a_missing_section(tmp_path, synth, capsys):
    """Empty, not JSON, not UTF-8, not an object, or without what the report reads: one line
    naming the file and the command that writes it again, exit 2, report.md left as it was.
    (An empty scorecard.json read as "aggregated with the scorecard turned off", and an empty
    detection.json as no benchmark at all.)"""
    from edgesweep.platform.detect import run_detection

    path = synth.build_sweep(str(tmp_path))
    aggregate_sweep(path, use_ray=False, report=True)
    run_detection(path)
    before = Path(path, "report.md").read_bytes()
    for name, writer in (("scorecard.json", "aggregate"), ("detection.json", "detect")):
        good = Path(path, name).read_bytes()
        for bad in (b"", b"{ not json", b"\xff\xfe", b"[1, 2, 3]", b'{"evaluations": 5}'):
            Path(path, name).write_bytes(bad)
            assert report_main(path) == 2, (name, bad)
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"edgesweep report: error: {path}/{name}: "), (bad, err)
            assert f"`edgesweep {writer} {path}`" in err[0], err
            assert Path(path, "report.md").read_bytes() == before
        Path(path, name).write_bytes(good)
    assert report_main(path) == 0


@pytest.mark.s3
def test_report_on_s3(s3_env, s3_root, synth):
    """An s3:// sweep: tables, scorecard.json, report.md and figures land under its prefix."""
    from edgesweep.storage import resolve_root

    path = synth.build_sweep(s3_root, [synth.SPEC[0], synth.SPEC[4]])
    aggregate_sweep(path, use_ray=False, report=True)
    runs = scan(path, "runs").collect().sort("trial_id")
    assert runs["alarm_step"].to_list() == [1700, 1700]
    assert runs["detector_outcome"].to_list() == ["hit", "false_alarm"]
    root = resolve_root(path)
    for rel in ["report.md", "scorecard.json", "figures/overview_modular.png",
                f"figures/trials/{synth.SPEC[0].trial_id}.png"]:
        assert root.exists(root.path(rel)), rel
    with root.fs.open_input_stream(root.path("report.md")) as f:
        md = f.read().decode()
    assert "gap dynamics preceded grokking in 1/1 runs with weight decay, 0/1 without" in md


def test_a_summary_aggregated_before_the_single_hit_definition_is_described_as_it_counts(reported):
    """Until 2026-12-07 the aggregation counted an alarm at the grok step as a hit (and wrote
    `hits_with_lead` beside it). A report drawn from such a summary says so, rather than put
    today's definition over yesterday's counts."""
    import json

    import polars as pl

    from edgesweep.platform.report import _detector_section

    summary = scan(reported, "summary").collect()
    config = json.loads(summary["analysis_config"][0])
    now = _detector_section(summary, config)
    before = _detector_section(summary.with_columns(pl.col("hits").alias("hits_with_lead")), config)
    assert "hit: alarm strictly before the grok step; late: at or after it;" in now
    assert "aggregated before 2026-12-07" not in now
    assert ("hit: alarm at or before the grok step (this summary was aggregated before 2026-12-07; "
            "`edgesweep aggregate` re-derives it") in before
    assert now.split("\n\n")[-1] == before.split("\n\n")[-1]  # the table itself is the same


def test_the_precedence_sentence_says_when_no_run_grokked(reported):
    """Over a sweep where nothing grokked (a language-model sweep), "0/6 runs with weight decay"
    read as a failed test of the paper's claim; it is no test at all, and the sentence says so."""
    import polars as pl

    from edgesweep.platform.report import precedence_sentence

    summary = scan(reported, "summary").collect()
    assert precedence_sentence(summary) == "gap dynamics preceded grokking in 3/6 runs with weight decay, 1/4 without"
    none = summary.with_columns(pl.lit(0).alias("n_grokked"), pl.lit(0).alias("n_preceded"))
    assert precedence_sentence(none) == ("gap dynamics preceded grokking in 0/6 runs with weight decay, 0/4 without "
                                         "(no run grokked: the count tests nothing)")
    assert precedence_sentence(none, 2) == ("gap dynamics preceded grokking in 0/6 runs with weight decay, 0/4 "
                                            "without (no run grokked: the count tests nothing; 2 trial(s) still "
                                            "running: provisional)")
    assert precedence_sentence(summary, 1).endswith("1/4 without (1 trial(s) still running: provisional)")


def test_grokked_runs_without_a_computable_criterion_are_named(reported):
    """A grokked run with no usable window before its grok step counts as not preceded (the
    paper's denominator holds it); the report says which runs that is, so a lower count is
    not read as a measured absence of a decline."""
    import polars as pl

    from edgesweep.platform.report import untestable_sentence

    runs = scan(reported, "runs").collect()
    assert untestable_sentence(runs) is None  # every grokked run of the hand-built sweep has windows
    md = (reported / "report.md").read_text()
    assert "criterion could not be computed" not in md
    grokked = runs.filter(pl.col("grok_step").is_not_null() & pl.col("error").is_null())["trial_id"].sort()
    blank = runs.with_columns(pl.when(pl.col("trial_id").is_in(grokked[:2].to_list())).then(float("nan"))
                              .otherwise(pl.col("g23_decline")).alias("g23_decline"))
    assert untestable_sentence(blank) == (
        f"2 grokked run(s) had no window with a usable g23 before or at the grok step, so the criterion could "
        f"not be computed for them; they count as not preceded: {grokked[0]}, {grokked[1]}.")


def test_report_without_a_summary_table_says_so_before_writing(reported, tmp_path, capsys):
    """A runs table without its summary (a folder removed, an aggregation cut short) ended in
    Polars' ColumnNotFoundError traceback after the figures had been redrawn."""
    import shutil

    sweep = tmp_path / reported.name
    shutil.copytree(reported, sweep)
    shutil.rmtree(sweep / "summary")
    before = {p: p.stat().st_mtime_ns for p in (sweep / "figures").rglob("*.png")}
    assert report_main(str(sweep)) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"edgesweep report: error: no summary table at {sweep}/summary (the runs table is "
                           f"there): run `edgesweep aggregate {sweep}` to write both again")
    assert {p: p.stat().st_mtime_ns for p in (sweep / "figures").rglob("*.png")} == before
