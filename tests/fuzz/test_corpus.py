"""The corpus itself: deterministic, every mutation kind present, offsets right (a replaced value
reads back as written), so the campaigns built on it test what their names say."""

from __future__ import annotations

import io
from collections import Counter

import pydicom
import pytest

from tests.fuzz.corpus import READ_ATTRIBUTES, dicom_cases, elements, json_cases


@pytest.fixture(scope="module")
def valid_file(synth_vindr) -> bytes:
    return sorted((synth_vindr / "images").rglob("*.dicom"))[0].read_bytes()


def test_cases_are_deterministic_and_cover_every_kind(valid_file, fuzz_tally):
    a, b = dicom_cases(valid_file, seed=3), dicom_cases(valid_file, seed=3)
    assert [c.data for c in a] == [c.data for c in b]
    kinds = Counter(c.kind for c in a)
    for kind in ("truncate", "flip-header", "flip-pixels", "bad-value", "missing", "wrong-vr", "length-beyond"):
        assert kinds[kind] > 0, kind
    assert len({c.name for c in a}) == len(a)
    fuzz_tally.record("corpus/self-check", "dicom_cases", None)


def test_a_replaced_value_reads_back(valid_file):
    els = elements(valid_file)
    assert {"Rows", "RescaleSlope", "PixelData"} <= set(els)
    assert set(els) & set(READ_ATTRIBUTES)
    case = next(c for c in dicom_cases(valid_file) if c.name.startswith("value:RescaleSlope#0="))
    ds = pydicom.dcmread(io.BytesIO(case.data))
    assert ds["RescaleSlope"].VR == "DS"
    with pytest.raises((ValueError, TypeError)):
        float(ds.RescaleSlope)  # "ab": the case really holds an invalid DS


def test_json_cases_reach_every_leaf():
    doc = {"a": 1, "b": {"c": "x", "d": [1, 2]}}
    names = [n for n, _ in json_cases(doc)]
    assert any(n.startswith("json:b/d/1#") for n in names)
    assert "json:a#removed" in names
    assert all(mutated != doc for _, mutated in json_cases(doc))
