"""Typed errors of the data layer: each carries a one-line message that names the file."""

from __future__ import annotations

from ..errors import XprError


class DataError(XprError):
    """Base class of every data-layer failure."""


class DatasetError(DataError):
    """A dataset folder is unusable as a whole (no CSV, unknown layout, nothing to pair)."""


class DicomError(DataError):
    """One DICOM file cannot be used; the message starts with its path."""


class MissingFile(DicomError):
    """The file does not exist."""


class NotDicom(DicomError):
    """The file is not DICOM (no DICM preamble and no parsable dataset)."""


class TruncatedFile(DicomError):
    """The file ends early: header or pixel data shorter than announced."""


class WrongModality(DicomError):
    """The image is not a mammogram (Modality is not MG)."""


class UnsupportedImage(DicomError):
    """Colour, multi-frame, no pixel data, or a pixel encoding the pipeline does not handle."""


class ForProcessing(DicomError):
    """A FOR PROCESSING (raw detector) image: the model is trained on FOR PRESENTATION images."""


class BadLaterality(DicomError):
    """Laterality missing, not L/R, or contradictory between tags or between tags and a CSV."""


class BadView(DicomError):
    """View missing, contradictory, or not CC/MLO."""


class MissingDecoder(DicomError):
    """The transfer syntax needs a decoder package that is not installed (the message names it)."""


class InvalidValue(DicomError):
    """An attribute the pipeline reads is missing, cannot be parsed, has an unknown VR or is out of
    range; the message names the attribute (never replaced by a default without a word)."""


class UnsupportedTransferSyntax(UnsupportedImage):
    """The transfer syntax has no pixel decoder in pydicom at all (not a missing plugin)."""


class DecodeError(DicomError):
    """The pixel decoder failed on the stored stream (a corrupt compressed image): its reason in one line."""


class EmptyBreastMask(DicomError):
    """After windowing nothing is bright enough to be breast tissue."""


class BadLabel(DataError):
    """An unknown BI-RADS or pathology string, or an unknown label rule."""


class SplitError(DataError):
    """A split cannot be made or does not match the dataset (too few groups, overlapping groups)."""


class CacheError(DataError):
    """A prepared-array cache entry is unreadable or for other settings."""
