"""One error hierarchy. The CLI catches EdgeFFError, prints one line and exits with its exit_code:
2 for a user mistake, 3 for a training run that diverged.

A bad option value, data set or model is also a ValueError, as Python code (scikit-learn's
tools among it) expects of a function given a value it cannot use."""


class EdgeFFError(Exception):
    """A user-facing problem: the message says what is wrong and what to do."""

    exit_code = 2


class UsageError(EdgeFFError, ValueError):
    """A bad flag value, spec or combination of options."""


class DataError(EdgeFFError, ValueError):
    """A data set that is missing, malformed or inconsistent."""


class ModelError(EdgeFFError, ValueError):
    """A model or run directory that is missing, corrupt or incompatible."""


class ExportError(EdgeFFError):
    """A model that cannot be exported, or an ONNX file that cannot be run."""


class DeployError(EdgeFFError):
    """A bundle, transfer or device install that failed; the device keeps its current release."""


class TrainingDiverged(EdgeFFError):
    """A loss or weight became NaN or Inf during training; nothing was saved as a model."""

    exit_code = 3
