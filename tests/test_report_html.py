"""report.html on the hand-built sweep of tests/conftest.py (events known by construction),
written by the real ``write_report`` and opened in headless Chromium (Debian's package): no
console message, the plot and its three panels drawn, the selectors working (through the URL
the page keeps its selection in), every script inline."""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from edgesweep.platform.aggregate import aggregate_sweep
from edgesweep.platform.report import write_report
from edgesweep.platform.report_html import MAX_POINTS, decimate, markdown_to_html

import chromium


@pytest.fixture(scope="module")
def report_html(tmp_path_factory, synth) -> Path:
    root = tmp_path_factory.mktemp("rephtml")
    path = synth.build_sweep(str(root))
    aggregate_sweep(path, use_ray=False, report=False)
    write_report(path, trial_figures=False)
    return Path(path) / "report.html"


def payload(html: str, script_id: str) -> str:
    """An inlined gzip + base64 payload, unpacked."""
    m = re.search(rf'<script type="application/gzip;base64" id="{script_id}">(.*?)</script>', html, re.S)
    return gzip.decompress(base64.b64decode(m.group(1))).decode()


def page_data(html: str) -> dict:
    return json.loads(payload(html, "edgesweep-data-gz"))


def test_report_html_is_one_self_contained_file(report_html, synth):
    html = report_html.read_text()
    assert (report_html.parent / "report.md").is_file()
    # every script inline: no src=, no stylesheet or image fetched, no CDN
    assert not re.search(r"<script[^>]*\bsrc=", html) and not re.search(r"<link[^>]*\bhref=", html)
    assert not re.search(r"<img\b", html)
    assert "Plotly.react" in html and "DecompressionStream" in html
    from plotly.offline import get_plotlyjs
    assert payload(html, "plotly-js-gz") == get_plotlyjs()     # the whole library, inlined
    # the data are the runs table's events and the stored curves
    runs = {r["id"]: r for r in page_data(html)["runs"]}
    assert sorted(runs) == sorted(s.trial_id for s in synth.SPEC)
    a = runs["A_add_wd1_s42"]
    assert (a["grok"], a["alarm"], a["memo"], a["outcome"], a["preceded"]) == (3000, 1700, 1000, "hit", True)
    assert a["e"] == list(range(100, 4001, 100)) and a["ta"][a["e"].index(3000)] == 0.97
    assert 1200 not in a["f"]                     # the non-finite window is not drawn
    assert runs["E_add_wd0_s42"]["grok"] is None and runs["E_add_wd0_s42"]["outcome"] == "false_alarm"
    # the report's tables, converted from report.md's own sections
    for heading in ("Trials and wall time", "Grokking precedence", "Prospective detector", "Scorecard"):
        assert f"<h2>{heading}" in html, heading
    sentence = re.search(r"\*\*(gap dynamics preceded.*?)\*\*", (report_html.parent / "report.md").read_text()).group(1)
    assert sentence == "gap dynamics preceded grokking in 3/6 runs with weight decay, 1/4 without."
    assert f"<strong>{sentence}</strong>" in html


def test_report_html_renders_in_headless_chromium(report_html):
    dom, console = chromium.load(report_html.as_uri())
    assert console == []                          # no error, no warning, nothing logged at all
    assert 'class="js-plotly-plot"' in dom or "js-plotly-plot" in dom
    for axis in ("accuracy", "g23 = σ2² − σ3²", "gap ratio R", "optimizer step"):
        assert axis in dom, axis                  # the three panels' axis titles, drawn as SVG text
    assert len(re.findall(r'class="trace scatter', dom)) >= 4   # test/train accuracy, g23, R (+ events)
    assert re.search(r'class="js-line"[^>]*d="M[\d.]+,[\d.]+L', dom)  # lines with real path data
    # default view: the grokked weight-decay run with the most windows (B: A lost its non-finite
    # one), its events drawn as lines
    assert "B_sub_wd1_s137 — mod_sub, wd 1, seed 137 · completed · grok 2500 · alarm 1600" in dom
    assert len(re.findall(r'class="shapelayer"', dom)) >= 1 and "rgb(44, 160, 44)" in dom  # grok line
    rows = re.findall(r'<tr data-id="([^"]+)"', dom)
    assert len(rows) == 10                        # the runs table lists every run


def test_report_html_selectors_narrow_the_trials(report_html):
    dom, console = chromium.load(report_html.as_uri() + "#wd=0&trial=G_dyck_wd0_s42")
    assert console == []
    assert re.findall(r'<tr data-id="([^"]+)"', dom) == ["E_add_wd0_s42", "F_sub_wd0_s137", "G_dyck_wd0_s42",
                                                         "H_dyck_wd0_s137"]
    assert "G_dyck_wd0_s42 — dyck, wd 0, seed 42" in dom and "grok 3000" in dom
    # "all matching" overlays every trial of the selection, one legend entry per trial
    dom, console = chromium.load(report_html.as_uri() + "#workload=dyck")
    assert console == [] and "4 trials" in dom
    for tid in ("C_dyck_wd1_s42", "D_dyck_wd1_s137", "G_dyck_wd0_s42", "H_dyck_wd0_s137"):
        assert f"{tid} · test acc" in dom, tid


def test_console_check_catches_a_broken_page(tmp_path):
    """The console check above can fail: an uncaught error in a page is reported."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>document.body.textContent = 'ran'; undefinedFunction();</script></body></html>")
    dom, console = chromium.load(page.as_uri(), budget_ms=2000)
    assert "ran" in dom
    assert len(console) == 1 and "undefinedFunction is not defined" in console[0]


def test_decimate_keeps_extremes_and_ends():
    rng = np.random.default_rng(0)
    n = 5000
    y = rng.normal(size=n)
    y[1234] = 50.0                                # a spike a stride would miss
    df = pl.DataFrame({"trial_id": ["a"] * n + ["b"] * 30, "step": list(range(n)) + list(range(30)),
                       "y": list(y) + [0.0] * 30})
    out = decimate(df, ["y"])
    a = out.filter(pl.col("trial_id") == "a")
    assert a.height <= MAX_POINTS + 2 and a["step"].is_sorted()
    assert {0, n - 1, 1234} <= set(a["step"].to_list()) and a["y"].max() == 50.0
    assert a["y"].min() == y.min()
    assert out.filter(pl.col("trial_id") == "b").height == 30   # short curves are kept whole


def test_markdown_tables_become_html():
    md = "## Title `x`\n\ntext **bold** [link](figures/a.png)\n\n| a | b \\| c |\n|---|---|\n| 1 | 2 |\n\n![fig](f.png)"
    html = markdown_to_html(md)
    assert "<h2>Title <code>x</code></h2>" in html and "<strong>bold</strong> link" in html
    assert "<th>b | c</th>" in html and "<td>2</td>" in html and "img" not in html and "f.png" not in html
