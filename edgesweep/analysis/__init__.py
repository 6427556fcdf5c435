"""Everything that works across runs — torch-free and Ray-free (Polars, numpy, scipy).

* :mod:`.record` — one :class:`TrialRecord` per trial, read from storage in one place, with
  the settings parsed once and the single full-window rule; :class:`AnalysisConfig`.
* :mod:`.events` — grok and memorisation steps, the paper's g23-precedence criterion.
* :mod:`.detectors` — prospective, causal detectors (one class each, online = offline).
* :mod:`.evaluation` — hits, false alarms, lead times, arm contrasts.
* :mod:`.runs` — the ``runs`` and ``summary`` tables.
* :mod:`.scorecard` — the thesis' testable predictions.
* :mod:`.stats` — exact intervals and tests, small descriptive helpers.

Depends on :mod:`edgesweep.storage` only (DESIGN.md §2); the platform fans it out over Ray.
"""

from .detectors import DETECTORS, Detector, DetectorConfig, G23CollapseDetector, make_detector, replay
from .evaluation import classify_run, compare_arms, evaluate_detector
from .events import (GROK_THRESHOLD, MEMORIZATION_THRESHOLD, PRECEDENCE_RATIO, PrecedenceResult,
                     g23_precedence, grok_step, memorization_step)
from .record import AnalysisConfig, TrialRecord, TrialSettings, read_records, read_trials
from .runs import RUNS_SCHEMA, SUMMARY_SCHEMA, delayed_precedence, evidence, run_row, summary_table
from .scorecard import Prediction, scorecard

__all__ = [
    "AnalysisConfig", "TrialRecord", "TrialSettings", "read_records", "read_trials",
    "GROK_THRESHOLD", "MEMORIZATION_THRESHOLD", "PRECEDENCE_RATIO", "PrecedenceResult",
    "g23_precedence", "grok_step", "memorization_step", "DETECTORS", "Detector", "DetectorConfig",
    "G23CollapseDetector", "make_detector", "replay", "classify_run", "compare_arms",
    "evaluate_detector", "RUNS_SCHEMA", "SUMMARY_SCHEMA", "delayed_precedence", "evidence", "run_row",
    "summary_table", "Prediction", "scorecard",
]
