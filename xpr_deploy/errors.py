"""Typed errors for expected failures: the CLI prints their one-line message and exits non-zero.

The exit code is on the class: 2 (`XprError`, bad usage or input) unless a subclass says otherwise;
`BundleError` is 3 (a bundle refused) and `PeerError` 4 (a network peer failed), so every refusal of a
bundle and every peer failure derives from one of those two rather than repeating the number."""


class XprError(Exception):
    """Base class: an expected, user-facing failure (bad file, missing backend, ...)."""

    exit_code = 2


class BundleError(XprError):
    """A bundle is refused: unreadable, edited, incomplete, or pointing outside itself (exit 3)."""

    exit_code = 3


class PeerError(XprError):
    """A network peer (DICOMweb server, DICOM node, Triton, Orthanc) failed or answered wrongly (exit 4)."""

    exit_code = 4


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
