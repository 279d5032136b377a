"""A backup schedule belongs to its VM (the VM's id), not to the name it
had when the schedule was set: after a rename the schedule still backs the
VM up and its retention prunes the VM's backups made under the old name
too; a VM deleted and made again under the same name (a new id) gets
neither the old schedule's backups nor its prune.

kvmhost has no rename request yet (PATCH refuses "name"): the test renames
the VM in the database while the daemon is down, as a rename would leave
it; a schedule made due is the same database edit (last_run 0) instead of
a wait until a given minute."""

import os
import sqlite3
import time

from test_backup import MiB, ok_task, setup_vm, write_random


def set_db(daemon, sql, args):
    """An edit of the daemon's database (the daemon is down)."""
    db = sqlite3.connect(os.path.join(daemon.state_dir, "kvmhost.db"), timeout=10)
    try:
        db.execute(sql, args)
        db.commit()
    finally:
        db.close()


def test_backup_schedule_follows_renamed_vm(daemon, fake_boot, tmp_path):
    api = daemon.api
    assert api.post("/api/v1/backup-stores", {"name": "s", "path": str(tmp_path / "s")}).status == 201
    disk = setup_vm(api, daemon, fake_boot, name="bk", size="8M")
    write_random(disk, 0, 2 * MiB, 11)
    old_id = api.vm("bk")["id"]
    manual = [ok_task(api, api.post("/api/v1/vms/bk/backups", {"store": "s", "wait": 30}))["id"]
              for _ in range(2)]
    # a past time: the schedule waits for tomorrow (last_run is set)
    for vm in ("bk", "tw"):
        if vm == "tw":
            setup_vm(api, daemon, fake_boot, name="tw", size="8M")
        r = api.request("PUT", "/api/v1/vms/%s/backup-schedule" % vm,
                        {"store": "s", "daily": "00:00", "keep_last": 1})
        assert r.status == 200 and r.json["last_run"] is not None, r
    # "tw" is deleted and made again: same name, another VM
    tw_old = api.vm("tw")["id"]
    assert api.delete("/api/v1/vms/tw").status in (200, 204)
    setup_vm(api, daemon, fake_boot, name="tw2", size="8M")
    api.create({"name": "tw", "boot": fake_boot, "disks": [{"volume": "default/tw2-d0"}]})
    assert api.vm("tw")["id"] != tw_old
    assert api.get("/api/v1/vms/tw/backup-schedule").status == 404
    daemon.stop()
    set_db(daemon, "UPDATE vms SET name = ?, spec = json_set(spec, '$.name', ?) WHERE id = ?",
           ("bk-renamed", "bk-renamed", old_id))
    set_db(daemon, "UPDATE backup_schedules SET last_run = 0 WHERE vm_id = ?", (tw_old,))
    daemon.start()
    api = daemon.api
    assert api.get("/api/v1/vms/bk-renamed").json["id"] == old_id
    sch = api.get("/api/v1/vms/bk-renamed/backup-schedule")
    assert sch.status == 200 and sch.json["keep_last"] == 1, sch
    # a prune by the VM's name takes its backups made under the old name too
    r = api.post("/api/v1/backups/prune", {"store": "s", "vm": "bk-renamed", "keep_last": 1,
                                           "dry_run": True, "wait": 30})
    res = ok_task(api, r)
    assert res["removed"] == [manual[0]] and res["kept"] == 1, res
    # the deleted "tw"'s schedule is due: the new "tw" is not backed up by it
    time.sleep(3)  # the first tick runs a second after the start
    assert api.get("/api/v1/backups?vm=tw").json["backups"] == []
    tasks = api.get("/api/v1/tasks").json["tasks"]
    assert not [t for t in tasks if t["kind"] == "backup.create" and t["vm"] == "tw"], tasks
    # the renamed VM's schedule due: a backup of it, then its prune keeps
    # only that one - the two made under the old name go
    daemon.stop()
    set_db(daemon, "UPDATE backup_schedules SET last_run = 0 WHERE vm_id = ?", (old_id,))
    daemon.start()
    api = daemon.api
    deadline = time.time() + 60
    while True:
        left = api.get("/api/v1/backups?store=s").json["backups"]
        if len(left) == 1 and left[0]["id"] not in manual:
            break
        assert time.time() < deadline, left
        time.sleep(0.5)
    assert left[0]["vm"] == "bk-renamed" and left[0]["vm_id"] == old_id, left
