"""Exceptions and warnings of the storage layer. Every one names the path it is about."""

from __future__ import annotations


class StorageError(Exception):
    """A storage root, table or file cannot be used; the message names the path(s).

    ``paths`` lists every offending path (one for most errors; several when a scan found more
    than one bad file), so callers can record them without parsing the message.
    """

    def __init__(self, message: str, paths: list[str] | tuple[str, ...] | str | None = None):
        super().__init__(message)
        if paths is None:
            paths = []
        elif isinstance(paths, str):
            paths = [paths]
        self.paths = list(paths)

    @property
    def path(self) -> str | None:
        return self.paths[0] if self.paths else None


class StorageWarning(UserWarning):
    """A bad file was skipped because the caller asked for ``on_error="skip"``. ``trial_id``:
    the trial the file belongs to, where its name says (a reader that marks that trial, such as
    ``edgesweep status``, reads it here rather than from the text)."""

    def __init__(self, *args, trial_id: str | None = None):
        super().__init__(*args)
        self.trial_id = trial_id
