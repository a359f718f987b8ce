"""DICOM results a PACS stores and a viewer shows: per study a TID 1500 Comprehensive SR and/or a
Mammography CAD SR (TID 4000, `--sr`), and a Segmentation per mammogram (the window-selection
heatmap: BINARY by default, which OHIF overlays, and/or FRACTIONAL, `--seg`), all written with
highdicom.

SR (`highdicom.sr.ComprehensiveSR` + `MeasurementReport`): the observer is the device (xpr, the
model name, the bundle's manifest SHA-256 as serial number and in the device UID); per breast one
TID 1410 measurement group per image (CC, MLO) with the region the model looked at as a closed
POLYLINE on that image (`regions.py`; one TID 1501 group when there are no heatmaps), each with the
finding site (left / right breast), P(malignant) as "Probability of cancer" (DCM 111047), the
decision at the operating point as a qualitative evaluation, the operating point's threshold as a
measurement and its name in the algorithm parameters. Same Study Instance UID as the input, its own
series, "NOT FOR CLINICAL USE" in the series description; patient and study attributes come from the
source (highdicom copies the patient and general study modules), nothing else.

Mammography CAD SR (`sr_mammo_cad.py`, SOP class 1.2.840.10008.5.1.4.1.1.88.50, what mammography
workstations and IHE's Mammography Image profile read): the same findings in the CAD templates: an
Image Library of the images read, per breast an Individual Impression (P(malignant), the decision as
the Rendering Intent, one line of text) with the same region on the CC and on the MLO as Single
Image Findings (center and outline), and the algorithm (name, version, operating point, threshold,
bundle SHA-256). Its own series (9904), the same derived-UID rule.

Heatmaps: a BINARY Segmentation per source image, one segment per Swin stage (the stage's most-kept
windows, `build_heatmap_binary`), and/or a FRACTIONAL (PROBABILITY) one, one segment per Swin stage,
value = the fraction of the stage's pruned blocks that kept the 7x7 window covering the pixel (0
outside the breast crop), on the source's own pixel grid (mapped back through the preprocessing
geometry: flip, crop, resize). Viewers (OHIF, 3D Slicer, Weasis) overlay a Segmentation on its
referenced image and let each segment be toggled; a Secondary Capture is only shown beside it.

UIDs are derived (2.25 UIDs from a SHA-256, `derived_uid`) from the source SOP Instance UIDs, the
model digest and the operating point: new (never a source UID), unique per object, and the same when
the same model reruns on the same study, so a rerun replaces nothing and a PACS never holds a result
twice.

Source headers are hostile input. The writers get a checked copy (`clean_source`): its Study,
Series, SOP Instance and SOP Class UIDs must be valid UIDs (else that study gets no DICOM results,
one line why); its patient and study attributes are only those listed in `PATIENT_STUDY`, each
checked for its VR: absent, empty or invalid Type 2 values are written empty (the standard allows
it), the invalid ones named in one warning line per study. File and folder names come from
`io.uid_name` and every path from `io.child_path`, so no header value chooses where a result is
written.

Modules: `common` (the checked source header, the device, derived UIDs, object paths), `sr_tid1500`
(the Comprehensive SR), `sr_mammo_cad` (the Mammography CAD SR), `seg` (the heatmap Segmentations),
`writer` (a study's objects, written), `checks` (dciodvfy, dsrdump). The names below are the
package's interface; import them from here.
"""

from __future__ import annotations

from .checks import dciodvfy_errors, dsrdump_errors
from .common import (
    MANUFACTURER,
    NOT_FOR_CLINICAL,
    PATIENT_STUDY,
    SOURCE_UIDS,
    BreastDicom,
    DeviceIdentity,
    DicomOutError,
    breast_regions,
    clean_source,
    derived_uid,
    object_name,
    object_path,
    read_source,
)
from .seg import add_pixel_measures, build_heatmap, build_heatmap_binary, stage_heatmaps
from .sr_mammo_cad import MAMMO_CAD_SR_STORAGE, CadBreast, build_mammo_cad_sr, read_mammo_cad
from .sr_tid1500 import breast_groups, build_sr, sr_probabilities
from .writer import (
    SEG_KINDS,
    SR_KINDS,
    StudyResults,
    WrittenResults,
    study_objects,
    study_results,
    write_objects,
    write_study_results,
)

__all__ = [
    "MAMMO_CAD_SR_STORAGE",
    "MANUFACTURER",
    "NOT_FOR_CLINICAL",
    "PATIENT_STUDY",
    "SEG_KINDS",
    "SOURCE_UIDS",
    "SR_KINDS",
    "BreastDicom",
    "CadBreast",
    "DeviceIdentity",
    "DicomOutError",
    "StudyResults",
    "WrittenResults",
    "add_pixel_measures",
    "breast_groups",
    "breast_regions",
    "build_heatmap",
    "build_heatmap_binary",
    "build_mammo_cad_sr",
    "build_sr",
    "clean_source",
    "dciodvfy_errors",
    "derived_uid",
    "dsrdump_errors",
    "object_name",
    "object_path",
    "read_mammo_cad",
    "read_source",
    "sr_probabilities",
    "stage_heatmaps",
    "study_objects",
    "study_results",
    "write_objects",
    "write_study_results",
]
