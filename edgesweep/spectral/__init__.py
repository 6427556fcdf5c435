"""Pure spectral math on tensors and arrays: the rolling Gram window, its features, sketches,
events, the prospective detector, statistics and the predictions scorecard.

No I/O and no Ray here (DESIGN.md §2); docs/CONTRACTS.md pins the feature-row keys.
"""

from .detector import (DetectorConfig, DetectorEvaluation, G23CollapseDetector, classify_run,
                       compare_arms, evaluate_detector, first_alarm)
from .events import (GROK_THRESHOLD, MEMORIZATION_THRESHOLD, PRECEDENCE_RATIO, PrecedenceResult,
                     g23_precedence, grok_step, memorization_step)
from .gram import RANK_RTOL, gram_eigh, spectrum_features
from .monitor import (ATTENTION_PATTERN, FEATURE_COLUMNS, MonitorConfig, SpectralMonitor,
                      select_parameters)
from .scorecard import Prediction, RunData, scorecard
from .sketch import CountSketch
from .stats import clopper_pearson, fisher_exact_2x2, lead_time_summary, pearson_r
from .window import window_features

__all__ = [
    "ATTENTION_PATTERN", "FEATURE_COLUMNS", "GROK_THRESHOLD", "MEMORIZATION_THRESHOLD",
    "PRECEDENCE_RATIO", "RANK_RTOL", "CountSketch", "DetectorConfig", "DetectorEvaluation",
    "G23CollapseDetector", "MonitorConfig", "Prediction", "PrecedenceResult", "RunData",
    "SpectralMonitor", "classify_run", "clopper_pearson", "compare_arms", "evaluate_detector",
    "first_alarm", "fisher_exact_2x2", "g23_precedence", "gram_eigh", "grok_step",
    "lead_time_summary", "memorization_step", "pearson_r", "scorecard", "select_parameters",
    "spectrum_features", "window_features",
]
