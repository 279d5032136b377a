"""Backups and the daemon's stop: a SIGTERM while a backup's janitor still
waits on QEMU (the VM's QEMU is stopped with SIGSTOP, so its monitor does
not answer) ends the daemon cleanly (exit 0, no sanitizer report: the
janitor's callbacks come back after the manager and the tasks are gone);
the next daemon cleans the VM's QEMU up when it reattaches and backs it up.
The VM boots no OS (a blank disk: SeaBIOS, then nothing): seconds, not
minutes."""

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
