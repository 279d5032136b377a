#!/usr/bin/env python3
"""bench/backup.py - backup figures of kvmhost (issue 13), side by side.

Starts its own kvmhostd in a temp dir (KH_BUILD_DIR, default <repo>/build;
use a normal build, not the ASan one) and prints:
  - a full backup of a 2 GiB disk (a stopped VM's qcow2 volume filled with
    incompressible data written by qemu-io) into a store on the same
    filesystem, beside `qemu-img convert -O qcow2` of the same disk to the
    same filesystem (throughput, MiB/s of guest data);
  - an incremental backup after about 1% of the disk changed (20 MiB in
    spread pieces), as a share of the full backup's time;
    both in several runs (each into a new store, so the full backup finds
    nothing to deduplicate), with the medians. The comparison is kept fair:
    the same disk file, the target on the same filesystem, both under the
    same nice level; the disk file is warm in the page cache for both (read
    once before the runs; caches are not dropped, other work runs on this
    host), a `sync` goes before each timed step so none pays for another's
    writeback, the order of the two alternates from run to run; the convert
    is timed until `sync -f` of its output returned, the backup from the
    request until its task ended (polled every 20 ms), after its chunks
    were made durable (syncfs) and it was committed;
  - 10 linked clones of one template disk (each with 1% of its own writes)
    backed up into one store: the bytes the store holds, beside the bytes of
    one backup of the template;
  - a live-restore of the full backup: the time from the request until the
    new VM runs (its guest reading the backup through the NBD backing),
    and until the stream ends, beside a plain restore;
  - libvirt's `virsh backup-begin` (push, full) of the same disk to the same
    filesystem, by a private libvirtd (bench/libvirt_peer.py; a line says
    so when libvirt is not installed).
Environment: KH_BENCH_SIZE_MIB (default 2048), KH_BENCH_CHUNK_KIB (the
stores' chunk size, default: the daemon's, 1 MiB), KH_BENCH_RUNS (full +
incremental runs, each into a store of its own; default 3), KH_BENCH_EXTRA=0
(only those runs: no libvirt, live-restore or clones), KH_BENCH_LOG (copy
the daemon's log there: per-step timings). The load average is printed
beside the figures. Never run by CI."""

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "blackbox"))
import khlib  # noqa: E402
import libvirt_peer  # noqa: E402

MiB = 1 << 20
SIZE = int(os.environ.get("KH_BENCH_SIZE_MIB", "2048")) * MiB
QIMG = "/usr/bin/qemu-img"
QIO = "/usr/bin/qemu-io"


def fill(path, off, length, seed, tmp):
    """Incompressible data written through qemu-io (in 64 MiB pieces)."""
    rnd = random.Random(seed)
    src = os.path.join(tmp, "src")
    done = 0
    while done < length:
        n = min(64 * MiB, length - done)
        with open(src, "wb") as f:
            f.write(rnd.randbytes(n))
        subprocess.run([QIO, "-f", "qcow2", "-c", "write -s %s %d %d" % (src, off + done, n),
                        path], check=True, capture_output=True)
        done += n
    os.unlink(src)


def task(api, r, timeout=3600):
    t = r.json
    while t["state"] == "running":
        time.sleep(0.1)
        t = api.get("/api/v1/tasks/" + t["id"]).json
    assert t["state"] == "succeeded", t
    return t["result"]


def du(path):
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def store_spec(name, path):
    spec = {"name": name, "path": path}
    if os.environ.get("KH_BENCH_CHUNK_KIB"):
        spec["chunk_size"] = int(os.environ["KH_BENCH_CHUNK_KIB"]) * 1024
    return spec


def timed_task(api, path, body):
    """Wall time from the request to the task's end as a client sees it
    (polled every 20 ms), and its result."""
    t0 = time.time()
    r = api.post(path, dict(body, wait=0))
    t = r.json
    while t["state"] == "running":
        time.sleep(0.02)
        t = api.get("/api/v1/tasks/" + t["id"]).json
    assert t["state"] == "succeeded", t
    return time.time() - t0, t["result"]


def convert(vol, out):
    """qemu-img convert of the disk into a qcow2 beside it, until synced:
    the wall time and the CPU time of qemu-img (user + system)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    subprocess.run([QIMG, "convert", "-O", "qcow2", vol, out], check=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["sync", "-f", out], check=True)
    t = time.time() - t0
    os.unlink(out)
    return t, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def daemon_cpu(d):
    """CPU seconds of the daemon (all its threads) and of its children it
    waited for (qemu-nbd, qemu-img): utime + stime + cutime + cstime."""
    with open("/proc/%d/stat" % d.proc.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def warm(path):
    """Read a file once (into the page cache)."""
    with open(path, "rb") as f:
        while f.read(8 * MiB):
            pass


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def main():
    d = khlib.Daemon()
    d.start()
    api = d.api
    tmp = tempfile.mkdtemp(prefix="khbench-bk-", dir=d.base)
    runs = int(os.environ.get("KH_BENCH_RUNS", "3"))
    extra = os.environ.get("KH_BENCH_EXTRA", "1") != "0"
    try:
        r = api.post("/api/v1/pools/default/volumes", {"name": "big", "size": SIZE})
        vol = os.path.join(d.state_dir, "pools", "default", r.json["id"])
        boot = {"kernel": "/bin/true", "initrd": "/bin/true", "cmdline": "x"}
        api.create({"name": "big", "boot": boot, "disks": [{"volume": "default/big"}]})
        fill(vol, 0, SIZE, 1, tmp)
        mib = SIZE / MiB
        print("load average %.1f %.1f %.1f (2 cores) at the start; %d runs; the disk, the "
              "stores and the convert target on one filesystem (%s); the disk file warm in "
              "the page cache for both (read once before the runs; caches are not dropped: "
              "other work runs on this host); a sync before each timed step, so none pays "
              "for the writeback of another; the order of convert and backup alternates"
              % (os.getloadavg() + (runs, d.base)))
        warm(vol)
        fulls, ratios, incs, cpus = [], [], [], []
        out = os.path.join(d.base, "convert.qcow2")
        for k in range(runs):
            store = os.path.join(d.base, "store%d" % k)
            assert api.post("/api/v1/backup-stores", store_spec("s%d" % k, store)).status == 201
            la0 = os.getloadavg()[0]
            subprocess.run(["sync"])
            if k % 2:
                t_conv, c_conv = convert(vol, out)
                subprocess.run(["sync"])
            c0 = daemon_cpu(d)
            t_full, b1 = timed_task(api, "/api/v1/vms/big/backups", {"store": "s%d" % k})
            c_full = daemon_cpu(d) - c0
            if k % 2 == 0:
                subprocess.run(["sync"])
                t_conv, c_conv = convert(vol, out)
            # 1%: pieces of 256 KiB spread over the disk
            step = SIZE // 80
            for n in range(80):
                fill(vol, n * step + (k * 4096) % (step - 256 * 1024), 256 * 1024,
                     100 + 80 * k + n, tmp)
            subprocess.run(["sync"])
            t_inc, b2 = timed_task(api, "/api/v1/vms/big/backups", {"store": "s%d" % k})
            la1 = os.getloadavg()[0]
            fulls.append(t_full)
            ratios.append(t_conv / t_full)
            incs.append(100 * t_inc / t_full)
            cpus.append((c_full, c_conv))
            print("run %d (load %.1f -> %.1f): full backup %.2f s %.1f MiB/s (CPU %.1f s), "
                  "qemu-img convert %.2f s %.1f MiB/s (CPU %.1f s): ratio %.2fx; incremental "
                  "%.2f s = %.1f%% of the full (read %d MiB, stored %d MiB, %d new chunks)"
                  % (k + 1, la0, la1, t_full, mib / t_full, c_full, t_conv, mib / t_conv, c_conv,
                     t_conv / t_full, t_inc, 100 * t_inc / t_full, b2["bytes_read"] // MiB,
                     b2["bytes_written"] // MiB, b2["chunks_new"]))
            sys.stdout.flush()
            if k > 0:  # the disk space (s0 stays: the live-restore below uses it)
                shutil.rmtree(store, ignore_errors=True)
        print("full backup of a %d MiB disk (stopped VM, incompressible data), chunk size %s: "
              "median %.2f s = %.1f MiB/s; throughput vs qemu-img convert: median %.2fx "
              "(runs: %s)"
              % (mib, api.get("/api/v1/backup-stores/s0").json.get("chunk_size"),
                 median(fulls), mib / median(fulls), median(ratios),
                 " ".join("%.2f" % x for x in ratios)))
        print("incremental after ~1%% changed (80 x 256 KiB): median %.1f%% of the full "
              "(runs: %s)" % (median(incs), " ".join("%.1f" % x for x in incs)))
        print("CPU time (user + system, all threads and children; what a loaded host makes "
              "the wall time depend on): full backup median %.1f s, qemu-img convert %.1f s"
              % (median([c[0] for c in cpus]), median([c[1] for c in cpus])))
        if not extra:
            return
        t_full = median(fulls)
        lv_line = libvirt_peer.backup_line(vol, d.base, SIZE / MiB, t_full)
        print(lv_line)
        # live-restore of a backup of the disk: the new VM (the test guest's
        # kernel and initrd, the disk as its data disk) runs while the stream
        # goes on; beside a plain restore of the same backup
        paths = khlib.guest_paths()
        if paths is None:
            print("live-restore: not measured (no test guest: tests/guest/build.sh)")
        else:
            g = khlib.Guest(*paths)
            spec = g.spec("big", None, disk=False)
            api.patch("/api/v1/vms/big", {"boot": spec["boot"], "serial": True,
                                          "graphics": "none", "memory_mib": 256})
            # a plain start of the same VM first: the kernel is prepared once
            # (cached), and the figure to compare with
            t0 = time.time()
            api.act_ok("big", "start")
            t_start = time.time() - t0
            api.act_ok("big", "kill")
            b3 = task(api, api.post("/api/v1/vms/big/backups", {"store": "s0", "wait": 0}))
            t0 = time.time()
            r = api.post("/api/v1/backups/%s/restore" % b3["id"],
                         {"as": "live1", "live": True, "wait": 0})
            seen = None
            while seen is None:
                v = api.get("/api/v1/vms/live1")
                if v.status == 200 and v.json["state"] == "running":
                    seen = time.time() - t0
                time.sleep(0.02)
            lr = task(api, r)
            t0 = time.time()
            task(api, api.post("/api/v1/backups/%s/restore" % b3["id"], {"as": "plain1",
                                                                          "wait": 0}))
            t_plain = time.time() - t0
            print("live-restore of the %d MiB backup: guest started %.2f s after the request "
                  "(daemon's figure %.2f s; seen running by a client polling every 20 ms); "
                  "the stream ended after %.2f s; a plain restore of the same backup: %.2f s; "
                  "a plain start of the source VM: %.2f s"
                  % (mib, seen, lr["started_ms"] / 1000, lr["streamed_ms"] / 1000, t_plain,
                     t_start))
        # 10 linked clones of one template disk
        store2 = os.path.join(d.base, "clones-store")
        assert api.post("/api/v1/backup-stores", store_spec("c", store2)).status == 201
        r = api.post("/api/v1/pools/default/volumes", {"name": "tpl", "size": 512 * MiB})
        tvol = os.path.join(d.state_dir, "pools", "default", r.json["id"])
        fill(tvol, 0, 512 * MiB, 7, tmp)
        api.create({"name": "tpl", "boot": boot, "disks": [{"volume": "default/tpl"}]})
        task(api, api.post("/api/v1/vms/tpl/backups", {"store": "c", "wait": 0}))
        one = du(store2)
        api.delete("/api/v1/vms/tpl")
        assert api.post("/api/v1/vms/tpl/template", {}).status in (200, 404)
        for i in range(10):
            r = api.post("/api/v1/pools/default/volumes", {"name": "cl%d" % i, "backing": "tpl"})
            assert r.status == 201, r
            cvol = os.path.join(d.state_dir, "pools", "default", r.json["id"])
            fill(cvol, (i * 37 % 500) * MiB, 5 * MiB, 1000 + i, tmp)  # ~1% of its own
            api.create({"name": "cl%d" % i, "boot": boot,
                        "disks": [{"volume": "default/cl%d" % i}]})
            task(api, api.post("/api/v1/vms/cl%d/backups" % i, {"store": "c", "wait": 0}))
        ten = du(store2)
        print("10 linked clones of a 512 MiB template (1%% own writes each): store %d MiB "
              "after the template alone, %d MiB after the 10 clones too: %.2fx of one"
              % (one // MiB, ten // MiB, ten / one))
    finally:
        d.stop()
        if os.environ.get("KH_BENCH_LOG"):  # the daemon's log (its step timings)
            shutil.copy(d.log_path, os.environ["KH_BENCH_LOG"])
        d.cleanup()
        d.remove()  # its dir: the disk, the stores (gigabytes)


if __name__ == "__main__":
    main()
