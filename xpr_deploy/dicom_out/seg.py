"""The heatmap Segmentations of one mammogram: BINARY (per stage the most-kept windows, which OHIF
overlays) and FRACTIONAL (per stage the kept-window fraction), on the source's own pixel grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .common import (
    MANUFACTURER,
    SEG_BINARY_SERIES_DESCRIPTION,
    SEG_BINARY_SERIES_NUMBER,
    SEG_SERIES_DESCRIPTION,
    SEG_SERIES_NUMBER,
    DeviceIdentity,
    DicomOutError,
    _code,
    _uid,
)

if TYPE_CHECKING:
    from pydicom import Dataset

    from ..config import ModelConfig
    from ..data.dicom import Geometry


def stage_heatmaps(
    selection: Mapping[tuple[str, int, int], Any], cfg: ModelConfig, geos: Mapping[str, Geometry]
) -> dict[str, np.ndarray]:
    """view -> float32 [stages, rows, cols] on the stored pixel grid: per stage, the fraction of the
    stage's blocks that kept the window covering the pixel; 0 outside the model's crop."""
    from ..heatmap import count_maps, to_input_pixels, to_stored

    maps = count_maps(selection, cfg)
    out: dict[str, np.ndarray] = {}
    for view, per_stage in maps.items():
        geo = geos[view]
        frames = []
        for stage in sorted(per_stage):
            px = to_input_pixels(per_stage[stage], cfg, stage)
            stored = to_stored(px, geo, fill=0).astype(np.float32)
            frames.append(stored / float(cfg.depths[stage - 1]))
        out[view] = np.clip(np.stack(frames), 0.0, 1.0)
    return out


def _heatmap_grid(source: Dataset, maps: np.ndarray) -> tuple[int, int]:
    """(rows, cols) of `source`, which `maps` [stages, rows, cols] must be on."""
    rows, cols = int(source.Rows), int(source.Columns)
    if maps.ndim != 3 or maps.shape[1:] != (rows, cols):
        raise DicomOutError(
            f"heatmap {tuple(maps.shape)} does not match the source image {rows}x{cols} ({source.SOPInstanceUID})"
        )
    return rows, cols


def _seg_algorithm(device: DeviceIdentity) -> Any:
    """The segments' algorithm identification: the model as an AI algorithm, xpr's version."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=device.model_name[:64], family=codes.cid7162.ArtificialIntelligence, version=f"xpr {device.version}"
    )


def _seg_device(source: Dataset, device: DeviceIdentity) -> dict[str, Any]:
    """The Segmentation arguments every heatmap kind shares: numbered after its source, made by the model."""
    return {
        "instance_number": 1 + int(getattr(source, "InstanceNumber", 0) or 0),
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": device.model_name[:64],
        "software_versions": f"xpr {device.version}",
        "device_serial_number": (device.digest or "none")[:64],
    }


def build_heatmap(source: Dataset, maps: np.ndarray, device: DeviceIdentity, study_key: Sequence[str]) -> Dataset:
    """A FRACTIONAL Segmentation of `source` with one segment per stage (`maps` [stages, rows, cols])."""
    import highdicom as hd

    _heatmap_grid(source, maps)
    algo = _seg_algorithm(device)
    segments = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=f"stage {i + 1} window selection",
            segmented_property_category=_code("XPRATT", "Model attention"),
            segmented_property_type=_code("XPRWIN", "Kept-window fraction"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
        )
        for i in range(maps.shape[0])
    ]
    pixels = np.moveaxis(maps.astype(np.float32), 0, -1)[None]  # [1 frame, rows, cols, segments]
    sop = str(source.SOPInstanceUID)
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=segments,
        series_instance_uid=_uid("seg-series", *study_key, device.digest or ""),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=_uid("seg", sop, device.digest or ""),
        **_seg_device(source, device),
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=255,
        content_label="XPRWINDOWS",
        content_description="fraction of pruned blocks keeping each window, per stage",
        omit_empty_frames=False,
        series_description=SEG_SERIES_DESCRIPTION,
    )
    # image-aligned with the source: the same orientation (General Image needs it without a frame of reference)
    seg.PatientOrientation = source.get("PatientOrientation") or ""
    return seg


def add_pixel_measures(seg: Dataset, source: Dataset) -> Dataset:
    """Give a Segmentation of a projection image the Pixel Measures its shared functional group
    lacks (highdicom writes it empty without a frame of reference; OHIF 3.13 destructures
    `SharedFunctionalGroupsSequence[0].PixelMeasuresSequence` and blanks the page without it): the
    source's Pixel Spacing, else its Imager Pixel Spacing (mammograms), else 1 \\ 1, and as Slice
    Thickness (readers such as highdicom's require it) the depth a projection integrates: the
    source's Slice Thickness, else its Body Part Thickness (compressed breast), else 1 mm."""
    from pydicom import Dataset as Ds
    from pydicom.sequence import Sequence as Seq

    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing") or [1, 1]
    pm = Ds()
    pm.PixelSpacing = [float(v) for v in spacing][:2]
    thickness = source.get("SliceThickness") or source.get("BodyPartThickness") or 1
    pm.SliceThickness = float(thickness)
    if "SharedFunctionalGroupsSequence" not in seg or not seg.SharedFunctionalGroupsSequence:
        seg.SharedFunctionalGroupsSequence = Seq([Ds()])
    seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence = Seq([pm])
    if "ImageOrientationPatient" not in source:
        # OHIF 3.13 matches a Segmentation to its image by plane orientation and takes an image without
        # one as row +x, column +y; the same stated here: the image grid's own axes, nothing more
        po = Ds()
        po.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence = Seq([po])
    return seg


def build_heatmap_binary(
    source: Dataset, maps: np.ndarray, device: DeviceIdentity, study_key: Sequence[str]
) -> Dataset:
    """A BINARY Segmentation of `source`, one segment per stage: the pixels whose windows that stage's
    pruned blocks kept most often on this image (its highest kept fraction). Viewers that draw only
    binary segments (OHIF 3.13 refuses fractional values other than 0 and the maximum) overlay it;
    the last stage's segment is where the SR's region comes from (`regions.py`)."""
    import highdicom as hd

    from ..heatmap import COUNT_COLOURS

    rows, cols = _heatmap_grid(source, maps)
    algo = _seg_algorithm(device)
    masks = []
    for stage in range(maps.shape[0]):
        top = float(maps[stage].max())
        masks.append(maps[stage] >= top - 1e-6 if top > 0 else np.zeros((rows, cols), dtype=bool))
    colours = [COUNT_COLOURS[1 + (i % (len(COUNT_COLOURS) - 1))] for i in range(maps.shape[0])]
    segments = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=f"stage {i + 1} most-kept windows",
            segmented_property_category=_code("XPRATT", "Model attention"),
            segmented_property_type=_code("XPRTOP", "Most-kept windows"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
            display_color=hd.color.CIELabColor.from_string(colours[i]),
        )
        for i in range(maps.shape[0])
    ]
    pixels = np.moveaxis(np.stack(masks), 0, -1)[None].astype(np.uint8)  # [1 frame, rows, cols, segments]
    sop = str(source.SOPInstanceUID)
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=_uid("seg-binary-series", *study_key, device.digest or ""),
        series_number=SEG_BINARY_SERIES_NUMBER,
        sop_instance_uid=_uid("seg-binary", sop, device.digest or ""),
        **_seg_device(source, device),
        content_label="XPRTOPWIN",
        content_description="per stage, the windows its pruned blocks kept most often",
        omit_empty_frames=False,
        series_description=SEG_BINARY_SERIES_DESCRIPTION,
    )
    seg.PatientOrientation = source.get("PatientOrientation") or ""
    return add_pixel_measures(seg, source)
