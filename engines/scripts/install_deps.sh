#!/usr/bin/env bash
# Debian packages the C++ runtime, example and tests need. Idempotent: installs only what is missing.
set -euo pipefail
pkgs=(cmake g++ make pkg-config libdcmtk-dev nlohmann-json3-dev libopenjp2-7-dev libpng-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "install_deps: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
