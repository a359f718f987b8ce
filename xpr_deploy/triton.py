"""`xpr triton`: a Triton Inference Server model repository from an export bundle.

Triton semantics that matter here (and are easy to get wrong):

- ``max_batch_size > 0`` tells Triton the first dimension of every input/output is the batch
  dimension, *left out* of ``dims``, and the model must accept any batch up to that size
  (the ONNX Runtime and TensorRT backends check that the model's first dimension is -1).
- Our ONNX graphs and engines have **static** shapes (static K pruning, SPEC §4), batch
  included. Such a model is served with ``max_batch_size: 0`` and the full shape, batch
  included, in ``dims``; Triton then cannot batch requests together (no dynamic batcher).
- A bundle whose manifest marks the batch dimension as dynamic (-1 or a symbolic name)
  gets ``max_batch_size: N`` and a dynamic batcher.

The config is written as protobuf text by hand (no tritonclient at run time); the tests parse
it with Triton's own ``model_config_pb2`` schema.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bundle import BundleView
from .errors import TritonError
from .io import atomic_path, sha256_file, write_text
from .runners.onnxrt import OrtSettings, triton_parameters

__all__ = ["PythonModelOptions", "TritonError", "TritonResult", "write_repository"]

#: manifest dtype -> Triton DataType enum name
TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float64": "TYPE_FP64",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int16": "TYPE_INT16",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}

#: default max_batch_size for a dynamic-batch bundle (the paper's training batch)
DEFAULT_DYNAMIC_MAX_BATCH = 4


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # manifest spelling, e.g. "float32"
    shape: tuple[int | str, ...]  # str or -1: dynamic

    @property
    def batch_is_dynamic(self) -> bool:
        return bool(self.shape) and (isinstance(self.shape[0], str) or self.shape[0] == -1)

    def triton_dtype(self, source: Path) -> str:
        try:
            return TRITON_DTYPES[self.dtype]
        except KeyError:
            raise TritonError(
                f"{source}: tensor {self.name!r} has dtype {self.dtype!r} Triton has no type for"
            ) from None


@dataclass
class TritonModel:
    """One model folder written into the repository."""

    name: str
    platform: str
    version: int
    path: Path
    config: Path
    max_batch_size: int


@dataclass
class TritonResult:
    repo: Path
    models: list[TritonModel] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line each: what was not written and why

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": str(self.repo),
            "models": [
                {
                    "name": m.name,
                    "platform": m.platform,
                    "version": m.version,
                    "path": str(m.path),
                    "config": str(m.config),
                    "max_batch_size": m.max_batch_size,
                }
                for m in self.models
            ],
            "skipped": self.skipped,
        }


# ---- manifest ------------------------------------------------------------------------------
def tensors(specs: list[dict[str, Any]], source: Path) -> list[TensorSpec]:
    """TensorSpecs of the manifest's `inputs` or `outputs` (verified by the bundle reader)."""
    return [
        TensorSpec(str(e["name"]), str(e["dtype"]), tuple(d if isinstance(d, str) else int(d) for d in e["shape"]))
        for e in specs
    ]


# ---- config.pbtxt --------------------------------------------------------------------------
def _q(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid protobuf text string literal


def _dims(spec: TensorSpec, batched: bool, source: Path) -> list[int]:
    dims = list(spec.shape[1:] if batched else spec.shape)
    out = []
    for d in dims:
        if isinstance(d, str) or d < 0:
            if not batched:
                raise TritonError(f"{source}: tensor {spec.name!r} has a dynamic dimension {d!r}; not supported")
            out.append(-1)
        else:
            out.append(int(d))
    if not out:
        # a [B] output with batching has no other dims: Triton wants [1] plus reshape to []
        return []
    return out


def _tensor_block(kind: str, specs: list[TensorSpec], batched: bool, source: Path, labels: str | None) -> str:
    items = []
    for s in specs:
        dims = _dims(s, batched, source)
        lines = [f"    name: {_q(s.name)}", f"    data_type: {s.triton_dtype(source)}"]
        if dims:
            lines.append(f"    dims: [ {', '.join(map(str, dims))} ]")
        else:
            lines.append("    dims: [ 1 ]")
            lines.append("    reshape: { shape: [ ] }")
        if labels and kind == "output" and s.name == "logits":
            lines.append(f"    label_filename: {_q(labels)}")
        items.append("  {\n" + "\n".join(lines) + "\n  }")
    return f"{kind} [\n" + ",\n".join(items) + "\n]"


def config_pbtxt(
    name: str,
    platform: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    max_batch_size: int,
    instances: int,
    kind: str,
    default_model_filename: str,
    parameters: dict[str, str],
    source: Path,
    labels: str | None = None,
    dynamic_batching: bool = True,
    queue_delay_us: int = 0,
) -> str:
    """Protobuf text of a Triton ModelConfig (see the module docstring for the batch semantics)."""
    batched = max_batch_size > 0
    # the Python backend is named by `backend`; platform models by `platform`
    head = [f"backend: {_q(platform)}"] if platform == "python" else [f"platform: {_q(platform)}"]
    parts = [
        f"name: {_q(name)}",
        *head,
        f"max_batch_size: {max_batch_size}",
        f"default_model_filename: {_q(default_model_filename)}",
        _tensor_block("input", inputs, batched, source, None),
        _tensor_block("output", outputs, batched, source, labels),
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]",
    ]
    if batched and dynamic_batching:
        delay = f" max_queue_delay_microseconds: {int(queue_delay_us)}" if queue_delay_us else ""
        parts.append(f"dynamic_batching {{{delay} }}")
    for key, value in parameters.items():
        parts.append(f"parameters {{\n  key: {_q(key)}\n  value: {{ string_value: {_q(value)} }}\n}}")
    return "# written by `xpr triton`; inputs are preprocessed views (export/README.md)\n" + "\n".join(parts) + "\n"


def _parameters(manifest: dict[str, Any]) -> dict[str, str]:
    """Facts a client needs beside the tensors: threshold, preprocessing contract, label rule."""
    params: dict[str, str] = {}
    if manifest.get("threshold") is not None:
        params["xpr_threshold"] = str(manifest["threshold"])
    pre = manifest.get("preprocessing")
    if isinstance(pre, dict) and pre.get("version"):
        params["xpr_preprocessing"] = str(pre["version"])
    rule = manifest.get("label_rule")
    if rule:
        params["xpr_label_rule"] = rule if isinstance(rule, str) else json.dumps(rule, sort_keys=True)
    if manifest.get("toolkit_version"):
        params["xpr_toolkit_version"] = str(manifest["toolkit_version"])
    return params


def _class_names(manifest: dict[str, Any]) -> list[str]:
    names = manifest.get("class_names")
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    return ["benign", "malignant"]


# ---- repository ----------------------------------------------------------------------------
def _next_version(model_dir: Path) -> int:
    versions = (
        [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    )
    return max(versions, default=0) + 1


def _batch_size(specs: list[TensorSpec], max_batch: int | None, source: Path, bundle_max: int | None = None) -> int:
    dynamic = [s.batch_is_dynamic for s in specs]
    if all(dynamic):
        if max_batch is not None and max_batch < 1:
            raise TritonError(f"{source}: --max-batch must be >= 1 for a dynamic-batch bundle")
        if max_batch is not None and bundle_max is not None and max_batch > bundle_max:
            raise TritonError(
                f"{source}: --max-batch {max_batch} is more than the bundle takes "
                f"(exported with --max-batch {bundle_max})"
            )
        if max_batch is None:
            return bundle_max or DEFAULT_DYNAMIC_MAX_BATCH
        return max_batch
    if max_batch:  # static graph: Triton's backends reject max_batch_size > 0 unless dim 0 is -1
        shape = "x".join(map(str, specs[0].shape))
        raise TritonError(
            f"{source}: the model has a static batch ({specs[0].name} {shape}); Triton can serve it only "
            "with max_batch_size 0. Leave out --max-batch, or export with a dynamic batch dimension"
        )
    return 0


def _external_data(onnx_path: Path) -> list[Path]:
    """Files an ONNX model keeps its weights in (they must sit beside it under the same names)."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise TritonError(f"{onnx_path}: not a readable ONNX model ({exc})") from None
    names = set()
    for init in model.graph.initializer:
        for kv in init.external_data:
            if kv.key == "location":
                names.add(kv.value)
    return [onnx_path.parent / n for n in sorted(names)]


#: SHA-256 of each bundle file (by absolute path) the repository copies: checked on the copy too
_Hashes = dict[Path, str]


def _copy(src: Path, dest: Path, hashes: _Hashes) -> None:
    if not src.is_file():
        raise TritonError(f"{src}: missing (needed for the Triton repository)")
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        want = hashes.get(src)
        if want is not None and sha256_file(tmp) != want:
            raise TritonError(f"{src}: changed while it was copied into the repository (SHA-256 differs)")


def _write_model(
    repo: Path,
    name: str,
    platform: str,
    files: dict[str, Path],
    config_text: str,
    max_batch_size: int,
    version: int | None,
    extra_files: dict[str, str],
    hashes: _Hashes,
) -> TritonModel:
    """`files`: name in the version folder -> source; the first one is the model file."""
    model_dir = repo / name
    v = _next_version(model_dir) if version is None else version
    vdir = model_dir / str(v)
    for fname, src in files.items():
        _copy(src, vdir / fname, hashes)
    for fname, text in extra_files.items():
        write_text(model_dir / fname, text)
    write_text(model_dir / "config.pbtxt", config_text)  # last: Triton polls for it
    return TritonModel(name, platform, v, vdir / next(iter(files)), model_dir / "config.pbtxt", max_batch_size)


#: instance_group kinds a user may choose for the Python model (`--kind`)
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU", "auto": "KIND_AUTO"}


def python_backends() -> tuple[str, ...]:
    """What the Python model may run the bundle on: the registered backends that say so (`triton=True`)."""
    from .runners.factory import BACKENDS

    return tuple(name for name, spec in BACKENDS.items() if spec.triton)


@dataclass(frozen=True)
class PythonModelOptions:
    """The `python`-backend model: runs the bundle through xpr's runners (ONNX Runtime or the engine)."""

    enabled: bool = True
    backend: str = "onnx"  # runner backend: onnx | engine | onnx-int8 (`python_backends()`)
    kind: str = "cpu"  # instance_group kind: cpu | gpu | auto
    instances: int | None = None  # None: the repository's --instances
    dynamic_batching: bool = True  # for dynamic-batch bundles (max_batch_size > 0)
    queue_delay_us: int = 0  # dynamic batcher's max_queue_delay_microseconds
    threads: int | None = None  # ONNX Runtime intra-op threads per instance
    providers: tuple[str, ...] = ()  # ONNX Runtime providers (empty: CUDA when present, else CPU)
    sys_path: tuple[str, ...] | None = None  # None: serve.env.model_sys_path() (numpy 1.x folder made if missing)

    def check(self, where: object) -> None:
        if self.backend not in (allowed := python_backends()):
            raise TritonError(f"{where}: --python-backend must be one of {', '.join(allowed)}, not {self.backend!r}")
        if self.kind not in KINDS:
            raise TritonError(f"{where}: --kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.instances is not None and self.instances < 1:
            raise TritonError(f"{where}: python model instances must be >= 1")


def _python_model(
    repo: Path, view: BundleView, base: str, inputs: list[TensorSpec], outputs: list[TensorSpec], mbs: int,
    instances: int, params: dict[str, str], labels: str, version: int | None, opts: PythonModelOptions,
) -> TritonModel:  # fmt: skip
    """`<base>_python/`: model.py (xpr_deploy.serve.backend) + the whole bundle copied into the version
    folder, which the model verifies again when Triton loads it."""
    from .serve.backend import MODEL_PY

    if opts.sys_path is None:
        from .serve.env import model_sys_path

        sys_path = model_sys_path()
    else:
        sys_path = list(opts.sys_path)
    source = view.root / "manifest.json"
    p = dict(params)
    p["xpr_sys_path"] = json.dumps(sys_path)
    p["xpr_backend"] = opts.backend
    if opts.threads:
        p["xpr_threads"] = str(opts.threads)
    if opts.providers:
        p["xpr_providers"] = ",".join(opts.providers)
    name = f"{base}_python"
    text = config_pbtxt(
        name, "python", inputs, outputs, mbs, opts.instances or instances, KINDS[opts.kind], "model.py", p, source,
        "labels.txt", dynamic_batching=opts.dynamic_batching, queue_delay_us=opts.queue_delay_us,
    )  # fmt: skip
    hashes = {view.root / rel: h for rel, h in view.manifest["files"].items()}
    files: dict[str, Path] = {f"bundle/{rel}": view.root / rel for rel in view.manifest["files"]}
    model_dir = repo / name
    v = _next_version(model_dir) if version is None else version
    write_text(model_dir / str(v) / "model.py", MODEL_PY)
    # the manifest goes last: a half-copied bundle has none, so it never verifies
    files["bundle/manifest.json"] = source
    hashes[source] = sha256_file(source)
    m = _write_model(repo, name, "python", files, text, mbs, v, {"labels.txt": labels}, hashes)
    m.path = model_dir / str(v) / "model.py"
    return m


def _repository_parameters(view: BundleView, operating_point: str | None) -> dict[str, str]:
    """The parameters every model of the repository carries: the bundle's, its digest and its operating points,
    so that a client decides `prob >= threshold` the way `xpr predict` does."""
    params = _parameters(view.manifest)
    point = view.operating_point(operating_point)
    params["xpr_threshold"] = str(point.threshold)
    params["xpr_operating_point"] = point.name
    if view.operating_points:
        params["xpr_operating_points"] = json.dumps({k: p.threshold for k, p in view.operating_points.items()})
    params["xpr_bundle_sha256"] = view.digest
    return params


@dataclass
class _RepoModel:
    """What the ONNX and TensorRT models of one `write_repository` call share."""

    repo: Path
    base: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    mbs: int
    instances: int
    params: dict[str, str]
    source: Path
    version: int | None
    extras: dict[str, str]
    hashes: _Hashes

    def write(
        self, suffix: str, platform: str, kind: str, files: dict[str, Path], params: dict[str, str]
    ) -> TritonModel:
        """`<base>_<suffix>/`: its config.pbtxt, the files and the shared extras (labels, manifest)."""
        fname = next(iter(files))
        text = config_pbtxt(
            f"{self.base}_{suffix}", platform, self.inputs, self.outputs, self.mbs, self.instances, kind, fname,
            params, self.source, "labels.txt",
        )  # fmt: skip
        return _write_model(
            self.repo, f"{self.base}_{suffix}", platform, files, text, self.mbs, self.version, self.extras, self.hashes
        )


def _onnx_model(rm: _RepoModel, view: BundleView, precision: str | None) -> TritonModel:
    """`<base>_onnx/`: KIND_AUTO, GPU when the server has one, else CPU (ONNX Runtime runs on both)."""
    onnx = view.graph(precision)
    files = {"model.onnx": onnx, **{p.name: p for p in _external_data(onnx)}}
    return rm.write("onnx", "onnxruntime_onnx", "KIND_AUTO", files, {**rm.params, **triton_parameters(OrtSettings())})


def _trt_model(rm: _RepoModel, view: BundleView, skipped: list[str]) -> TritonModel | None:
    """`<base>_trt/` from the bundle's first TensorRT engine (one engine model per repository; more need --name).

    TensorRT-RTX engines are listed in `skipped`: Triton's tensorrt_plan backend does not run them."""
    for ref in view.engines:
        path, entry = ref.path, ref.entry
        if "rtx" in ref.flavour:
            skipped.append(
                f"{path}: TensorRT-RTX engine; Triton's tensorrt_plan backend runs TensorRT engines only, "
                "so it is not served (the ONNX model is)"
            )
            continue
        e_params = dict(rm.params)
        for key in ("version", "compute_capability", "hardware_compatibility"):
            if entry.get(key) is not None:
                e_params[f"xpr_engine_{key}"] = str(entry[key])
        return rm.write("trt", "tensorrt_plan", "KIND_GPU", {"model.plan": path}, e_params)
    return None


def write_repository(
    bundle: str | Path,
    repo: str | Path,
    max_batch: int | None = None,
    instances: int = 1,
    name: str | None = None,
    version: int | None = None,
    precision: str | None = None,
    python: PythonModelOptions | None = None,
    operating_point: str | None = None,
) -> TritonResult:
    """Write `<repo>/<name>_onnx/` (and `<name>_trt/` for a TensorRT engine, `<name>_python/` for
    the Python backend, see `PythonModelOptions`) from an export bundle.

    The config's `xpr_operating_point` / `xpr_threshold` parameters are the chosen operating point
    (None: the bundle's default) and `xpr_operating_points` every one the bundle carries (JSON name ->
    threshold): clients decide `prob >= threshold` with the point they name.

    `version` None means the next free version number, so re-running adds a version that Triton
    serves as the latest instead of replacing the files under a running server.
    """
    repo = Path(repo)
    py = python or PythonModelOptions()
    if instances < 1:
        raise TritonError(f"{bundle}: --instances must be >= 1")
    py.check(bundle)
    view = BundleView.open(bundle)  # refuses an edited, incomplete or escaping bundle before anything is copied
    manifest, source = view.manifest, view.root / "manifest.json"
    inputs = tensors(view.inputs, source)
    outputs = tensors(view.outputs, source)
    mbs = _batch_size(inputs + outputs, max_batch, source, view.max_batch)
    base = name or view.name.replace(" ", "_")
    params = _repository_parameters(view, operating_point)
    labels = "\n".join(_class_names(manifest)) + "\n"
    extras = {"labels.txt": labels, "manifest.json": source.read_text()}
    hashes = {view.root / rel: h for rel, h in manifest["files"].items()}
    rm = _RepoModel(repo, base, inputs, outputs, mbs, instances, params, source, version, extras, hashes)
    result = TritonResult(repo)
    result.models.append(_onnx_model(rm, view, precision))
    trt = _trt_model(rm, view, result.skipped)
    if trt is not None:
        result.models.append(trt)
    if py.enabled:
        result.models.append(
            _python_model(repo, view, base, inputs, outputs, mbs, instances, params, labels, version, py)
        )
    return result
