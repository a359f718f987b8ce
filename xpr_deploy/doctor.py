"""What this machine offers the toolkit: each component with its version, or why it is missing."""

from __future__ import annotations

import importlib
import platform
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # version and facts when ok, the reason when not


def _import_version(module: str) -> tuple[bool, str]:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # ImportError, or a shared library missing under it
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return True, str(getattr(mod, "__version__", "installed"))


def _torch() -> list[Check]:
    ok, ver = _import_version("torch")
    if not ok:
        return [Check("torch", False, ver)]
    import torch

    out = [Check("torch", True, ver)]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.append(Check("CUDA", True, f"{props.name}, sm_{props.major}{props.minor}, CUDA {torch.version.cuda}"))
    else:
        built = torch.version.cuda or "none"
        out.append(Check("CUDA", False, f"no NVIDIA GPU visible (torch built for CUDA {built}); CPU only"))
    return out


def _onnxruntime() -> list[Check]:
    ok, ver = _import_version("onnxruntime")
    if not ok:
        return [Check("onnxruntime", False, ver)]
    import onnxruntime as ort

    return [Check("onnxruntime", True, f"{ver}, providers: {', '.join(ort.get_available_providers())}")]


def _tensorrt() -> list[Check]:
    out = []
    for label, module in (("TensorRT-RTX", "tensorrt_rtx"), ("TensorRT", "tensorrt")):
        ok, ver = _import_version(module)
        if ok and label == "TensorRT-RTX":
            ver += " (builds sm_75/80/86/89/120 engines without a GPU; running one needs an NVIDIA GPU)"
        if not ok and label == "TensorRT":
            ver += " (full TensorRT 11 comes from NVIDIA's own index or container, not PyPI)"
        out.append(Check(label, ok, ver))
    ok, ver = _import_version("polygraphy")
    out.append(Check("polygraphy", ok, ver))
    return out


def _dicom() -> list[Check]:
    ok, ver = _import_version("pydicom")
    if not ok:
        return [Check("pydicom", False, ver)]
    from pydicom import uid
    from pydicom.pixels import get_decoder

    out = [Check("pydicom", True, ver)]
    for label, ts in (
        ("JPEG 2000 decoder", uid.JPEG2000Lossless),
        ("HTJ2K decoder", uid.HTJ2KLossless),
        ("JPEG-LS decoder", uid.JPEGLSLossless),
        ("JPEG lossless decoder", uid.JPEGLosslessSV1),
        ("RLE decoder", uid.RLELossless),
    ):
        try:
            plugins = get_decoder(ts).available_plugins
        except Exception as exc:
            out.append(Check(label, False, str(exc)))
            continue
        if plugins:
            out.append(Check(label, True, ", ".join(plugins)))
        else:
            out.append(Check(label, False, "no plugin: pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg"))
    dciodvfy = shutil.which("dciodvfy")
    out.append(Check("dciodvfy", dciodvfy is not None, dciodvfy or "not on PATH (Debian package dicom3tools)"))
    return out


def _triton() -> list[Check]:
    """Whether `xpr serve` has a server, and which backends it can load."""
    from .serve.env import ServeError, find_server

    try:
        install = find_server()
    except ServeError as exc:
        return [Check("Triton server", False, str(exc))]
    backends = install.backends()
    detail = f"{install.binary} ({install.origin}); backends: {', '.join(backends) or 'none'}"
    out = [Check("Triton server", True, detail)]
    ok, ver = _import_version("tritonclient")
    out.append(Check("tritonclient", ok, ver if ok else f"{ver} (pip install 'xpr-deploy[serve]')"))
    return out


def _backends() -> list[Check]:
    """One line per registered backend (runners/registry.py): what it reads, where it runs, and its own check."""
    try:
        from .runners import BACKENDS
    except Exception as exc:  # a runner module that cannot even be imported here
        return [Check("backends", False, f"{type(exc).__name__}: {exc}")]
    out = []
    for spec in BACKENDS.values():
        ok, detail = spec.doctor() if spec.doctor is not None else (True, "")
        facts = f"reads {spec.artefact}; devices {'/'.join(spec.devices)}"
        out.append(Check(f"backend {spec.name}", ok, f"{facts}; {detail}" if detail else facts))
    return out


def run_checks() -> list[Check]:
    return [
        Check("python", True, f"{platform.python_version()} on {platform.machine()}"),
        *_torch(),
        *_onnxruntime(),
        *_tensorrt(),
        *_dicom(),
        *_triton(),
        *_backends(),
    ]
