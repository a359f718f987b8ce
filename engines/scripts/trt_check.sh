#!/usr/bin/env bash
# Compiles src/backend_trt.cpp (the TensorRT / TensorRT-RTX backend) against TensorRT 11.1's public
# headers and CUDA's runtime headers, warnings as errors: the backend is never linked here (no
# TensorRT library installs from the package indexes), but it must keep compiling. `make cpp-trt-check`.
#   TRT_ROOT   TensorRT headers (default: ../shared/third_party/tensorrt-11.1 beside the repository)
#   CXX        compilers to try, space-separated (default: g++, and clang++ when installed)
# CUDA headers: the pinned PyPI wheels below (nvidia-cuda-runtime: cuda_runtime_api.h, nvidia-cuda-crt:
# crt/host_defines.h), downloaded once with pip into engines/third_party/cuda-headers/ (git-ignored).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"          # engines/
repo="$(cd "$here/.." && pwd)"
py="${XPR_PYTHON:-$repo/.venv/bin/python}"
trt="${TRT_ROOT:-$repo/../shared/third_party/tensorrt-11.1}"
cuda_pins=(nvidia-cuda-runtime==13.5.37 nvidia-cuda-crt==13.5.37)
dest="$here/third_party/cuda-headers"

if [[ ! -f "$trt/include/NvInfer.h" ]]; then
  echo "trt_check: no TensorRT headers at $trt/include (set TRT_ROOT)" >&2
  exit 1
fi
stamp="${cuda_pins[*]}"
if [[ ! -f "$dest/include/cuda_runtime_api.h" || ! -f "$dest/include/crt/host_defines.h" ||
      "$(cat "$dest/.pins" 2>/dev/null)" != "$stamp" ]]; then
  rm -rf "$dest" && mkdir -p "$dest/wheels" "$dest/x"
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --dest "$dest/wheels" "${cuda_pins[@]}"
  for w in "$dest"/wheels/*.whl; do "$py" -m zipfile -e "$w" "$dest/x"; done
  inc="$(dirname "$(find "$dest/x" -path '*/include/cuda_runtime_api.h' | head -n1)")"
  [[ -f "$inc/crt/host_defines.h" ]] || { echo "trt_check: the wheels lack include/crt/host_defines.h" >&2; exit 1; }
  mv "$inc" "$dest/include" && rm -rf "$dest/x"
  echo "$stamp" >"$dest/.pins"
fi

compilers=(${CXX:-g++})
if [[ -z "${CXX:-}" ]] && command -v clang++ >/dev/null; then compilers+=(clang++); fi
for cxx in "${compilers[@]}"; do
  for rtx in 0 1; do  # TensorRT and TensorRT-RTX builds of the same file
    # the SDK's headers are system headers (-isystem, as a CMake build sees them): their own
    # deprecation warnings are NVIDIA's; every warning in the project's code is an error
    "$cxx" -std=c++17 -fsyntax-only -Wall -Wextra -Werror -DXPR_WITH_TENSORRT=1 -DXPR_TRT_IS_RTX=$rtx \
      -DXPR_BUILDING_LIBRARY -I"$here/include" -I"$here/src" -isystem "$trt/include" -isystem "$dest/include" \
      "$here/src/backend_trt.cpp"
    echo "trt_check: src/backend_trt.cpp compiles with $cxx (XPR_TRT_IS_RTX=$rtx) against $(basename "$trt") + ${cuda_pins[*]}"
  done
done
