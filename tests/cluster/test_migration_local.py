"""Live migration of a guest whose disk is on a local pool (not shared):
three hosts in namespaces (as test_migration.py), a pool "local" on each
host in a directory of its own, the guest's data disk a qcow2 volume
local/<vm>-data on h1.

- h1 -> h2: data written by the guest (random, checksummed in the guest)
  reads back identical on h2, from inside the guest and from h2's copy of
  the volume; h1's volume and its file are gone; the task's progress showed
  the disk copy.
- cancel during the disk copy (h2 -> h3, copy slowed to 1 MiB/s): the task
  fails "cancelled", the guest runs on in the same QEMU on h2, h3 has no VM
  and no copy of the volume.
- the dirty-rate forecast: with the guest rewriting 32 MiB with random bytes and
  a 1 MiB/s link, the migration is refused with 409 and a message; with
  force it starts (vCPUs throttled) and a cancel in the memory phase rolls
  it back.

Run: KH_BUILD_DIR=$PWD/build-asan /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
     tests/cluster/test_migration_local.py
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "blackbox"))
sys.path.insert(0, os.path.dirname(__file__))

import khlib  # noqa: E402
from test_membership import (Phase, pytest_runtest_makereport,  # noqa: E402,F401
                             three, wait_for)
from test_migration import (check_moved, form_cluster, local_vm, one_runs, qemu_major,  # noqa: E402,E501
                            vm_or_none)

MD5 = r"MD5-([0-9a-f]{32})-END"
READ = "echo MD5-$(dd if=/dev/vda bs=1M skip=2 count=4 2>/dev/null | md5sum | cut -c1-32)-END\n"


def guest_md5(d, name):
    con = khlib.Console(d.socket, name)
    try:
        start = len(con.text())
        con.send(READ)
        return con.wait_for(MD5, timeout=30, start=start).group(1)
    finally:
        con.close()


def file_md5(path, fmt):
    """MD5 of MiB 2..6 of the image's guest view (qemu-img dd reads qcow2)."""
    out = tempfile.mktemp(prefix="khmig-read-", dir="/tmp")
    try:
        subprocess.run(["qemu-img", "dd", "-U", "-f", fmt, "-O", "raw", "bs=1M", "count=6",
                        "if=" + path, "of=" + out], check=True, capture_output=True, timeout=60)
        with open(out, "rb") as f:
            f.seek(2 << 20)
            return hashlib.md5(f.read(4 << 20)).hexdigest()
    finally:
        if os.path.exists(out):
            os.unlink(out)


def volumes(d, pool):
    r = d.api.get("/api/v1/pools/%s/volumes" % pool)
    assert r.status == 200, r
    return {v["name"]: v for v in r.json["volumes"]}


def task_of(d, tid):
    return d.api.get("/api/v1/tasks/%s" % tid).json


def copying(d, tid):
    """The task is in its disk copy (an end before it fails the test)."""
    t = task_of(d, tid)
    assert t["state"] == "running", (t, d.log_tail(20000))
    return (t.get("message") or "").startswith("disks:")


def test_migration_local_disks(three):
    h, (d1, d2, d3) = three
    paths = khlib.guest_paths()
    if paths is None:
        pytest.skip("no test guest")
    guest = khlib.Guest(*paths)
    step = Phase()
    root = tempfile.mkdtemp(prefix="khmig-local-", dir="/tmp")
    os.chmod(root, 0o755)
    name = "mig2"
    try:
        form_cluster(h, (d1, d2, d3))
        dirs = {}
        for d in (d1, d2, d3):
            dirs[d.i] = os.path.join(root, "h%d" % d.i)
            os.mkdir(dirs[d.i])
            os.chmod(dirs[d.i], 0o777)
            r = d.api.post("/api/v1/pools", {"name": "local", "path": dirs[d.i]})
            assert r.status == 201 and r.json["shared"] is False, r
        # the flag round-trips (PATCH), then back to local
        r = d3.api.patch("/api/v1/pools/local", {"shared": True})
        assert r.status == 200 and r.json["shared"] is True, r
        r = d3.api.patch("/api/v1/pools/local", {"shared": False})
        assert r.status == 200 and r.json["shared"] is False, r
        p = khlib.cli(d3, "pool", "edit", "local", "--shared", json_out=True)
        assert p.returncode == 0 and json.loads(p.stdout)["shared"] is True, (p.stdout, p.stderr)
        p = khlib.cli(d3, "pool", "edit", "local", "--not-shared", json_out=True)
        assert p.returncode == 0 and json.loads(p.stdout)["shared"] is False, (p.stdout, p.stderr)
        r = d1.api.post("/api/v1/pools/local/volumes",
                        {"name": name + "-data", "format": "qcow2", "size": "16M"})
        assert r.status in (201, 202), r
        wait_for(lambda: name + "-data" in volumes(d1, "local"), 30, "volume made")
        step("cluster of 3, pool local on each host, volume on h1")

        spec = guest.spec(name, root, memory_mib=256, disk=False)
        spec["disks"] = [{"volume": "local/%s-data" % name}]
        assert d1.api.create(spec)
        st, j = d1.api.action(name, "start", wait=60)
        assert st == 200, j
        d1.api.wait_console(name, khlib.GUEST_READY, timeout=120)
        vm_id = d1.api.wait_state(name, "running", timeout=30)["id"]
        con = khlib.Console(d1.socket, name)
        try:
            con.run("echo kh-$((%d+1))", timeout=30)
            start = len(con.text())
            con.send("dd if=/dev/urandom of=/dev/vda bs=1M seek=2 count=4 conv=fsync "
                     "2>/dev/null; " + READ)
            before = con.wait_for(MD5, timeout=60, start=start).group(1)
        finally:
            con.close()
        src_files = os.listdir(dirs[1])
        assert len(src_files) == 1, src_files
        step("guest wrote 4 MiB of random data, md5 %s" % before)

        # h1 -> h2: the disk goes along
        t0 = time.monotonic()
        r = d1.api.post("/api/v1/vms/%s/migrate" % name, {"target": "h2", "wait": 180},
                        timeout=210)
        took = time.monotonic() - t0
        assert r.status == 200 and r.json["state"] == "succeeded", (r, d1.log_tail())
        res = r.json["result"]
        # QEMU read tls-creds back: the RAM and NBD streams ran over TLS
        # (with tls-creds set QEMU never falls back to plaintext)
        assert res["tls"] is True and res["disks_copied"] == 1, res
        assert res["disk_bytes"] == 16 << 20, res
        # local disks keep the pause before the switch-over (the mirrors
        # complete in it); the disks had a phase of their own
        assert res["phases"]["disks_s"] >= 0 and res["phases"]["memory_s"] >= 0, res
        check_moved(d1, d2, name, vm_id)
        assert guest_md5(d2, name) == before
        vols2 = volumes(d2, "local")
        assert name + "-data" in vols2
        files2 = os.listdir(dirs[2])
        assert len(files2) == 1, files2
        assert file_md5(os.path.join(dirs[2], files2[0]), "qcow2") == before
        wait_for(lambda: name + "-data" not in volumes(d1, "local"), 30, "h1's volume gone")
        assert os.listdir(dirs[1]) == []
        step("h1 -> h2 with the local disk in %.2f s: same data on h2, h1's copy gone" % took)

        # cancel during the disk copy: h2 keeps the guest, h3 keeps nothing
        # (forced: a RAM copy at 1 MiB/s with the guest paused for it would
        # be refused, below)
        pid2 = vm_or_none(d2, name)["pid"]
        r = d2.api.post("/api/v1/vms/%s/migrate" % name,
                        {"target": "h3", "wait": 0, "max_bandwidth_mib": 1, "force": True})
        assert r.status == 202, r
        tid = r.json["id"]
        wait_for(lambda: copying(d2, tid), 60, "the disk copy under way")
        p = khlib.cli(d2, "task", "cancel", tid)
        assert p.returncode == 0 and "cancelling vm.migrate" in p.stdout, (p.stdout, p.stderr)
        t = wait_for(lambda: (lambda j: j["state"] != "running" and j)(task_of(d2, tid)), 60,
                     "the task ends")
        assert t["state"] == "failed" and "cancelled" in t["error"]["message"], t
        assert vm_or_none(d2, name)["pid"] == pid2 and khlib.pid_alive(pid2)
        wait_for(lambda: local_vm(d3, name) is None, 30, "h3 forgot the VM")
        wait_for(lambda: name + "-data" not in volumes(d3, "local"), 30, "h3's copy deleted")
        wait_for(lambda: os.listdir(dirs[3]) == [], 30, "h3's file deleted")
        wait_for(lambda: khlib.qemu_pids(vm_id) == [pid2], 30, "one QEMU")
        assert guest_md5(d2, name) == before
        r = d2.api.post("/api/v1/tasks/%s/cancel" % tid, {})
        assert r.status == 409, r
        step("cancel in the disk copy: rolled back (%s)" % t["error"]["message"][:70])

        # the forecast: a guest dirtying 64 MiB again and again over 1 MiB/s
        con = khlib.Console(d2.socket, name)
        try:
            con.run("echo kh-$((%d+1))", timeout=30)
            # random bytes (zeros over zeros would leave the sampled pages
            # unchanged): a 32 MiB buffer rewritten as fast as TCG goes
            con.send("rm -f /tmp/stop; (while [ ! -e /tmp/stop ]; do dd if=/dev/urandom "
                     "of=/dev/null bs=32M count=1 2>/dev/null; done) &\n")
        finally:
            con.close()
        time.sleep(1)
        r = d2.api.post("/api/v1/vms/%s/migrate" % name,
                        {"target": "h3", "wait": 60, "max_bandwidth_mib": 1}, timeout=90)
        assert r.status == 409, r
        msg = r.json["error"]["message"]
        # paused for the copy (QEMU < 9.0 under TCG): the pause would be
        # the whole copy at 1 MiB/s; else the dirty rate would never converge
        lossy = vm_or_none(d2, name)["accelerator"] == "tcg" and qemu_major() < 9
        assert ("paused for the RAM copy" if lossy else "would not converge") in msg, msg
        assert "force" in msg, msg
        assert vm_or_none(d2, name)["pid"] == pid2
        wait_for(lambda: local_vm(d3, name) is None, 30, "nothing on h3")
        step("forecast refused: %s" % msg[:100])

        r = d2.api.post("/api/v1/vms/%s/migrate" % name,
                        {"target": "h3", "wait": 0, "max_bandwidth_mib": 1, "force": True})
        assert r.status == 202, r
        tid = r.json["id"]
        wait_for(lambda: "RAM" in (task_of(d2, tid).get("message") or ""), 120,
                 "the RAM copy under way")
        r = d2.api.post("/api/v1/tasks/%s/cancel" % tid, {})
        assert r.status == 202, r
        t = wait_for(lambda: (lambda j: j["state"] != "running" and j)(task_of(d2, tid)), 60,
                     "the task ends")
        assert t["state"] == "failed" and "cancelled" in t["error"]["message"], t
        vm = d2.api.wait_state(name, "running", timeout=30)
        assert vm["pid"] == pid2
        wait_for(lambda: local_vm(d3, name) is None, 30, "h3 forgot the VM")
        wait_for(lambda: os.listdir(dirs[3]) == [], 30, "h3's file deleted")
        wait_for(lambda: khlib.qemu_pids(vm_id) == [pid2], 30, "one QEMU")
        con = khlib.Console(d2.socket, name)
        try:
            # the loop ends after the dd in flight (one pass)
            con.run("touch /tmp/stop; sleep 4; echo kh-$((%d+1))", timeout=45, retries=1)
        finally:
            con.close()
        assert guest_md5(d2, name) == before
        step("forced, then cancelled in the memory phase: the guest runs on h2")

        # (force from here on: these steps are about kill -9, not the
        # forecast, and a guest that just read its disk for the md5 may
        # still dirty pages fast enough for a 1 MiB/s link to refuse)
        # kill -9 of the target's daemon during the disk copy: at its
        # restart it fences (the owner is still h2), its QEMU and its copy
        # of the disk go; the source's mirror fails and it runs on
        r = d2.api.post("/api/v1/vms/%s/migrate" % name,
                        {"target": "h3", "wait": 0, "max_bandwidth_mib": 1,
                         "force": True})
        assert r.status == 202, r
        tid = r.json["id"]
        wait_for(lambda: copying(d2, tid), 60, "the disk copy under way")
        d3.kill9()
        d3.start()
        t = wait_for(lambda: (lambda j: j["state"] != "running" and j)(task_of(d2, tid)), 90,
                     "the task ends")
        assert t["state"] == "failed", t
        assert one_runs((d1, d2, d3), name, vm_id) is d2
        assert vm_or_none(d2, name)["pid"] == pid2
        wait_for(lambda: os.listdir(dirs[3]) == [], 30, "h3's file deleted")
        step("target daemon kill -9 in the disk copy: rolled back (%s)"
             % t["error"]["message"][:70])

        # kill -9 of the source's daemon during the disk copy: at its
        # restart it rolls back (mirror cancelled, the target aborts)
        r = d2.api.post("/api/v1/vms/%s/migrate" % name,
                        {"target": "h3", "wait": 0, "max_bandwidth_mib": 1,
                         "force": True})
        assert r.status == 202, r
        tid = r.json["id"]
        wait_for(lambda: copying(d2, tid), 60, "the disk copy under way")
        d2.kill9()
        d2.start()
        assert one_runs((d1, d2, d3), name, vm_id) is d2
        assert vm_or_none(d2, name)["pid"] == pid2
        wait_for(lambda: os.listdir(dirs[3]) == [], 30, "h3's file deleted")
        assert guest_md5(d2, name) == before
        step("source daemon kill -9 in the disk copy: rolled back at its restart")

        # and back to h1: h2's QEMU was a target (its NBD exports were closed
        # at the commit), now it is the source of a full copy again
        r = d2.api.post("/api/v1/vms/%s/migrate" % name, {"target": "h1", "wait": 180},
                        timeout=210)
        assert r.status == 200 and r.json["state"] == "succeeded", (r, d2.log_tail())
        check_moved(d2, d1, name, vm_id)
        assert guest_md5(d1, name) == before
        wait_for(lambda: os.listdir(dirs[2]) == [], 30, "h2's file deleted")
        assert len(os.listdir(dirs[1])) == 1
        step("h2 -> h1 with the local disk: same data")
    finally:
        for d in (d1, d2, d3):
            if d.alive() and local_vm(d, name):
                d.api.action(name, "kill", wait=30)
                d.api.delete("/api/v1/vms/%s" % name)
        shutil.rmtree(root, ignore_errors=True)
