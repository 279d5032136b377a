"""Backups and the daemon's stop. A SIGTERM while a backup's janitor still
waits on QEMU (the VM's QEMU is stopped with SIGSTOP, so its monitor does
not answer) ends the daemon cleanly (exit 0, no sanitizer report: the
janitor's callbacks come back after the manager and the tasks are gone);
the next daemon cleans the VM's QEMU up when it reattaches and backs it up.
The VM boots no OS (a blank disk: SeaBIOS, then nothing): seconds, not
minutes. A SIGTERM while a stopped VM's backup reads its disk: the pull
stops, the daemon exits at once, and the next backup is full and right."""

import os
import signal
import time

import khlib
from storagelib import vol_path

MiB = 1 << 20


def wait_task(api, tid, timeout=60):
    deadline = time.time() + timeout
    t = api.get("/api/v1/tasks/" + tid).json
    while t["state"] == "running":
        assert time.time() < deadline, t
        time.sleep(0.2)
        t = api.get("/api/v1/tasks/" + tid).json
    return t


def test_backup_sigterm_while_janitor_waits(daemon, tmp_path):
    api = daemon.api
    khlib.wait_accel(api)
    assert api.post("/api/v1/backup-stores", {"name": "s", "path": str(tmp_path / "s")}).status == 201
    r = api.post("/api/v1/pools/default/volumes", {"name": "jd", "size": "8M"})
    assert r.status == 201, r
    disk = vol_path(daemon, r.json)
    api.create({"name": "jv", "vcpus": 1, "memory_mib": 64, "serial": True, "graphics": "none",
                "disks": [{"volume": "default/jd"}]})
    vm = api.act_ok("jv", "start")
    assert vm["state"] == "running", vm
    pids = khlib.qemu_pids(vm["id"])
    assert len(pids) == 1, pids
    mark = os.path.join(daemon.state_dir, "run", "vms", vm["id"], "backup-live")
    os.kill(pids[0], signal.SIGSTOP)
    try:
        r = api.post("/api/v1/vms/jv/backups", {"store": "s", "wait": 0})
        assert r.status in (200, 202), r
        tid = r.json["id"]
        time.sleep(1.0)  # the janitor's first QMP command waits on the stopped QEMU
        t = api.get("/api/v1/tasks/" + tid).json
        assert t["state"] == "running", t
        assert os.path.exists(mark)
        t0 = time.time()
        rc = daemon.stop(timeout=20)
        # a clean exit, and not after the kill -9 that follows the timeout
        assert rc == 0 and time.time() - t0 < 20, rc
    finally:
        os.kill(pids[0], signal.SIGCONT)
    assert not daemon.findings(), daemon.findings()
    # the stop left the mark: the next daemon's janitor cleans QEMU up when
    # it reattaches, then a backup of the running VM works
    assert os.path.exists(mark)
    daemon.start()
    api = daemon.api
    api.wait_state("jv", ["running"])
    deadline = time.time() + 60
    while True:
        cl = [x for x in api.get("/api/v1/tasks").json["tasks"] if x["kind"] == "backup.cleanup"]
        if cl and cl[0]["state"] != "running":
            break
        assert time.time() < deadline, cl
        time.sleep(0.2)
    assert cl[0]["state"] == "succeeded", cl
    assert not os.path.exists(mark)
    r = api.post("/api/v1/vms/jv/backups", {"store": "s", "wait": 0})
    t = wait_task(api, r.json["id"], timeout=120)
    assert t["state"] == "succeeded" and t["result"]["kind"] == "full", t
    assert api.get("/api/v1/vms/jv").json["state"] == "running"
    assert os.path.getsize(disk) > 0


def test_backup_sigterm_mid_pull(daemon, fake_boot, tmp_path):
    """A SIGTERM while a stopped VM's backup reads its disk: the pull stops
    at its next chunk, the daemon exits 0 at once (no sanitizer report),
    nothing is recorded, and the next backup is full and right."""
    from test_backup import disk_sum, ok_task, setup_vm, write_random
    api = daemon.api
    store = str(tmp_path / "s")
    assert api.post("/api/v1/backup-stores", {"name": "s", "path": store}).status == 201
    disk = setup_vm(api, daemon, fake_boot, name="pv", size="512M")
    write_random(disk, 0, 512 * MiB, 21)
    want = disk_sum(disk)
    r = api.post("/api/v1/vms/pv/backups", {"store": "s", "wait": 0})
    t = r.json
    while t["state"] == "running" and "MiB/s" not in (t.get("message") or ""):
        time.sleep(0.02)
        t = api.get("/api/v1/tasks/" + t["id"]).json
    assert t["state"] == "running", t  # 512 MiB: still reading
    t0 = time.time()
    assert daemon.stop(timeout=20) == 0
    assert time.time() - t0 < 10
    assert not daemon.findings(), daemon.findings()
    assert not os.listdir(os.path.join(store, "backups")) or \
        all(n.startswith(".tmp") for n in os.listdir(os.path.join(store, "backups")))
    daemon.start()
    api = daemon.api
    assert api.get("/api/v1/backups?vm=pv").json["backups"] == []
    b = ok_task(api, api.post("/api/v1/vms/pv/backups", {"store": "s", "wait": 60}), timeout=300)
    assert b["kind"] == "full", b
    ok_task(api, api.post("/api/v1/backups/%s/restore" % b["id"], {"as": "pv2"}), timeout=300)
    vol = api.get("/api/v1/pools/default/volumes/pv2-disk0").json
    assert disk_sum(os.path.join(daemon.state_dir, "pools", "default", vol["id"])) == want
