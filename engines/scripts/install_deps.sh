#!/usr/bin/env bash
# Debian packages the C++ runtime, example and tests need: the `cpp` group of scripts/system_deps.sh
# (the one script `make test`, `make cpp` and .ci/run install through). Idempotent.
set -euo pipefail
exec "$(cd "$(dirname "$0")/../.." && pwd)/scripts/system_deps.sh" cpp "$@"
