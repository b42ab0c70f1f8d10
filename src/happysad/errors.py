"""The errors a user can act on. Each message says what is wrong and what to do.

The command-line entry points print them as one line, without a traceback, and
exit non-zero; anything else is a bug and keeps its traceback.
"""


class HappysadError(Exception):
    """Base of the errors reported to the user as one clear sentence."""


class ConfigError(HappysadError, ValueError):
    """A configuration that composes but cannot be run."""


class DataError(HappysadError, ValueError):
    """Data that cannot be used."""


class StoreError(HappysadError, RuntimeError):
    """The MLflow store cannot be used."""


class Unreachable(HappysadError, RuntimeError):
    """A distributed sweep's chief or tracking server does not answer."""


class SweepFailed(HappysadError, RuntimeError):
    """The search ran, but every trial failed or too many failed in a row."""


class SweepInterrupted(HappysadError):
    """The user stopped the sweep (Ctrl-C, SIGTERM); the message says how to go on."""


class TrainingDied(HappysadError, RuntimeError):
    """A training process died by a signal (a crash in native code, a kill for memory);
    the message says which, and where its log is."""


class ExportRefused(HappysadError, RuntimeError):
    """An exported model that does not answer as its Keras model does; the message says
    by how much. Nothing of it was logged."""
