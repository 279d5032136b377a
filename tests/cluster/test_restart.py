"""The cluster view rebuilt from etcd at a known revision after a restart:
three hosts as in test_membership.py. h2's daemon is stopped; meanwhile h1
creates a VM and deletes another, h3 creates one. h2 starts again: it loads
its SQLite mirror (at revision R), watches from R+1 (its log says so: no
re-listing) and lists exactly what changed while it was down. Then h2,
cut off from the others, is restarted once more: without etcd quorum it
still lists every VM of the cluster with its host, from SQLite. No guest
boots.

Run: KH_BUILD_DIR=$PWD/build-asan /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
     tests/cluster/test_restart.py
"""

import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "blackbox"))

import khlib  # noqa: E402
from test_membership import (PORT, Phase, cli_json, pytest_runtest_makereport,  # noqa: E402,F401
                             states, three, wait_for)
from test_vms import listing, spec  # noqa: E402


def log_text(d):
    with open(d.log_path, errors="replace") as f:
        return f.read()


def test_restart(three):
    h, ds = three
    d1, d2, d3 = ds
    step = Phase()
    boot = khlib.guest_paths()[:2]
    cli_json(d1, "cluster", "create", "--name", "lab")
    for d in (d2, d3):
        tok = cli_json(d1, "cluster", "token")["token"]
        assert cli_json(d, "cluster", "join", "%s:%d" % (h.addr(1), PORT), "--token", tok)["enabled"]
    for d in ds:
        wait_for(lambda d=d: cli_json(d, "cluster", "status")["online"] == 3, 20, "3 online")
    assert d1.api.post("/api/v1/vms", spec("r1", boot)).status == 201
    wait_for(lambda: "r1" in listing(d2), 10, "h2 lists r1")
    step("3 hosts; r1 on h1 seen by h2")

    assert d2.stop() == 0
    assert d1.api.post("/api/v1/vms", spec("r2", boot)).status == 201
    assert d1.api.delete("/api/v1/vms/r1").status == 204
    assert d3.api.post("/api/v1/vms", spec("r3", boot)).status == 201
    wait_for(lambda: set(listing(d1)) == {"r2", "r3"}, 10, "h1 lists r2, r3")
    step("h2 down: r2 created and r1 deleted on h1, r3 created on h3")

    d2.start()
    wait_for(lambda: set(listing(d2)) == {"r2", "r3"}, 20, "h2 lists r2, r3 only")
    vms = listing(d2)
    assert vms["r2"]["host"] == "h1" and vms["r3"]["host"] == "h3", vms
    text = log_text(d2).split("===== run ")[-1]  # this run's log
    m = re.search(r"event=cluster.mirror prefix=/kvmhost/vms/ keys=\d+ revision=(\d+)", text)
    assert m, "h2 did not load its mirror:\n" + text[-3000:]
    rev = int(m.group(1))
    assert ("event=cluster.watch prefix=/kvmhost/vms/ from_revision=%d" % (rev + 1)) in text, \
        text[-3000:]
    step("h2 restarted: mirror at revision %d, watched from %d, sees the changes" % (rev, rev + 1))

    # a restart without quorum still serves the cluster view from SQLite
    assert d2.stop() == 0
    h.partition(2)
    try:
        d2.start()
        vms = listing(d2)
        assert set(vms) == {"r2", "r3"} and vms["r3"]["host"] == "h3", vms
        r = d2.api.get("/api/v1/hosts", timeout=10)
        assert r.status == 200 and {x["name"] for x in r.json["hosts"]} == {"h1", "h2", "h3"}, r
        st = cli_json(d2, "cluster", "status")
        assert st["quorum"] is False, st
        r = d2.api.post("/api/v1/vms", spec("r9", boot), timeout=20)
        assert r.status == 503, r
        step("h2 restarted while cut off: lists r2, r3 and 3 hosts from SQLite; writes 503")
    finally:
        h.heal(2)
    wait_for(lambda: cli_json(d2, "cluster", "status")["quorum"], 30, "h2 has quorum again")
    assert d2.api.post("/api/v1/vms", spec("r9", boot), timeout=20).status == 201
    wait_for(lambda: "r9" in listing(d1), 10, "h1 lists r9")
    step("healed: h2 writes again")
