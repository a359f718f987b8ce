"""Test fixtures for the C++ tests: a small real ONNX bundle and DICOM files (good and bad).

    python make_fixture.py OUT

OUT/bundle/       model.onnx (cc, mlo [1,1,448,224] -> logits, prob, kept windows of one
                  TopK-pruned block per view) + manifest.json (bundle format 2: `io` roles,
                  SHA-256 of every file, sealed with xpr_deploy.bundle.seal when importable)
OUT/bundle_external/  the same as bundle/ with its weights in model.onnx.data (ONNX external data)
OUT/bundle_renamed/  the same model with other tensor names (view_a, view_b -> scores, p_malignant,
                  kept_*): the runtime must take every name from the manifest's `io`
OUT/dicom/        good_m2.dcm (MONOCHROME2, explicit LE), good_m1_rle.dcm (MONOCHROME1, RLE),
                  good_j2k.dcm (JPEG 2000 lossless), and bad_*.dcm / bad_* inputs
The bundle is small on purpose (ctest runs it under AddressSanitizer); the full model is
exercised by tests/test_engines_cpp.py on a real `xpr export` bundle.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

H, W, WIN, STRIDE, K = 448, 224, 7, 4, 64


class ToyPruned(torch.nn.Module):
    """Patch embedding, window scores (mean token L2 norm), static TopK, pooled head."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Conv2d(1, 8, STRIDE, STRIDE)
        self.head = torch.nn.Linear(16, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def view(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.embed(x).permute(0, 2, 3, 1)  # [B, 112, 56, 8]
        b, h, w, c = t.shape
        win = t.reshape(b, h // WIN, WIN, w // WIN, WIN, c).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, WIN * WIN, c)
        scores = torch.linalg.vector_norm(win, dim=-1).mean(dim=-1)  # [B, N]
        idx = torch.topk(scores, K, dim=1, largest=True, sorted=True).indices
        kept = torch.gather(win, 1, idx[:, :, None, None].expand(-1, -1, WIN * WIN, c))
        return kept.mean(dim=(1, 2)), idx

    def forward(self, cc: torch.Tensor, mlo: torch.Tensor):
        f_cc, i_cc = self.view(cc)
        f_mlo, i_mlo = self.view(mlo)
        logits = self.head(torch.cat([f_cc, f_mlo], dim=1))
        return logits, torch.softmax(logits, dim=-1)[:, 1], i_cc, i_mlo


DEFAULT_IO = {"cc": "cc", "mlo": "mlo", "logits": "logits", "prob": "prob"}
RENAMED_IO = {"cc": "view_a", "mlo": "view_b", "logits": "scores", "prob": "p_malignant"}


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _seal(manifest: dict) -> bytes:
    """The manifest's bytes with its seal (xpr_deploy.bundle.seal; the same rule inlined without it)."""
    try:
        from xpr_deploy.bundle.seal import seal
    except ImportError:
        body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
        body["manifest_sha256"] = "0" * 64
        raw = (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode()
        digest = hashlib.sha256(raw).hexdigest()
        return raw.replace(b'"manifest_sha256": "' + b"0" * 64 + b'"', b'"manifest_sha256": "' + digest.encode() + b'"')
    return seal(manifest)


def write_bundle(out: Path, io: dict[str, str] = DEFAULT_IO, sel_prefix: str = "sel", external: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = ToyPruned().eval()
    x = torch.zeros(1, 1, H, W)
    sel = {v: f"{sel_prefix}_{v}_s1_b0" for v in ("cc", "mlo")}
    torch.onnx.export(
        model, (x, x), str(out / "model.onnx"), input_names=[io["cc"], io["mlo"]],
        output_names=[io["logits"], io["prob"], sel["cc"], sel["mlo"]], opset_version=17, dynamo=False,
    )
    import onnx

    m = onnx.load(str(out / "model.onnx"))
    m.ir_version = min(m.ir_version, 10)
    if external:  # weights in model.onnx.data, as `xpr export --external-data` writes them
        onnx.save(m, str(out / "model.onnx"), save_as_external_data=True, location="model.onnx.data",
                  size_threshold=0)  # fmt: skip (its tensors are all small)
    else:
        onnx.save(m, str(out / "model.onnx"))
    try:
        from xpr_deploy import __version__ as toolkit_version
    except ImportError:
        toolkit_version = "0.1.0"
    (out / "parity.json").write_text(json.dumps({"ok": None, "skipped": "ctest fixture"}) + "\n")
    grid = [H // STRIDE // WIN, W // STRIDE // WIN]
    manifest = {
        "format": "xpr-bundle",
        "format_version": 2,
        "name": "ctest-fixture",
        "toolkit_version": toolkit_version,
        "created_utc": "2026-01-01T00:00:00Z",
        "model": "model.onnx",
        "graphs": {"fp32": "model.onnx"},
        "precision": "fp32",
        "opset": 17,
        "ir_version": 10,
        "batch": 1,
        "inputs": [{"name": io[n], "dtype": "float32", "shape": [1, 1, H, W]} for n in ("cc", "mlo")],
        "outputs": [
            {"name": io["logits"], "dtype": "float32", "shape": [1, 2]},
            {"name": io["prob"], "dtype": "float32", "shape": [1]},
            {"name": sel["cc"], "dtype": "int64", "shape": [1, K]},
            {"name": sel["mlo"], "dtype": "int64", "shape": [1, K]},
        ],
        "io": dict(io),
        # every ModelConfig field (the Python reader requires them all); C++ reads patch and window size
        "model_config": {"name": "toy", "img_size": [H, W], "in_chans": 1, "patch_size": STRIDE, "embed_dim": 96,
                         "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": WIN, "mlp_ratio": 4.0,
                         "prune_rates": [0.5, 0.0, 0.0, 0.0], "ctb_heads": 24, "head_hidden": 384, "num_classes": 2,
                         "frozen_stages": 2, "drop_path_rate": 0.0, "class_names": ["benign", "malignant"]},
        "preprocessing": {"version": "xpr-preproc-1", "img_size": [H, W], "mask_threshold": 0.05,
                          "profile_threshold": 0.02, "mean": 0.449, "std": 0.226},
        "label_rule": None,
        "class_names": ["benign", "malignant"],
        "threshold": 0.5,
        "threshold_method": "youden-validation",
        "operating_points": {"sens=0.90": {"threshold": 0.25, "sensitivity": 0.95, "specificity": 0.5, "n": 40},
                             "spec=0.90": {"threshold": 0.75}, "youden": {"threshold": 0.5}},
        "operating_point": None,  # none named: `threshold` under its method's name (test_bad_inputs names one)
        "blocks": [
            {"view": v, "stage": 1, "block": 0, "window_grid": grid, "windows": grid[0] * grid[1], "k": K,
             "shifted": False, "pruned": True, "selection_output": sel[v]}
            for v in ("cc", "mlo")
        ]
        + [  # a dense block (K = N): no selection output; the runtime must skip it
            {"view": "cc", "stage": 2, "block": 0, "window_grid": [8, 4], "windows": 32, "k": 32,
             "shifted": False, "pruned": False, "selection_output": None}
        ],
        "source_checkpoint": {"path": None, "weights_sha256": None, "random_seed": 0},
        "engines": [],
        "parity": "parity.json",
        "files": {p.name: sha256(p) for p in sorted(out.iterdir()) if p.name != "manifest.json"},
    }
    (out / "manifest.json").write_bytes(_seal(manifest))
    try:  # the Python verified reader must accept what the C++ tests start from
        from xpr_deploy.bundle import BundleView
    except ImportError:
        return
    view = BundleView.open(out)
    assert view.io.inputs == (io["cc"], io["mlo"]), view.io


def phantom(rows: int, cols: int, seed: int, flip: bool) -> np.ndarray:
    """12-bit breast-like phantom: half ellipse against the chest wall, texture, a lesion, a marker."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float64)
    inside = ((r - rows / 2) / (rows * 0.45)) ** 2 + (c / (cols * 0.7)) ** 2 < 1.0
    tissue = 0.5 + 0.3 * np.exp(-((r - rows * 0.4) ** 2 + (c - cols * 0.3) ** 2) / (2 * (rows * 0.1) ** 2))
    tissue += 0.05 * rng.standard_normal((rows, cols))
    img = np.where(inside, 400 + 3000 * np.clip(tissue, 0, 1), 60.0)
    img[5:12, cols - 20 : cols - 8] = 4000  # burned-in marker (ignored by the 2 % profile rule)
    img = np.clip(np.rint(img), 0, 4095).astype(np.uint16)
    return img[:, ::-1].copy() if flip else img


def base_ds(pixels: np.ndarray, photometric: str, ts) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.PatientID = "FIXTURE"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    if ts != ExplicitVRLittleEndian:
        ds.compress(ts, encoding_plugin="pylibjpeg" if ts == JPEG2000Lossless else "")
    return ds


def write_dicoms(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows, cols = 560, 300
    a = phantom(rows, cols, 1, flip=False)
    ds = base_ds(a, "MONOCHROME2", ExplicitVRLittleEndian)
    ds.WindowCenter, ds.WindowWidth = [2000, 1800], [4000, 3000]
    ds.PixelPaddingValue = 60
    ds.save_as(out / "good_m2.dcm", enforce_file_format=True)

    b = (4095 - phantom(rows, cols, 2, flip=True)).astype(np.uint16)
    ds = base_ds(b, "MONOCHROME1", RLELossless)
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, 0.0
    ds.save_as(out / "good_m1_rle.dcm", enforce_file_format=True)

    ds = base_ds(phantom(rows, cols, 3, flip=False), "MONOCHROME2", JPEG2000Lossless)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2100, 3500, "SIGMOID"
    ds.save_as(out / "good_j2k.dcm", enforce_file_format=True)

    # signed stored values, odd width, rescale, LINEAR_EXACT, a padding range given high-to-low
    c = phantom(rows, cols + 1, 4, flip=True).astype(np.int32) - 2048  # -2048..2047: 12-bit signed
    c[:, -3:] = -2048  # padding strip
    ds = base_ds(c.astype(np.int16).view(np.uint16), "MONOCHROME2", ExplicitVRLittleEndian)
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 2.0, -100.0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = -200.0, 5000.0, "LINEAR_EXACT"
    ds.add_new(0x00280120, "SS", -2040)  # PixelPaddingValue
    ds.add_new(0x00280121, "SS", -2048)  # PixelPaddingRangeLimit
    ds.save_as(out / "good_signed_odd.dcm", enforce_file_format=True)

    # no window at all: min-max over the non-padding pixels, MONOCHROME1
    ds = base_ds((4095 - phantom(rows - 1, cols, 5, flip=False)).astype(np.uint16), "MONOCHROME1", RLELossless)
    ds.save_as(out / "good_minmax_m1.dcm", enforce_file_format=True)

    # ---- bad inputs ----
    (out / "bad_not_dicom.dcm").write_bytes(b"this is not a DICOM file\n" * 10)
    raw = (out / "good_m2.dcm").read_bytes()
    (out / "bad_truncated.dcm").write_bytes(raw[: len(raw) // 3])
    (out / "bad_empty.dcm").write_bytes(b"")

    ds = base_ds(a, "MONOCHROME2", ExplicitVRLittleEndian)
    del ds.PixelData
    ds.save_as(out / "bad_no_pixels.dcm", enforce_file_format=True)

    ds = base_ds(a, "MONOCHROME2", ExplicitVRLittleEndian)
    ds.Rows = rows * 4  # pixel data shorter than Rows x Columns
    ds.save_as(out / "bad_short_pixels.dcm", enforce_file_format=True)

    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    ds = base_ds(np.zeros((64, 64), np.uint16), "MONOCHROME2", ExplicitVRLittleEndian)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = rgb.tobytes()
    ds.save_as(out / "bad_rgb.dcm", enforce_file_format=True)

    ds = base_ds(np.full((64, 64), 100, np.uint16), "MONOCHROME2", ExplicitVRLittleEndian)
    ds.save_as(out / "bad_blank.dcm", enforce_file_format=True)  # constant image: empty breast

    ds = base_ds(a, "MONOCHROME2", ExplicitVRLittleEndian)
    ds.Modality = "CT"
    ds.save_as(out / "bad_modality_ct.dcm", enforce_file_format=True)

    ds = base_ds(a, "MONOCHROME2", ExplicitVRLittleEndian)
    ds.PresentationIntentType = "FOR PROCESSING"
    ds.save_as(out / "bad_for_processing.dcm", enforce_file_format=True)

    j2k = bytearray((out / "good_j2k.dcm").read_bytes())
    siz = j2k.find(b"\xff\x4f\xff\x51")  # SOC + SIZ marker of the codestream
    assert siz > 0, "no JPEG 2000 codestream found"
    j2k[siz + 4 : siz + 40] = b"\xff" * 36  # garbage image/tile sizes: the header must be refused
    (out / "bad_j2k_corrupt.dcm").write_bytes(bytes(j2k))
    j2k = (out / "good_j2k.dcm").read_bytes()
    (out / "bad_j2k_truncated.dcm").write_bytes(j2k[: len(j2k) - len(j2k) // 4])

    ds = base_ds(a, "MONOCHROME2", RLELossless)
    ds.save_as(out / "bad_rle_truncated_src.dcm", enforce_file_format=True)
    rle = (out / "bad_rle_truncated_src.dcm").read_bytes()
    (out / "bad_rle_truncated.dcm").write_bytes(rle[: len(rle) - len(rle) // 3])
    (out / "bad_rle_truncated_src.dcm").unlink()


def main() -> None:
    out = Path(sys.argv[1])
    if out.exists():
        shutil.rmtree(out)
    write_bundle(out / "bundle")
    write_bundle(out / "bundle_renamed", RENAMED_IO, sel_prefix="kept")
    write_bundle(out / "bundle_external", external=True)
    write_dicoms(out / "dicom")
    print(f"fixtures in {out}")


if __name__ == "__main__":
    main()
