#!/usr/bin/env bash
# The Debian packages the project needs, by group; `make test`, `make cpp`, `make cpp-fuzz` and .ci/run
# all install through this one script. Idempotent: installs only what is missing, runs `apt-get update`
# only then, and never starts a packaged service (Orthanc: the tests run their own on a free port).
#
#   scripts/system_deps.sh [GROUP...]     (default: test)
#     cpp   the C++ runtime, its example viewer and tests: compiler, CMake, DCMTK, nlohmann-json, OpenJPEG, libpng
#     test  everything `make test` needs: cpp (tests/test_engines_cpp.py builds engines/), dicom3tools
#           (dciodvfy, the DICOM validity test), orthanc + orthanc-dicomweb (the PACS round trip), dcmtk
#           and openjph-tools (dcmconv, dcmcjpeg, dcmcjpls, dcmcrle, ojph_compress: the transfer syntax tests;
#           storescu / storescp / echoscu: the DICOM node's real peers), openssl (the node's TLS test)
#           chromium + npm (tests/test_viewer.py: OHIF fetched with `npm pack`, opened in headless Chromium;
#           Debian's npm only when no npm is on PATH, e.g. from NodeSource's nodejs, which conflicts with it)
#     fuzz  clang with libFuzzer (clang-14's runtime libraries are in libclang-rt-14-dev), for `make cpp-fuzz`
#     all   all of the above
# Not root and something missing: one line naming the packages and the command, exit 1.
set -euo pipefail

cpp=(cmake g++ make pkg-config libdcmtk-dev nlohmann-json3-dev libopenjp2-7-dev libpng-dev)
test_only=(dicom3tools orthanc orthanc-dicomweb dcmtk openjph-tools openssl chromium)
fuzz=(clang libclang-rt-14-dev)

pkgs=()
(($#)) || set -- test
for group in "$@"; do
  case "$group" in
    cpp) pkgs+=("${cpp[@]}") ;;
    test) pkgs+=("${cpp[@]}" "${test_only[@]}") ;;
    fuzz) pkgs+=("${fuzz[@]}") ;;
    all) pkgs+=("${cpp[@]}" "${test_only[@]}" "${fuzz[@]}") ;;
    *) echo "system_deps: unknown group '$group' (cpp, test, fuzz, all)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  [[ " ${missing[*]-} " == *" $p "* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ " ${pkgs[*]} " == *" chromium "* ]] && ! command -v npm >/dev/null; then missing+=(npm); fi
((${#missing[@]})) || exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "system_deps: missing Debian packages: ${missing[*]}; install them as root: sudo $0 $*" >&2
  exit 1
fi
echo "system_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# packaged services (orthanc) must not start: invoke-rc.d asks policy-rc.d, 101 = "not allowed"
made_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
if ((made_policy)); then rm -f /usr/sbin/policy-rc.d && trap - EXIT; fi
