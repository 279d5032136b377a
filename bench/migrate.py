#!/usr/bin/env python3
"""bench/migrate.py - live migration by hand between two QEMUs over loopback,
with exactly the QMP sequence kvmhost's migration sends (qemu/migrate.c):
target `-incoming defer`, caps (events, pause-before-switchover with local
disks only), params (downtime-limit, max-bandwidth), calc-dirty-rate;
with local disks the disk goes over NBD first (nbd-server-start,
block-export-add on the target; blockdev-add nbd, blockdev-mirror until
ready on the source), then RAM until pre-switchover, block-job-cancel,
migrate-continue; on a shared disk RAM until completed; cont on the target
once its load ended. Under TCG with a QEMU before 9.0 the guest is paused
before `migrate`, as kvmhost does (qemu/migrate.h says why).

It prints total time, QEMU's downtime, and the gap the guest itself saw:
a heartbeat loop typed into the serial console counts on, and the longest
pause between two heartbeats (source console, then target console) is the
downtime as the guest lives it. Also a check that it kept counting.

    python3 bench/migrate.py [--mem 256] [--runs 3] [--parts raw,kvmhost]
                             [--data-gib 1 --written-mib 256] [--downtime-ms N]

The local-disk runs (both columns) carry a second disk: a qcow2 of
--data-gib GiB with --written-mib MiB written (issue 11: 1 GiB, 256 MiB),
mirrored with the root disk; "disk" says the target's copies read the same
(qemu-img compare).

Beside it, the kvmhost column (--parts raw,kvmhost): two kvmhostd (the
build in KH_BUILD_DIR, default build/) in network namespaces
(tests/cluster/hosts.py), each supervising its etcd member, a cluster of the two, the same guest
migrated back and forth with `POST /vms/{name}/migrate` (dirty-rate
forecast beside the target's prepare, TLS on the streams): the API's wall
time, the task's total, QEMU's downtime and the task's phase timings; with a local disk (a raw copy of
the same 16 MiB image as a volume on a pool that is not shared) the disk
goes over NBD with TLS. The libvirt column (--parts ...,libvirt):
`virsh migrate --live` of the same guest between two private libvirtds
(bench/libvirt_peer.py), skipped with a printed line when libvirt is absent.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import libvirt_peer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST = os.path.join(ROOT, "tests", "guest", "out")
# the local-disk runs' data disk (issue 11: a 1 GiB qcow2 with 256 MiB
# written), beside the 16 MiB root disk; --data-gib 0: none
DATA = {"gib": 1, "written_mib": 256}


def make_data_disk(path):
    """A qcow2 of DATA["gib"] GiB with DATA["written_mib"] MiB written."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "%dG" % DATA["gib"]],
                   check=True)
    if DATA["written_mib"]:
        subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        "write -P 0x5a 0 %dM" % DATA["written_mib"], path],
                       check=True, stdout=subprocess.DEVNULL)


class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")
        json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, _name, **args):
        name = _name
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg).encode() + b"\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError("%s: %s" % (name, r["error"]["desc"]))


class Console:
    """The serial socket: a reader thread keeps (time, line) pairs."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.lines = []
        self.buf = b""
        self.t = threading.Thread(target=self.read, daemon=True)
        self.t.start()

    def read(self):
        while True:
            try:
                d = self.s.recv(4096)
            except OSError:
                return
            if not d:
                return
            self.buf += d
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                self.lines.append((time.monotonic(), line.decode(errors="replace").strip()))

    def send(self, text):
        self.s.sendall(text.encode())

    def wait(self, pattern, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for _, l in self.lines:
                if re.search(pattern, l):
                    return l
            time.sleep(0.05)
        raise TimeoutError("console: no %r; last: %s" % (pattern, self.lines[-5:]))

    def heartbeats(self):
        return [(t, int(m.group(1))) for t, l in self.lines
                for m in [re.match(r"HB (\d+)$", l)] if m]


def qemu(d, name, mem, accel, disk, incoming, data=None):
    qmp, ser = os.path.join(d, name + ".qmp"), os.path.join(d, name + ".ser")
    argv = ["qemu-system-x86_64", "-name", name, "-S", "-nodefaults", "-no-user-config",
            "-machine", "q35", "-accel", accel, "-cpu", "max", "-m", "%dM" % mem,
            "-smp", "1", "-display", "none",
            "-chardev", "socket,id=qmp,path=%s,server=on,wait=off" % qmp,
            "-mon", "chardev=qmp,mode=control",
            "-chardev", "socket,id=ser,path=%s,server=on,wait=off" % ser,
            "-serial", "chardev:ser",
            "-kernel", os.path.join(GUEST, "vmlinuz"), "-initrd", os.path.join(GUEST, "initrd.img"),
            "-append", "console=ttyS0 quiet panic=-1",
            "-blockdev", json.dumps({"driver": "file", "node-name": "disk0-file",
                                     "filename": disk}),
            "-blockdev", json.dumps({"driver": "raw", "node-name": "disk0", "file": "disk0-file"}),
            "-device", json.dumps({"driver": "virtio-blk-pci", "drive": "disk0", "id": "vda"})]
    if data:
        argv += ["-blockdev", json.dumps({"driver": "file", "node-name": "disk1-file",
                                          "filename": data}),
                 "-blockdev", json.dumps({"driver": "qcow2", "node-name": "disk1",
                                          "file": "disk1-file"}),
                 "-device", json.dumps({"driver": "virtio-blk-pci", "drive": "disk1",
                                        "id": "vdb"})]
    if incoming:
        argv += ["-incoming", "defer"]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, name + ".log"), "w"))
    end = time.monotonic() + 20
    while not (os.path.exists(qmp) and os.path.exists(ser)):
        if p.poll() is not None or time.monotonic() > end:
            raise RuntimeError(open(os.path.join(d, name + ".log")).read())
        time.sleep(0.02)
    time.sleep(0.1)
    return p, Qmp(qmp), Console(ser)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# QEMU < 9.0 under TCG: the guest paused for the RAM copy (qemu/migrate.h)
PAUSED = {"copy": False}


def one_run(mem, accel, local, downtime_ms):
    d = tempfile.mkdtemp(prefix="khmig-bench-")
    procs = []
    try:
        src_disk = os.path.join(d, "src.raw")
        shutil.copy(os.path.join(GUEST, "disk.ext4"), src_disk)
        dst_disk = os.path.join(d, "dst.raw")
        src_data = dst_data = None
        if local:  # the target's empty disk of the same size
            with open(dst_disk, "wb") as f:
                f.truncate(os.path.getsize(src_disk))
            if DATA["gib"]:  # and the data disk, and its empty copy on the target
                src_data, dst_data = os.path.join(d, "src.qcow2"), os.path.join(d, "dst.qcow2")
                make_data_disk(src_data)
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", dst_data,
                                "%dG" % DATA["gib"]], check=True)
        sp, sq, sc = qemu(d, "src", mem, accel, src_disk, False, src_data)
        procs.append(sp)
        sq.cmd("cont")
        sc.wait("kvmhost test guest: shell", 90)
        sc.send("\ni=0; while true; do echo HB $i; i=$((i+1)); usleep 100000; done &\n")
        sc.wait(r"^HB 5$", 30)

        tp, tq, tc = qemu(d, "dst", mem, accel, dst_disk if local else src_disk, True, dst_data)
        procs.append(tp)
        t0 = time.monotonic()
        # prepare: dirty rate (as kvmhost: not for a guest paused for the
        # copy, which dirties nothing), then the target's incoming side
        rate = None
        if not PAUSED["copy"]:
            sq.cmd("calc-dirty-rate", **{"calc-time": 1})
            time.sleep(1.0)
            for _ in range(100):
                r = sq.cmd("query-dirty-rate")
                if r.get("status") == "measured":
                    rate = r.get("dirty-rate")
                    break
                time.sleep(0.02)
        dirty_s = time.monotonic() - t0
        caps = [{"capability": "events", "state": True}, {"capability": "multifd", "state": False}]
        tq.cmd("migrate-set-capabilities", capabilities=caps)
        mport = free_port()
        tq.cmd("migrate-incoming", uri="tcp:127.0.0.1:%d" % mport)
        mirror_s = 0.0
        if local:
            nport = free_port()
            tq.cmd("nbd-server-start", addr={"type": "inet", "data": {"host": "127.0.0.1", "port": str(nport)}})
            disks = ["disk0"] + (["disk1"] if dst_data else [])
            for n in disks:
                tq.cmd("block-export-add", type="nbd", id="mig-" + n, **{"node-name": n},
                       name=n, writable=True)
            # disks: mirror until ready
            m0 = time.monotonic()
            for n in disks:
                sq.cmd("blockdev-add", driver="nbd", **{"node-name": "mig-" + n},
                       server={"type": "inet", "host": "127.0.0.1", "port": str(nport)},
                       export=n)
                sq.cmd("blockdev-mirror", **{"job-id": "mig-" + n, "auto-dismiss": False},
                       device=n, target="mig-" + n, sync="full")
            while not all(j.get("ready") for j in sq.cmd("query-block-jobs")):
                time.sleep(0.05)
            mirror_s = time.monotonic() - m0
        # memory: caps + params, migrate until pre-switchover (local disks)
        # or completed (shared: no pause, as kvmhost)
        sq.cmd("migrate-set-capabilities", capabilities=caps + [
            {"capability": "pause-before-switchover", "state": local},
            {"capability": "auto-converge", "state": False}])
        sq.cmd("migrate-set-parameters", **{"downtime-limit": downtime_ms,
                                            "max-bandwidth": 10 * 1024 ** 3})
        if PAUSED["copy"]:  # as kvmhost: QEMU < 9.0 under TCG loses writes made meanwhile
            sq.cmd("stop")
        sq.cmd("migrate", uri="tcp:127.0.0.1:%d" % mport)
        while True:
            st = sq.cmd("query-migrate")
            if st["status"] in ("pre-switchover", "completed"):
                break
            if st["status"] in ("failed", "cancelled"):
                raise RuntimeError("migration %s: %s" % (st["status"], st.get("error-desc")))
            time.sleep(0.01)
        # switch: mirrors stop consistent, RAM finishes, target runs
        sw0 = time.monotonic()
        if local:
            for n in disks:
                sq.cmd("block-job-cancel", device="mig-" + n)
        if local:
            sq.cmd("migrate-continue", state="pre-switchover")
        while True:
            st = sq.cmd("query-migrate")
            if st["status"] == "completed":
                break
            if st["status"] in ("failed", "cancelled"):
                raise RuntimeError("migration %s: %s" % (st["status"], st.get("error-desc")))
            time.sleep(0.005)
        while tq.cmd("query-status")["status"] not in ("paused", "postmigrate", "running"):
            time.sleep(0.005)
        if local:
            tq.cmd("nbd-server-stop")
        tq.cmd("cont")
        switch_s = time.monotonic() - sw0
        total_s = time.monotonic() - t0
        # the guest keeps counting on the target
        last = sc.heartbeats()[-1][1]
        tc.wait(r"^HB %d$" % (last + 5), 30)
        hb = sc.heartbeats() + [x for x in tc.heartbeats() if x[1] > last]
        gaps = [b[0] - a[0] for a, b in zip(hb, hb[1:])]
        # each number once, in order; a line cut in the switch (its bytes
        # half in the source's chardev) may be lost: at most one missing
        nums = [n for _, n in hb]
        seq_ok = nums == sorted(set(nums)) and nums[-1] - nums[0] + 1 - len(nums) <= 1
        sp.kill()
        data_ok = True
        if local:  # what the guest read from its disk is on the target's copy
            with open(dst_disk, "rb") as a, open(src_disk, "rb") as b:
                data_ok = a.read() == b.read()
            if dst_data:  # the guest view of the data disk (qemu-img compare)
                data_ok = data_ok and subprocess.run(
                    ["qemu-img", "compare", "-q", "-U", src_data, dst_data]).returncode == 0
        return {"total_s": total_s, "qemu_downtime_ms": st.get("downtime"),
                "qemu_total_ms": st.get("total-time"), "switch_s": switch_s, "dirty_s": dirty_s,
                "guest_gap_ms": max(gaps) * 1000, "mirror_s": mirror_s,
                "dirty_rate_mbps": rate, "counted_on": seq_ok, "missing": nums[-1] - nums[0] + 1 - len(nums), "disk_same": data_ok}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


def kvmhost_runs(mem, runs, local):
    """The kvmhost column: (wall_s, total_s, qemu_downtime_ms, tls) per run."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "blackbox"))
    sys.path.insert(0, os.path.join(ROOT, "tests", "cluster"))
    import hosts as hostslib
    import khlib
    from test_membership import PORT, HostDaemon, cli_json, wait_for
    h = hostslib.Hosts(2)
    daemons = []
    work = tempfile.mkdtemp(prefix="khmig-bench-kh-", dir="/tmp")
    os.chmod(work, 0o755)
    out = []
    try:
        for i in (1, 2):  # each daemon supervises its own etcd member
            d = HostDaemon(h, i)
            daemons.append(d)
            d.start()
        d1, d2 = daemons
        cli_json(d1, "cluster", "create", "--name", "bench")
        tok = cli_json(d1, "cluster", "token")
        cli_json(d2, "cluster", "join", "%s:%d" % (h.addr(1), PORT), "--token", tok["token"])
        for d in daemons:
            wait_for(lambda d=d: cli_json(d, "cluster", "status")["online"] == 2, 30, "online")
        guest = khlib.Guest(os.path.join(GUEST, "vmlinuz"), os.path.join(GUEST, "initrd.img"),
                            os.path.join(GUEST, "disk.ext4"))
        spec = guest.spec("bench1", work, memory_mib=mem)
        if local:
            for d in daemons:
                pdir = os.path.join(work, "pool%d" % d.i)
                os.mkdir(pdir)
                os.chmod(pdir, 0o777)
                assert d.api.post("/api/v1/pools", {"name": "local", "path": pdir}).status == 201
            r = d1.api.post("/api/v1/pools/local/volumes",
                            {"name": "bench1-disk", "format": "raw",
                             "import": os.path.join(GUEST, "disk.ext4")})
            assert r.status in (201, 202), r
            wait_for(lambda: d1.api.get("/api/v1/pools/local/volumes").json["volumes"], 60,
                     "the volume")
            spec["disks"] = [{"volume": "local/bench1-disk"}]
            if DATA["gib"]:
                data = os.path.join(work, "data.qcow2")
                make_data_disk(data)
                os.chmod(data, 0o644)
                r = d1.api.post("/api/v1/pools/local/volumes",
                                {"name": "bench1-data", "format": "qcow2", "import": data})
                assert r.status in (201, 202), r
                wait_for(lambda: len(d1.api.get("/api/v1/pools/local/volumes").json["volumes"])
                         == 2, 120, "the data volume")
                spec["disks"].append({"volume": "local/bench1-data"})
        d1.api.create(spec)
        st, j = d1.api.action("bench1", "start", wait=120)
        assert st == 200, j
        d1.api.wait_console("bench1", khlib.GUEST_READY, timeout=120)
        con = khlib.Console(d1.socket, "bench1")
        con.run("echo kh-$((%d+1))", timeout=30)
        con.send("i=0; while true; do echo HB $i; i=$((i+1)); usleep 100000; done &\n")
        con.close()
        src, dst = d1, d2
        for _ in range(runs):
            t0 = time.monotonic()
            r = src.api.post("/api/v1/vms/bench1/migrate", {"target": "h%d" % dst.i,
                                                            "wait": 300}, timeout=330)
            wall = time.monotonic() - t0
            assert r.status == 200, r
            res = r.json["result"]
            out.append((wall, res["total_s"], res["downtime_ms"], res.get("switch_ms", -1),
                        res.get("guest_downtime_ms", -1), res["tls"],
                        dict(res.get("phases", {}), live=res.get("live", True))))
            wait_for(lambda: (dst.api.get("/api/v1/vms/bench1").json or {}).get("state")
                     == "running", 30, "running on the target")
            src, dst = dst, src
        src.api.action("bench1", "kill", wait=30)
        src.api.delete("/api/v1/vms/bench1")
        return out
    finally:
        keep = os.environ.get("KH_BENCH_LOGS")  # a dir: the daemons' logs go there
        for d in daemons if keep else ():
            shutil.copy(d.log_path, os.path.join(keep, "h%d-%s.log" % (
                d.i, "local" if local else "shared")))
        khlib.finish_daemons(daemons, False)
        h.close()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--downtime-ms", type=int, default=10)  # kvmhost's default limit
    ap.add_argument("--accel", default="tcg")  # the test guests' accelerator
    ap.add_argument("--parts", default="raw,kvmhost,libvirt",
                    help="raw, kvmhost, libvirt (comma-separated)")
    ap.add_argument("--data-gib", type=int, default=1, help="local disk runs: a qcow2 data disk")
    ap.add_argument("--written-mib", type=int, default=256, help="of it written before")
    args = ap.parse_args()
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                         text=True).stdout
    m = re.search(r"version (\d+)\.", out)
    PAUSED["copy"] = args.accel == "tcg" and (int(m.group(1)) if m else 0) < 9
    DATA.update(gib=args.data_gib, written_mib=args.written_mib)
    parts = args.parts.split(",")
    print("raw QEMU live migration over loopback, %d MiB guest, accel %s, downtime-limit %d ms%s"
          % (args.mem, args.accel, args.downtime_ms,
             ", guest paused for the RAM copy (QEMU < 9.0 under TCG)" if PAUSED["copy"] else ""))
    # total_s: from calc-dirty-rate to the target's cont; -dirty: without the
    # dirty-rate step (1 s), i.e. mirror + migrate by hand alone
    print("%-22s %8s %8s %10s %10s %10s %9s %8s %7s %5s %5s" % (
        "mode", "total_s", "-dirty", "qemu_dt_ms", "guest_gap", "switch_ms", "mirror_s", "dirty",
        "counts", "disk", "load"))
    for local in (False, True) if "raw" in parts else ():
        for _ in range(args.runs):
            r = one_run(args.mem, args.accel, local, args.downtime_ms)
            print("%-22s %8.2f %8.2f %10s %10.0f %10.0f %9.2f %8s %7s %5s %5.1f" % (
                "raw qemu, " + ("local disk/NBD" if local else "shared disk"), r["total_s"],
                r["total_s"] - r["dirty_s"], r["qemu_downtime_ms"], r["guest_gap_ms"], r["switch_s"] * 1000, r["mirror_s"],
                r["dirty_rate_mbps"], r["counted_on"], r["disk_same"], os.getloadavg()[0]),
                flush=True)
    if "kvmhost" in parts:
        # qemu_dt_ms: QEMU's downtime (its stop to its completion); after_ms:
        # ours after it (owner txn, commit, the target's cont, until the
        # target says it runs: polled every 5 ms); guest_dt_ms: QEMU's stop
        # to the target running, the pause the guest lives (an upper bound);
        # phases: prepare (dirty rate and the target's start side by side),
        # disks, memory, switch, finish in seconds; load: the 1-min load average
        print("%-22s %8s %8s %10s %9s %11s %5s %5s  %s" % (
            "mode", "wall_s", "total_s", "qemu_dt_ms", "after_ms", "guest_dt_ms", "tls", "load",
            "phases"))
        for local in (False, True):
            for wall, total, dt, sw, gdt, tls, ph in kvmhost_runs(args.mem, args.runs, local):
                phases = " ".join("%s=%.2f" % (k[:-2], v) for k, v in ph.items()
                                  if k in ("prepare_s", "dirty_rate_s", "target_prepare_s",
                                           "disks_s", "memory_s", "switch_s", "finish_s")
                                  and v >= 0) + " live=%s" % ph.get("live")
                print("%-22s %8.2f %8.2f %10s %9s %11s %5s %5.1f  %s" % (
                    "kvmhost, " + ("local disk/NBD" if local else "shared disk"), wall, total,
                    dt, sw, gdt, tls, os.getloadavg()[0], phases), flush=True)
    if "libvirt" in parts:  # two private libvirtds (bench/libvirt_peer.py)
        libvirt_peer.migrate_column(args.mem, args.runs, Console)


if __name__ == "__main__":
    sys.exit(main())
