#!/usr/bin/python3
"""GET /metrics latency with many defined VMs, some running, and the
sampler's cost; then the same figures for libvirt's `virsh domstats`.

Usage: bench/metrics.py [--defined 100] [--running 20] [--requests 200] [--no-libvirt]
(bench/metrics.sh starts libvirtd first.) The per-VM sampling cost is the
CPU time one round costs the daemon (kvmhostd: its whole process over 10 s
of 1 s rounds; libvirt: libvirtd plus the virsh client per domstats call),
scaled to one round every 10 s per 10 running VMs.
Env: KH_BUILD_DIR (default <repo>/build), KH_GUEST_KERNEL/INITRD (default:
tests/guest/build.sh --print-env). Starts its own kvmhostd in a temp dir with
a 1 s sampling period, and removes everything at the end. Never run by CI.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "blackbox"))
sys.path.insert(0, here)
import khbench  # noqa: E402
import khlib  # noqa: E402


def cpu_seconds(pid):
    """CPU time of a whole process in ns precision: the sum over its threads
    of /proc/PID/task/TID/schedstat (utime + stime from /proc/PID/stat
    moves in 10 ms ticks, too coarse for one sampling round)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def pct(xs, p):
    xs = sorted(xs)
    return xs[max(int(len(xs) * p) - 1, 0)]


def report(who, defined, running, lat, size, round_cpu):
    print("%-8s defined VMs %d, running %d" % (who, defined, running))
    print("%-8s answer size            %d bytes" % (who, size))
    print("%-8s latency uncached       median %.2f ms, p95 %.2f ms, max %.2f ms (target <= 50 ms)"
          % (who, statistics.median(lat), pct(lat, 0.95), max(lat)))
    share = round_cpu / 10.0 * 100
    print("%-8s CPU per sampling round %.3f ms -> @10 s: %.4f %% of one core, %.4f %% per 10 "
          "running VMs (target <= 1 %%)" % (who, round_cpu * 1000, share,
                                             share / max(running, 1) * 10))


def libvirt_part(a, kernel, initrd):
    virsh = khbench.VIRSH
    work = tempfile.mkdtemp(prefix="khbench-m-", dir="/tmp")
    os.chmod(work, 0o755)
    # libvirt relabels (chowns) what a domain uses: give it copies
    k, i = os.path.join(work, "vmlinuz"), os.path.join(work, "initrd.img")
    shutil.copyfile(kernel, k)
    shutil.copyfile(initrd, i)
    lv = khbench.Libvirt(work, k, i, None, mem=128)
    names = ["%sm%03d" % (khbench.PREFIX, n) for n in range(a.defined)]
    try:
        lv.cleanup_all()
        for n in names:
            lv.define(n, with_disk=False)
        for n in names[:a.running]:
            lv.start(n)
        # As for kvmhost: every guest booted, then a few seconds.
        deadline = time.time() + 300
        pending = set(names[:a.running])
        while pending and time.time() < deadline:
            for n in list(pending):
                try:
                    with open(lv.serial(n), "rb") as f:
                        if khbench.MARKER in f.read():
                            pending.discard(n)
                except OSError:
                    pass
            time.sleep(0.5)
        if pending:
            raise RuntimeError("libvirt guests did not boot: %s" % sorted(pending))
        time.sleep(5)
        lvpid = khbench.libvirtd_pid()
        lat, size = [], 0
        reps = max(a.requests // 10, 10)  # each call is a process: fewer of them
        c0 = cpu_seconds(lvpid)
        u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(reps):
            t0 = time.perf_counter()
            p = subprocess.run(virsh + ["domstats"], capture_output=True, check=True)
            lat.append((time.perf_counter() - t0) * 1000)
            size = len(p.stdout)
        c1 = cpu_seconds(lvpid)
        u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime)
        per_call = ((c1 - c0) + client) / reps
        print("libvirt  (virsh domstats, all stats of all %d domains, one virsh process per "
              "call; libvirtd %.3f ms + virsh %.3f ms CPU per call)"
              % (a.defined, (c1 - c0) / reps * 1000, client / reps * 1000))
        report("libvirt", a.defined, a.running, lat, size, per_call)
    finally:
        for n in names:
            lv.undefine(n)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defined", type=int, default=100)
    ap.add_argument("--running", type=int, default=20)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--no-libvirt", action="store_true")
    a = ap.parse_args()
    kernel, initrd, _disk = khlib.guest_paths()
    d = khlib.Daemon(extra_args=["--sample-interval-ms", "1000", "--log-level", "warn"])
    d.start()
    try:
        api = d.api
        api.wait_accel()
        for i in range(a.defined):
            api.create({"name": "mb%03d" % i, "memory_mib": 128,
                        "boot": {"kernel": kernel, "initrd": initrd,
                                 "cmdline": khlib.GUEST_CMDLINE}})
        for i in range(a.running):
            st, j = api.action("mb%03d" % i, "start", wait=0)
            assert st in (200, 202), j
        for i in range(a.running):
            api.wait_state("mb%03d" % i, "running", timeout=300)
        # Every guest booted (the host idle again), then a few rounds.
        api.wait_consoles(["mb%03d" % i for i in range(a.running)], khlib.GUEST_READY,
                          timeout=300)
        time.sleep(5)
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
        # The whole daemon's CPU while it only samples (no requests).
        pid = d.pid
        runs0, c0 = m["kvmhost_sampler_runs_total"], cpu_seconds(pid)
        time.sleep(10)
        c1 = cpu_seconds(pid)
        for ln in api.get("/metrics").text.splitlines():
            if ln.startswith("kvmhost_sampler_runs_total"):
                runs1 = float(ln.split()[1])
        round_cpu = (c1 - c0) / max(runs1 - runs0, 1)
        print("kvmhost  (GET /metrics on the unix socket; the sampler's own loop time is "
              "%.3f ms per round, the process CPU %.3f ms per round)"
              % (per_round * 1000, round_cpu * 1000))
        report("kvmhost", a.defined, a.running, lat, size, round_cpu)
    finally:
        d.cleanup()
        d.remove()
    if not a.no_libvirt:
        libvirt_part(a, kernel, initrd)


if __name__ == "__main__":
    main()
