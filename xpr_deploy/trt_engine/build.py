"""Build TensorRT-RTX / TensorRT 11 engines from the bundle's ONNX graph (SPEC §5).

Both are strongly typed only: precision comes from the graph (no FP16 builder flag). TensorRT-RTX
builds for a chosen compute capability on a CPU-only machine (kernels are JIT-compiled on the
target GPU); TensorRT 11 builds on the GPU that will run it (or, with `ampere+`, for any Ampere+).
GPU libraries are imported lazily so the package works without them.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..bundle.schema import TRT_FLAVOURS
from ..errors import BackendUnavailable, XprError
from ..io import sha256_file, write_bytes

_MODULES = {"tensorrt-rtx": "tensorrt_rtx", "tensorrt": "tensorrt"}
#: TensorRT-RTX targets from Ampere on (it has no SM90)
_RTX_AMPERE_PLUS = ("SM80", "SM86", "SM89", "SM120")


class EngineBuildError(XprError):
    """The ONNX parser or the builder rejected the graph."""


@dataclass
class EngineOptions:
    flavour: str = "auto"  # auto | tensorrt-rtx | tensorrt (bundle.schema.TRT_FLAVOURS)
    sm: int = 86
    hw_compat: str = "same"  # same | ampere+
    workspace_gib: float = 4.0
    #: dynamic batch axis (graph exported with --max-batch): (min, opt, max) batch of the profile
    batch_profile: tuple[int, int, int] | None = None


@dataclass
class EngineInfo:
    flavour: str  # the TensorRT flavour it was built with (a manifest's `engines[].backend`)
    version: str
    compute_capability: str  # "8.6": the target the engine is named after
    compute_capabilities: list[str]  # every CC the engine runs on
    hw_compat: str
    flags: list[str]
    strongly_typed: bool
    timing_cache_sha256: str | None
    timing_cache: str | None  # file name beside the engine, or None
    path: Path
    sha256: str
    size_bytes: int
    build_seconds: float
    parse_seconds: float
    plugins: dict[str, str] = field(default_factory=dict)  # custom op -> "plugin" | "local-function"
    notes: list[str] = field(default_factory=list)
    profile: dict[str, int] | None = None  # {"min", "opt", "max"} batch of a dynamic-batch engine

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def import_flavour(flavour: str) -> ModuleType:
    """The TensorRT flavour's Python module, or BackendUnavailable with the reason."""
    if flavour not in TRT_FLAVOURS:
        raise BackendUnavailable(f"unknown TensorRT flavour {flavour!r}: choose {', '.join(TRT_FLAVOURS)} or auto")
    mod = _MODULES[flavour]
    try:
        return importlib.import_module(mod)
    except Exception as exc:  # ImportError, or OSError from a missing libnvinfer / libnvonnxparser
        hint = (
            "pip install tensorrt-rtx-cu12"
            if flavour == "tensorrt-rtx"
            else "TensorRT 11 from NVIDIA's index or an NGC container"
        )
        raise BackendUnavailable(
            f"{flavour} is not available: cannot import {mod} ({type(exc).__name__}: {exc}); install {hint}"
        ) from None


def gpu_compute_capability() -> tuple[int, int] | None:
    """(major, minor) of CUDA device 0, or None without a usable NVIDIA GPU."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_capability(0)
    except Exception:
        pass
    return None


def resolve_flavour(flavour: str) -> str:
    """`auto`: TensorRT 11 where it imports and a GPU is present, else TensorRT-RTX; checks availability."""
    if flavour != "auto":
        import_flavour(flavour)
        if flavour == "tensorrt" and gpu_compute_capability() is None:
            raise BackendUnavailable("tensorrt builds on the GPU that runs the engine: no NVIDIA GPU here")
        return flavour
    if gpu_compute_capability() is not None:
        try:
            import_flavour("tensorrt")
            return "tensorrt"
        except BackendUnavailable:
            pass
    import_flavour("tensorrt-rtx")
    return "tensorrt-rtx"


def engine_filename(sm: int) -> str:
    return f"model.sm{sm}.engine"


def _make_logger(trt: ModuleType) -> Any:
    class Collect(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append((severity, msg))

    return Collect()


def _plugin_resolution(messages: list[tuple[Any, str]]) -> dict[str, str]:
    """How the parser took each custom op: a registered plugin, or the op's ONNX function body."""
    out: dict[str, str] = {}
    for _, msg in messages:
        if msg.startswith("Found registered local function:"):
            out[msg.split(":", 1)[1].split(".")[0].strip()] = "local-function"
        elif "Successfully created plugin" in msg or "Found registered plugin" in msg:
            name = msg.split(":", 1)[-1].strip().split()[0] if ":" in msg else msg
            out.setdefault(name, "plugin")
    return out


def build_engine(onnx_path: str | Path, out_dir: str | Path, options: EngineOptions | None = None) -> EngineInfo:
    """Parse `onnx_path`, build a serialized engine into `out_dir/model.sm<sm>.engine`, return its facts."""
    opts = options or EngineOptions()
    flavour = resolve_flavour(opts.flavour)
    trt = import_flavour(flavour)
    out_dir = Path(out_dir)
    logger = _make_logger(trt)
    logger.min_severity = trt.ILogger.Severity.VERBOSE
    builder = trt.Builder(logger)
    # the parser stays referenced until the engine is built: it owns the weights the network points at
    network, parser, parse_s = _parse_onnx(trt, builder, logger, flavour, Path(onnx_path))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gib * (1 << 30)))
    build_flags: list[str] = ["STRONGLY_TYPED"]
    notes: list[str] = []
    profile = _add_batch_profile(builder, network, config, opts.batch_profile, Path(onnx_path).name)
    if flavour == "tensorrt-rtx":
        compute_caps = _target_rtx(trt, config, opts, notes)
    else:
        compute_caps = _target_tensorrt(trt, config, opts, build_flags)
    serialized, build_s = _build_serialized(trt, builder, network, config, logger, flavour)
    del parser
    timing_cache_bytes: bytes | None = None
    if flavour == "tensorrt":
        timing_cache_bytes = bytes(memoryview(config.get_timing_cache().serialize()))
    path, tc_name, tc_sha = _write_engine(out_dir, opts.sm, serialized, timing_cache_bytes)
    return EngineInfo(
        flavour=flavour,
        version=str(trt.__version__),
        compute_capability=f"{opts.sm // 10}.{opts.sm % 10}",
        compute_capabilities=compute_caps,
        hw_compat=opts.hw_compat,
        flags=build_flags,
        strongly_typed=True,
        timing_cache_sha256=tc_sha,
        timing_cache=tc_name,
        path=path,
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        build_seconds=round(build_s, 3),
        parse_seconds=round(parse_s, 3),
        plugins=_plugin_resolution(logger.messages),
        notes=notes,
        profile=profile,
    )


def _parse_onnx(trt: ModuleType, builder: Any, logger: Any, flavour: str, onnx_path: Path) -> tuple[Any, Any, float]:
    """(network, parser, seconds): the graph parsed from its file, or EngineBuildError with the
    parser's errors. The network is strongly typed (TensorRT 10 needs the flag; 11 is so anyway)."""
    flags = 0
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if typed is not None and flavour == "tensorrt":
        flags |= 1 << int(typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    t0 = time.perf_counter()
    # parse from the file so that the parser resolves paths the way a viewer would
    ok = parser.parse_from_file(str(onnx_path))
    parse_s = time.perf_counter() - t0
    if not ok:
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "unknown error"
        raise EngineBuildError(f"{flavour} ONNX parser rejected {onnx_path.name}: {errs}")
    return network, parser, parse_s


def _target_rtx(trt: ModuleType, config: Any, opts: EngineOptions, notes: list[str]) -> list[str]:
    """TensorRT-RTX: the compute capabilities to build for (sm_<sm>, or every Ampere+ one); returns them
    as "8.6"-style strings."""
    ccs = [f"SM{opts.sm}"] if opts.hw_compat == "same" else list(_RTX_AMPERE_PLUS)
    if not hasattr(trt.ComputeCapability, ccs[0]):
        raise BackendUnavailable(f"tensorrt-rtx cannot target sm_{opts.sm}")
    config.num_compute_capabilities = len(ccs)
    for i, cc in enumerate(ccs):
        config.set_compute_capability(getattr(trt.ComputeCapability, cc), i)
    notes.append("TensorRT-RTX: kernels are JIT-compiled on the target GPU at load; timing cache is a no-op")
    return [f"{cc[2:-1]}.{cc[-1]}" for cc in ccs]


def _target_tensorrt(trt: ModuleType, config: Any, opts: EngineOptions, build_flags: list[str]) -> list[str]:
    """TensorRT 11: builds for the GPU it runs on (which must be sm_<sm>), or with `ampere+` hardware
    compatibility for every Ampere+ GPU; starts an empty timing cache. Returns the compute capabilities."""
    dev = gpu_compute_capability()
    assert dev is not None  # resolve_flavour checked it
    if opts.hw_compat == "ampere+":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        build_flags.append("HW_COMPAT_AMPERE_PLUS")
        compute_caps = ["8.0", "8.6", "8.7", "8.9", "9.0", "10.0", "12.0"]
    else:
        if dev[0] * 10 + dev[1] != opts.sm:
            raise BackendUnavailable(
                f"tensorrt builds for this GPU (sm_{dev[0]}{dev[1]}), not sm_{opts.sm}: use --hw-compat ampere+ "
                "or --trt-flavour tensorrt-rtx"
            )
        compute_caps = [f"{dev[0]}.{dev[1]}"]
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return compute_caps


def _build_serialized(
    trt: ModuleType, builder: Any, network: Any, config: Any, logger: Any, flavour: str
) -> tuple[Any, float]:
    """(serialized engine, seconds), or EngineBuildError with the builder's last error message."""
    t1 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t1
    if serialized is None:
        bad = (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR)
        last = [m for sev, m in logger.messages if sev in bad]
        raise EngineBuildError(f"{flavour} failed to build the engine: {last[-1] if last else 'no message'}")
    return serialized, build_s


def _write_engine(
    out_dir: Path, sm: int, serialized: Any, timing_cache_bytes: bytes | None
) -> tuple[Path, str | None, str | None]:
    """Write the engine (and TensorRT's timing cache, when there is one): (engine path, timing cache
    file name, its SHA-256)."""
    path = out_dir / engine_filename(sm)
    write_bytes(path, bytes(memoryview(serialized)))
    tc_name = tc_sha = None
    if timing_cache_bytes:
        tc_name = "timing.cache"
        write_bytes(out_dir / tc_name, timing_cache_bytes)
        tc_sha = sha256_file(out_dir / tc_name)
    return path, tc_name, tc_sha


def _add_batch_profile(
    builder: Any, network: Any, config: Any, batch: tuple[int, int, int] | None, what: str
) -> dict[str, int] | None:
    """One optimisation profile over the batch axis (every input: [b, ...static dims]); a graph with
    a dynamic axis and no profile, or a profile for a static graph, is a build error naming it."""
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if batch is None:
        if dynamic:
            raise EngineBuildError(f"{what}: input {dynamic[0].name} has a dynamic axis; give the batch profile")
        return None
    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise EngineBuildError(f"batch profile min {lo} <= opt {opt} <= max {hi} does not hold")
    if not dynamic:
        raise EngineBuildError(f"{what}: static batch; a batch profile needs a graph exported with --max-batch")
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = tuple(t.shape)
        if any(d == -1 for d in shape[1:]):
            raise EngineBuildError(f"{what}: input {t.name} shape {list(shape)}: only the batch axis may be dynamic")
        rest = shape[1:]
        profile.set_shape(t.name, (lo, *rest), (opt, *rest), (hi, *rest))
    config.add_optimization_profile(profile)
    return {"min": lo, "opt": opt, "max": hi}
