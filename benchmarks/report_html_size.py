"""Size (and load time) of report.html at 1,000 trials, one run.

    .venv/bin/python benchmarks/report_html_size.py [--trials 1000] [--dir /tmp/esagg-bench]

Builds the synthetic sweep of benchmarks/aggregate.py with the real storage writer (``--trials``
trials × 200 feature rows + 50 eval rows; cached in ``--dir``), aggregates it in one process,
writes the report with the real ``write_report`` (per-trial PNGs off: they are report.md's, and
1,000 of them take minutes), then prints report.html's size split into the inlined plotly.js
and the rest (data + page), the number of curve points kept, and — when Chromium is installed —
how long headless Chromium takes to load the page (tests/chromium.py; a console message fails).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "tests")]

from aggregate import build  # noqa: E402  (benchmarks/aggregate.py: the synthetic sweep)

from edgesweep.platform.aggregate import AggregateConfig, aggregate_sweep  # noqa: E402
from edgesweep.platform.report import write_report  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "esagg-bench"))
    args = ap.parse_args()
    path = build(os.path.join(args.dir, str(args.trials)), args.trials)
    t0 = time.perf_counter()
    aggregate_sweep(path, use_ray=False, report=False, config=AggregateConfig(scorecard=False))
    t_agg = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_report(path, trial_figures=False)
    t_rep = time.perf_counter() - t0
    page = Path(path) / "report.html"
    text = page.read_text()
    js = re.search(r'<script type="application/gzip;base64" id="plotly-js-gz">(.*?)</script>', text, re.S).group(1)
    data = re.search(r'<script type="application/gzip;base64" id="edgesweep-data-gz">(.*?)</script>', text, re.S).group(1)
    unpacked = gzip.decompress(base64.b64decode(data))
    runs = json.loads(unpacked)["runs"]
    points = sum(len(r["e"]) * 2 + len(r["f"]) * 2 for r in runs)
    mib = 1024 * 1024
    print(f"{len(runs)} trials: report.html {page.stat().st_size / mib:.2f} MiB "
          f"= plotly.js {len(js.encode()) / mib:.2f} MiB + data {len(data.encode()) / mib:.2f} MiB "
          f"+ page {(len(text.encode()) - len(js.encode()) - len(data.encode())) / mib:.2f} MiB "
          f"(gzip + base64; the data unpack to {len(unpacked) / mib:.2f} MiB of JSON)")
    print(f"curve points kept: {points:,} ({points / len(runs):.0f} per trial; stored rows per trial: "
          f"200 features + 50 evals, 2 curves each)")
    print(f"aggregate {t_agg:.1f}s, write_report (report.md + report.html, no per-trial PNGs) {t_rep:.1f}s")
    try:
        import chromium
        t0 = time.perf_counter()
        dom, console = chromium.load(page.as_uri(), budget_ms=30000, timeout=300)
        t_load = time.perf_counter() - t0
        drawn = len(re.findall(r'class="trace scatter', dom))
        print(f"headless Chromium: loaded and drew {drawn} traces in {t_load:.1f}s (process start included); "
              f"console messages: {len(console)}")
        if console:
            print(*console, sep="\n", file=sys.stderr)
            return 1
    except RuntimeError as exc:
        print(f"(Chromium not run: {exc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
