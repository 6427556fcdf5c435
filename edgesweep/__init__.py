"""edgesweep: Ray sweeps that track the spectral edge of the rolling-window Gram matrix of
parameter updates, and test whether it precedes grokking.

``edgesweep.open(ROOT)`` opens a sweep for a notebook (:mod:`edgesweep.notebook`). Importing
``edgesweep`` itself loads nothing heavy (no torch, Ray or Polars): every entry point imports
what it needs when called.
"""

__all__ = ["open"]


def open(root, on_error: str = "raise"):  # noqa: A001 — `edgesweep.open(ROOT)` is the API
    """The sweep (or root of sweeps) at ``root``: ``.trials``, ``.evals``, ``.features``,
    ``.runs``, ``.summary`` as Polars LazyFrames, ``.plot(trial_id)`` for one trial's curves."""
    from .notebook import Sweep
    return Sweep(root, on_error=on_error)
