"""The lent GPU machine's Python packages, emulated here: a folder of links to this venv's copies of
only those packages, for `python -S` (no site-packages) with PYTHONPATH=source tree:FOLDER.

    python bench/device_env.py DIR    # builds DIR, prints the PYTHONPATH to use

Why: bench/gpu.py runs there from the source tree (no install, no network); a module it imports
that the machine lacks fails only there, after minutes of device time. The package list is the one
the device tool documents (KINDS.md, "Python packages already there", read 2026-11-17), plus what
those packages need as installed in this venv, plus the wheels bench/gpu-wheels.txt carries.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: distributions preinstalled on the lent nvidia-h200 machine (versions differ from this venv's)
_DEVICE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
"""
DEVICE_PACKAGES = _DEVICE_PACKAGES.split()


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def carried() -> list[str]:
    """The distributions bench/gpu-wheels.txt carries (names only)."""
    lines = (HERE / "gpu-wheels.txt").read_text().splitlines()
    return [norm(ln.split("==")[0]) for ln in lines if ln.strip() and not ln.startswith("#")]


def _requirements(dist: md.Distribution) -> list[str]:
    out = []
    for req in dist.requires or ():
        if "extra ==" in req:
            continue
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if m:
            out.append(norm(m.group(1)))
    return out


def allowed_distributions() -> dict[str, md.Distribution]:
    """This venv's distributions that the machine has (or gets carried), with what they need here."""
    have = {norm(d.metadata["Name"]): d for d in md.distributions()}
    todo = [n for n in {*map(norm, DEVICE_PACKAGES), *carried()} if n in have]
    seen: dict[str, md.Distribution] = {}
    while todo:
        n = todo.pop()
        if n in seen or n not in have:
            continue
        seen[n] = have[n]
        todo.extend(_requirements(have[n]))
    return seen


def build(dest: Path) -> tuple[Path, list[str]]:
    """dest/site with a link per top-level entry of every allowed distribution; returns it and what
    this venv has that the machine lacks (those stay unimportable under `python -S`)."""
    site = dest / "site"
    site.mkdir(parents=True, exist_ok=True)
    allowed = allowed_distributions()
    for dist in allowed.values():
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        for top in tops:
            src, link = base / top, site / top
            if src.exists() and not link.exists() and not top.endswith(".pth") and top != "__pycache__":
                link.symlink_to(src)
    missing = sorted(norm(d.metadata["Name"]) for d in md.distributions() if norm(d.metadata["Name"]) not in allowed)
    return site, missing


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/device_env.py DIR")
    site, missing = build(Path(sys.argv[1]))
    print(f"left out (not on the machine): {' '.join(missing)}", file=sys.stderr)
    print(f"{HERE.parent}:{site}")
