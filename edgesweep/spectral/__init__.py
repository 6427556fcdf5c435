"""Pure spectral math on tensors and arrays: the rolling Gram window, its features, sketches,
events, the prospective detector, statistics and the predictions scorecard.

No I/O and no Ray here (DESIGN.md §2); docs/CONTRACTS.md pins the feature-row keys.
The torch-based parts (monitor, sketch, window) are imported on first use, so that the
aggregation's Ray tasks, which need only the numpy statistics, do not pay for importing torch.
"""

from importlib import import_module

from .detector import (DetectorConfig, DetectorEvaluation, G23CollapseDetector, classify_run,
                       compare_arms, evaluate_detector, first_alarm)
from .events import (GROK_THRESHOLD, MEMORIZATION_THRESHOLD, PRECEDENCE_RATIO, PrecedenceResult,
                     g23_precedence, grok_step, memorization_step)
from .gram import RANK_RTOL, gram_eigh, spectrum_features
from .scorecard import Prediction, RunData, scorecard
from .stats import clopper_pearson, fisher_exact_2x2, lead_time_summary, pearson_r

_LAZY = {
    "ATTENTION_PATTERN": ".monitor", "FEATURE_COLUMNS": ".monitor", "MonitorConfig": ".monitor",
    "SpectralMonitor": ".monitor", "select_parameters": ".monitor",
    "CountSketch": ".sketch", "window_features": ".window",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ATTENTION_PATTERN", "FEATURE_COLUMNS", "GROK_THRESHOLD", "MEMORIZATION_THRESHOLD",
    "PRECEDENCE_RATIO", "RANK_RTOL", "CountSketch", "DetectorConfig", "DetectorEvaluation",
    "G23CollapseDetector", "MonitorConfig", "Prediction", "PrecedenceResult", "RunData",
    "SpectralMonitor", "classify_run", "clopper_pearson", "compare_arms", "evaluate_detector",
    "first_alarm", "fisher_exact_2x2", "g23_precedence", "gram_eigh", "grok_step",
    "lead_time_summary", "memorization_step", "pearson_r", "scorecard", "select_parameters",
    "spectrum_features", "window_features",
]
