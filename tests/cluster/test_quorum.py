"""Quorum and fencing end to end: three hosts as in test_membership.py (one
kvmhostd per network namespace, its own etcd member, a 5 s member lease),
a running VM on h1 and on h2.

- one etcd member stopped (SIGSTOP: its connections hang, the worst case)
  changes nothing: writes work from every host, that one included, and no
  host goes offline or fenced past a lease TTL;
- two of three members stopped (quorum lost): both VMs keep running (same
  QEMU pids), GET /api/v1/vms and /hosts are served on every host,
  cluster-wide writes (VM create, join token) fail with 503 and a message
  naming the quorum, a start is refused; when the members come back, writes
  work again everywhere and the VMs never stopped;
- a partitioned minority host (h3 cut off) fences itself: it starts nothing
  (503 naming its lease) while its QEMU keeps running, the majority goes on;
  healed, it starts again.

Run: KH_BUILD_DIR=$PWD/build-asan /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
     tests/cluster/test_quorum.py
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "blackbox"))

import khlib  # noqa: E402
from test_membership import (PORT, TTL, Phase, cli_json, pytest_runtest_makereport,  # noqa: E402,F401
                             states, three, wait_for)
from test_vms import listing, spec  # noqa: E402


def etcd_pid(d):
    return cli_json(d, "cluster", "status")["etcd"]["pid"]


def status(d):
    r = d.api.get("/api/v1/cluster", timeout=15)
    assert r.status == 200, r
    return r.json


def create_ok(d, name, boot):
    r = d.api.post("/api/v1/vms", spec(name, boot), timeout=20)
    assert r.status == 201, (d.i, r)


def test_quorum(three):
    h, ds = three
    d1, d2, d3 = ds
    step = Phase()
    paths = khlib.guest_paths()
    assert paths, "no test guest"
    boot = paths[:2]

    cli_json(d1, "cluster", "create", "--name", "lab")
    for d in (d2, d3):
        tok = cli_json(d1, "cluster", "token")["token"]
        assert cli_json(d, "cluster", "join", "%s:%d" % (h.addr(1), PORT), "--token", tok)["enabled"]
    for d in ds:
        wait_for(lambda d=d: status(d)["online"] == 3, 20, "3 online from h%d" % d.i)
    create_ok(d1, "q1", boot)
    create_ok(d2, "q2", boot)
    create_ok(d3, "q3", boot)
    for d, name in ((d1, "q1"), (d2, "q2"), (d3, "q3")):
        r = d.api.post("/api/v1/vms/%s/start" % name, {"wait": 60}, timeout=90)
        assert r.status == 200, r
    pids = {n: d.api.get("/api/v1/vms/" + n).json["pid"]
            for d, n in ((d1, "q1"), (d2, "q2"), (d3, "q3"))}
    assert all(pids.values()), pids
    step("3 hosts, q1..q3 running on h1..h3")

    # ---- (b) one etcd member down changes nothing ----
    pid3 = etcd_pid(d3)
    os.kill(pid3, signal.SIGSTOP)
    try:
        for d in ds:
            create_ok(d, "b%d" % d.i, boot)
        assert cli_json(d3, "cluster", "token")["token"]
        # past a whole lease TTL: h3 renewed through another member
        time.sleep(TTL + 1)
        for d in ds:
            st = status(d)
            assert st["quorum"] is True and st["fenced"] is False, (d.i, st)
            assert set(states(d).values()) == {"online"}, (d.i, states(d))
        r = d3.api.post("/api/v1/vms/b3/start", {"wait": 60}, timeout=90)
        assert r.status == 200, r
        assert d3.api.post("/api/v1/vms/b3/kill", {"wait": 30}, timeout=60).status == 200
        for d in ds:
            assert d.api.delete("/api/v1/vms/b%d" % d.i, timeout=20).status == 204
        step("h3's etcd stopped: creates, a start and deletes work on every host")
    finally:
        os.kill(pid3, signal.SIGCONT)
    wait_for(lambda: status(d3)["quorum"], 20, "h3 quorum after SIGCONT")

    # ---- (a) quorum lost: 2 of 3 members stopped ----
    stopped = [etcd_pid(d2), etcd_pid(d3)]
    for p in stopped:
        os.kill(p, signal.SIGSTOP)
    try:
        # reads never wait for etcd, also before a host has noticed the loss
        slowest = 0.0
        end = time.monotonic() + 20
        while time.monotonic() < end and any(status(d)["quorum"] for d in ds):
            for d in ds:
                t0 = time.monotonic()
                listing(d)
                slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.1)
        assert not any(status(d)["quorum"] for d in ds), "quorum still seen after 20 s"
        assert slowest < 1.0, ("a read waited for etcd", slowest)
        step("h2 and h3's etcd stopped: every host sees no quorum (slowest read %.2f s)" % slowest)
        for d in ds:
            t0 = time.monotonic()
            vms = listing(d)
            assert {"q1", "q2", "q3"} <= set(vms), (d.i, sorted(vms))
            assert vms["q1"]["host"] == "h1" and vms["q3"]["host"] == "h3"
            r = d.api.get("/api/v1/hosts", timeout=10)
            assert r.status == 200 and {x["name"] for x in r.json["hosts"]} == {"h1", "h2", "h3"}
            took = time.monotonic() - t0
            assert took < 3, ("reads must not wait for etcd", d.i, took)
            r = d.api.post("/api/v1/vms", spec("w%d" % d.i, boot), timeout=20)
            assert r.status == 503, (d.i, r)
            assert "quorum" in r.json["error"]["message"], r.json
            r = d.api.post("/api/v1/cluster/tokens", {}, timeout=20)
            assert r.status == 503 and "quorum" in r.json["error"]["message"], (d.i, r)
        p = khlib.cli(d2, "vm", "create", "w2", "--memory", "64")
        assert p.returncode != 0 and "quorum" in p.stderr, (p.returncode, p.stderr)
        step("reads served on every host; creates and tokens 503 naming the quorum")
        # past the lease: fenced, starts refused, VMs still running
        for d in ds:
            wait_for(lambda d=d: status(d)["fenced"], TTL + 5, "h%d fenced" % d.i)
        r = d1.api.post("/api/v1/vms/q1/kill", {"wait": 30}, timeout=60)
        assert r.status == 200, r
        r = d1.api.post("/api/v1/vms/q1/start", {"wait": 10}, timeout=30)
        assert r.status == 503 and "lease" in r.json["error"]["message"], r
        for n in ("q2", "q3"):
            assert khlib.pid_alive(pids[n]), n
        assert d2.api.get("/api/v1/vms/q2").json["state"] == "running"
        step("fenced: q2, q3 still run; a start on h1 is refused (503)")
    finally:
        for p in stopped:
            os.kill(p, signal.SIGCONT)
    for d in ds:
        wait_for(lambda d=d: status(d)["quorum"] and not status(d)["fenced"], 30,
                 "h%d has quorum again" % d.i)
    for d in ds:
        wait_for(lambda d=d: d.api.post("/api/v1/vms", spec("w%d" % d.i, boot),
                                        timeout=20).status == 201, 15, "h%d creates" % d.i)
    r = d1.api.post("/api/v1/vms/q1/start", {"wait": 60}, timeout=90)
    assert r.status == 200, r
    for n in ("q2", "q3"):
        assert khlib.pid_alive(pids[n]), n
    wait_for(lambda: set(states(d1).values()) == {"online"}, 20, "all online again")
    step("quorum back: writes work on every host; q2, q3 never stopped")

    # ---- (c) a partitioned minority host fences itself ----
    h.partition(3)
    try:
        wait_for(lambda: status(d3)["fenced"], TTL + 5, "h3 fenced")
        r = d3.api.post("/api/v1/vms/q3/kill", {"wait": 30}, timeout=60)
        assert r.status == 200, r
        r = d3.api.post("/api/v1/vms/q3/start", {"wait": 10}, timeout=30)
        assert r.status == 503 and "lease" in r.json["error"]["message"], r
        assert d3.api.get("/api/v1/vms/q3").json["state"] == "stopped"
        r = d3.api.post("/api/v1/vms", spec("w9", boot), timeout=20)
        assert r.status == 503, r
        assert listing(d3)["q1"]["host"] == "h1"  # reads from its cache
        # the majority goes on: h3 offline for it, writes work
        wait_for(lambda: states(d1).get("h3") == "offline", TTL + 15, "h3 offline for h1")
        create_ok(d2, "m2", boot)
        step("h3 cut off: fenced, starts nothing (503), reads work; h1, h2 write")
    finally:
        h.heal(3)
    wait_for(lambda: status(d3)["quorum"] and not status(d3)["fenced"], 30, "h3 back")
    r = d3.api.post("/api/v1/vms/q3/start", {"wait": 60}, timeout=90)
    assert r.status == 200, r
    wait_for(lambda: "m2" in listing(d3), 15, "h3 sees m2, made while it was cut off")
    step("healed: h3 starts q3 again and sees what changed meanwhile")
    for d, n in ((d1, "q1"), (d2, "q2"), (d3, "q3")):
        assert d.api.post("/api/v1/vms/%s/kill" % n, {"wait": 30}, timeout=60).status == 200
