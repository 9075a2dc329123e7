"""mlfn's own exceptions. Library code raises these; the CLI turns them into one
clear sentence and a non-zero exit in one place (mlfn.cli)."""


class MlfnError(Exception):
    """A failure the user can act on. The message is one sentence saying what and where."""

    exit_code = 1


class ConfigError(MlfnError):
    """mlfn.yaml (or a flag) is wrong: unknown key, wrong type, bad value."""

    exit_code = 2


class ModelError(MlfnError):
    """The model cannot be loaded, converted or evaluated."""


class AccuracyGateError(ModelError):
    """The quantized model lost more accuracy than `quantize.max_accuracy_drop` allows."""

    exit_code = 3


class BuildError(MlfnError):
    """The image cannot be built, pushed or inspected."""


class TargetError(MlfnError):
    """A deployment target (OpenWhisk, Knative, local) refused or failed a request."""


class NotFoundError(TargetError):
    """A function, version or alias does not exist on the target."""
