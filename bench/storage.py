#!/usr/bin/env python3
"""bench/storage.py - storage figures of kvmhost (issue 3), under TCG.

Starts its own kvmhostd in a temp dir (KH_BUILD_DIR, default <repo>/build)
and prints, side by side:
  - linked clone of a 20 GiB template through the API (POST /vms
    from_template), median of N, beside bare `qemu-img create -b` on the
    same base;
  - 10 parallel linked clones of one template (all must succeed; wall time);
  - memory snapshot and revert of an idle 256 MiB test guest (median of 5),
    beside libvirt's `virsh snapshot-create-as` / `snapshot-revert` on the
    same kind of VM (same kernel, initrd, disk chain: a qcow2 overlay on the
    raw guest disk, 256 MiB, 1 vCPU, q35, TCG), run after kvmhost's VM is
    gone so the two never compete for the CPU. Skipped with a note when no
    libvirtd answers on qemu:///system (it is used, never started or
    stopped, and only its own domain "khbench-<pid>" is touched).
The first snapshot after a revert is slower than the others (here 0.6 s
against 0.3 s; reports of 4-7 s were on a busier host). It is QEMU's own:
with plain QEMU 7.2 and QMP alone, snapshot-save takes 0.11 s after a save
and 0.7-2.8 s right after a snapshot-load. The likely cause (not proven):
after a load, the active qcow2 layer's vmstate area is shared with the
loaded snapshot, so the next save copies-on-write its vmstate clusters
instead of writing fresh ones. Not fixed here (QMP has no way to drop that
area).
Never run by CI."""

import os
import shutil
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
vsave, vload = [], []
VIRSH = ["virsh", "-q", "-c", "qemu:///system"]


def virsh(*args, check=True):
    return subprocess.run(VIRSH + list(args), capture_output=True, text=True, check=check)


def libvirt_bench(kernel, initrd, disk, rounds=5):
    """virsh snapshot-create-as (memory: a running domain's internal
    snapshot) and snapshot-revert, timed like kvmhost's. Returns a note."""
    if not shutil.which("virsh") or virsh("version", check=False).returncode != 0:
        return "libvirt: no libvirtd on qemu:///system, not measured"
    name = "khbench-%d" % os.getpid()
    # libvirt relabels what it uses: work on copies in a dir its QEMU can reach
    tmp = tempfile.mkdtemp(prefix="khbench-virt-", dir="/var/lib/libvirt/images")
    os.chmod(tmp, 0o755)
    try:
        k, i, base = (os.path.join(tmp, n) for n in ("vmlinuz", "initrd.img", "base.raw"))
        for src, dst in ((kernel, k), (initrd, i), (disk, base)):
            shutil.copyfile(src, dst)
        top = os.path.join(tmp, "top.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", top],
                       check=True)
        log = os.path.join(tmp, "console.log")
        xml = os.path.join(tmp, "dom.xml")
        with open(xml, "w") as f:
            f.write("""<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type>
    <kernel>%s</kernel><initrd>%s</initrd><cmdline>%s</cmdline></os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='%s'/><target dev='vda' bus='virtio'/></disk>
    <serial type='file'><source path='%s'/><target port='0'/></serial>
    <memballoon model='virtio'/>
  </devices>
</domain>
""" % (name, k, i, khlib.GUEST_CMDLINE, top, log))
        virsh("define", xml)
        try:
            virsh("start", name)
            deadline = time.time() + 180
            while True:
                text = open(log, errors="replace").read() if os.path.exists(log) else ""
                if "KVMHOST-DISK" in text:
                    break
                if time.time() > deadline:
                    return "libvirt: the guest did not boot in 180 s"
                time.sleep(0.5)
            time.sleep(2)
            for n in range(rounds):
                t0 = time.time()
                virsh("snapshot-create-as", name, "s%d" % n)
                vsave.append(time.time() - t0)
                t0 = time.time()
                virsh("snapshot-revert", name, "s%d" % n)
                vload.append(time.time() - t0)
        finally:
            virsh("destroy", name, check=False)
            virsh("undefine", name, "--snapshots-metadata", "--nvram", check=False)
            virsh("undefine", name, "--snapshots-metadata", check=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ""


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
        api.act_ok("idle", "kill")
    finally:
        d.cleanup()
        d.remove()
    note = libvirt_bench(kernel, initrd, disk)
    rows.append(("memory snapshot, idle 256 MiB guest", ms(save),
                 (ms(vsave) + " (virsh)") if vsave else note, "<= 1 s"))
    rows.append(("revert to it", ms(load), (ms(vload) + " (virsh)") if vload else "",
                 "<= 1 s"))
    w = max(len(r[0]) for r in rows)
    print("%-*s | %-26s | %-32s | %s" % (w, "metric", "kvmhost", "reference", "target"))
    for r in rows:
        print("%-*s | %-26s | %-32s | %s" % (w, r[0], r[1], r[2], r[3]))
    print("snapshot samples (s): " + " ".join("%.2f" % x for x in save))
    print("revert samples (s):   " + " ".join("%.2f" % x for x in load))
    if vsave:
        print("virsh snapshot-create-as samples (s): " + " ".join("%.2f" % x for x in vsave))
        print("virsh snapshot-revert samples (s):    " + " ".join("%.2f" % x for x in vload))


if __name__ == "__main__":
    main()
