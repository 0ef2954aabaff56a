"""Exceptions raised for bad user input.

Every error sft_keras raises for a user mistake derives from `SftError`, so the
command-line scripts can print it as one clear line instead of a traceback.
Each message names the config key, file or line at fault, the value received,
and what would be accepted.
"""


class SftError(ValueError):
    """Base class of all user-facing sft_keras errors."""


class ConfigError(SftError):
    """A config key is unknown or holds a value that is not accepted."""


class DataError(SftError):
    """A data file, folder, column or label cannot be used for training."""


class WeightsError(SftError):
    """Pretrained weights cannot be found, downloaded or loaded."""


class ExportError(SftError):
    """An export cannot be written (e.g. the version already exists)."""


class WorkdirError(SftError):
    """A run's workdir cannot be used: a missing folder, config or checkpoint, or a run holds it."""


class TrainingError(SftError):
    """Training cannot go on (e.g. the loss became NaN); the message says why and what to try."""


class UntestedVersionError(SftError):
    """A Keras/keras-hub internal is used on a version it was not tested with (`sft_keras.patches`)."""


class Preempted(TrainingError):
    """Training stopped on SIGTERM after committing its position: rerunning resumes from it.

    `sft-train` exits with `exit_code` (75, `EX_TEMPFAIL` of sysexits.h:
    a temporary failure; retrying succeeds) instead of 1.
    """

    exit_code = 75
