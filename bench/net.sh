#!/bin/bash
# bench/net.sh - network figures, inside a network namespace it creates:
#   - creating a NAT network: POST /api/v1/networks until dnsmasq answers
#     (bridge + nftables + dnsmasq bound on the gateway), target <= 100 ms;
#   - tap setup per VM start (create tap, enslave, up: the daemon's vm.nics
#     log line), target <= 10 ms;
#   - guest-to-guest TCP throughput (busybox nc, 16 MiB) on the NAT network
#     under the accelerator the host has.
# Usage: bench/net.sh [N]  (N network creations, default 10). Root. Never
# run by CI. Env: KH_BUILD_DIR, KH_GUEST_* as for the tests.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ns=kh-b-$(printf '%08x' $((RANDOM * 32768 + RANDOM)))
ip netns add "$ns"
trap 'for p in $(ip netns pids "$ns"); do kill -9 "$p" 2>/dev/null || true; done; sleep 0.3; ip netns delete "$ns"' EXIT
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" /usr/bin/python3 "$here/net.py" "${1:-10}"
