"""A backup's persistent dirty bitmap and snapshots: QEMU applies no
snapshot to an image with dirty bitmaps, so a revert (of a stopped VM with
qemu-img, of a running one with snapshot-load) removes the backups' bitmaps
first (instance/snapshot.c) and the next backup is full (its disks went back
in time: the bitmap could not follow)."""

import khlib
from storagelib import guest_vm, vol_path
from test_backup import bitmaps, disk_sum, ok_task, write_random, MiB


def test_backup_then_snapshot_revert(daemon, fake_boot, tmp_path):
    api = daemon.api
    assert api.post("/api/v1/backup-stores", {"name": "s", "path": str(tmp_path / "s")}).status == 201
    r = api.post("/api/v1/pools/default/volumes", {"name": "sd", "size": "16M"})
    assert r.status == 201, r
    disk = vol_path(daemon, r.json)
    api.create({"name": "sv", "boot": fake_boot, "disks": [{"volume": "default/sd"}]})
    write_random(disk, 0, 2 * MiB, 1)
    want = disk_sum(disk)
    r = api.post("/api/v1/vms/sv/snapshots", {"name": "before", "wait": 60})
    assert r.status == 200 and r.json["state"] == "succeeded", r
    b1 = ok_task(api, api.post("/api/v1/vms/sv/backups", {"wait": 60}))
    write_random(disk, 4 * MiB, MiB, 2)
    b2 = ok_task(api, api.post("/api/v1/vms/sv/backups", {"wait": 60}))
    assert b2["kind"] == "incremental" and bitmaps(disk) == ["kh-bk-" + b2["id"]], b2
    r = api.post("/api/v1/vms/sv/snapshots/before/revert", {"wait": 60})
    assert r.status == 200 and r.json["state"] == "succeeded", r
    assert disk_sum(disk) == want and bitmaps(disk) == []
    assert "backup_bitmaps=1 removed" in daemon.log_tail(100000)
    # the disk went back in time: the next backup reads it whole, and is right
    b3 = ok_task(api, api.post("/api/v1/vms/sv/backups", {"wait": 60}))
    assert b3["kind"] == "full" and b3["bytes_read"] >= 2 * MiB, b3
    ok_task(api, api.post("/api/v1/backups/%s/restore" % b3["id"], {"as": "sr"}))
    vol = api.get("/api/v1/pools/default/volumes/sr-disk0").json
    assert disk_sum(vol_path(daemon, vol)) == want
    assert b1["kind"] == "full"


def test_backup_then_memory_snapshot_revert(daemon, guest, tmp_path):
    """The same for a running VM: a memory snapshot's revert (snapshot-load)
    after a backup removes the backups' bitmaps in QEMU first."""
    api = daemon.api
    khlib.wait_accel(api)
    assert api.post("/api/v1/backup-stores", {"name": "s", "path": str(tmp_path / "s")}).status == 201
    r = api.post("/api/v1/pools/default/volumes", {"name": "md", "size": "16M"})
    assert r.status == 201, r
    api.create(guest_vm(guest, "mv", [{"volume": "default/md"}]))
    api.act_ok("mv", "start")
    api.wait_console("mv", khlib.GUEST_READY)
    r = api.post("/api/v1/vms/mv/snapshots", {"name": "warm", "wait": 300}, timeout=330)
    assert r.status == 200 and r.json["state"] == "succeeded", r
    b1 = ok_task(api, api.post("/api/v1/vms/mv/backups", {"wait": 120}), timeout=150)
    assert b1["kind"] == "full", b1
    r = api.post("/api/v1/vms/mv/snapshots/warm/revert", {"wait": 300}, timeout=330)
    assert r.status == 200 and r.json["state"] == "succeeded", r
    assert "backup_bitmaps=1 removed" in daemon.log_tail(100000)
    assert api.vm("mv")["state"] == "running"
    b2 = ok_task(api, api.post("/api/v1/vms/mv/backups", {"wait": 120}), timeout=150)
    assert b2["kind"] == "full", b2
    api.act_ok("mv", "kill")
