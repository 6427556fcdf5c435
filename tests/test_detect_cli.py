"""`edgesweep detect ROOT/SWEEP` end to end on the hand-built sweep of tests/conftest.py, whose
labels and alarms are known by construction: the printed table, the files it writes, and a
sweep with no positives (nothing to score hits on) handled without noise."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl

from raycluster import REPO

PNG = b"\x89PNG\r\n\x1a\n"


def _detect(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgesweep", "detect", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def _row(out: str, detector: str, evaluation: str) -> list[str]:
    for line in out.splitlines():
        cells = line.split()
        if cells[:2] == [detector, evaluation]:
            return cells
    raise AssertionError(f"no {detector} {evaluation} row in:\n{out}")


def test_detect_scores_the_hand_built_sweep(tmp_path, synth):
    """By construction: positives A, B, C, D, G, J (delayed groks followed ≥ 1,000 steps),
    negatives E, F, H (never grok), I excluded (running). g23_collapse alarms (tests/test_aggregate.py
    EXPECTED): A 1700, B 1600, G 1600, J 1700 before their groks (hits), C 2700 after its grok
    at 2000 (late), D none (miss), E 1700 (false alarm): 4/6 hits, 1/3 false alarms. The
    weight-decay baseline alarms on every weight-decay run: 5 of the 6 positives (not G, wd 0),
    none of the negatives (all wd 0)."""
    path = synth.build_sweep(tmp_path / "results")
    res = _detect(path)
    assert res.returncode == 0, res.stderr
    assert "Warning" not in res.stderr, res.stderr
    out = res.stdout
    assert out.startswith("labels: 6 grokked (delayed), 3 negatives (0 hard), 1 excluded; "
                          "longest positive grok step 3000;"), out
    g23 = _row(out, "g23_collapse", "in-sample")
    assert g23[2] == "4/6" and g23[5] == "1/3", g23
    wd = _row(out, "weight_decay", "in-sample")
    assert wd[2] == "5/6" and wd[5] == "0/3", wd
    assert "no positives" not in out
    # The paper's criterion over a comparable span: every positive is judged at its own grok
    # step, which its data reach (6 observed); the counts beside are checked by hand in
    # tests/test_analysis_detection.py.
    assert "The paper's criterion over a comparable span" in out
    _row(out, "grokked", "6")

    doc = json.loads((tmp_path / "results" / synth.SWEEP / "detection.json").read_text())
    assert doc["labels"] == {"positive": 6, "negative": 3, "excluded": 1, "hard": 0}
    table = pl.read_parquet(next((tmp_path / "results" / synth.SWEEP / "detection").glob("*.parquet")))
    got = table.filter((pl.col("detector") == "g23_collapse") & (pl.col("evaluation") == "in-sample"))
    assert got.height == 1 and got.select("n_positive").item() == 6
    for name in ("roc", "lead", "alarm_vs_grok"):
        png = (tmp_path / "results" / synth.SWEEP / "figures" / f"detection_{name}.png").read_bytes()
        assert png.startswith(PNG), name


def test_detect_on_a_sweep_without_positives_says_so_and_stays_quiet(tmp_path, synth):
    """Only never-grokking runs (E, F, H): the false alarms are scored, the table says there is
    nothing to score hits on, and no plotting warning (an empty ROC legend) reaches stderr."""
    path = synth.build_sweep(tmp_path / "results", [synth.BY_ID[t] for t in
                                                     ("E_add_wd0_s42", "F_sub_wd0_s137", "H_dyck_wd0_s137")])
    res = _detect(path)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "", res.stderr
    assert res.stdout.startswith("labels: 0 grokked (delayed), 3 negatives (0 hard), 0 excluded; "
                                 "longest positive grok step —;"), res.stdout
    assert "no positives: hits, leads and AUROC need runs that grokked after a delay" in res.stdout
    assert "the paper's criterion over a comparable span: no positives to measure the span by" in res.stdout
    assert _row(res.stdout, "g23_collapse", "in-sample")[2:4] == ["—", "1/3"]
    roc = (tmp_path / "results" / synth.SWEEP / "figures" / "detection_roc.png").read_bytes()
    assert roc.startswith(PNG)


def test_detect_on_one_workload_reports_no_cross_validation_rather_than_untuned_folds(tmp_path, synth):
    """With one workload, leaving it out leaves nothing to tune on: every fold was "tuned" on
    no runs (each grid point J = 0, the first taken) and still shown as cross-validated. Now
    the in-sample rows stand alone and a line says why."""
    path = synth.build_sweep(tmp_path / "results", [synth.BY_ID[t] for t in
                                                     ("A_add_wd1_s42", "E_add_wd0_s42", "J_add_wd1_s2024")])
    res = _detect(path)
    assert res.returncode == 0, res.stderr
    why = ("leave-one-workload-out needs positive or negative runs of at least two workload values; "
           "got 1 (mod_add)")
    assert f"no cross-validation: {why}; the rows below are in-sample only" in res.stdout, res.stdout
    assert _row(res.stdout, "g23_collapse", "in-sample")
    assert not [ln for ln in res.stdout.splitlines() if "cv:" in ln], res.stdout
    doc = json.loads((tmp_path / "results" / synth.SWEEP / "detection.json").read_text())
    assert doc["cv_problem"] == why and {r["evaluation"] for r in doc["results"]} == {"in-sample"}


def test_detect_reads_past_a_damaged_part_and_leaves_its_trial_out(tmp_path, synth):
    """One truncated part (A's evaluations): named once on stderr, A excluded (incomplete), the
    rest scored — where detect used to stop with a hint to a flag it does not have. And a part
    deleted with its seal record (E's features) is caught by E's own trials row: excluded too,
    not scored as a negative without windows."""
    path = synth.build_sweep(tmp_path / "results")
    part = next((tmp_path / "results" / synth.SWEEP / "evals").rglob("A_add_wd1_s42.*.parquet"))
    part.write_bytes(part.read_bytes()[:100])
    for f in (tmp_path / "results" / synth.SWEEP / "features").rglob("E_add_wd0_s42.*"):
        f.unlink()  # its parquet part and its seal record
    res = _detect(path)
    assert res.returncode == 0, res.stderr
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("edgesweep detect: warning: ")]
    assert len(warned) == 2 and f"{part}: truncated" in warned[0] + warned[1], res.stderr
    assert any("E_add_wd0_s42: its trials row says completed at step" in ln for ln in warned), res.stderr
    # A (positive) and E (negative) join I among the excluded: 5 positives, 2 negatives
    assert res.stdout.startswith("labels: 5 grokked (delayed), 2 negatives (0 hard), 3 excluded;"), res.stdout
    doc = json.loads((tmp_path / "results" / synth.SWEEP / "detection.json").read_text())
    labels = {r["trial_id"]: r["label"] for r in doc["runs"]}
    assert labels["A_add_wd1_s42"] == labels["E_add_wd0_s42"] == "excluded"


def test_a_detection_document_without_the_criterion_says_so_instead_of_zeros(tmp_path, synth):
    """A detection.json written before `detect` evaluated the paper's criterion (or one that a
    script assembles without it, as benchmarks/detector_selection.py did) has no ``criterion``:
    the text and the report say it is not there, where they printed a table of zero runs."""
    from edgesweep.platform.detect import detection_text, run_detection
    from edgesweep.platform.report import _detection_section

    doc = run_detection(str(synth.build_sweep(tmp_path / "results")), write=False)["doc"]
    assert "grokked                        6" in detection_text(doc)
    del doc["criterion"]
    for text in (detection_text(doc), _detection_section(doc)):
        assert "comparable span: not in this detection.json" in text, text
        assert "grokked                        0" not in text and "| grokked | 0 |" not in text
