"""Per-window spectral math: the rolling Gram window, its features, sketches, the streaming
monitor. No I/O and no Ray (DESIGN.md §2); docs/CONTRACTS.md pins the feature-row keys.
Cross-run analysis (events, detectors, statistics, scorecard) lives in ``edgesweep.analysis``.

The torch-based parts (monitor, sketch, window) are imported on first use, so that reading the
monitor's config or the Gram math costs no torch import.
"""

from importlib import import_module

from .config import ATTENTION_PATTERN, MAX_WINDOW, MonitorConfig
from .gram import RANK_RTOL, gram_eigh, spectrum_features

_LAZY = {
    "FEATURE_COLUMNS": ".monitor", "SpectralMonitor": ".monitor", "select_parameters": ".monitor",
    "CountSketch": ".sketch", "window_features": ".window",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ATTENTION_PATTERN", "FEATURE_COLUMNS", "MAX_WINDOW", "RANK_RTOL", "CountSketch",
           "MonitorConfig", "SpectralMonitor", "gram_eigh", "select_parameters",
           "spectrum_features", "window_features"]
