"""User-facing errors.

Anything a user can cause (bad file, bad index, bad config) raises an :class:`MDAError`
subclass with one sentence naming the thing and the problem. The CLI prints that sentence
and exits with status 2; everything else is a bug and keeps its traceback.
"""


class MDAError(Exception):
    """Base class of errors caused by user input; the message is shown as is."""


class DataError(MDAError):
    """A data source is missing, corrupt or inconsistent (shards, .idx, parquet, text)."""


class ConfigError(MDAError):
    """A setting is invalid: head/layer out of range, bad window, unknown option."""


class ModelError(MDAError):
    """A checkpoint cannot be loaded or does not match its config."""


class OutputError(MDAError):
    """An output location cannot be written (read-only, full, not a directory) or another process
    is writing it."""


class NumericalError(MDAError):
    """NaN/inf met in a factor, gradient or score; the message names block and batch."""
