"""The sweep report on the constructed sweep of test_aggregate.py (answers known by
construction): files exist and are real PNGs, report.md carries the measured tables."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_aggregate import SPEC, SWEEP, build_sweep, cp  # noqa: E402

from edgesweep.platform.aggregate import aggregate_sweep  # noqa: E402
from edgesweep.platform.report import phase_of, report_main, write_report  # noqa: E402
from edgesweep.storage import scan  # noqa: E402

EXPECTED_FIGURES = ["figures/overview_modular.png", "figures/overview_dyck.png",
                    "figures/k_star_by_optimizer.png", "figures/adiabatic_by_phase.png",
                    "figures/decline_by_arm.png"]


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rep")
    path = build_sweep(str(root))
    aggregate_sweep(path, use_ray=False, report=True)
    return Path(path)


def test_report_files_exist_and_are_pngs(reported):
    assert (reported / "report.md").is_file()
    for rel in EXPECTED_FIGURES + [f"figures/trials/{s.trial_id}.png" for s in SPEC]:
        p = reported / rel
        assert p.is_file(), rel
        img = mpimg.imread(p)  # decodes: a truncated or non-PNG file raises
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400, (rel, img.shape)
        assert float(np.std(img[..., :3])) > 0.01, f"{rel} is blank"
    # no stray temp files left behind by the atomic writes
    assert not [p for p in reported.rglob(".*") if p.is_file()]


def test_report_precedence_table_has_measured_numbers(reported):
    md = (reported / "report.md").read_text()
    assert "**gap dynamics preceded grokking in 3/6 runs with weight decay, 1/4 without.**" in md
    lo, hi = cp(3, 6)
    p = sps.fisher_exact([[3, 3], [1, 3]]).pvalue
    # scope all, wd 1: 6 runs, 1 running, 5 grokked, 3/6 preceded, 3/5 of grokked
    assert f"| all | 1 | 6 | 1 | 5 | **3/6** | 3/5 | [{lo:.2f}, {hi:.2f}] | {p:.2g} |" in md
    lo0, hi0 = cp(1, 4)
    assert f"| all | 0 | 4 | 0 | 1 | **1/4** | 1/1 | [{lo0:.2f}, {hi0:.2f}] | — |" in md
    assert "| modular | 1 | 4 | 1 | 3 | **3/4** |" in md


def test_report_detector_table(reported):
    md = (reported / "report.md").read_text()
    hlo, hhi = cp(3, 5)
    flo, fhi = cp(1, 1)
    p = sps.fisher_exact([[5, 1], [2, 2]]).pvalue
    # hits 3 (all with lead), late 1, miss 1, false alarm 1, quiet 0; leads 1300/1100/500
    assert (f"| all | 1 | 3 | 3 | 1 | 1 | 1 | 0 | 3/5 [{hlo:.2f}, {hhi:.2f}] | 1/1 [{flo:.2f}, {fhi:.2f}] "
            f"| 1100 [800, 1200] (500–1300) | {p:.2g} |") in md


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


def test_report_k_star_and_adiabatic_tables(reported):
    md = (reported / "report.md").read_text()
    # Independent count over the constructed full windows (steps ≥ 900, nonfinite row dropped)
    k = {2: 0, 3: 0}
    phase = [0, 0, 0]
    for s in SPEC:
        for step in range(100, s.last + 1, 100):
            if step == s.nonfinite_at:
                continue
            if step >= 900:
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


def test_phase_of_by_hand():
    steps = np.array([100, 500, 900, 1000, 2999, 3000, 4000])
    assert phase_of(steps, 900, 3000).tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert phase_of(steps, None, None).tolist() == [0] * 7
    assert phase_of(steps, None, 1000).tolist() == [0, 0, 0, 2, 2, 2, 2]  # grok without memorising


def test_wall_time_when_finished(tmp_path):
    done = [s for s in SPEC if s.status != "running"]  # 9 trials, each 100 s, all started at T0
    path = build_sweep(str(tmp_path), done)
    aggregate_sweep(path, use_ray=False, report=False)
    write_report(path, trial_figures=False)
    md = Path(path, "report.md").read_text()
    assert "Sweep wall time 100 s (first trial start → last trial end); sum of trial wall times 900 s (×9.0 parallelism)." in md
    assert not Path(path, "figures", "trials").exists()


def test_report_main_errors(tmp_path, capsys):
    missing = tmp_path / "nope" / SWEEP
    assert report_main(str(missing)) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    path = build_sweep(str(tmp_path / "root"), SPEC[:1])  # data, but never aggregated
    assert report_main(path) == 2
    assert "edgesweep aggregate" in capsys.readouterr().err


@pytest.mark.s3
def test_report_on_s3(tmp_path, monkeypatch):
    """An s3:// sweep: tables, scorecard.json, report.md and figures land under its prefix."""
    from s3server import SeaweedS3, SeaweedUnavailable

    (tmp_path / "s3").mkdir()  # SeaweedS3 runs `weed version` in its workdir before creating it
    srv = SeaweedS3(tmp_path / "s3")
    try:
        srv.start()
    except SeaweedUnavailable as exc:
        pytest.skip(f"SeaweedFS cannot run here: {exc}")
    try:
        for k, v in srv.env.items():
            monkeypatch.setenv(k, v)
        root = f"s3://{srv.bucket}/prefix"
        path = build_sweep(root, [SPEC[0], SPEC[4]])
        aggregate_sweep(path, use_ray=False, report=True)
        runs = scan(path, "runs").collect().sort("trial_id")
        assert runs["alarm_step"].to_list() == [1700, 1700]
        assert runs["detector_outcome"].to_list() == ["hit", "false_alarm"]

        import pyarrow.fs as pafs
        fs = pafs.S3FileSystem(access_key=srv.access_key, secret_key=srv.secret_key,
                               endpoint_override=srv.endpoint, scheme="http", region="us-east-1")
        base = f"{srv.bucket}/prefix/{SWEEP}"
        for rel in ["report.md", "scorecard.json", "figures/overview_modular.png",
                    f"figures/trials/{SPEC[0].trial_id}.png"]:
            assert fs.get_file_info(f"{base}/{rel}").type == pafs.FileType.File, rel
        with fs.open_input_stream(f"{base}/report.md") as f:
            md = f.read().decode()
        assert "gap dynamics preceded grokking in 1/1 runs with weight decay, 0/1 without" in md
    finally:
        srv.stop()
