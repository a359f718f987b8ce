"""The hostile-input corpus: deterministic mutations of valid files, shared by the Python fuzz tests
and the C++ runtime's sanitizer run (`python -m tests.fuzz.corpus --out DIR FILE...`).

Every case is a whole file (bytes) with a stable name saying what was done to it, so a failure
can be reproduced from its name alone. Nothing here knows what the right answer is: the fuzz
tests assert the invariants (no traceback, a documented exit code, the damaged file named, the
good inputs of the same run still answered, no partial output).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from xpr_deploy.data.header import READ_KEYWORDS

# explicit-VR element headers: these VRs have 2 reserved bytes and a 4-byte length
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}

#: attributes the pipeline reads: the reader's own list (so the two cannot drift apart), and the pixels
READ_ATTRIBUTES = (*sorted(READ_KEYWORDS), "PixelData")

#: invalid (or hostile but well-formed) values per VR; binary VRs get raw bytes
_BAD_VALUES: dict[str, tuple[bytes, ...]] = {
    "DS": (b"ab", b"NaN", b"inf", b"-inf", b"1e999", b"0", b"", b"1\\2", b"1,5", b" " * 16 + b"1" * 40),
    "IS": (b"x", b"-1", b"0", b"1.5", b"99999999999", b"", b"2\\3", b"2", b"1A"),
    "CS": (b"", b"XX", b"\xff\xfe", b"A" * 80, b"MG\\CT", b"L\x00R", b"monochrome2"),
    "UI": (b"", b"not-a-uid", b"1." * 40, b"\x00" * 8),
    "LO": (b"", b"\xff\xfe\xfd", b"../../etc/passwd", b"A" * 200, b"x\\y"),
    "SH": (b"", b"\xff", b"A" * 40),
    "US": (b"\x00\x00", b"\xff\xff", b"\x01\x00", b"\x07", b"\x00\x00\x00\x00"),
    "SS": (b"\x00\x80", b"\xff\x7f"),
    "OW": (b"", b"\x00", b"\x00" * 3),
    "OB": (b"", b"\x00", b"\x00" * 3),
    "SQ": (b"", b"\x00" * 8, b"\xfe\xff\x00\xe0\xff\xff\xff\xff"),
}


#: header values that must never choose an output path nor break the DICOM result writers (issue 21
#: classes 1 and 5): (keyword, value) with None = the element removed. The UIDs name result folders
#: and files; the Type 2 patient and study attributes are copied into every result object.
_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_HOSTILE_UIDS = (b"../../x", b"/tmp/abs", b"a/b", b"..", b"1." * 99 + b"1", b"1.2.3\x00/../x", b"1.2.3\n../x",
                 b"1.2.3\\1.2.4", b"1.2.03", b"\\\\server\\share", b"1.2$\\frac{$")  # fmt: skip
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
          "AccessionNumber", "ReferringPhysicianName")  # fmt: skip
HEADER_VALUES: tuple[tuple[str, bytes | None], ...] = (
    *((kw, v) for kw in _UID_KEYWORDS for v in _HOSTILE_UIDS),
    *((kw, v) for kw in _TYPE2 for v in (None, b"")),
    ("PatientSex", b"Q"),
    ("PatientSex", b"male"),
    ("PatientBirthDate", b"2024-13-45"),
    ("PatientBirthDate", b"20240230"),
    ("StudyDate", b"99999999"),
    ("StudyTime", b"abc"),
    ("StudyTime", b"256199"),
    ("PatientName", b"A" * 100),
    ("PatientName", b"Doe^John\\Roe^Richard"),
    ("PatientName", b"\x1b[31mred\x1b[0m[/b]"),
    ("PatientName", b"M\xfcller^Anna"),
    ("PatientID", b"1" * 80),
    ("PatientID", b"../../etc/passwd"),
    ("ReferringPhysicianName", b"B" * 70),
    ("AccessionNumber", b"A" * 40),
    ("StudyID", b"S" * 20),
    ("StudyID", b"a\nb"),
)


def header_mutation(data: bytes, keyword: str, value: bytes | None) -> bytes:
    """`data` with `keyword` removed (None) or holding `value` (replaced, or inserted with its
    dictionary VR): one of `HEADER_VALUES`, applied alike to every file of a study by the writer tests."""
    els = elements(data)
    if value is None:
        el = els.get(keyword)
        return data if el is None else data[: el.start] + data[el.end :]
    return with_value(data, keyword, value)


def header_cases(data: bytes) -> list[Case]:
    """Every `HEADER_VALUES` mutation of one file (kind "header")."""
    out = []
    for j, (kw, value) in enumerate(HEADER_VALUES):
        what = "missing" if value is None else repr(value[:16])
        out.append(Case(f"header:{kw}#{j}={what}", "header", header_mutation(data, kw, value)))
    return out


@dataclass(frozen=True)
class Case:
    """One mutated file: `name` is unique and says what was done (kind, attribute, offset, value)."""

    name: str
    kind: str
    data: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:12]


@dataclass(frozen=True)
class Element:
    """Where a top-level element lies in the file: header start, value start, value length, VR."""

    keyword: str
    tag: int
    vr: str
    start: int
    value_start: int
    length: int

    @property
    def end(self) -> int:
        return self.value_start + self.length

    @property
    def length_field(self) -> tuple[int, int]:
        """(offset, size) of the length field in the header."""
        return (self.value_start - 4, 4) if self.vr in _LONG_VRS else (self.value_start - 2, 2)


def elements(data: bytes) -> dict[str, Element]:
    """Top-level elements of an explicit-VR little-endian file, by keyword (pydicom's raw offsets)."""
    ds = pydicom.dcmread(io.BytesIO(data), defer_size=None)
    if not ds.file_meta.TransferSyntaxUID.is_little_endian or ds.file_meta.TransferSyntaxUID.is_implicit_VR:
        raise ValueError("the corpus mutates explicit-VR little-endian files only")
    out: dict[str, Element] = {}
    for tag in list(ds.keys()):
        raw = ds._dict[tag]
        vr = getattr(raw, "VR", None)
        tell = getattr(raw, "value_tell", None)
        if vr is None or tell is None:
            continue
        header = 12 if vr in _LONG_VRS else 8
        length = raw.length if raw.length != 0xFFFFFFFF else _undefined_length_end(data, tell) - tell
        keyword = pydicom.datadict.keyword_for_tag(tag) or f"{tag:08x}"
        out[keyword] = Element(keyword, int(tag), vr, tell - header, tell, length)
    return out


def _undefined_length_end(data: bytes, start: int) -> int:
    """End (after the delimiter) of an undefined-length sequence starting at `start`."""
    depth, i = 0, start
    while i + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, i)
        (length,) = struct.unpack_from("<I", data, i + 4)
        if (group, elem) == (0xFFFE, 0xE000):  # item
            i += 8
            if length != 0xFFFFFFFF:
                i += length
            else:
                depth += 1
            continue
        if (group, elem) == (0xFFFE, 0xE00D):  # item delimiter
            depth -= 1
            i += 8
            continue
        if (group, elem) == (0xFFFE, 0xE0DD):  # sequence delimiter
            i += 8
            if depth <= 0:
                return i
            continue
        vr = data[i + 4 : i + 6].decode("latin-1")
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", data, i + 8)
            i += 12
            if length == 0xFFFFFFFF:
                i = _undefined_length_end(data, i)
                continue
        else:
            (length,) = struct.unpack_from("<H", data, i + 6)
            i += 8
        i += length
    return len(data)


def _replace_value(data: bytes, el: Element, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if el.vr in {"UI", "OB", "OW", "US", "SS", "SQ"} else b" "
    off, size = el.length_field
    if size == 2 and len(value) > 0xFFFF:
        value = value[:0xFFFE]
    length = struct.pack("<I" if size == 4 else "<H", len(value))
    return data[:off] + length + data[off + size : el.value_start] + value + data[el.end :]


def _set_length(data: bytes, el: Element, length: int) -> bytes:
    off, size = el.length_field
    length = min(length, 0xFFFF if size == 2 else 0xFFFFFFFE)
    return data[:off] + struct.pack("<I" if size == 4 else "<H", length) + data[off + size :]


def _set_vr(data: bytes, el: Element, vr: str) -> bytes:
    off = el.start + 4
    return data[:off] + vr.encode("latin-1") + data[off + 2 :]


def with_value(data: bytes, keyword: str, value: bytes) -> bytes:
    """`data` with the top-level element `keyword` holding `value` (raw bytes): replaced if present,
    else inserted in tag order with its dictionary VR. For hand-made hostile files in tests."""
    els = elements(data)
    if keyword in els:
        return _replace_value(data, els[keyword], value)
    return _insert(data, els, keyword, value)


def _insert(data: bytes, els: dict[str, Element], keyword: str, value: bytes, vr: str | None = None) -> bytes:
    tag = pydicom.datadict.tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"unknown keyword {keyword}")
    vr = vr or pydicom.datadict.dictionary_VR(tag).split(" or ")[0]
    if len(value) % 2:
        value += b"\x00" if vr in {"UI", "OB", "OW", "US", "SS", "SQ"} else b" "
    group, elem = tag >> 16, tag & 0xFFFF
    if vr in _LONG_VRS:
        header = struct.pack("<HH", group, elem) + vr.encode() + b"\x00\x00" + struct.pack("<I", len(value))
    else:
        header = struct.pack("<HH", group, elem) + vr.encode() + struct.pack("<H", len(value))
    after = [e.start for e in els.values() if e.tag > tag]
    at = min(after) if after else len(data)
    return data[:at] + header + value + data[at:]


def _meta_cases(data: bytes) -> list[Case]:
    """The file meta's TransferSyntaxUID replaced (unknown, compressed over native data, implicit,
    big endian), with the group length kept right: the pixels must be refused, not misread."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    ts = str(ds.file_meta.TransferSyntaxUID).encode()
    at = data.find(b"\x02\x00\x10\x00UI", 132)
    if at < 0:
        return []
    (length,) = struct.unpack_from("<H", data, at + 6)
    glen_at = data.find(b"\x02\x00\x00\x00UL", 132)
    out = []
    for j, uid in enumerate(
        (b"1.2.3.4", b"", b"1.2.840.10008.1.2.4.90", b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.2", b"\xff" * 8)
    ):
        if uid == ts:
            continue
        v = uid + (b"\x00" if len(uid) % 2 else b"")
        mutated = data[: at + 6] + struct.pack("<H", len(v)) + v + data[at + 8 + length :]
        if glen_at >= 0:
            (glen,) = struct.unpack_from("<I", data, glen_at + 8)
            glen += len(v) - length
            mutated = mutated[: glen_at + 8] + struct.pack("<I", glen) + mutated[glen_at + 12 :]
        out.append(Case(f"meta:TransferSyntaxUID#{j}={uid[:24]!r}", "meta", mutated))
    return out


def _stream_cases(data: bytes, pixel: Element, rng: random.Random) -> list[Case]:
    """Damage inside encapsulated pixel data: the codestream header overwritten, a fragment length
    beyond the data, the delimiter gone, flips in the fragment body, a garbage offset table."""
    i = pixel.value_start
    items = []  # (item start, value start, length)
    while i + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, i)
        (length,) = struct.unpack_from("<I", data, i + 4)
        if (group, elem) != (0xFFFE, 0xE000):
            break
        items.append((i, i + 8, length))
        i += 8 + length
    if len(items) < 2:
        return []
    (bot, bot_v, bot_len), (frag, frag_v, frag_len) = items[0], items[1]
    cases = [
        Case("stream:codestream-header", "stream", data[: frag_v + 2] + b"\xff" * 24 + data[frag_v + 26 :]),
        Case(
            "stream:codestream-zeroed-half",
            "stream",
            data[: frag_v + frag_len // 2] + b"\x00" * (frag_len // 2) + data[frag_v + frag_len // 2 * 2 :],
        ),
        Case(
            "stream:fragment-length-beyond",
            "stream",
            data[: frag + 4] + struct.pack("<I", frag_len + 4096) + data[frag + 8 :],
        ),
        Case(
            "stream:fragment-length-short",
            "stream",
            data[: frag + 4] + struct.pack("<I", max(frag_len // 3 & ~1, 2)) + data[frag + 8 :],
        ),
        Case(
            "stream:no-delimiter",
            "stream",
            data[:i] + data[i + 8 :] if data[i : i + 4] == b"\xfe\xff\xdd\xe0" else data[:i],
        ),
        Case(
            "stream:offset-table-garbage",
            "stream",
            data[: bot + 4] + struct.pack("<I", 8) + b"\xff" * 8 + data[bot_v + bot_len :],
        ),
        Case("stream:empty-fragment", "stream", data[: frag + 4] + struct.pack("<I", 0) + data[frag_v + frag_len :]),
    ]
    for _ in range(6):
        off = rng.randrange(frag_v, frag_v + frag_len)
        flipped = bytearray(data)
        flipped[off] ^= 0xFF
        cases.append(Case(f"stream:flip@{off}", "stream", bytes(flipped)))
    return cases


def dicom_cases(data: bytes, *, seed: int = 0, flips: int = 24, truncations: int = 16) -> list[Case]:
    """Mutations of one valid explicit-VR LE file: truncations, byte flips, invalid values of every
    attribute the pipeline reads (inserted where the file lacks it), wrong and unknown VRs, lengths
    beyond the file, missing elements, hostile UIDs and patient/study values (`header_cases`), a
    wrong transfer syntax, damage inside compressed streams."""
    rng = random.Random(seed)
    els = elements(data)
    pixel = els.get("PixelData")
    header_end = pixel.start if pixel else len(data)
    cases: list[Case] = []

    # truncations: inside the preamble, the meta group, at element boundaries, inside pixel data
    cuts = {0, 1, 64, 128, 131, 132, 140, header_end - 1, header_end, header_end + 6}
    cuts |= {e.start + 3 for e in els.values()} if len(els) < truncations else set()
    cuts |= {rng.randrange(132, header_end) for _ in range(truncations // 2)}
    if pixel:
        cuts |= {pixel.value_start + pixel.length // 2, len(data) - 1, len(data) - 2}
        cuts |= {rng.randrange(pixel.value_start, len(data)) for _ in range(truncations // 4)}
    for cut in sorted(c for c in cuts if 0 <= c < len(data)):
        cases.append(Case(f"truncate@{cut}", "truncate", data[:cut]))

    # byte flips: header (every byte matters) and pixels (must still decode, or fail cleanly)
    for i in range(flips):
        region = (132, header_end) if i % 3 or not pixel else (pixel.value_start, len(data))
        off = rng.randrange(*region)
        flipped = bytearray(data)
        flipped[off] ^= 1 << rng.randrange(8) if i % 2 else 0xFF
        where = "header" if off < header_end else "pixels"
        cases.append(Case(f"flip-{where}@{off}:{flipped[off]:02x}", f"flip-{where}", bytes(flipped)))

    for kw in READ_ATTRIBUTES:
        el = els.get(kw)
        if el is None:
            continue
        for j, bad in enumerate(_BAD_VALUES.get(el.vr, (b"", b"\xff\xfe"))):
            cases.append(Case(f"value:{kw}#{j}={bad[:12]!r}", "bad-value", _replace_value(data, el, bad)))
        cases.append(Case(f"missing:{kw}", "missing", data[: el.start] + data[el.end :]))
        for vr in _wrong_vrs(el.vr):
            cases.append(Case(f"vr:{kw}:{el.vr}->{vr}", "wrong-vr", _set_vr(data, el, vr)))
        cases.append(Case(f"length:{kw}=beyond", "length-beyond", _set_length(data, el, len(data) * 2)))
        if el.length >= 2:
            cases.append(Case(f"length:{kw}=odd", "length-odd", _set_length(data, el, el.length - 1)))

    # attributes the file lacks, inserted with invalid values (NumberOfFrames, padding, Modality LUT, ...)
    for kw in READ_ATTRIBUTES:
        if kw in els or kw == "PixelData":
            continue
        vr = pydicom.datadict.dictionary_VR(pydicom.datadict.tag_for_keyword(kw)).split(" or ")[0]
        for j, bad in enumerate(_BAD_VALUES.get(vr, (b"", b"\xff\xfe"))):
            cases.append(Case(f"insert:{kw}#{j}={bad[:12]!r}", "insert", _insert(data, els, kw, bad, vr)))
    cases += header_cases(data)
    cases += _meta_cases(data)
    if pixel is not None and pixel.length and data[pixel.value_start : pixel.value_start + 4] == b"\xfe\xff\x00\xe0":
        cases += _stream_cases(data, pixel, rng)
    return cases


def _wrong_vrs(vr: str) -> tuple[str, ...]:
    """A VR of the same header size (so the rest of the file still parses), and an unknown one."""
    same = "DS" if vr != "DS" and vr not in _LONG_VRS else ("OB" if vr != "OB" else "UN")
    return (same, "ZZ") if vr not in _LONG_VRS else (same,)


# --- JSON documents (manifests, meta.json, configs) -------------------------------------------


def json_cases(obj: Any, *, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, mutated document) for every leaf and container of a JSON document: values of the
    wrong type, extreme numbers, empty/huge strings, paths out of the folder, a removed key."""
    for path, value in _leaves(obj):
        where = prefix + "/".join(map(str, path))
        for j, bad in enumerate(_bad_json(value)):
            yield f"json:{where}#{j}", _set_in(obj, path, bad)
        if path and isinstance(path[-1], str):
            yield f"json:{where}#removed", _set_in(obj, path, _REMOVE)


_REMOVE = object()


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if path:
        yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            yield from _leaves(v, (*path, i))


def _bad_json(value: Any) -> tuple[Any, ...]:
    if isinstance(value, bool):
        return ("yes", 2, None)
    if isinstance(value, (int, float)):
        return ("high", -1, 1e308, None, [value], float("nan"))
    if isinstance(value, str):
        return (0, "", "../../outside", "/etc/passwd", "x" * 5000, None)
    if isinstance(value, list):
        return ({}, "list", [], [None] * 3)
    if isinstance(value, dict):
        return ([], "dict", {})
    return ("null", 0)


def _set_in(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(obj))
    node = copy
    for key in path[:-1]:
        node = node[key]
    if value is _REMOVE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return copy


def byte_flips(data: bytes, *, seed: int = 0, count: int = 8) -> list[Case]:
    """Single-byte flips of any file (graphs, safetensors, engines): integrity checks must catch them."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        off = rng.randrange(len(data))
        b = bytearray(data)
        b[off] ^= 0xFF
        out.append(Case(f"flip@{off}", "flip", bytes(b)))
    return out


def write_corpus(cases: list[Case], out: Path, *, stem: str = "case") -> list[Path]:
    """Write cases as `<stem>-<n>-<digest>.dcm` with an index.json naming each (for the C++ run)."""
    out.mkdir(parents=True, exist_ok=True)
    paths, index = [], {}
    for n, case in enumerate(cases):
        p = out / f"{stem}-{n:04d}-{case.digest}.dcm"
        p.write_bytes(case.data)
        paths.append(p)
        index[p.name] = {"name": case.name, "kind": case.kind}
    (out / f"{stem}-index.json").write_text(json.dumps(index, indent=1) + "\n")
    return paths


def main(argv: list[str] | None = None, emit: Callable[[str], None] = print) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="valid explicit-VR LE DICOM files to mutate")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    total = 0
    for i, f in enumerate(args.files):
        cases = dicom_cases(f.read_bytes(), seed=args.seed + i)
        write_corpus(cases, args.out, stem=f.stem)
        total += len(cases)
    emit(f"{total} cases from {len(args.files)} files in {args.out}")


if __name__ == "__main__":
    main()
