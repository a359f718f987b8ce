"""Synthetic pixels as DICOM: 12-bit stored values, MG For Presentation datasets, encoding and writing.

Right breasts are stored mirrored, as acquired. Files are valid MG For Presentation objects (checked
by `dciodvfy`); `synth` cycles them over MONOCHROME1/2 and over uncompressed, RLE and JPEG 2000
lossless transfer syntaxes (`TRANSFER_SYNTAXES`), or writes one of `TRANSFER_SYNTAX_NAMES` (also
implicit VR, deflated and JPEG-LS lossless) for every file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from scipy import ndimage

from .dicom import MG_FOR_PRESENTATION
from .rle import rle_encode_frame
from .synth_render import Breast, render_view
from .views import VIEW_CODES

#: cycled over the images of a synthetic dataset (JPEG 2000 is the slowest to encode: 1 in 5)
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless, RLELossless, ExplicitVRLittleEndian)
#: `xpr synth --transfer-syntax NAME`: one encoding for every file (benchmarks of the decoders)
TRANSFER_SYNTAX_NAMES = {
    "uncompressed": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg-ls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
}
#: written by pydicom as they are (no pixel encoder: the writer encodes the dataset)
_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
BITS = 12
MAXV = (1 << BITS) - 1
#: PatientOrientation (row direction, column direction) as stored (right breasts mirrored)
ORIENTATION = {("L", "CC"): ["A", "R"], ("R", "CC"): ["P", "L"], ("L", "MLO"): ["A", "FR"], ("R", "MLO"): ["P", "FL"]}


def to_stored(img: np.ndarray, photometric: str, center: int, width: int) -> np.ndarray:
    """Brightness -> 12-bit stored values such that the LINEAR window (center, width) maps back to it.

    MONOCHROME1 files store `4095 - v` with center `4096 - c`: the contract's window + inversion
    then gives exactly the MONOCHROME2 result.
    """
    lo = center - 0.5 - (width - 1) / 2.0
    v = np.clip(np.rint(lo + 0.5 + img * (width - 1)), 0, MAXV).astype(np.uint16)
    return (MAXV - v).astype(np.uint16) if photometric == "MONOCHROME1" else v


def window_for(photometric: str, center: int, width: int) -> tuple[int, int]:
    return (MAXV + 1 - center, width) if photometric == "MONOCHROME1" else (center, width)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    d = Dataset()
    d.CodeValue, d.CodingSchemeDesignator, d.CodeMeaning = value, scheme, meaning
    return d


def mg_dataset(
    stored: np.ndarray,
    *,
    photometric: str,
    laterality: str,
    view: str,
    window: tuple[int, int],
    patient_id: str,
    patient_name: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    study_date: str = "20240101",
    accession: str = "",
    instance: int = 1,
    padding_value: int | None = None,
) -> Dataset:
    """A Digital Mammography X-Ray Image (For Presentation) dataset with uncompressed pixel data,
    filled module by module (PS3.3 A.26)."""
    ds = Dataset()
    ds.file_meta = _file_meta(sop_uid)
    _sop_common(ds, sop_uid)
    _patient_module(ds, patient_id, patient_name)
    _study_module(ds, study_uid, study_date, accession)
    _series_module(ds, series_uid, study_date, laterality, view)
    _equipment_module(ds)
    _image_module(ds, photometric, laterality, view, window, study_date, instance)
    _pixel_module(ds, stored, photometric, padding_value)
    _mammography_acquisition(ds, view)
    return ds


def _file_meta(sop_uid: str) -> FileMetaDataset:
    """File meta information (PS3.10): written uncompressed; `save_mg` sets the final transfer syntax."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MG_FOR_PRESENTATION)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _sop_common(ds: Dataset, sop_uid: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid


def _patient_module(ds: Dataset, patient_id: str, patient_name: str) -> None:
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"


def _study_module(ds: Dataset, study_uid: str, study_date: str, accession: str) -> None:
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_date
    ds.StudyTime = "090000"
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "synthetic screening mammogram"
    ds.StudyID = "1"


def _series_module(ds: Dataset, series_uid: str, study_date: str, laterality: str, view: str) -> None:
    """General, DX and Mammography Series: one series per image (`xpr synth`'s layout)."""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDate = study_date
    ds.SeriesTime = "090000"
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SeriesDescription = f"{laterality} {view}"
    ds.SeriesNumber = 1


def _equipment_module(ds: Dataset) -> None:
    ds.Manufacturer = "xpr synthetic"
    ds.InstitutionName = "xpr"
    ds.ManufacturerModelName = "xpr-synth"


def _image_module(
    ds: Dataset,
    photometric: str,
    laterality: str,
    view: str,
    window: tuple[int, int],
    study_date: str,
    instance: int,
) -> None:
    """General, DX and Mammography Image, VOI LUT: what the image is, which way it faces, how to show it."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.ContentDate = ds.AcquisitionDate = study_date
    ds.ContentTime = ds.AcquisitionTime = "090000"
    ds.InstanceNumber = instance
    ds.PatientOrientation = ORIENTATION[(laterality, view)]
    ds.ImageLaterality = laterality
    ds.BurnedInAnnotation = "NO"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.WindowCenter = str(window[0])
    ds.WindowWidth = str(window[1])
    # VOI LUT Function omitted: LINEAR is the standard's default when absent (PS3.3 C.11.2.1.3), and
    # OHIF 3.13 cannot display an image that states it (its metadata provider passes the string on,
    # cornerstone's image loader takes its first character: "L", "Invalid VOI LUT function")
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"


def _pixel_module(ds: Dataset, stored: np.ndarray, photometric: str, padding_value: int | None) -> None:
    """Image Pixel: 12 bits stored in 16, unsigned, native little endian."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = BITS
    ds.HighBit = BITS - 1
    ds.PixelRepresentation = 0
    if padding_value is not None:
        ds.PixelPaddingValue = padding_value
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()


def _mammography_acquisition(ds: Dataset, view: str) -> None:
    """DX Anatomy Imaged, DX Detector, DX Positioning and the Mammography Image codes: the view and
    the geometry (0.1 mm pixels, magnification 650 / 630)."""
    ds.BodyPartExamined = "BREAST"
    ds.DetectorType = "DIRECT"
    ds.ViewPosition = view
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.DistanceSourceToDetector = "650"
    ds.DistanceSourceToPatient = "630"
    ds.EstimatedRadiographicMagnificationFactor = "1.031746"  # 650 / 630
    ds.BodyPartThickness = "50"
    ds.CompressionForce = "100"
    ds.AnatomicRegionSequence = Sequence([_code("76752008", "SCT", "Breast")])
    ds.ViewCodeSequence = Sequence([_code(*VIEW_CODES[view])])
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = Sequence()
    ds.AcquisitionContextSequence = Sequence()
    ds.BreastImplantPresent = "NO"
    ds.OrganExposed = "BREAST"


def save_mg(ds: Dataset, path: str | Path, transfer_syntax: str = ExplicitVRLittleEndian) -> None:
    """Encode (RLE: ours; JPEG-LS, JPEG 2000 lossless: pydicom's encoders) and write atomically."""
    from ..io import write_buffer

    if transfer_syntax == RLELossless:  # pydicom's own RLE encoder is pure Python and slow
        arr = np.frombuffer(ds.PixelData, dtype="<u2").reshape(ds.Rows, ds.Columns)
        ds.PixelData = encapsulate([rle_encode_frame(arr)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = RLELossless
    elif transfer_syntax in _NATIVE:
        ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    elif transfer_syntax == JPEGLSLossless:
        ds.compress(transfer_syntax, generate_instance_uid=False)  # pyjpegls (CharLS)
    else:
        ds.compress(transfer_syntax, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    # in memory first: pydicom reports a full disk as an OSError without errno, with a traceback in its text
    write_buffer(path, lambda f: ds.save_as(f, enforce_file_format=True))


def render_stored(
    breast: Breast, view: str, size: tuple[int, int], photometric: str, center: int, width: int, padding: bool = False
) -> tuple[np.ndarray, int | None]:
    """Stored pixels of a view as acquired (right breasts mirrored) and the padding value used."""
    img = render_view(breast, view, size)
    stored = to_stored(img, photometric, center, width)
    pad = None
    if padding:  # pixels far outside the breast become the padding value
        pad = MAXV if photometric == "MONOCHROME1" else 0
        stored[ndimage.binary_erosion(img <= 0.0, iterations=3)] = pad
    if breast.laterality == "R":
        stored = stored[:, ::-1].copy()
    return stored, pad
