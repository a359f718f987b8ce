"""Seed inputs for the libFuzzer targets, from the hostile-input corpus (tests/fuzz/corpus.py).

    python engines/fuzz/make_seeds.py OUT      -> OUT/manifest/, OUT/preprocess/

preprocess: small valid MG files (explicit LE MONOCHROME2 with window and padding, RLE MONOCHROME1,
JPEG 2000 lossless, signed with rescale) and every dicom_cases() mutation of each: small images keep
the fuzzer's executions fast. manifest: the C++ test fixture's sealed manifest.json and its
json_cases() mutations, re-sealed (engines/tests/fuzz_infer.py's rule), so the fuzzer starts past the seal.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parent / "tests")]

from fuzz_infer import sealed  # noqa: E402
from make_fixture import base_ds, phantom, write_bundle  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless  # noqa: E402

from tests.fuzz.corpus import dicom_cases, json_cases  # noqa: E402


def small_dicoms() -> dict[str, bytes]:
    rows, cols = 48, 40
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "f.dcm"
        ds = base_ds(phantom(rows, cols, 1, flip=False), "MONOCHROME2", ExplicitVRLittleEndian)
        ds.WindowCenter, ds.WindowWidth = [2000, 1800], [4000, 3000]
        ds.PixelPaddingValue = 60
        ds.save_as(p, enforce_file_format=True)
        out["m2"] = p.read_bytes()
        ds = base_ds((4095 - phantom(rows, cols, 2, flip=True)).astype("uint16"), "MONOCHROME1", RLELossless)
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, 0.0
        ds.save_as(p, enforce_file_format=True)
        out["m1_rle"] = p.read_bytes()
        ds = base_ds(phantom(rows, cols, 3, flip=False), "MONOCHROME2", JPEG2000Lossless)
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2100, 3500, "SIGMOID"
        ds.save_as(p, enforce_file_format=True)
        out["j2k"] = p.read_bytes()
        c = phantom(rows, cols + 1, 4, flip=True).astype("int32") - 2048
        ds = base_ds(c.astype("int16").view("uint16"), "MONOCHROME2", ExplicitVRLittleEndian)
        ds.PixelRepresentation = 1
        ds.RescaleSlope, ds.RescaleIntercept = 2.0, -100.0
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = -200.0, 5000.0, "LINEAR_EXACT"
        ds.save_as(p, enforce_file_format=True)
        out["signed"] = p.read_bytes()
    return out


def write(folder: Path, data: bytes) -> None:
    (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)  # libFuzzer's own naming


def main() -> None:
    out = Path(sys.argv[1])
    shutil.rmtree(out, ignore_errors=True)
    pre, man = out / "preprocess", out / "manifest"
    pre.mkdir(parents=True)
    man.mkdir(parents=True)
    n_pre = 0
    for i, data in enumerate(small_dicoms().values()):
        write(pre, data)
        for case in dicom_cases(data, seed=i):
            write(pre, case.data)
            n_pre += 1
    with tempfile.TemporaryDirectory() as tmp:
        write_bundle(Path(tmp) / "bundle")
        raw = (Path(tmp) / "bundle" / "manifest.json").read_bytes()
    write(man, raw)
    n_man = 1
    for _, doc in json_cases(json.loads(raw)):
        write(man, sealed(doc))
        n_man += 1
    print(f"make_seeds: {n_pre + 4} preprocess seeds, {n_man} manifest seeds in {out}")


if __name__ == "__main__":
    main()
