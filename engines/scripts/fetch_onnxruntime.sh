#!/usr/bin/env bash
# Puts ONNX Runtime C/C++ headers and a matching shared library under engines/third_party/onnxruntime/
#   include/  headers from Debian trixie's libonnxruntime-dev (fetched by package name with apt-get,
#              into a private apt state folder; /etc/apt is only read, never written)
#   lib/       libonnxruntime.so.1.* from the `onnxruntime` wheel in the project venv
# Idempotent: does nothing when both are already there (the library is recopied when the wheel changes).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"          # engines/
dest="$here/third_party/onnxruntime"
venv_py="${XPR_PYTHON:-$here/../.venv/bin/python}"

# --- library from the wheel (refreshed when the wheel's version changes) --------------------
capi="$("$venv_py" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')"
so="$(ls "$capi"/libonnxruntime.so.1.* 2>/dev/null | head -n1 || true)"
if [[ -z "$so" ]]; then
  echo "fetch_onnxruntime: no libonnxruntime.so.1.* in $capi (is the onnxruntime wheel installed?)" >&2
  exit 1
fi
if [[ -f "$dest/include/onnxruntime_cxx_api.h" && -e "$dest/lib/$(basename "$so")" ]]; then
  exit 0
fi
mkdir -p "$dest/include" "$dest/lib"
rm -f "$dest"/lib/libonnxruntime.so*
cp -f "$so" "$dest/lib/"
ln -sf "$(basename "$so")" "$dest/lib/libonnxruntime.so.1"
ln -sf "$(basename "$so")" "$dest/lib/libonnxruntime.so"

# --- headers from the trixie -dev package ---------------------------------------------------
if [[ ! -f "$dest/include/onnxruntime_cxx_api.h" ]]; then
  work="$here/third_party/apt-trixie"
  mkdir -p "$work/sources" "$work/state/lists/partial" "$work/cache/archives/partial" "$work/debs"
  src=/etc/apt/sources.list.d/debian.sources
  if [[ ! -f "$src" ]]; then
    echo "fetch_onnxruntime: $src not found; cannot derive a trixie source" >&2
    exit 1
  fi
  # first stanza of the system's deb822 source (the main archive), suite switched to trixie
  awk 'BEGIN{p=1} /^$/{if(seen) exit} {seen=1; if ($1=="Suites:") print "Suites: trixie"; else print}' \
      "$src" > "$work/sources/trixie.sources"
  opts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work/sources"
        -o Dir::State::Lists="$work/state/lists" -o Dir::Cache="$work/cache"
        -o Dir::State::status=/dev/null -o APT::Architecture=amd64 -o Debug::NoLocking=1)
  apt-get "${opts[@]}" -qq update
  (cd "$work/debs" && apt-get "${opts[@]}" -qq download libonnxruntime-dev)
  deb="$(ls "$work"/debs/libonnxruntime-dev_*.deb | head -n1)"
  rm -rf "$work/x" && dpkg-deb -x "$deb" "$work/x"
  hdr="$(dirname "$(find "$work/x" -name onnxruntime_cxx_api.h | head -n1)")"
  cp -f "$hdr"/*.h "$dest/include/"
  echo "fetch_onnxruntime: headers from $(basename "$deb"), library $(basename "$so")"
fi
