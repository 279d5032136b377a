#!/usr/bin/python3
"""GET /metrics latency with many defined VMs, some running, and the
sampler's cost on the loop thread.

Usage: bench/metrics.py [--defined 100] [--running 20] [--requests 200]
Env: KH_BUILD_DIR (default <repo>/build), KH_GUEST_KERNEL/INITRD (default:
tests/guest/build.sh --print-env). Starts its own kvmhostd in a temp dir with
a 1 s sampling period, and removes everything at the end. Never run by CI.
"""

import argparse
import os
import statistics
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "blackbox"))
import khlib  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defined", type=int, default=100)
    ap.add_argument("--running", type=int, default=20)
    ap.add_argument("--requests", type=int, default=200)
    a = ap.parse_args()
    kernel, initrd, _disk = khlib.guest_paths()
    d = khlib.Daemon(extra_args=["--sample-interval-ms", "1000", "--log-level", "warn"])
    d.start()
    try:
        api = d.api
        api.wait_accel()
        for i in range(a.defined):
            api.create({"name": "mb%03d" % i, "memory_mib": 64,
                        "boot": {"kernel": kernel, "initrd": initrd,
                                 "cmdline": khlib.GUEST_CMDLINE}})
        for i in range(a.running):
            st, j = api.action("mb%03d" % i, "start", wait=0)
            assert st in (200, 202), j
        for i in range(a.running):
            api.wait_state("mb%03d" % i, "running", timeout=300)
        time.sleep(5)  # a few sampler rounds with every QEMU up
        lat, size = [], 0
        for _ in range(a.requests):
            t0 = time.perf_counter()
            r = api.get("/metrics")
            lat.append((time.perf_counter() - t0) * 1000)
            assert r.status == 200
            size = len(r.data)
        m = {}
        for ln in r.text.splitlines():
            if ln.startswith("kvmhost_sampler_"):
                k, v = ln.split()
                m[k] = float(v)
        per_round = m["kvmhost_sampler_seconds_total"] / m["kvmhost_sampler_runs_total"]
        lat.sort()
        print("defined VMs            %d" % a.defined)
        print("running VMs            %d" % a.running)
        print("/metrics size          %d bytes" % size)
        print("/metrics latency       median %.2f ms, p95 %.2f ms, max %.2f ms (target <= 50 ms)"
              % (statistics.median(lat), lat[int(len(lat) * 0.95) - 1], lat[-1]))
        print("sampler round          %.3f ms on the loop thread" % (per_round * 1000))
        share = per_round / 10.0 * 100
        print("sampler cost @10 s     %.4f %% of one core (%.4f %% per 10 running VMs;"
              " target <= 1 %%)" % (share, share / max(a.running, 1) * 10))
    finally:
        d.cleanup()
        d.remove()


if __name__ == "__main__":
    main()
