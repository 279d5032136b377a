"""Backups of LUKS-encrypted volumes: read through the volume's key (a
stopped VM's qemu-nbd/qemu-img get it on an inherited fd; a running VM's
QEMU reads its own open image), only into an encrypted store (an
unencrypted one is refused, naming the disk), the fleecing overlay of a
running VM's encrypted disk is LUKS with a key of its own, and restores
(a new VM, over a stopped VM, one disk, live) make encrypted volumes again:
a new volume with a new key, an existing one keeps its own.

The test reads and writes the plaintext with the volume's own key, which
it unwraps from the daemon's database with STATE_DIR/master.key (as
storage/key.c does) into a file of its temp dir."""

import json
import os
import signal
import sqlite3
import subprocess
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import khlib
from storagelib import QIMG, guest_vm, vol_path
from test_backup import MiB, chunk_files, raw_sum, ok_task, wait_vda, guest_sum

QIO = "/usr/bin/qemu-io"
MARK = b"KH-LUKS-PLAINTEXT-MARK-0123456789"


def volume_key(daemon, vol_id):
    """The passphrase (hex of the 32-byte key) of encrypted volume vol_id."""
    master = open(os.path.join(daemon.state_dir, "master.key"), "rb").read()
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(daemon.state_dir, "kvmhost.db"),
                         uri=True)
    try:
        (wrapped,) = db.execute("SELECT key_wrapped FROM volumes WHERE id = ?",
                                (vol_id,)).fetchone()
    finally:
        db.close()
    raw = bytes.fromhex(wrapped)
    key = AESGCM(master).decrypt(raw[:12], raw[12:], vol_id.encode())
    return key.hex()


class Keyed:
    """An encrypted volume opened with its key by qemu-io / qemu-img."""

    def __init__(self, daemon, vol, tmp_path):
        self.path = vol_path(daemon, vol)
        self.key = volume_key(daemon, vol["id"])
        self.keyfile = str(tmp_path / ("key-" + vol["id"]))
        fd = os.open(self.keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, self.key.encode())
        os.close(fd)

    def obj(self):
        return ["--object", "secret,id=s0,format=raw,file=" + self.keyfile]

    def opts(self):
        return ("driver=qcow2,file.driver=file,file.filename=%s,encrypt.format=luks,"
                "encrypt.key-secret=s0" % self.path)

    def write(self, off, data):
        src = self.keyfile + ".src"
        with open(src, "wb") as f:
            f.write(data)
        p = subprocess.run([QIO] + self.obj() + ["--image-opts", "-c",
                           "write -s %s %d %d" % (src, off, len(data)), self.opts()],
                           capture_output=True, text=True)
        os.unlink(src)
        assert p.returncode == 0 and "error" not in p.stdout.lower(), p

    def sum(self):
        return raw_sum(self.obj() + ["--image-opts", self.opts()], self.keyfile + ".raw")


def qinfo(path):
    p = subprocess.run([QIMG, "info", "-U", "--output=json", path], capture_output=True,
                       text=True)
    assert p.returncode == 0, p
    return json.loads(p.stdout)


def is_luks(path):
    return qinfo(path).get("format-specific", {}).get("data", {}).get(
        "encrypt", {}).get("format") == "luks"


def no_mark_in(paths):
    for p in paths:
        with open(p, "rb") as f:
            assert MARK not in f.read(), p


def stores(api, tmp_path):
    enc = str(tmp_path / "enc")
    r = api.post("/api/v1/backup-stores", {"name": "enc", "path": enc, "encrypt": True})
    assert r.status == 201, r
    plain = str(tmp_path / "plain")
    assert api.post("/api/v1/backup-stores", {"name": "plain", "path": plain}).status == 201
    return enc, plain


def test_backup_luks_stopped_restore(daemon, fake_boot, tmp_path):
    """A stopped VM's encrypted volume: refused into an unencrypted store
    (400 naming the disk, nothing stored); into an encrypted one, full then
    incremental; the chunks hold no plaintext; restores to a new VM (a new
    encrypted volume with a new key), over the stopped VM and one disk give
    the plaintext of each point."""
    api = daemon.api
    enc, plain = stores(api, tmp_path)
    r = api.post("/api/v1/pools/default/volumes", {"name": "ld0", "size": "24M",
                                                   "encrypt": True})
    assert r.status == 201 and r.json["encrypted"] is True, r
    src = Keyed(daemon, r.json, tmp_path)
    api.create({"name": "lk", "boot": fake_boot, "disks": [{"volume": "default/ld0"}]})
    src.write(0, MARK * (MiB // len(MARK)))
    src.write(5 * MiB, os.urandom(3 * MiB))
    sum1 = src.sum()

    # the rule: an encrypted volume never goes into an unencrypted store
    r = api.post("/api/v1/vms/lk/backups", {"store": "plain", "wait": 60})
    assert r.status == 400, r
    msg = r.json["error"]["message"]
    assert "disks[0]" in msg and "default/ld0" in msg and "encrypted store" in msg, msg
    assert chunk_files(plain) == [] and os.listdir(os.path.join(plain, "backups")) == []

    b1 = ok_task(api, api.post("/api/v1/vms/lk/backups", {"store": "enc", "wait": 120}))
    assert b1["kind"] == "full" and b1["disks"][0]["encrypted"] is True, b1
    assert b1["bytes_read"] >= 4 * MiB, b1
    no_mark_in(chunk_files(enc))
    no_mark_in([src.path])
    assert os.listdir(os.path.join(daemon.state_dir, "backup-tmp")) == []
    # the bitmap went into the encrypted image (through its key): incremental
    src.write(5 * MiB, MARK * 64)
    sum2 = src.sum()
    assert sum2 != sum1
    b2 = ok_task(api, api.post("/api/v1/vms/lk/backups", {"store": "enc", "wait": 120}))
    assert b2["kind"] == "incremental" and b2["base"] == b1["id"], b2
    assert b2["bytes_read"] <= 2 * MiB, b2
    no_mark_in(chunk_files(enc))

    # a new VM: a new encrypted volume, a key of its own, the plaintext of b1
    ok_task(api, api.post("/api/v1/backups/%s/restore" % b1["id"], {"as": "lr"}))
    vol = api.get("/api/v1/pools/default/volumes/lr-disk0").json
    assert vol["encrypted"] is True, vol
    new = Keyed(daemon, vol, tmp_path)
    assert is_luks(new.path) and new.key != src.key
    assert new.sum() == sum1
    no_mark_in([new.path])
    assert api.vm("lr")["disks"][0]["volume"] == "default/lr-disk0"

    # over the stopped VM: its volume keeps its key, holds b1's plaintext
    ok_task(api, api.post("/api/v1/backups/%s/restore" % b1["id"], {"vm": "lk"}))
    assert volume_key(daemon, src.path.rsplit("/", 1)[1]) == src.key and is_luks(src.path)
    assert src.sum() == sum1
    # one disk: b2's
    ok_task(api, api.post("/api/v1/backups/%s/restore" % b2["id"], {"vm": "lk", "disk": 0}))
    assert src.sum() == sum2
    no_mark_in([src.path])

    # never the plaintext into a VM's unencrypted volume
    assert api.post("/api/v1/pools/default/volumes", {"name": "pd0", "size": "24M"}).status == 201
    api.create({"name": "pl", "boot": fake_boot, "disks": [{"volume": "default/pd0"}]})
    r = api.post("/api/v1/backups/%s/restore" % b1["id"], {"vm": "pl", "wait": 60})
    assert r.status == 409 and "not encrypted" in r.json["error"]["message"], r
    # the key never reached a command line or the log
    assert src.key not in daemon.log_tail(1000000) and new.key not in daemon.log_tail(1000000)


def overlay_fds(pid):
    """/proc paths of QEMU's fds on a fleecing overlay (unlinked files)."""
    out = []
    d = "/proc/%d/fd" % pid
    for n in os.listdir(d):
        try:
            t = os.readlink(os.path.join(d, n))
        except OSError:
            continue
        if "/backup-tmp/fl-" in t:
            out.append(os.path.join(d, n))
    return out


def test_backup_luks_running_fleece_live_restore(daemon, guest, consoles, tmp_path):
    """A running guest's encrypted disk: the fleecing overlay QEMU writes
    the old data into is LUKS and holds no plaintext (the guest overwrites
    the marker while the daemon is stopped mid-pull: copy-before-write puts
    the old data into the overlay); the backup holds the point in time; a
    live-restore runs the new VM on it and leaves an encrypted volume with
    the same plaintext."""
    api = daemon.api
    khlib.wait_accel(api)
    enc, _ = stores(api, tmp_path)
    r = api.post("/api/v1/pools/default/volumes", {"name": "gd", "size": "24M",
                                                   "encrypt": True})
    assert r.status == 201, r
    src = Keyed(daemon, r.json, tmp_path)
    src.write(0, MARK * (MiB // len(MARK)))
    src.write(2 * MiB, os.urandom(16 * MiB))
    sum1 = src.sum()
    api.create(guest_vm(guest, "lv", [{"volume": "default/gd"}]))
    api.act_ok("lv", "start")
    con = consoles(daemon, "lv")
    api.wait_console("lv", khlib.GUEST_READY)
    wait_vda(con)
    assert guest_sum(con) == sum1
    qpid = api.vm("lv")["pid"]
    # the guest overwrites the marker 15 s from now, after the point in
    # time, while the daemon is stopped mid-pull: copy-before-write puts the
    # old data (the marker) into the overlay
    con.send("sleep 15; dd if=/dev/zero of=/dev/vda bs=65536 count=16 conv=notrunc,fsync "
             "2>/dev/null; sync\n")
    t0 = time.time()
    t = api.post("/api/v1/vms/lv/backups", {"store": "enc", "wait": 0}).json
    while t["state"] == "running" and t.get("message") != "reading the disks":
        time.sleep(0.01)
        t = api.get("/api/v1/tasks/" + t["id"]).json
    daemon.proc.send_signal(signal.SIGSTOP)
    try:
        fl = overlay_fds(qpid)
        why = (t["state"], t.get("message"), fl, time.time() - t0)
        assert t["state"] == "running" and fl and time.time() - t0 < 14, why
        time.sleep(t0 + 15 + 5 - time.time())
        assert all(is_luks(p) for p in fl), fl
        size = max(os.stat(p).st_size for p in fl)
        no_mark_in(fl)
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    print("luks fleecing overlay: %d bytes after the guest's write" % size)
    # a LUKS qcow2 of 24 MiB is about 2.2 MiB (its 2 MiB header): the 1 MiB
    # the guest overwrote is in it
    assert size >= 3 * MiB, size
    b = ok_task(api, api.get("/api/v1/tasks/" + t["id"]), timeout=300)
    assert b["disks"][0]["encrypted"] is True, b
    assert overlay_fds(qpid) == []
    no_mark_in(chunk_files(enc))
    # the guest's overwrite is not in the backup: the point in time is
    assert guest_sum(con) != sum1
    ok_task(api, api.post("/api/v1/backups/%s/restore" % b["id"], {"as": "r1"}))
    vol = api.get("/api/v1/pools/default/volumes/r1-disk0").json
    assert vol["encrypted"] is True and Keyed(daemon, vol, tmp_path).sum() == sum1
    con.send("poweroff -f\n")
    api.wait_state("lv", ["stopped"], timeout=60)

    # live-restore: the new VM runs on the backup; its volume is encrypted
    t = ok_task(api, api.post("/api/v1/backups/%s/restore" % b["id"],
                              {"as": "lr", "live": True, "wait": 0}), timeout=300)
    assert t["live"] is True, t
    con = consoles(daemon, "lr")
    api.wait_console("lr", khlib.GUEST_READY)
    wait_vda(con)
    assert guest_sum(con) == sum1
    con.send("poweroff -f\n")
    api.wait_state("lr", ["stopped"], timeout=60)
    vol = api.get("/api/v1/pools/default/volumes/lr-disk0").json
    lr = Keyed(daemon, vol, tmp_path)
    assert vol["encrypted"] is True and is_luks(lr.path) and lr.key != src.key
    assert "backing-filename" not in qinfo(lr.path)
    assert lr.sum() == sum1
    no_mark_in([lr.path])
