"""Typed errors for expected failures: the CLI prints their one-line message and exits non-zero."""


class XprError(Exception):
    """Base class: an expected, user-facing failure (bad file, missing backend, ...)."""

    exit_code = 2


class WeightsError(XprError):
    """A weights or checkpoint file is missing, unreadable, or for another model."""


class ConfigError(XprError, ValueError):
    """A configuration value is invalid (a ValueError too, for library callers)."""


class BackendUnavailable(XprError):
    """An optional backend (TensorRT, TensorRT-RTX, CUDA, ...) is not installed or has no device."""


class PredictError(XprError):
    """`xpr predict` cannot run: unknown model file, missing selection outputs, no breast readable."""


class TritonError(XprError):
    """An export bundle cannot be turned into a Triton model repository (missing file, bad manifest or option)."""
