"""An etcd stall does not stall the daemon: three hosts (as
test_membership.py), a cluster over them; h1's own etcd member is stopped
(SIGSTOP: its port still accepts connections, nothing answers, the way a
member stuck on a slow disk or a GC pause looks); a `vm create` on h1 then
waits for its claim (an etcd txn) and a `vm start` for its may-run read,
and meanwhile GET /api/v1/vms and GET /api/v1/hosts on h1 answer at once
(before, the claim blocked the daemon's loop up to the etcd timeout). Once
the member runs again (SIGCONT) both calls end: 201 and 200 (or a clear
503 if etcd said so), never a hang.

Run: KH_BUILD_DIR=$PWD/build-asan /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
     tests/cluster/test_etcd_stall.py
"""

import os
import signal
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "blackbox"))
sys.path.insert(0, os.path.dirname(__file__))

import khlib  # noqa: E402
from test_membership import (Phase, pytest_runtest_makereport,  # noqa: E402,F401
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


def stalled(d1, pid, what, fn):
    """Stop h1's member, run fn in the background, check h1 answers GETs
    while fn waits, let etcd go on, return fn's reply."""
    os.kill(pid, signal.SIGSTOP)
    try:
        call = Call(fn)
        call.start()
        time.sleep(0.3)  # the request is in the daemon, its etcd call on the way
        for path in ("/api/v1/vms", "/api/v1/hosts", "/api/v1/vms"):
            r, took = timed_get(d1, path)
            assert r.status == 200, (path, r)
            assert took < PROMPT_S, "GET %s took %.2f s during the %s" % (path, took, what)
        pending = call.done_at is None
    finally:
        os.kill(pid, signal.SIGCONT)
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
    d1.api.action("stall1", "kill", wait=30)
    assert d1.api.delete("/api/v1/vms/stall1").status in (200, 204)
    step("stall1 ran on h1 and is gone")
