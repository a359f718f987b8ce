"""The resource budget of reading one input: checked from the file system and the header, before
any file is read whole or any pixel is decoded.

One file must not be able to take the machine down: a 30 MB RLE stream that declares 32000 x
32000 16-bit pixels decodes into 2 GB, a sparse native file of 2 GB is read into memory whole, a
study folder nested a thousand deep or holding millions of entries exhausts the walk. The limits
fit real mammograms with a margin (the largest full-field detectors store about 28 million pixels,
5928 x 4728, 56 MB decoded at 16 bits) and are set per process through the environment, so the
library, `xpr predict`, `xpr data check/prepare`, the DICOMweb client and the DICOM node all read
the same ones. Library callers may pass a `Budget` instead. Preprocessing an image takes about 40
bytes of memory per pixel (measured: 1.7 GB for 49 Mpx), so at the default limit one file costs at
most about 1.6 GB; a file over the budget costs no more than its header.

| variable             | default       | what                                                      |
|----------------------|---------------|-----------------------------------------------------------|
| XPR_MAX_PIXELS       | 40,000,000    | Rows x Columns x SamplesPerPixel x NumberOfFrames          |
| XPR_MAX_FILE_BYTES   | 134,217,728   | the size of one file (128 MiB), by stat before reading it |
| XPR_MAX_FRAMES       | 1,000         | NumberOfFrames                                            |
| XPR_MAX_DEPTH        | 32            | folders below a study folder that are walked              |
| XPR_MAX_FILES        | 200,000       | files listed under one study folder                       |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

from ..errors import ConfigError
from .errors import DicomError

__all__ = ["ENV", "Budget", "OverBudget", "default_budget"]


class OverBudget(DicomError):
    """A file over the resource budget (too big, too many pixels or frames): refused before decoding."""


@dataclass(frozen=True)
class Budget:
    """Limits of one read; `default_budget()` is this with the environment's overrides."""

    max_pixels: int = 40_000_000
    max_file_bytes: int = 128 * 1024 * 1024
    max_frames: int = 1_000
    max_depth: int = 32
    max_files: int = 200_000

    def check_file_size(self, path: object, size: int) -> None:
        if size > self.max_file_bytes:
            raise OverBudget(
                f"{path}: file of {size} bytes is over the budget of {self.max_file_bytes} bytes per file "
                f"({ENV['max_file_bytes']})"
            )

    def check_image(self, path: object, rows: int, columns: int, samples: int = 1, frames: int = 1) -> None:
        """Frames and pixels the header declares, before a decoder allocates them."""
        if frames > self.max_frames:
            raise OverBudget(
                f"{path}: {frames} frames are over the budget of {self.max_frames} frames per file "
                f"({ENV['max_frames']})"
            )
        pixels = rows * columns * max(samples, 1) * max(frames, 1)
        if pixels > self.max_pixels:
            shape = f"{rows}x{columns}" + (f"x{samples} samples" if samples > 1 else "")
            shape += f"x{frames} frames" if frames > 1 else ""
            raise OverBudget(
                f"{path}: {shape} = {pixels} pixels is over the budget of {self.max_pixels} pixels per file "
                f"({ENV['max_pixels']})"
            )


#: the environment variable of each limit
ENV = {f.name: "XPR_" + f.name.upper() for f in fields(Budget)}


def default_budget() -> Budget:
    """`Budget()` with the XPR_MAX_* environment variables applied; a bad value is a ConfigError (exit 2)."""
    changes: dict[str, int] = {}
    for name, var in ENV.items():
        text = os.environ.get(var)
        if text is None or not text.strip():
            continue
        try:
            value = int(text.strip().replace(",", "_"))
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(f"{var}={text!r}: need a positive whole number")
        changes[name] = value
    return replace(Budget(), **changes) if changes else Budget()
