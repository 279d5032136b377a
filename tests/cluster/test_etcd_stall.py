"""An etcd stall does not stall the daemon: three hosts (as
test_membership.py), a cluster over them; h1's own etcd member is stopped
(SIGSTOP: its port still accepts connections, nothing answers, the way a
member stuck on a slow disk or a GC pause looks); a `vm create` on h1 then
waits for its claim (an etcd txn) and a `vm start` for its may-run read,
and meanwhile GET /api/v1/vms and GET /api/v1/hosts on h1 answer at once
(before, the claim blocked the daemon's loop up to the etcd timeout). Once
the member runs again (SIGCONT) both calls end: 201 and 200 (or a clear
503 if etcd said so), never a hang.

test_etcd_stall_membership does the same for the cluster's own writes and
the other name claims: `cluster create` on h1 while its new etcd member is
held stopped, `cluster join` of h2 (the member's admit waits on etcd) with
h1's member stopped, then, on the cluster of three with h1's member
stopped, a template clone, a libvirt import, an OVA import and a backup
restore as a new VM (each claims the new name in etcd); GETs on the hosts
involved answer within PROMPT_S meanwhile and each call ends (201, or a
clear 503 then done once etcd runs). Last, `cluster leave` on h3 with
every etcd member stopped: GETs on h3 still answer at once and the leave
fails with a 503 within LEAVE_BOUND_S; with etcd back it succeeds.

Run: KH_BUILD_DIR=$PWD/build-asan /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
     tests/cluster/test_etcd_stall.py
"""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "blackbox"))
sys.path.insert(0, os.path.dirname(__file__))

import khlib  # noqa: E402
from test_membership import (PORT, Phase, pytest_runtest_makereport,  # noqa: E402,F401
                             three, wait_for)
from test_migration import form_cluster  # noqa: E402

# a GET must answer well within the etcd client's timeout (2 s), which is
# what a blocked loop made it wait
PROMPT_S = 1.0


def etcd_pid(d):
    """The etcd member the daemon d supervises (its data dir is under d's
    state dir)."""
    want = os.path.join(d.state_dir, "etcd").encode()
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"etcd" and any(want in a for a in argv):
            return int(p)
    return None


class Call(threading.Thread):
    """One API call in the background: its reply and when it came."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn = fn
        self.reply = None
        self.done_at = None

    def run(self):
        self.reply = self.fn()
        self.done_at = time.monotonic()


def timed_get(d, path):
    t = time.monotonic()
    r = d.api.get(path, timeout=10)
    return r, time.monotonic() - t


def prompt_gets(ds, what, hold=0.0):
    """GETs on every daemon of ds answer within PROMPT_S, for hold seconds."""
    end = time.monotonic() + hold
    while True:
        for d in ds:
            for path in ("/api/v1/vms", "/api/v1/hosts"):
                r, took = timed_get(d, path)
                assert r.status == 200, (path, r)
                assert took < PROMPT_S, "GET %s on h%d took %.2f s during the %s" % (
                    path, d.i, took, what)
        if time.monotonic() >= end:
            return
        time.sleep(0.1)


def stalled(d1, pid, what, fn, watch=None, hold=0.0):
    """Stop h1's member (pid: one or several), run fn in the background,
    check h1 (and the daemons in watch) answer GETs while fn waits, let
    etcd go on, return fn's reply and whether it was still waiting."""
    pids = pid if isinstance(pid, (list, tuple)) else [pid]
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        call = Call(fn)
        call.start()
        time.sleep(0.3)  # the request is in the daemon, its etcd call on the way
        prompt_gets([d1] + list(watch or []), what, hold)
        pending = call.done_at is None
    finally:
        for p in pids:
            os.kill(p, signal.SIGCONT)
    call.join(60)
    assert not call.is_alive(), "the %s never answered" % what
    return call.reply, pending


def test_etcd_stall(three):
    h, (d1, d2, d3) = three
    paths = khlib.guest_paths()
    if paths is None:
        pytest.skip("no test guest")
    kernel, initrd = paths[:2]
    step = Phase()
    form_cluster(h, (d1, d2, d3))
    pid = etcd_pid(d1)
    assert pid, "no etcd member found for h1"
    step("cluster of h1, h2, h3; h1's etcd member is pid %d" % pid)

    spec = {"name": "stall1", "vcpus": 1, "memory_mib": 64, "graphics": "none",
            "serial": True, "boot": {"kernel": kernel, "initrd": initrd}}
    r, pending = stalled(d1, pid, "create",
                         lambda: d1.api.post("/api/v1/vms", spec, timeout=30))
    assert r.status in (201, 503), r
    step("create during the stall: GETs answered at once (create still waiting: %s), "
         "then %d" % (pending, r.status))
    if r.status == 503:  # etcd said no (the member's stall seen as lost quorum): once more
        wait_for(lambda: d1.api.post("/api/v1/vms", spec, timeout=30).status == 201, 30,
                 "the create after the stall")
    # the claim is in etcd: every host lists the VM on h1
    for d in (d2, d3):
        wait_for(lambda d=d: any(v["name"] == "stall1" and v["host"] == "h1"
                                 for v in d.api.get("/api/v1/vms").json["vms"]), 30,
                 "h%d lists stall1 on h1" % d.i)

    # the start's may-run read waits for etcd; the loop does not
    wait_for(lambda: (lambda j: j.get("quorum") is True and j.get("fenced") is False)(
        d1.api.get("/api/v1/cluster").json), 30,
             "h1's lease alive again")
    r, pending = stalled(d1, pid, "start",
                         lambda: d1.api.post("/api/v1/vms/stall1/start", {"wait": 0},
                                             timeout=30))
    assert r.status in (200, 202, 503), r
    step("start during the stall: GETs answered at once (start still waiting: %s), then %d"
         % (pending, r.status))
    if r.status == 503:
        wait_for(lambda: d1.api.post("/api/v1/vms/stall1/start", {"wait": 0}).status
                 in (200, 202), 30, "the start after the stall")
    d1.api.wait_state("stall1", "running", timeout=60)

    def listed(d):
        return next(v for v in d.api.get("/api/v1/vms").json["vms"] if v["name"] == "stall1")

    def same_as_get(d):
        # the list's entry (its text cached per VM, instance/jsontext.c) is
        # the VM's current view: the one GET /vms/NAME builds, plus "host"
        one = dict(d.api.get("/api/v1/vms/stall1").json, host="h1")
        return listed(d) == one
    wait_for(lambda: same_as_get(d1), 10, "h1's list entry of stall1 as its GET (running)")
    d1.api.action("stall1", "kill", wait=30)
    assert listed(d1)["state"] == "stopped" and same_as_get(d1), listed(d1)
    assert d1.api.delete("/api/v1/vms/stall1").status in (200, 204)
    assert all(v["name"] != "stall1" for v in d1.api.get("/api/v1/vms").json["vms"])
    step("stall1 ran on h1 and is gone (h1's list followed each change)")


# a leave with every etcd member stopped: the etcd client's timeout (2 s)
# per endpoint and step, three endpoints, then a 503
LEAVE_BOUND_S = 20
HOLD_S = 3.0


def hold_new_member(d, hold, out):
    """Stop d's etcd member as soon as it exists, for hold seconds."""
    deadline = time.monotonic() + 15
    pid = None
    while pid is None and time.monotonic() < deadline:
        pid = etcd_pid(d)
        if pid is None:
            time.sleep(0.01)
    if pid is None:
        return
    os.kill(pid, signal.SIGSTOP)
    out["pid"] = pid
    out["stopped_at"] = time.monotonic()
    try:
        time.sleep(hold)
    finally:
        os.kill(pid, signal.SIGCONT)
        out["continued_at"] = time.monotonic()


def test_etcd_stall_membership(three, tmp_path):
    from test_import import make_ova, ovf_text  # noqa: E402 (tests/blackbox)
    from storagelib import QIMG  # noqa: E402

    h, (d1, d2, d3) = three
    step = Phase()
    addr = "%s:%d" % (h.addr(1), PORT)

    # create: the new etcd member is held stopped; the create waits for it
    held = {}
    holder = threading.Thread(target=hold_new_member, args=(d1, HOLD_S, held), daemon=True)
    holder.start()
    call = Call(lambda: d1.api.post("/api/v1/cluster", {"name": "stall"}, timeout=60))
    call.start()
    wait_for(lambda: "stopped_at" in held, 15, "h1's new etcd member stopped")
    prompt_gets([d1], "create", hold=HOLD_S - 1.0)
    assert call.done_at is None or call.done_at > held["stopped_at"] + HOLD_S - 1.0, \
        "the create ended while its etcd member was stopped"
    holder.join(30)
    call.join(60)
    assert not call.is_alive(), "the create never answered"
    assert call.reply.status == 201, call.reply
    step("create with its etcd stopped %.0f s: GETs at once, then 201" % HOLD_S)
    pid1 = etcd_pid(d1)

    # join h2: h1's admit reads and writes etcd (stopped); h2 waits for h1
    def join(d):
        tok = d1.api.post("/api/v1/cluster/tokens", {}).json["token"]
        return lambda: d.api.post("/api/v1/cluster/join", {"address": addr, "token": tok},
                                  timeout=120)
    r, pending = stalled(d1, pid1, "join", join(d2), watch=[d2], hold=1.0)
    assert r.status in (200, 503), r
    step("join of h2 with h1's etcd stopped: GETs at once on h1 and h2 (join waiting: %s), "
         "then %d" % (pending, r.status))
    if r.status == 503:
        wait_for(lambda: d1.api.get("/api/v1/cluster").json.get("quorum") is True, 30,
                 "h1's quorum back")
        r = join(d2)()
        assert r.status == 200, r
    r = join(d3)()
    assert r.status == 200, r
    for d in (d1, d2, d3):
        wait_for(lambda d=d: d.api.get("/api/v1/cluster").json.get("online") == 3, 60,
                 "3 members online seen from h%d" % d.i)
    step("h2 and h3 joined")

    def retry_after_503(r, fn, what):
        if r.status != 503:
            return r
        wait_for(lambda: d1.api.get("/api/v1/cluster").json.get("quorum") is True, 30,
                 "h1's quorum back")
        return fn()

    def quorum():
        wait_for(lambda: (lambda j: j.get("quorum") is True and j.get("fenced") is False)(
            d1.api.get("/api/v1/cluster").json), 30, "h1's lease alive")

    # a template clone (linked: its disk's volume, then the VM's claim)
    api = d1.api
    assert api.post("/api/v1/pools/default/volumes", {"name": "troot", "size": "16M"}).status \
        == 201
    kernel, initrd = (khlib.guest_paths() or (None, None))[:2]
    boot = {"kernel": kernel, "initrd": initrd} if kernel else None
    if boot is None:
        for n in ("vmlinuz", "initrd.img"):
            (tmp_path / n).write_bytes(b"\0" * 4096)
            os.chmod(tmp_path / n, 0o644)
        boot = {"kernel": str(tmp_path / "vmlinuz"), "initrd": str(tmp_path / "initrd.img")}
    spec = {"name": "tpl", "vcpus": 1, "memory_mib": 64, "graphics": "none", "serial": True,
            "boot": boot, "disks": [{"volume": "default/troot"}]}
    assert api.post("/api/v1/vms", spec, timeout=30).status == 201
    assert api.post("/api/v1/vms/tpl/template", {}, timeout=30).status == 200
    quorum()
    fn = lambda: api.post("/api/v1/vms", {"name": "clone1", "from_template": "tpl"},  # noqa
                          timeout=60)
    r, pending = stalled(d1, pid1, "template clone", fn)
    r = retry_after_503(r, fn, "clone")
    assert r.status == 201, r
    step("template clone with h1's etcd stopped: GETs at once (waiting: %s), then 201"
         % pending)

    # a libvirt import
    disk = tmp_path / "lv.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    xml = ("<domain type='kvm'><name>lvstall</name><memory unit='MiB'>64</memory>"
           "<vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os>"
           "<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>"
           "<source file='%s'/><target dev='vda'/></disk></devices></domain>" % disk)
    fn = lambda: api.request("POST", "/api/v1/vms/import-libvirt", raw=xml.encode(),  # noqa
                             headers={"Content-Type": "application/xml"}, timeout=60)
    quorum()
    r, pending = stalled(d1, pid1, "libvirt import", fn)
    r = retry_after_503(r, fn, "libvirt import")
    assert r.status == 201 and r.json["vm"]["name"] == "lvstall", r
    step("libvirt import with h1's etcd stopped: GETs at once (waiting: %s), then 201"
         % pending)

    # an OVA import (a task: its last step claims the name)
    vmdk = tmp_path / "d.vmdk"
    subprocess.run([QIMG, "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized",
                    str(vmdk), "16M"], check=True)
    ova = make_ova([("o.ovf", ovf_text(name="ovastall", mem=64)),
                    ("disk1.vmdk", vmdk.read_bytes())])
    fn = lambda: api.request("PUT", "/api/v1/vms/import?wait=60&name=ovastall", raw=ova,  # noqa
                             headers={"Content-Type": "application/octet-stream"},
                             timeout=120)
    quorum()
    r, pending = stalled(d1, pid1, "OVA import", fn)
    if r.status in (200, 202) and r.json.get("state") == "failed" and \
            r.json.get("error", {}).get("code") == "unavailable":
        r = fn()
    assert r.status in (200, 201, 202), r
    t = r.json
    deadline = time.monotonic() + 60
    while t.get("state") == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        t = api.get("/api/v1/tasks/" + t["id"]).json
    assert t.get("state") == "succeeded", t
    step("OVA import with h1's etcd stopped: GETs at once (waiting: %s), then done" % pending)

    # a backup restored as a new VM
    assert api.post("/api/v1/backup-stores", {"name": "bs", "path": str(tmp_path / "store")}) \
        .status == 201
    r = api.post("/api/v1/vms/clone1/backups", {"store": "bs", "wait": 60}, timeout=90)
    assert r.status in (200, 202) and r.json["state"] == "succeeded", r
    bid = r.json["result"]["id"]
    fn = lambda: api.post("/api/v1/backups/%s/restore" % bid,  # noqa
                          {"as": "restored1", "wait": 60}, timeout=90)
    quorum()
    r, pending = stalled(d1, pid1, "restore", fn)
    if r.status in (200, 202) and r.json.get("state") == "failed":
        r = fn()
    assert r.status in (200, 202) and r.json["state"] == "succeeded", r
    step("backup restore as a new VM with h1's etcd stopped: GETs at once (waiting: %s), "
         "then done" % pending)
    for d in (d2, d3):
        wait_for(lambda d=d: {"clone1", "lvstall", "ovastall", "restored1"} <=
                 {v["name"] for v in d.api.get("/api/v1/vms").json["vms"] if v["host"] == "h1"},
                 30, "h%d lists the new VMs on h1" % d.i)
    step("h2 and h3 list clone1, lvstall, ovastall, restored1 on h1")

    # leave with every etcd member stopped: a clear 503, bounded; then done
    pids = [etcd_pid(d) for d in (d1, d2, d3)]
    assert all(pids), pids
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        call = Call(lambda: d3.api.post("/api/v1/cluster/leave", {}, timeout=60))
        call.start()
        time.sleep(0.3)
        prompt_gets([d3], "leave", hold=1.0)
        call.join(LEAVE_BOUND_S)
        assert not call.is_alive(), "the leave did not end within %d s" % LEAVE_BOUND_S
        took = call.done_at - t0
        assert call.reply.status == 503, call.reply
    finally:
        for p in pids:
            os.kill(p, signal.SIGCONT)
    step("leave of h3 without etcd: GETs at once, 503 after %.1f s (%s)"
         % (took, call.reply.json["error"]["message"][:80]))
    wait_for(lambda: d3.api.post("/api/v1/cluster/leave", {}, timeout=60).status == 200, 60,
             "the leave of h3 once etcd is back")
    assert d3.api.get("/api/v1/cluster").json.get("enabled") is False
    wait_for(lambda: "h3" not in {x["name"] for x in d1.api.get("/api/v1/hosts").json["hosts"]},
             30, "h1 no longer lists h3")
    step("h3 left once etcd ran again")
