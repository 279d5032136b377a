#!/bin/bash
# bench/metrics.sh - GET /metrics latency and sampler cost with many VMs.
# Usage: bench/metrics.sh [--defined N] [--running N] [--requests N]
# (defaults 100 defined, 20 running). Never run by CI.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export KH_BUILD_DIR=${KH_BUILD_DIR:-$here/../build}
exec /usr/bin/python3 "$here/metrics.py" "$@"
