#!/usr/bin/env python3
"""bench/storage.py - storage figures of kvmhost (issue 3), under TCG.

Starts its own kvmhostd in a temp dir (KH_BUILD_DIR, default <repo>/build)
and prints, side by side:
  - linked clone of a 20 GiB template through the API (POST /vms
    from_template), median of N, beside bare `qemu-img create -b` on the
    same base;
  - 10 parallel linked clones of one template (all must succeed; wall time);
  - memory snapshot and revert of an idle 256 MiB test guest (median of 5).
libvirt's virsh snapshot-create-as / snapshot-revert are not measured here.
Never run by CI."""

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "blackbox"))
import khlib  # noqa: E402

N = int(os.environ.get("KH_BENCH_N", "20"))


def ms(xs):
    return "%.1f ms (min %.1f)" % (statistics.median(xs) * 1000, min(xs) * 1000)


save, load = [], []


def main():
    d = khlib.Daemon()
    d.start()
    api = d.api
    rows = []
    try:
        khlib.wait_accel(api)
        kernel, initrd, disk = khlib.guest_paths()
        boot = {"kernel": kernel, "initrd": initrd, "cmdline": khlib.GUEST_CMDLINE}
        assert api.post("/api/v1/pools/default/volumes",
                        {"name": "tpl-root", "size": "20G"}).status == 201
        api.create({"name": "tpl", "vcpus": 1, "memory_mib": 256, "boot": boot,
                    "disks": [{"volume": "default/tpl-root"}]})
        assert api.post("/api/v1/vms/tpl/template", {}).status == 200
        base = os.path.join(d.state_dir, "pools", "default",
                            api.get("/api/v1/pools/default/volumes/tpl-root").json["id"])
        api_t, raw_t = [], []
        tmp = tempfile.mkdtemp(prefix="khbench-")
        for i in range(N):
            t0 = time.time()
            r = api.post("/api/v1/vms", {"name": "c%d" % i, "from_template": "tpl"})
            api_t.append(time.time() - t0)
            assert r.status == 201, r
            t0 = time.time()
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2",
                            os.path.join(tmp, "o%d" % i)], check=True)
            raw_t.append(time.time() - t0)
        rows.append(("linked clone of a 20 GiB template", ms(api_t), ms(raw_t) + " (qemu-img)",
                     "<= 25 ms"))

        res = [None] * 10

        def one(i):
            res[i] = khlib.Api(d.socket).post("/api/v1/vms", {"name": "p%d" % i,
                                                              "from_template": "tpl"})
        th = [threading.Thread(target=one, args=(i,)) for i in range(10)]
        t0 = time.time()
        for t in th:
            t.start()
        for t in th:
            t.join()
        wall = time.time() - t0
        ok = sum(1 for r in res if r.status == 201)
        rows.append(("10 parallel linked clones", "%d/10 ok in %.0f ms" % (ok, wall * 1000), "",
                     "10/10"))

        # memory snapshot / revert of an idle 256 MiB guest
        assert api.post("/api/v1/pools/default/volumes",
                        {"name": "gbase", "format": "raw", "import": disk}).status == 201
        assert api.post("/api/v1/pools/default/volumes",
                        {"name": "groot", "backing": "gbase"}).status == 201
        api.create({"name": "idle", "vcpus": 1, "memory_mib": 256, "boot": boot,
                    "disks": [{"volume": "default/groot"}]})
        api.act_ok("idle", "start")
        api.wait_console("idle", "KVMHOST-DISK")
        time.sleep(2)
        save[:], load[:] = [], []
        for i in range(5):
            t0 = time.time()
            r = api.post("/api/v1/vms/idle/snapshots", {"name": "s%d" % i, "wait": 120})
            save.append(time.time() - t0)
            assert r.json["state"] == "succeeded", r
            t0 = time.time()
            r = api.post("/api/v1/vms/idle/snapshots/s%d/revert" % i, {"wait": 120})
            load.append(time.time() - t0)
            assert r.json["state"] == "succeeded", r
        rows.append(("memory snapshot, idle 256 MiB guest", ms(save), "", "<= 1 s"))
        rows.append(("revert to it", ms(load), "", "<= 1 s"))
    finally:
        d.cleanup()
        d.remove()
    w = max(len(r[0]) for r in rows)
    print("%-*s | %-26s | %-32s | %s" % (w, "metric", "kvmhost", "reference", "target"))
    for r in rows:
        print("%-*s | %-26s | %-32s | %s" % (w, r[0], r[1], r[2], r[3]))
    print("snapshot samples (s): " + " ".join("%.2f" % x for x in save))
    print("revert samples (s):   " + " ".join("%.2f" % x for x in load))


if __name__ == "__main__":
    main()
