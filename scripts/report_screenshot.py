"""Regenerate docs/report-html.png, the README's picture of report.html.

    .venv/bin/python scripts/report_screenshot.py

Copies the committed laptop reproduction (docs/results/grokking-laptop: 30 real runs) to a
temporary folder, writes its report there with the real ``write_report`` (so report.html is
what a sweep gets), and photographs one trial's curves in headless Chromium (tests/chromium.py).
"""

import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import chromium  # noqa: E402

from edgesweep.platform.report import write_report  # noqa: E402

TRIAL = "mod_add-adamw-wd1.0-s42"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="es-shot-") as tmp:
        sweep = Path(tmp) / "grokking-laptop"
        shutil.copytree(REPO / "docs" / "results" / "grokking-laptop", sweep)
        write_report(str(sweep), trial_figures=False)
        page = sweep / "report.html"
        out = REPO / "docs" / "report-html.png"
        console = chromium.screenshot(f"{page.as_uri()}#trial={TRIAL}", out, size=(1300, 1060))
        if console:
            print("console messages:", *console, sep="\n  ", file=sys.stderr)
            return 1
        print(f"{out} ({out.stat().st_size:,} bytes) from {page} ({page.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
