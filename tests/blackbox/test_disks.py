"""Storage: disks of VMs - attach and detach (stopped and live), hot-plug
across a daemon kill, leftovers of an interrupted attach removed on
reattach (split from test_storage.py). Guests boot only in the tests
marked slow."""

import json
import os
import subprocess
import threading
import time

import pytest

import khlib
from storagelib import QIMG, guest_vm, shell_value, vol_path


def guest_blocks(con):
    """The guest's block devices, from sysfs (e.g. ["vda", "vdb"])."""
    return sorted(shell_value(con, "$(ls /sys/block | tr '\\n' ,)").strip(",").split(","))


def wait_blocks(con, want, timeout=60):
    import time
    deadline = time.time() + timeout
    while True:
        got = guest_blocks(con)
        if got == want:
            return
        assert time.time() < deadline, "guest block devices %r, wanted %r" % (got, want)
        time.sleep(0.5)


def read_volume(daemon, vol, n, tmp_path):
    flat = tmp_path / ("%s.raw" % vol["name"])
    subprocess.run([QIMG, "convert", "-U", "-O", "raw", vol_path(daemon, vol), str(flat)],
                   check=True)
    with open(flat, "rb") as f:
        return f.read(n)


def test_disk_attach_detach_stopped(daemon, fake_boot):
    """On a stopped VM attach and detach edit the spec; every refusal is a
    clear 4xx and changes nothing."""
    api = daemon.api
    for name in ("d1", "d2"):
        assert api.post("/api/v1/pools/default/volumes", {"name": name, "size": "8M"}).status == 201
    assert api.post("/api/v1/pools/default/volumes", {"name": "c1", "backing": "d2"}).status == 201
    api.create({"name": "ds", "boot": fake_boot})
    api.create({"name": "other", "boot": fake_boot})
    r = api.post("/api/v1/vms/ds/disks", {"volume": "default/d1"})
    assert r.status == 200, r
    assert r.json["disks"] == [{"volume": "default/d1", "readonly": False}]
    assert api.get("/api/v1/pools/default/volumes/d1").json["used_by"][0]["vm"] == "ds"
    bad = [
        ("ds", {"volume": "default/d1"}, 409, "already has"),
        ("other", {"volume": "default/d1"}, 409, "attached to vm ds"),
        ("other", {"volume": "default/d1", "readonly": True}, 409, "attached to vm ds"),
        ("other", {"volume": "default/d2"}, 409, "base of 1"),
        ("other", {"volume": "default/nope"}, 404, ""),
        ("other", {"volume": "../x"}, 400, ""),
        ("other", {"volume": "default/d1,file=/etc/shadow"}, 400, ""),
        ("other", {"volume": "default/c1", "extra": 1}, 400, "unknown"),
        ("other", {"volume": "default/c1", "readonly": "yes"}, 400, ""),
        ("other", {}, 400, "volume"),
        ("nope", {"volume": "default/c1"}, 404, ""),
    ]
    for vm, body, status, msg in bad:
        r = api.post("/api/v1/vms/%s/disks" % vm, body)
        assert r.status == status and msg in r.error["message"], (vm, body, r)
    assert api.vm("other")["disks"] == []
    # a read-only base may be shared read-only
    r = api.post("/api/v1/vms/other/disks", {"volume": "default/d2", "readonly": True})
    assert r.status == 200, r
    r = api.post("/api/v1/vms/ds/disks", {"volume": "default/d2", "readonly": True})
    assert r.status == 200 and len(r.json["disks"]) == 2, r
    # volumes in use are not deleted
    assert api.delete("/api/v1/pools/default/volumes/d1").status == 409
    assert api.delete("/api/v1/vms/ds/disks/2").status == 404
    assert api.delete("/api/v1/vms/ds/disks/x").status == 400
    # per-disk limits follow their disk
    r = api.patch("/api/v1/vms/ds", {"limits": {"disk": [{"index": 0, "iops_total": 50},
                                                          {"index": 1, "iops_total": 100}]}})
    assert r.status == 200, r
    r = api.delete("/api/v1/vms/ds/disks/0")
    assert r.status == 200 and r.json["disks"] == [{"volume": "default/d2", "readonly": True}], r
    assert r.json["limits"]["disk"] == [{"index": 0, "iops_total": 100}], r.json["limits"]
    assert api.delete("/api/v1/pools/default/volumes/d1").status == 204
    # the CLI
    cli = khlib.cli
    p = cli(daemon, "disk", "attach", "other", "c1")
    assert p.returncode == 0 and "default/c1" in p.stdout and "rw" in p.stdout, p
    p = cli(daemon, "disk", "attach", "ds", "default/c1")
    assert p.returncode == 5 and "attached to vm other" in p.stderr, p
    p = cli(daemon, "disk", "detach", "other", "0", json_out=True)
    assert p.returncode == 0, p
    assert json.loads(p.stdout)["disks"] == [{"volume": "default/c1", "readonly": False}]
    assert cli(daemon, "disk", "detach", "other", "7").returncode == 4


@pytest.mark.slow
def test_disk_hotplug_survives_daemon_kill(daemons, guest, consoles, tmp_path):
    """A volume hot-plugged into a running q35 guest shows up as /sys/block/vdb,
    what the guest writes lands in the volume, the daemon is killed -9 and
    restarted while it is plugged, the detach after the restart removes it
    from the guest, and the next start has a hot-plugged disk as an
    ordinary one."""
    import time
    daemon = daemons()
    api = daemon.api
    khlib.wait_accel(api)
    assert api.post("/api/v1/pools/default/volumes", {"name": "gbase", "format": "raw",
                                                      "import": guest.disk}).status == 201
    assert api.post("/api/v1/pools/default/volumes", {"name": "root",
                                                      "backing": "gbase"}).status == 201
    r = api.post("/api/v1/pools/default/volumes", {"name": "data", "size": "16M"})
    assert r.status == 201, r
    data = r.json
    # a linked clone: a two-layer chain, each layer passed as an fd
    assert api.post("/api/v1/pools/default/volumes", {"name": "data2",
                                                      "backing": "gbase"}).status == 201
    api.create(guest_vm(guest, "hp", [{"volume": "default/root"}]))
    api.act_ok("hp", "start")
    con = consoles(daemon, "hp")
    api.wait_console("hp", "KVMHOST-DISK: kvmhost-disk-ok")
    con.run("echo kh-$((%d+1))", timeout=60)
    assert guest_blocks(con) == ["vda"]

    t0 = time.time()
    r = api.post("/api/v1/vms/hp/disks", {"volume": "default/data"})
    t_attach = time.time() - t0
    assert r.status == 200, r
    # "hotplugged" (runtime only): the start disk cannot be unplugged live
    assert r.json["disks"] == [{"volume": "default/root", "readonly": False, "hotplugged": False},
                               {"volume": "default/data", "readonly": False, "hotplugged": True}]
    wait_blocks(con, ["vda", "vdb"])
    # the device sits on a hot-plug port with its own iothread
    pid = api.vm("hp")["pid"]
    r = api.post("/api/v1/vms/hp/disks", {"volume": "default/data2"})
    assert r.status == 200, r
    wait_blocks(con, ["vda", "vdb", "vdc"])
    # busy refusals and the other rules hold on a running VM
    assert api.post("/api/v1/vms/hp/disks", {"volume": "default/gbase"}).status == 409
    # QEMU refuses a broken image: every step is undone (no fd, node or port left)
    r = api.post("/api/v1/pools/default/volumes", {"name": "broken", "size": "8M"})
    assert r.status == 201, r
    with open(vol_path(daemon, r.json), "r+b") as f:
        f.write(b"QFI\xfb" + b"\xff" * 60)
    nfds = len(os.listdir("/proc/%d/fd" % pid))
    r = api.post("/api/v1/vms/hp/disks", {"volume": "default/broken"})
    assert r.status == 502 and "blockdev-add" in r.error["message"], r
    assert len(os.listdir("/proc/%d/fd" % pid)) == nfds
    assert len(api.vm("hp")["disks"]) == 3
    assert api.delete("/api/v1/pools/default/volumes/broken").status == 204
    assert api.delete("/api/v1/vms/hp/disks/0").status == 409  # cold-plugged on pcie.0

    con.run("echo hotplug-bytes-42 | dd of=/dev/vdb bs=512 conv=sync 2>/dev/null; sync; "
            "echo kh-$((%d+1))", timeout=60)

    # kill -9 of the daemon while both are plugged: adopted with its disks
    daemon.kill9()
    daemon.restart()
    vm = api.wait_state("hp", ["running"])
    assert vm["pid"] == pid and len(vm["disks"]) == 3
    assert [d["hotplugged"] for d in vm["disks"]] == [False, True, True]  # from boot.json
    con = consoles(daemon, "hp")
    # detach the first hot-plugged disk: the spec index of data2 shifts to 1,
    # its QEMU node stays disk2 (the node map survived the restart)
    t0 = time.time()
    r = api.delete("/api/v1/vms/hp/disks/1")
    t_detach = time.time() - t0
    assert r.status == 200, r
    assert [d["volume"] for d in r.json["disks"]] == ["default/root", "default/data2"]
    assert [d["hotplugged"] for d in r.json["disks"]] == [False, True]
    con.run("echo kh-$((%d+1))", timeout=60)
    wait_blocks(con, ["vda", "vdc"])
    assert read_volume(daemon, data, 16, tmp_path) == b"hotplug-bytes-42"
    # detached: deletable, attachable again (a fresh node and port)
    r = api.post("/api/v1/vms/hp/disks", {"volume": "default/data", "readonly": True})
    assert r.status == 200, r
    wait_blocks(con, ["vda", "vdb", "vdc"])
    assert shell_value(con, "$(dd if=/dev/vdb bs=16 count=1 2>/dev/null)") == "hotplug-bytes-42"
    r = api.delete("/api/v1/vms/hp/disks/1")  # data2, QEMU node disk2
    assert r.status == 200, r
    wait_blocks(con, ["vda", "vdb"])
    # an encrypted volume hot-plugs too: its key goes over QMP in a memfd
    r = api.post("/api/v1/pools/default/volumes", {"name": "edata", "size": "8M",
                                                   "encrypt": True})
    assert r.status == 201, r
    edata = r.json
    r = api.post("/api/v1/vms/hp/disks", {"volume": "default/edata"})
    assert r.status == 200, r
    wait_blocks(con, ["vda", "vdb", "vdc"])
    con.run("echo KH-HOTPLUG-SECRET | dd of=/dev/vdc conv=fsync 2>/dev/null; "
            "echo kh-$((%d+1))", timeout=60)
    assert shell_value(con, "$(head -c 17 /dev/vdc)") == "KH-HOTPLUG-SECRET"
    assert api.delete("/api/v1/vms/hp/disks/2").status == 200
    wait_blocks(con, ["vda", "vdb"])
    with open(vol_path(daemon, edata), "rb") as f:
        assert b"KH-HOTPLUG-SECRET" not in f.read()
    assert "KH-HOTPLUG" not in daemon.log()
    print("hot-plug %.2f s, hot-unplug %.2f s (TCG)" % (t_attach, t_detach))

    # the next start has the hot-plugged disk as an ordinary one
    api.act_ok("hp", "kill")
    assert all("hotplugged" not in d for d in api.vm("hp")["disks"])  # never in the spec
    api.act_ok("hp", "start")
    assert [d["hotplugged"] for d in api.vm("hp")["disks"]] == [False, False]
    api.wait_console("hp", "KVMHOST-DISK: kvmhost-disk-ok")
    con = consoles(daemon, "hp")
    con.run("echo kh-$((%d+1))", timeout=60)
    assert guest_blocks(con) == ["vda", "vdb"]
    # a disk attached at start sits on pcie.0: no hot-unplug
    r = api.delete("/api/v1/vms/hp/disks/1")
    assert r.status == 409 and "stop the vm" in r.error["message"], r

    # a guest that does not release the disk (paused) within the timeout:
    # 504, and the disk stays attached and in the spec
    assert api.post("/api/v1/vms/hp/disks", {"volume": "default/data2"}).status == 200
    wait_blocks(con, ["vda", "vdb", "vdc"])
    api.act_ok("hp", "pause")
    r = api.delete("/api/v1/vms/hp/disks/2?timeout=2")
    assert r.status == 504 and "did not release" in r.error["message"], r
    assert len(api.vm("hp")["disks"]) == 3
    api.act_ok("hp", "resume")
    wait_blocks(con, ["vda", "vdb"])  # the guest ejects it once it runs again
    r = api.delete("/api/v1/vms/hp/disks/2")  # finishes the job
    assert r.status == 200 and len(r.json["disks"]) == 2, r
    # a VM killed while a detach waits for its guest: the detach completes
    # as an edit of the stopped VM
    assert api.post("/api/v1/vms/hp/disks", {"volume": "default/data2"}).status == 200
    wait_blocks(con, ["vda", "vdb", "vdc"])
    api.act_ok("hp", "pause")
    res = {}

    def detach():
        res["r"] = khlib.Api(daemon.socket).delete("/api/v1/vms/hp/disks/2?timeout=60")
    import threading
    th = threading.Thread(target=detach)
    th.start()
    time.sleep(1)
    assert api.post("/api/v1/vms/hp/start", {}).status == 409  # busy meanwhile
    api.act_ok("hp", "kill")
    th.join(30)
    assert res["r"].status == 200 and len(res["r"].json["disks"]) == 2, res
    assert api.delete("/api/v1/vms/hp/disks/1").status == 200
    assert api.delete("/api/v1/pools/default/volumes/data").status == 204


class RawQmp:
    """QEMU's monitor, spoken directly while its daemon is down (the test
    plays a daemon killed in the middle of a disk attach)."""

    def __init__(self, path):
        import socket
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(path)
        self.f = self.s.makefile("rb")
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, args=None, fd=None):
        import socket
        msg = json.dumps({"execute": name, **({"arguments": args} if args else {})}).encode()
        if fd is None:
            self.s.sendall(msg + b"\n")
        else:
            socket.send_fds(self.s, [msg + b"\n"], [fd])
        while True:
            r = json.loads(self.f.readline())
            if "event" not in r:
                assert "error" not in r, (name, r)
                return r["return"]

    def close(self):
        self.f.close()
        self.s.close()


def test_disk_attach_leftovers_removed_on_reattach(daemon, guest, tmp_path):
    """After a kill -9 in the middle of an attach, the fd set, block nodes and
    iothread QEMU already has for a node no spec disk uses are removed when
    the daemon reattaches; the spec's own disks keep theirs."""
    api = daemon.api
    api.create(guest.spec("orph", str(tmp_path)))
    vm = api.act_ok("orph", "start")
    daemon.kill9()
    q = RawQmp(os.path.join(daemon.state_dir, "run", "vms", vm["id"], "qmp.sock"))
    set_id = 10000 + 16 * 7  # what an attach of node 7 uses (instance/disk.c)
    img = tmp_path / "half-attached.img"
    img.write_bytes(b"\0" * 65536)
    # QEMU drops an fd set nothing opened when the monitor goes: a file node
    # holds this one, as in an attach past its first blockdev-add.
    with open(img, "rb") as f:
        q.cmd("add-fd", {"fdset-id": set_id, "opaque": "disk7"}, fd=f.fileno())
    q.cmd("blockdev-add", {"driver": "file", "node-name": "disk7-file", "read-only": True,
                           "filename": "/dev/fdset/%d" % set_id})
    q.cmd("blockdev-add", {"driver": "raw", "node-name": "disk7", "file": "disk7-file",
                           "read-only": True})
    q.cmd("object-add", {"qom-type": "iothread", "id": "iothread-disk7"})
    q.close()

    def leftovers():
        q = RawQmp(os.path.join(daemon.state_dir, "run", "vms", vm["id"], "qmp.sock"))
        try:
            nodes = {n["node-name"] for n in q.cmd("query-named-block-nodes", {"flat": True})}
            sets = {s["fdset-id"] for s in q.cmd("query-fdsets")}
            threads = {t["id"] for t in q.cmd("query-iothreads")}
        finally:
            q.close()
        return nodes, sets, threads

    nodes, sets, threads = leftovers()
    assert {"disk7", "disk7-file", "disk0"} <= nodes and set_id in sets, (nodes, sets)
    daemon.restart()
    assert api.wait_state("orph", ["running"])["pid"] == vm["pid"]
    deadline = time.time() + 30
    while "vm.disk_orphans" not in daemon.log() and time.time() < deadline:
        time.sleep(0.2)
    assert "vm.disk_orphans" in daemon.log(), daemon.log_tail(3000)
    time.sleep(0.5)
    daemon.kill9()
    nodes, sets, threads = leftovers()
    assert not {"disk7", "disk7-file"} & nodes and set_id not in sets, (nodes, sets)
    assert "iothread-disk7" not in threads, threads
    assert "disk0" in nodes, nodes  # the spec's disk stays
    daemon.restart()
    assert api.wait_state("orph", ["running"])["pid"] == vm["pid"]
