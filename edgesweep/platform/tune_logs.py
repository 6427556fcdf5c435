"""Tune's log records that would mislead a user of the CLI, rewritten or dropped in the driver.

Tune logs through the standard ``logging`` module; a filter on its logger sees each record
before any handler prints it. Only records identified by their message (and error type) are
touched; everything else passes unchanged.
"""

from __future__ import annotations

import logging

__all__ = ["GoneCheckpointNote", "TunesResumeAdvice", "install_tune_log_filters"]


class GoneCheckpointNote:
    """For Tune's controller: after a driver was killed and its sweep resumed, Tune's restored
    state can list a checkpoint folder that was deleted before the kill (it keeps
    ``num_to_keep``), and registering the trial's next checkpoint then logs an ERROR with a whole
    FileNotFoundError traceback — while the trial goes on and finishes (seen in a double
    kill-and-resume). Such a record, a missing ``checkpoint_…`` folder, becomes one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if (isinstance(exc, FileNotFoundError) and "Error handling checkpoint" in message
                and "checkpoint_" in str(exc)):
            trial = message.partition(":")[0].removeprefix("Trial ").strip()
            record.msg = (f"note: Tune could not tidy the checkpoints of trial {trial} ({exc}: most likely an "
                          "older checkpoint folder removed before the driver stopped); the trial goes on")
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


class TunesResumeAdvice:
    """For ``ray.tune.tune``: on Ctrl-C or SIGTERM Tune advises ``Tuner.restore(path=…,
    trainable=…)``, Python a user of the CLI cannot run as it stands; the driver prints the
    `edgesweep run … --resume` that does it. That record is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Resume experiment with:" not in record.getMessage()


def install_tune_log_filters() -> None:
    """Attach the filters to Tune's loggers (once: a second call adds nothing)."""
    for name, kind in (("ray.tune.execution.tune_controller", GoneCheckpointNote),
                       ("ray.tune.tune", TunesResumeAdvice)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
