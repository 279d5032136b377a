"""Backups: stores, full and incremental backups through persistent dirty
bitmaps, restores of either point, verify and corrupted chunks, encrypted
stores and wrong keys, a full store, kill -9 of the daemon mid-backup,
prune and GC. Disks are written from the host while the VM is stopped
(qemu-io goes through QEMU's block layer, so the bitmaps see the writes)."""

import hashlib
import json
import os
import subprocess
import time

import pytest

import khlib
from storagelib import QIMG, guest_vm, shell_value, vol_path
from test_disks import RawQmp
from test_metrics import parse_prom, promtool_check, sample

QIO = "/usr/bin/qemu-io"
MiB = 1 << 20
CHUNK = 4 * MiB  # the stores of most tests here: the size of stores made before 1 MiB


def task_wait(api, r, timeout=180):
    """The finished task of a request that answered 200 or 202 (or an
    error naming the task that failed within the wait)."""
    if r.status >= 400 and "task" in r.json.get("error", {}):
        return api.get("/api/v1/tasks/" + r.json["error"]["task"]).json
    assert r.status in (200, 202), r
    t = r.json
    deadline = time.time() + timeout
    while t["state"] == "running":
        assert time.time() < deadline, t
        time.sleep(0.2)
        t = api.get("/api/v1/tasks/" + t["id"]).json
    return t


def ok_task(api, r, timeout=180):
    t = task_wait(api, r, timeout)
    assert t["state"] == "succeeded", t
    return t["result"]


def write_random(path, off, length, seed):
    """Write length bytes of seeded pseudo-random data at off (qemu-io)."""
    import random
    src = "/tmp/khbk-src-%d-%d" % (os.getpid(), seed)
    rnd = random.Random(seed)
    with open(src, "wb") as f:
        left = length
        while left > 0:
            n = min(left, 8 * MiB)
            f.write(rnd.randbytes(n))
            left -= n
    try:
        p = subprocess.run([QIO, "-f", "qcow2", "-c", "write -s %s %d %d" % (src, off, length),
                            path], capture_output=True, text=True)
        assert p.returncode == 0 and "error" not in p.stdout.lower(), p
    finally:
        os.unlink(src)


def raw_sum(argv, out):
    """SHA-256 of what `qemu-img convert ARGV... -O raw OUT` writes (OUT
    removed after)."""
    subprocess.run([QIMG, "convert", "-U"] + argv + ["-O", "raw", out], check=True)
    h = hashlib.sha256()
    with open(out, "rb") as f:
        for b in iter(lambda: f.read(MiB), b""):
            h.update(b)
    os.unlink(out)
    return h.hexdigest()


def disk_sum(path, fmt="qcow2"):
    """SHA-256 of the disk's guest-visible bytes."""
    return raw_sum(["-f", fmt, path], path + ".sum.raw")


def disk_raw(path):
    """The disk's guest-visible bytes in a raw file beside it (a path)."""
    out = path + ".raw"
    subprocess.run([QIMG, "convert", "-U", "-f", "qcow2", "-O", "raw", path, out], check=True)
    return out


def bitmaps(path):
    info = json.loads(subprocess.run([QIMG, "info", "-U", "--output=json", path],
                                     capture_output=True, text=True, check=True).stdout)
    bms = info.get("format-specific", {}).get("data", {}).get("bitmaps", [])
    return sorted(b["name"] for b in bms)


def chunk_files(store):
    out = []
    for root, _, files in os.walk(os.path.join(store, "chunks")):
        out += [os.path.join(root, f) for f in files]
    return out


def setup_vm(api, daemon, fake_boot, name="bk", size="64M"):
    r = api.post("/api/v1/pools/default/volumes", {"name": name + "-d0", "size": size})
    assert r.status == 201, r
    api.create({"name": name, "boot": fake_boot, "disks": [{"volume": "default/%s-d0" % name}]})
    return vol_path(daemon, r.json)


def test_backup_full_incremental_restore(daemon, fake_boot, tmp_path):
    api = daemon.api
    store = str(tmp_path / "store")
    r = api.post("/api/v1/backup-stores", {"name": "s1", "path": store})
    assert r.status == 201 and r.json["encrypted"] is False and "key" not in r.json, r
    C = r.json["chunk_size"]  # a new store's default
    assert C == MiB // 2, r
    n = 80 * MiB // C  # the chunks of 80 MiB
    for bad in (1000, 3 * MiB, 8 * MiB, 32768):
        r = api.post("/api/v1/backup-stores", {"name": "sx", "path": store + "x",
                                               "chunk_size": bad})
        assert r.status == 400, (bad, r)
    assert api.get("/api/v1/backup-stores/s1").json["chunk_size"] == C
    assert api.post("/api/v1/backup-stores", {"name": "s1", "path": store + "x"}).status == 409
    assert api.post("/api/v1/backup-stores", {"name": "s2", "path": "rel"}).status == 400
    assert api.post("/api/v1/backup-stores", {"name": "s2", "path": store}).status == 409
    disk = setup_vm(api, daemon, fake_boot, size="96M")
    write_random(disk, 0, 80 * MiB, 1)
    sum1 = disk_sum(disk)
    b1 = ok_task(api, api.post("/api/v1/vms/bk/backups", {"store": "s1", "wait": 60}))
    assert b1["kind"] == "full" and b1["base"] is None, b1
    assert b1["chunks_new"] == n and b1["bytes_read"] == 80 * MiB, b1
    assert b1["chunks"] == n and b1["size"] == 96 * MiB, b1
    assert bitmaps(disk) == ["kh-bk-" + b1["id"]]
    nfiles = len(chunk_files(store))
    assert nfiles == n + 1  # the data chunks + the spec
    # about 1%: two pieces of 64 KiB, in two chunks
    write_random(disk, 5 * C + 4096, 65536, 2)
    write_random(disk, 17 * C, 65536, 3)
    sum2 = disk_sum(disk)
    assert sum2 != sum1
    b2 = ok_task(api, api.post("/api/v1/vms/bk/backups", {"wait": 60}))  # the only store
    assert b2["kind"] == "incremental" and b2["base"] == b1["id"], b2
    assert b2["chunks_new"] == 2 and b2["bytes_read"] == 2 * C, b2
    assert len(chunk_files(store)) == nfiles + 2
    assert bitmaps(disk) == ["kh-bk-" + b2["id"]]
    # the figures in /metrics: counters over both backups, the last duration
    r = api.get("/metrics")
    rc, out = promtool_check(r.data)
    assert rc == 0 and out.strip() == "", out
    m = parse_prom(r.text)
    vid = api.vm("bk")["id"]
    assert sample(m, "kvmhost_backup_bytes_read_total", vm="bk", id=vid) == 80 * MiB + 2 * C
    assert sample(m, "kvmhost_backup_bytes_written_total", vm="bk") == \
        b1["bytes_written"] + b2["bytes_written"] > 0
    assert sample(m, "kvmhost_backup_bytes_deduplicated_total", vm="bk") == \
        b1["bytes_dedup"] + b2["bytes_dedup"]
    assert sample(m, "kvmhost_backups_total", vm="bk") == 2
    assert sample(m, "kvmhost_backup_duration_seconds", vm="bk") == \
        pytest.approx(b2["duration_ms"] / 1000, abs=0.001)
    # nothing changed: nothing read
    b3 = ok_task(api, api.post("/api/v1/vms/bk/backups", {"wait": 60}))
    assert b3["kind"] == "incremental" and b3["bytes_read"] == 0 and b3["chunks_new"] == 0, b3
    lst = api.get("/api/v1/backups?vm=bk").json["backups"]
    assert [b["id"] for b in lst] == [b3["id"], b2["id"], b1["id"]]
    # restore either point to new VMs
    for b, want, name in ((b1, sum1, "r1"), (b2, sum2, "r2")):
        res = ok_task(api, api.post("/api/v1/backups/%s/restore" % b["id"], {"as": name}))
        assert res["vm"] == name and res["volumes"] == ["default/%s-disk0" % name], res
        vm = api.vm(name)
        assert vm["disks"][0]["volume"] == "default/%s-disk0" % name
        vol = api.get("/api/v1/pools/default/volumes/%s-disk0" % name).json
        assert disk_sum(vol_path(daemon, vol)) == want
    assert api.post("/api/v1/backups/%s/restore" % b1["id"], {"as": "r1"}).status == 409
    # over the existing stopped VM: back to the first point
    ok_task(api, api.post("/api/v1/backups/%s/restore" % b1["id"], {"vm": "bk"}))
    assert disk_sum(disk) == sum1
    # the restore went through the block layer: the bitmap saw every write
    # (all the data chunks), the next backup reads them and stores nothing
    # new (they all exist: deduplicated)
    b4 = ok_task(api, api.post("/api/v1/vms/bk/backups", {"wait": 60}))
    assert b4["kind"] == "incremental" and b4["bytes_read"] == 80 * MiB, b4
    assert b4["chunks_new"] == 0 and b4["bytes_dedup"] == 80 * MiB, b4
    # verify
    v = ok_task(api, api.post("/api/v1/backups/%s/verify" % b2["id"], {}))
    assert v["ok"] is True and v["damaged"] == [] and v["chunks"] == n, v
    # the CLI
    p = khlib.cli(daemon, "backup", "list", "--vm", "bk")
    assert p.returncode == 0 and b1["id"] in p.stdout and "incremental" in p.stdout, p
    p = khlib.cli(daemon, "backup-store", "list")
    assert p.returncode == 0 and "s1" in p.stdout, p


def test_backup_corrupt_chunk_verify_and_restore_refused(daemon, fake_boot, tmp_path):
    api = daemon.api
    store = str(tmp_path / "store")
    assert api.post("/api/v1/backup-stores", {"name": "s1", "path": store,
                                              "chunk_size": CHUNK}).status == 201
    disk = setup_vm(api, daemon, fake_boot, size="32M")
    write_random(disk, 0, 16 * MiB, 7)
    b = ok_task(api, api.post("/api/v1/vms/bk/backups", {"wait": 60}))
    idx = json.load(open(os.path.join(store, "backups", b["id"], "disk0.idx")))
    victim = idx["chunks"][2]
    path = os.path.join(store, "chunks", victim[:2], victim)
    with open(path, "r+b") as f:
        f.seek(100)
        c = f.read(1)
        f.seek(100)
        f.write(bytes([c[0] ^ 0xff]))
    v = ok_task(api, api.post("/api/v1/backups/%s/verify" % b["id"], {}))
    assert v["ok"] is False and v["damaged"] == [victim], v
    t = task_wait(api, api.post("/api/v1/backups/%s/restore" % b["id"], {"as": "rr"}))
    assert t["state"] == "failed" and victim in t["error"]["message"], t
    assert api.get("/api/v1/vms/rr").status == 404
    assert api.get("/api/v1/pools/default/volumes/rr-disk0").status == 404
    before = disk_sum(disk)
    t = task_wait(api, api.post("/api/v1/backups/%s/restore" % b["id"], {"vm": "bk"}))
    assert t["state"] == "failed" and "damaged" in t["error"]["message"], t
    assert disk_sum(disk) == before
    # a missing chunk is named too
    os.unlink(path)
    v = ok_task(api, api.post("/api/v1/backups/%s/verify" % b["id"], {}))
    assert v["damaged"] == [victim], v


def guest_sum(con):
    """SHA-256 of the guest's /dev/vda (asked again when the console line
    came back cut, as it may right after a reconnect)."""
    for _ in range(3):
        v = shell_value(con, "$(sha256sum /dev/vda | cut -d' ' -f1)", timeout=120)
        if len(v) == 64:
            return v
    raise AssertionError("no whole digest from the guest: %r" % v)


def wait_vda(con, timeout=150):
    """The guest's shell answers and /dev/vda is there (it is probed a
    little after the guest says it is ready)."""
    deadline = time.time() + timeout
    while True:
        try:
            if shell_value(con, "$([ -b /dev/vda ] && echo yes || echo no)", timeout=10) == "yes":
                return
        except khlib.KhError:
            pass
        assert time.time() < deadline, "no /dev/vda in the guest"
        time.sleep(0.5)


def guest_write(con, seek_64k, count=1):
    """Random data written by the guest at seek_64k * 64 KiB, synced."""
    con.send("dd if=/dev/urandom of=/dev/vda bs=65536 count=%d seek=%d conv=notrunc "
             "2>/dev/null; sync\n" % (count, seek_64k))
    assert shell_value(con, "written", timeout=120) == "written"  # after the dd


def test_backup_running_vm_bitmaps_survive(daemon, guest, consoles, tmp_path):
    """A running guest's disk: full, then incremental backups (about 1%
    changed: two chunks read and stored), restores of both points match
    what the guest had; the dirty bitmap survives a VM stop/start and a
    daemon kill -9, and QEMU keeps nothing of a backup after it; a kill -9
    mid-backup is cleaned up when the daemon reattaches."""
    api = daemon.api
    khlib.wait_accel(api)
    store = str(tmp_path / "store")
    assert api.post("/api/v1/backup-stores", {"name": "s1", "path": store,
                                              "chunk_size": CHUNK}).status == 201
    r = api.post("/api/v1/pools/default/volumes", {"name": "gd", "size": "24M"})
    assert r.status == 201, r
    disk = vol_path(daemon, r.json)
    api.create(guest_vm(guest, "lv", [{"volume": "default/gd"}]))
    api.act_ok("lv", "start")
    con = consoles(daemon, "lv")
    api.wait_console("lv", khlib.GUEST_READY)
    wait_vda(con)
    guest_write(con, 0, 256)  # 16 MiB
    sum1 = guest_sum(con)
    b1 = ok_task(api, api.post("/api/v1/vms/lv/backups", {"wait": 120}), timeout=300)
    assert b1["kind"] == "full" and b1["chunks_new"] == 4, b1
    assert b1["bytes_read"] == 16 * MiB, b1
    # two pieces of 64 KiB in chunks 1 and 3
    guest_write(con, 1 * 64 + 3)
    guest_write(con, 3 * 64)
    sum2 = guest_sum(con)
    assert sum2 != sum1
    b2 = ok_task(api, api.post("/api/v1/vms/lv/backups", {"wait": 120}), timeout=300)
    assert b2["kind"] == "incremental" and b2["base"] == b1["id"], b2
    assert b2["bytes_read"] == 2 * CHUNK and b2["chunks_new"] == 2, b2
    for b, want, name in ((b1, sum1, "r1"), (b2, sum2, "r2")):
        ok_task(api, api.post("/api/v1/backups/%s/restore" % b["id"], {"as": name}))
        vol = api.get("/api/v1/pools/default/volumes/%s-disk0" % name).json
        assert disk_sum(vol_path(daemon, vol)) == want, name
    # the bitmap survives a stop and a start (saved in the qcow2 when QEMU
    # closes the image)
    con.send("sync; poweroff -f\n")
    api.wait_state("lv", ["stopped"], timeout=60)
    assert bitmaps(disk) == ["kh-bk-" + b2["id"]]
    api.act_ok("lv", "start")
    con = consoles(daemon, "lv")
    wait_vda(con)
    guest_write(con, 2 * 64)
    b3 = ok_task(api, api.post("/api/v1/vms/lv/backups", {"wait": 120}), timeout=300)
    assert b3["kind"] == "incremental" and b3["bytes_read"] == CHUNK, b3
    # ... and a daemon kill -9 (QEMU keeps it; the restarted daemon uses it)
    vm_id = api.vm("lv")["id"]
    daemon.kill9()
    # QEMU kept nothing of the backups but the newest bitmap
    q = RawQmp(os.path.join(daemon.state_dir, "run", "vms", vm_id, "qmp.sock"))
    try:
        nodes = q.cmd("query-named-block-nodes", {"flat": True})
        assert not [n for n in nodes if n["node-name"].startswith("khf")], nodes
        assert q.cmd("query-block-jobs") == []
        d0 = [n for n in nodes if n["node-name"] == "disk0"][0]
        assert [b["name"] for b in d0["dirty-bitmaps"]] == ["kh-bk-" + b3["id"]], d0
    finally:
        q.close()
    daemon.start()
    api = daemon.api
    api.wait_state("lv", ["running"])
    con = consoles(daemon, "lv")
    guest_write(con, 5 * 64)
    sum4 = guest_sum(con)
    b4 = ok_task(api, api.post("/api/v1/vms/lv/backups", {"wait": 120}), timeout=300)
    assert b4["kind"] == "incremental" and b4["base"] == b3["id"], b4
    assert b4["bytes_read"] == CHUNK and b4["chunks_new"] == 1, b4
    assert b4["frozen"] is False, b4  # the test guest runs no agent
    ok_task(api, api.post("/api/v1/backups/%s/restore" % b4["id"], {"as": "r4"}))
    vol = api.get("/api/v1/pools/default/volumes/r4-disk0").json
    assert disk_sum(vol_path(daemon, vol)) == sum4
    # kill -9 while a backup reads the disk: the restarted daemon cleans the
    # VM's QEMU up by itself when it reattaches (no backup asked), and the
    # next backup is incremental from the last committed one, and right
    mark = os.path.join(daemon.state_dir, "run", "vms", vm_id, "backup-live")
    for attempt in range(3):
        guest_write(con, 0, 256)  # all 16 MiB dirty: a longer read
        t = api.post("/api/v1/vms/lv/backups", {"wait": 0}).json
        while t["state"] == "running" and t.get("message") != "reading the disks":
            time.sleep(0.02)
            t = api.get("/api/v1/tasks/" + t["id"]).json
        daemon.kill9()
        if t["state"] == "running" and os.path.exists(mark):
            break
        daemon.start()  # the backup ended first: again
        api = daemon.api
        api.wait_state("lv", ["running"])
        con = consoles(daemon, "lv")
    else:
        pytest.fail("the backup always ended before the kill")
    q = RawQmp(os.path.join(daemon.state_dir, "run", "vms", vm_id, "qmp.sock"))
    try:
        nodes = q.cmd("query-named-block-nodes", {"flat": True})
        assert [n for n in nodes if n["node-name"].startswith("khf")], nodes
    finally:
        q.close()
    daemon.start()
    api = daemon.api
    deadline = time.time() + 60
    while True:
        cl = [x for x in api.get("/api/v1/tasks").json["tasks"] if x["kind"] == "backup.cleanup"]
        if cl and cl[0]["state"] != "running":
            break
        assert time.time() < deadline, cl
        time.sleep(0.2)
    assert cl[0]["state"] == "succeeded" and cl[0]["vm"] == "lv", cl
    assert not os.path.exists(mark)
    last = api.get("/api/v1/backups?vm=lv").json["backups"][0]["id"]  # the last committed
    daemon.kill9()  # to look into QEMU: nothing of the cut backup is left
    q = RawQmp(os.path.join(daemon.state_dir, "run", "vms", vm_id, "qmp.sock"))
    try:
        nodes = q.cmd("query-named-block-nodes", {"flat": True})
        assert not [n for n in nodes if n["node-name"].startswith("khf")], nodes
        assert q.cmd("query-block-jobs") == []
        assert q.cmd("query-block-exports") == []
        d0 = [n for n in nodes if n["node-name"] == "disk0"][0]
        names = [b["name"] for b in d0["dirty-bitmaps"]]
        assert "kh-bk-" + last in names and not [n for n in names if n.startswith("khs")], d0
    finally:
        q.close()
    daemon.start()
    api = daemon.api
    api.wait_state("lv", ["running"])
    con = consoles(daemon, "lv")
    sum5 = guest_sum(con)
    b5 = ok_task(api, api.post("/api/v1/vms/lv/backups", {"wait": 120}), timeout=300)
    assert b5["kind"] == "incremental" and b5["base"] == last, b5
    assert b5["bytes_read"] == 16 * MiB, b5
    ok_task(api, api.post("/api/v1/backups/%s/restore" % b5["id"], {"as": "r5"}))
    vol = api.get("/api/v1/pools/default/volumes/r5-disk0").json
    assert disk_sum(vol_path(daemon, vol)) == sum5


def test_backup_encrypted_store_wrong_key_prune(daemons, fake_boot, tmp_path):
    """An encrypted store: the key is shown once; chunk names and contents
    tell nothing (no plaintext digest); another daemon adds the same
    directory only with the right key (403 otherwise) and restores from it;
    prune keeps the newest and GC frees the chunks only the others used."""
    daemon = daemons()
    api = daemon.api
    store = str(tmp_path / "enc")
    r = api.post("/api/v1/backup-stores", {"name": "e", "path": store, "encrypt": True,
                                           "chunk_size": CHUNK})
    assert r.status == 201 and r.json["encrypted"] is True and len(r.json["key"]) == 64, r
    key = r.json["key"]
    assert "key" not in api.get("/api/v1/backup-stores/e").json
    disk = setup_vm(api, daemon, fake_boot, size="16M")
    write_random(disk, 0, 8 * MiB, 11)
    b1 = ok_task(api, api.post("/api/v1/vms/bk/backups", {"wait": 60}))
    plain = subprocess.run([QIMG, "convert", "-U", "-O", "raw", disk, str(tmp_path / "p.raw")],
                           check=True)
    with open(tmp_path / "p.raw", "rb") as f:
        first = f.read(CHUNK)
    idx = json.load(open(os.path.join(store, "backups", b1["id"], "disk0.idx")))
    assert idx["chunks"][0] != hashlib.sha256(first).hexdigest()
    with open(os.path.join(store, "chunks", idx["chunks"][0][:2], idx["chunks"][0]), "rb") as f:
        blob = f.read()
    assert first[:64] not in blob and blob[:5] == b"KHC1\x01"
    sum1 = disk_sum(disk)
    write_random(disk, 0, 8 * MiB, 12)  # every chunk changes
    b2 = ok_task(api, api.post("/api/v1/vms/bk/backups", {"wait": 60}))
    assert b2["kind"] == "incremental" and b2["chunks_new"] == 2, b2
    # another daemon: the store directory with a wrong key, then the right one
    other = daemons()
    oapi = other.api
    bad = ("0" * 64, key[:-1] + ("0" if key[-1] != "0" else "1"))
    for k in bad:
        r = oapi.post("/api/v1/backup-stores", {"name": "e", "path": store, "key": k})
        assert r.status == 403 and "wrong key" in r.error["message"], r
    r = oapi.post("/api/v1/backup-stores", {"name": "e", "path": store})
    assert r.status == 400 and "give its key" in r.error["message"], r
    assert oapi.post("/api/v1/backup-stores", {"name": "e", "path": store, "key": key}).status == 201
    # restore on the first daemon
    ok_task(api, api.post("/api/v1/backups/%s/restore" % b1["id"], {"as": "rr"}))
    vol = api.get("/api/v1/pools/default/volumes/rr-disk0").json
    assert disk_sum(vol_path(daemon, vol)) == sum1
    # prune: keep the newest only; the first backup's chunks go
    n_before = len(chunk_files(store))
    res = ok_task(api, api.post("/api/v1/backups/prune", {"store": "e", "keep_last": 1,
                                                          "dry_run": True}))
    assert res["removed"] == [b1["id"]] and len(chunk_files(store)) == n_before, res
    res = ok_task(api, api.post("/api/v1/backups/prune", {"store": "e", "keep_last": 1}))
    # its 2 data chunks (the spec's chunk is the same for both: shared)
    assert res["removed"] == [b1["id"]] and res["chunks_removed"] == 2, res
    assert len(chunk_files(store)) == n_before - 2
    assert os.path.exists(os.path.join(store, "kvmhost-store.json"))
    assert api.get("/api/v1/backups/%s" % b1["id"]).status == 404
    v = ok_task(api, api.post("/api/v1/backups/%s/verify" % b2["id"], {}))
    assert v["ok"] is True, v
    assert api.delete("/api/v1/backup-stores/e").status == 409
    assert api.delete("/api/v1/backups/%s" % b2["id"]).status == 204
    assert api.delete("/api/v1/backup-stores/e").status == 204


def test_backup_store_full_and_kill9_mid_backup(daemon, fake_boot, tmp_path):
    """A full store (a small tmpfs) fails the backup cleanly: nothing
    recorded, the disk keeps only the previous bitmap. A daemon killed -9
    mid-backup records nothing either; the next backup is incremental from
    the last committed one and restores to the right data."""
    api = daemon.api
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12M", "tmpfs", str(small)], check=True)
    try:
        assert api.post("/api/v1/backup-stores", {"name": "tiny", "path": str(small)}).status == 201
        big = str(tmp_path / "big")
        assert api.post("/api/v1/backup-stores", {"name": "big", "path": big}).status == 201
        disk = setup_vm(api, daemon, fake_boot, size="256M")
        write_random(disk, 0, 32 * MiB, 21)
        t = task_wait(api, api.post("/api/v1/vms/bk/backups", {"store": "tiny", "wait": 60}))
        assert t["state"] == "failed" and "backup store" in t["error"]["message"], t
        assert t["error"]["code"] == "unavailable", t
        assert api.get("/api/v1/backups?store=tiny").json["backups"] == []
        assert os.listdir(os.path.join(small, "backups")) == []
        assert bitmaps(disk) == []
    finally:
        subprocess.run(["umount", str(small)])
    b1 = ok_task(api, api.post("/api/v1/vms/bk/backups", {"store": "big", "wait": 60}))
    write_random(disk, 0, 200 * MiB, 22)  # enough to take a few seconds
    sum2 = disk_sum(disk)
    r = api.post("/api/v1/vms/bk/backups", {"store": "big", "wait": 0})
    assert r.status == 202, r
    deadline = time.time() + 60
    while api.get("/api/v1/tasks/" + r.json["id"]).json.get("progress", 0) < 10:
        assert time.time() < deadline
        time.sleep(0.05)
    daemon.kill9()
    daemon.start()
    api = daemon.api
    assert [b["id"] for b in api.get("/api/v1/backups?vm=bk").json["backups"]] == [b1["id"]]
    assert api.get("/api/v1/tasks/" + r.json["id"]).json["state"] == "failed"
    assert "kh-bk-" + b1["id"] in bitmaps(disk)
    b2 = ok_task(api, api.post("/api/v1/vms/bk/backups", {"store": "big", "wait": 60}))
    assert b2["kind"] == "incremental" and b2["base"] == b1["id"], b2
    assert bitmaps(disk) == ["kh-bk-" + b2["id"]]
    ok_task(api, api.post("/api/v1/backups/%s/restore" % b2["id"], {"as": "rr"}))
    vol = api.get("/api/v1/pools/default/volumes/rr-disk0").json
    assert disk_sum(vol_path(daemon, vol)) == sum2
    # the prune's GC removes the chunks and the folder the killed one left
    res = ok_task(api, api.post("/api/v1/backups/prune", {"store": "big"}))
    assert res["removed"] == [] and res["kept"] == 2, res
    assert sorted(os.listdir(os.path.join(big, "backups"))) == sorted([b1["id"], b2["id"]])


def test_backup_schedule_runs_daily(daemon, fake_boot, tmp_path):
    """A schedule at the current minute (UTC) runs within a tick; one whose
    time today has passed waits for tomorrow; a restart does not run it
    again; bad times are refused; a schedule with keep_last prunes the VM's
    backups after its backup (the two manual ones go)."""
    import datetime
    api = daemon.api
    assert api.post("/api/v1/backup-stores", {"name": "s", "path": str(tmp_path / "s")}).status == 201
    disk = setup_vm(api, daemon, fake_boot, size="8M")
    write_random(disk, 0, 4 * MiB, 5)
    setup_vm(api, daemon, fake_boot, name="other", size="8M")
    for bad in ("2:00", "24:00", "02:60", "aa:bb"):
        r = api.request("PUT", "/api/v1/vms/bk/backup-schedule", {"store": "s", "daily": bad})
        assert r.status == 400, (bad, r)
    r = api.request("PUT", "/api/v1/vms/bk/backup-schedule", {"store": "nope", "daily": "02:00"})
    assert r.status == 404, r
    manual = [ok_task(api, api.post("/api/v1/vms/bk/backups", {"store": "s", "wait": 30}))["id"]
              for _ in range(2)]
    r = api.request("PUT", "/api/v1/vms/bk/backup-schedule",
                    {"store": "s", "daily": "02:00", "keep_last": -1})
    assert r.status == 400, r
    if datetime.datetime.utcnow().second > 40:
        time.sleep(21)
    now = datetime.datetime.utcnow()
    past = (now - datetime.timedelta(minutes=5)).strftime("%H:%M")
    r = api.request("PUT", "/api/v1/vms/bk/backup-schedule",
                    {"store": "s", "daily": now.strftime("%H:%M"), "keep_last": 1})
    assert r.status == 200 and r.json["last_run"] is None and r.json["keep_last"] == 1, r
    if now.hour * 60 + now.minute >= 5:  # not across midnight
        r = api.request("PUT", "/api/v1/vms/other/backup-schedule", {"store": "s", "daily": past})
        assert r.status == 200 and r.json["last_run"] is not None, r
    deadline = time.time() + 40
    while [b["id"] for b in api.get("/api/v1/backups?vm=bk").json["backups"]] == manual[::-1]:
        assert time.time() < deadline, "the scheduled backup did not run"
        time.sleep(0.5)
    # the schedule's retention: only the scheduled backup is left
    while len(api.get("/api/v1/backups?vm=bk").json["backups"]) != 1:
        assert time.time() < deadline, "the scheduled prune did not run"
        time.sleep(0.5)
    left = api.get("/api/v1/backups?vm=bk").json["backups"][0]
    assert left["id"] not in manual, left
    assert api.get("/api/v1/vms/bk/backup-schedule").json["last_run"] is not None
    daemon.restart()
    api = daemon.api
    time.sleep(2)
    assert len(api.get("/api/v1/backups?vm=bk").json["backups"]) == 1
    assert api.get("/api/v1/backups?vm=other").json["backups"] == []
    p = khlib.cli(daemon, "backup", "schedule", "bk")
    assert p.returncode == 0 and "daily" in p.stdout and now.strftime("%H:%M") in p.stdout, p
    assert "keep_last" in p.stdout, p
    p = khlib.cli(daemon, "backup", "schedule", "bk", "--daily", "03:00", "--store", "s",
                  "--keep-daily", "7", "--keep-weekly", "4")
    assert p.returncode == 0, p
    sch = api.get("/api/v1/vms/bk/backup-schedule").json
    assert sch["keep_daily"] == 7 and sch["keep_weekly"] == 4 and "keep_last" not in sch, sch
    p = khlib.cli(daemon, "backup", "schedule", "bk", "--off")
    assert p.returncode == 0, p
    assert api.get("/api/v1/vms/bk/backup-schedule").status == 404


def test_backup_live_restore(daemon, guest, consoles, tmp_path):
    """Live-restore: the new VM runs (and its guest reads the backed-up
    data through the NBD backing) while block-stream is still copying;
    when the task ends the volume holds exactly the backup, with no
    backing left, and the guest still reads the same data."""
    api = daemon.api
    khlib.wait_accel(api)
    store = str(tmp_path / "store")
    assert api.post("/api/v1/backup-stores", {"name": "s1", "path": store,
                                              "chunk_size": CHUNK}).status == 201
    r = api.post("/api/v1/pools/default/volumes", {"name": "ld", "size": "16M"})
    assert r.status == 201, r
    disk = vol_path(daemon, r.json)
    write_random(disk, 0, 12 * MiB, 11)  # chunks 0-2 data, chunk 3 sparse
    want = disk_sum(disk)
    api.create(guest_vm(guest, "src", [{"volume": "default/ld"}]))
    b = ok_task(api, api.post("/api/v1/vms/src/backups", {"wait": 60}))
    url = "/api/v1/backups/%s/restore" % b["id"]
    assert api.post(url, {"vm": "src", "live": True}).status == 400
    assert api.post(url, {"as": "x", "speed": MiB}).status == 400
    # 1 MiB/s: the stream of 16 MiB lasts about 16 s
    r = api.post(url, {"as": "lr", "live": True, "speed": MiB, "wait": 0})
    assert r.status in (200, 202), r
    tid = r.json["id"]
    deadline = time.time() + 60
    while True:
        t = api.get("/api/v1/tasks/" + tid).json
        v = api.get("/api/v1/vms/lr")
        if (v.status == 200 and v.json["state"] == "running" and
                "streaming" in (t.get("message") or "")):
            break
        assert t["state"] == "running" and time.time() < deadline, t
        time.sleep(0.1)
    # the guest runs before the copy ends
    assert t["state"] == "running" and t["progress"] < 95, t
    con = consoles(daemon, "lr")
    api.wait_console("lr", khlib.GUEST_READY)
    wait_vda(con)
    # (most likely still streaming: reads of pieces not copied yet go to the backup)
    assert guest_sum(con) == want
    t = ok_task(api, api.get("/api/v1/tasks/" + tid), timeout=180)
    assert t["live"] is True and t["vm"] == "lr", t
    assert t["started_ms"] < t["streamed_ms"] and t["streamed_ms"] > 8000, t
    # the guest reads the same data, from its own disk now
    assert guest_sum(con) == want
    con.send("poweroff -f\n")
    api.wait_state("lr", ["stopped"], timeout=60)
    vol = api.get("/api/v1/pools/default/volumes/lr-disk0").json
    path = vol_path(daemon, vol)
    assert disk_sum(path) == want
    info = json.loads(subprocess.run([QIMG, "info", "--output=json", path],
                                     capture_output=True, text=True, check=True).stdout)
    assert "backing-filename" not in info, info


def test_backup_live_restore_stream_fails(daemon, guest, consoles, tmp_path):
    """A chunk damaged after a live-restore began: the stream fails when it
    reaches it and the task says so, the VM keeps running on the backup
    (its guest still reads what it can), and the NBD servers end with it."""
    api = daemon.api
    khlib.wait_accel(api)
    store = str(tmp_path / "store")
    assert api.post("/api/v1/backup-stores", {"name": "s1", "path": store,
                                              "chunk_size": CHUNK}).status == 201
    r = api.post("/api/v1/pools/default/volumes", {"name": "fd", "size": "12M"})
    assert r.status == 201, r
    disk = vol_path(daemon, r.json)
    write_random(disk, 0, 12 * MiB, 12)
    api.create(guest_vm(guest, "src", [{"volume": "default/fd"}]))
    b = ok_task(api, api.post("/api/v1/vms/src/backups", {"wait": 60}))
    with open(os.path.join(store, "backups", b["id"], "disk0.idx")) as f:
        last = json.load(f)["chunks"][2]
    want0 = hashlib.sha256(open(disk_raw(disk), "rb").read(CHUNK)).hexdigest()
    r = api.post("/api/v1/backups/%s/restore" % b["id"],
                 {"as": "lf", "live": True, "speed": MiB, "wait": 0})
    assert r.status in (200, 202), r
    tid = r.json["id"]
    deadline = time.time() + 60
    while True:
        v = api.get("/api/v1/vms/lf")
        if v.status == 200 and v.json["state"] == "running":
            break
        assert time.time() < deadline, v
        time.sleep(0.1)
    # the third piece goes bad before the stream (1 MiB/s) reaches it
    victim = os.path.join(store, "chunks", last[:2], last)
    with open(victim, "r+b") as f:
        f.seek(300)
        ch = f.read(1)
        f.seek(300)
        f.write(bytes([ch[0] ^ 0x40]))
    t = task_wait(api, api.get("/api/v1/tasks/" + tid), timeout=120)
    assert t["state"] == "failed", t
    assert "block-stream failed" in t["error"]["message"], t
    assert api.vm("lf")["state"] == "running"
    con = consoles(daemon, "lf")
    api.wait_console("lf", khlib.GUEST_READY)
    wait_vda(con)
    got = shell_value(con, "$(dd if=/dev/vda bs=1M count=4 2>/dev/null | sha256sum | cut -d' ' -f1)",
                      timeout=60)
    assert got == want0
    con.send("poweroff -f\n")
    api.wait_state("lf", ["stopped"], timeout=60)
