"""The TID 1500 Comprehensive SR (`highdicom.sr.ComprehensiveSR` + `MeasurementReport`): per breast
one TID 1410 group per image with the region the model looked at (one TID 1501 group without
heatmaps), each with the finding site, P(malignant), the threshold and the decision."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    MANUFACTURER,
    SR_SERIES_DESCRIPTION,
    SR_SERIES_NUMBER,
    BreastDicom,
    DeviceIdentity,
    DicomOutError,
    _breast_name,
    _code,
    _site,
    _study_key,
    _uid,
    breast_regions,
)

if TYPE_CHECKING:
    from pydicom import Dataset


def _algorithm(device: DeviceIdentity) -> Any:
    import highdicom as hd

    p = device.point
    params = [f"operating point {p.name}", f"threshold {p.threshold:.6f}"]
    if device.digest:
        params.append(f"bundle sha256 {device.digest}")
    return hd.sr.AlgorithmIdentification(name=device.model_name[:64], version=f"xpr {device.version}"[:64],
                                         parameters=params)  # fmt: skip


def _findings(b: BreastDicom, device: DeviceIdentity, region: Any = None, view: str = "") -> dict[str, Any]:
    """What every measurement group of one breast says: site, P(malignant), threshold, decision.
    With a `region` (on the `view` image) P(malignant) is also INFERRED FROM it (TID 300): OHIF's
    tracking (cornerstone's SR adapters) takes a measurement's outline from its first NUM."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    inferred = None
    if region is not None:
        inferred = [
            hd.sr.CoordinatesForMeasurement(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=region.polyline(),
                source_image=hd.sr.SourceImageForRegion.from_source_image(b.sources[view]),
            )
        ]  # fmt: skip

    p = device.point
    positive = b.decision == device.class_names[1]
    decision = (
        _code("XPRPOS", f"{device.class_names[1]} (positive at the operating point)")
        if positive
        else _code("XPRNEG", f"{device.class_names[0]} (negative at the operating point)")
    )
    return {
        "finding_type": _code("XPRMAL", "Breast malignancy assessment"),
        "finding_sites": [hd.sr.FindingSite(_site(b.laterality))],
        "algorithm_id": _algorithm(device),
        "measurements": [
            hd.sr.Measurement(name=codes.DCM.ProbabilityOfCancer, value=float(b.prob), unit=codes.UCUM.NoUnits,
                              referenced_coordinates=inferred),
            hd.sr.Measurement(
                name=_code("XPRTHR", f"Decision threshold ({p.name})"[:64]), value=float(p.threshold),
                unit=codes.UCUM.NoUnits,
            ),
        ],
        "qualitative_evaluations": [
            hd.sr.QualitativeEvaluation(
                name=_code("XPRDEC", f"Decision at operating point {p.name}"[:64]), value=decision
            )
        ],
    }  # fmt: skip


def breast_groups(b: BreastDicom, device: DeviceIdentity, key: Sequence[str]) -> list[Any]:
    """The breast's measurement groups: one TID 1410 planar-ROI group per image with a region (a
    closed POLYLINE on the CC / on the MLO, `regions.py`), each with its own Tracking Identifier
    ("left breast CC") and Tracking UID, so a viewer (OHIF) draws the finding where the model
    looked and lists P(malignant) with it; without any region (no heatmaps) one TID 1501 group
    referencing the breast's images, as before."""
    import highdicom as hd

    regions = breast_regions(b)
    if not regions:
        return [
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=_uid("tracking", *key, b.laterality, device.digest or ""), identifier=_breast_name(b)
                ),
                source_images=[
                    hd.sr.SourceImageForMeasurementGroup.from_source_image(b.sources[v])
                    for v in ("cc", "mlo")
                    if v in b.sources
                ],
                **_findings(b, device),
            )
        ]
    groups = []
    for view, region in regions.items():
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=_uid("tracking", *key, b.laterality, view, device.digest or ""),
                    identifier=f"{_breast_name(b)} {view.upper()}",
                ),
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=region.polyline(),
                    source_image=hd.sr.SourceImageForRegion.from_source_image(b.sources[view]),
                ),
                **_findings(b, device),
            )
        )
    return groups


def build_sr(breasts: Sequence[BreastDicom], device: DeviceIdentity) -> Dataset:
    """The study's Comprehensive SR (TID 1500): per breast one measurement group per image with a
    region (`breast_groups`)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not breasts:
        raise DicomOutError("no breast to report")
    studies = {str(ds.StudyInstanceUID) for b in breasts for ds in b.sources.values()}
    if len(studies) != 1:
        raise DicomOutError(f"one SR per study: the breasts come from {len(studies)} studies")
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device.uid,
            name=f"xpr {device.version}"[:64],
            manufacturer_name=MANUFACTURER,
            model_name=device.model_name[:64],
            serial_number=(device.digest or "none")[:64],
        ),
    )
    p = device.point
    key = _study_key(breasts)
    groups = []
    for b in sorted(breasts, key=lambda b: b.laterality):
        groups += breast_groups(b, device, key)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.Mammography,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    evidence = [b.sources[v] for b in sorted(breasts, key=lambda b: b.laterality) for v in ("cc", "mlo")]
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=report,
        series_instance_uid=_uid("sr-series", *key, device.digest or "", p.name),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid("sr", *key, device.digest or "", p.name),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=SR_SERIES_DESCRIPTION,
    )
    return sr


def sr_probabilities(path: str | Path) -> tuple[str, dict[str, float]]:
    """(StudyInstanceUID, {laterality: P(malignant)}) read back from an SR with `highdicom.sr.srread`
    (per-breast TID 1501 groups or per-image TID 1410 region groups: all of a breast's say the same)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sr = hd.sr.srread(str(path))
    content: Any = sr.content  # a MeasurementReport
    out: dict[str, float] = {}
    for g in [*content.get_image_measurement_groups(), *content.get_planar_roi_measurement_groups()]:
        site = g.finding_sites[0].value.value
        lat = {"80248007": "L", "73056007": "R"}.get(str(site), "?")
        m = g.get_measurements(name=codes.DCM.ProbabilityOfCancer)
        if m:
            out[lat] = float(m[0].value)
    return str(sr.StudyInstanceUID), out
