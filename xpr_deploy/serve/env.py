"""Where a Triton server is, which backends it has, and the Python path its `python` backend gets.

The `nvidia-pytriton` wheel carries the real `tritonserver` (bin/, libraries in
`nvidia_pytriton.libs/`) and only the Python backend; the backend's stub for each Python version
sits in `python_backend_stubs/3.X/` and must lie next to `libtriton_python.so`. The wheel's folder
is never modified: the backend folder is assembled in xpr's cache (`XPR_CACHE_DIR`, default
`~/.cache/xpr`). The stub runs the system libpython, not the venv: `model_sys_path()` is what the
generated model.py puts first on `sys.path` (numpy 1.x folder, xpr's source root, site-packages).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import XprError
from ..io import ALREADY_EXISTS, OutputError, atomic_dir

#: numpy for the stub's path (numpy 2 makes every Python-backend response fail: see the notes)
NUMPY1 = "numpy==1.26.4"
PYTRITON_HINT = (
    "pip install --no-deps nvidia-pytriton==0.7.0 (ships a CPU-capable tritonserver), or put tritonserver on PATH"
)


class ServeError(XprError):
    """A Triton server cannot be found, started, or does not become ready (one line naming the cause)."""


@dataclass(frozen=True)
class ServerInstall:
    """A `tritonserver` binary and what it needs to run."""

    binary: Path
    origin: str  # "nvidia-pytriton <version>" or "PATH"
    backends_dir: Path  # the server's own backends folder
    lib_dirs: tuple[Path, ...] = ()
    stubs_dir: Path | None = None  # pytriton: python_backend_stubs/
    notes: tuple[str, ...] = field(default=())

    def backends(self) -> list[str]:
        if not self.backends_dir.is_dir():
            return []
        return sorted(p.name for p in self.backends_dir.iterdir() if p.is_dir() and not p.name.startswith("_"))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.lib_dirs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                [*(str(p) for p in self.lib_dirs), *filter(None, [env.get("LD_LIBRARY_PATH")])]
            )
        return env


def cache_dir() -> Path:
    return Path(os.environ.get("XPR_CACHE_DIR") or Path.home() / ".cache" / "xpr")


def _pytriton() -> ServerInstall | None:
    spec = importlib.util.find_spec("pytriton")  # finds the folder without importing pytriton
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg = Path(next(iter(spec.submodule_search_locations)))
    binary = pkg / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        return None
    try:
        from importlib.metadata import version

        ver = version("nvidia-pytriton")
    except Exception:
        ver = "?"
    libs = pkg.parent / "nvidia_pytriton.libs"
    return ServerInstall(
        binary, f"nvidia-pytriton {ver}", pkg / "tritonserver" / "backends",
        tuple(p for p in (libs,) if p.is_dir()), pkg / "tritonserver" / "python_backend_stubs",
    )  # fmt: skip


def _on_path() -> ServerInstall | None:
    found = shutil.which("tritonserver")
    if not found:
        return None
    binary = Path(found).resolve()
    for cand in (binary.parent.parent / "backends", Path("/opt/tritonserver/backends")):
        if cand.is_dir():
            return ServerInstall(binary, "PATH", cand)
    return ServerInstall(binary, "PATH", binary.parent.parent / "backends", notes=("no backends folder found",))


def find_server() -> ServerInstall:
    """The pytriton wheel's server when installed, else one on PATH; ServeError when neither."""
    for probe in (_pytriton, _on_path):
        found = probe()
        if found is not None:
            return found
    raise ServeError(f"no Triton server found: {PYTRITON_HINT}")


def _publish(dest: Path, build: Callable[[Path], None]) -> Path:
    """`dest`, a cache folder that `build` fills in a temporary beside it, renamed into place
    (`io.atomic_dir`: what a killed run left is swept by the next). When another process publishes
    it first, theirs stays and this copy is dropped: a running server may be using the first."""
    if not dest.is_dir():
        try:
            with atomic_dir(dest, overwrite=False) as tmp:
                build(tmp)
        except OutputError as exc:
            if exc.reason != ALREADY_EXISTS:
                raise
    return dest


def backends_dir(install: ServerInstall) -> Path:
    """The folder to pass as --backend-directory: for pytriton, its Python backend with this
    interpreter's stub beside it, assembled in the cache (the wheel is left as it is)."""
    if install.stubs_dir is None:
        return install.backends_dir
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.stubs_dir / ver / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServeError(f"{install.stubs_dir}: no Python backend stub for Python {ver}")
    src = install.backends_dir / "python"
    files = [src / "libtriton_python.so", src / "triton_python_backend_utils.py", stub]
    np1 = numpy1_dir()
    key = hashlib.sha256(
        "|".join([str(np1), *(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)]).encode()
    )
    dest = cache_dir() / "triton" / f"backends-{key.hexdigest()[:12]}"

    def build(tmp: Path) -> None:
        (tmp / "python").mkdir()
        for f in files:
            shutil.copy2(f, tmp / "python" / f.name)
        # the stub ignores PYTHONPATH and imports triton_python_backend_utils (numpy) from this folder
        # before any model.py runs: numpy 1.x must be importable from here
        for entry in np1.iterdir():
            if entry.name.startswith("numpy"):
                os.symlink(entry, tmp / "python" / entry.name)

    return _publish(dest, build)


def numpy1_dir(create: bool = True) -> Path:
    """A folder holding numpy 1.x only, for the front of the stub's sys.path (`XPR_TRITON_NUMPY1`
    names one; else the cache's, made with `pip install --target` from the package index when missing)."""
    given = os.environ.get("XPR_TRITON_NUMPY1")
    dest = (
        Path(given)
        if given
        else cache_dir()
        / "triton"
        / f"numpy-{NUMPY1.split('==')[1]}-py{sys.version_info.major}{sys.version_info.minor}"
    )
    if (dest / "numpy" / "__init__.py").is_file() or not create:
        return dest
    if given:
        raise ServeError(
            f"XPR_TRITON_NUMPY1={given}: no numpy in that folder (pip install --target {given} '{NUMPY1}')"
        )

    def build(tmp: Path) -> None:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp), NUMPY1]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServeError(f"cannot install {NUMPY1} for Triton's Python stub into {dest} ({exc})") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ServeError(f"cannot install {NUMPY1} for Triton's Python stub into {dest}: {last}")

    return _publish(dest, build)


def model_sys_path(create: bool = True) -> list[str]:
    """What the Python-backend model puts first on sys.path: numpy 1.x, xpr's source root, site-packages."""
    root = Path(__file__).resolve().parents[2]  # the folder holding xpr_deploy/ (a checkout or site-packages)
    paths = [str(numpy1_dir(create)), str(root)]
    for key in ("purelib", "platlib"):
        p = sysconfig.get_paths()[key]
        if p not in paths:
            paths.append(p)
    return paths
