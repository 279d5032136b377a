"""VMs in a cluster end to end: three hosts as in test_membership.py (one
kvmhostd per network namespace, its own etcd member). A join token whose CA
pin is wrong is refused; VMs created on h1 and h3 are listed from h2 with
their hosts; a name is unique cluster-wide; the h3 VM is started from h1
(forwarded over mutual TLS) and its QEMU runs on h3 (h3's network namespace
and cgroup parent); a host-to-host call without a client certificate is
refused; h1 cut off cannot start a VM (no live claim) while h2 still manages
its own. Every wait is bounded; QEMUs are killed at the end.

Run: KH_BUILD_DIR=$PWD/build /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
     tests/cluster/test_vms.py
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "blackbox"))

import khlib  # noqa: E402
from test_membership import (PORT, TTL, Phase, cli_json, pytest_runtest_makereport,  # noqa: E402,F401
                             states, three, wait_for)


def spec(name, boot):
    return {"name": name, "vcpus": 1, "memory_mib": 128, "serial": True, "graphics": "none",
            "boot": {"kernel": boot[0], "initrd": boot[1], "cmdline": khlib.GUEST_CMDLINE}}


def listing(d, query=""):
    r = d.api.get("/api/v1/vms" + query, timeout=10)
    assert r.status == 200, r
    return {v["name"]: v for v in r.json["vms"]}


def netns(pid):
    return os.readlink("/proc/%d/ns/net" % pid)


def test_vms(three):
    h, (d1, d2, d3) = three
    step = Phase()
    paths = khlib.guest_paths()
    assert paths, "no test guest"
    boot = paths[:2]

    # a single host lists its VMs with its own name as host
    r = d1.api.post("/api/v1/vms", spec("solo", boot))
    assert r.status == 201, r
    assert listing(d1)["solo"]["host"] == "h1"
    assert d1.api.get("/api/v1/vms/solo").json["host"] == "h1"
    assert d1.api.delete("/api/v1/vms/solo").status == 204

    cli_json(d1, "cluster", "create", "--name", "lab")
    ca = d1.api.get("/api/v1/cluster/ca").json
    assert ca["cluster_url"] == "https://%s:%d" % (h.addr(1), PORT + 1)
    # a token whose CA pin is not the cluster's is refused before anything is sent
    tok = cli_json(d1, "cluster", "token")["token"]
    rnd, pin, api_pin = tok.split(".")  # the API's key pin: h1 speaks TLS
    bad = rnd + "." + ("0" if pin[0] != "0" else "1") + pin[1:] + "." + api_pin
    p = khlib.cli(d3, "cluster", "join", "%s:%d" % (h.addr(1), PORT), "--token", bad)
    assert p.returncode != 0 and "does not match the CA pinned" in p.stderr, p.stderr
    assert cli_json(d3, "cluster", "status")["enabled"] is False
    step("create; a join token with a wrong CA pin refused")
    for d in (d2, d3):
        tok = cli_json(d1, "cluster", "token")["token"]
        st = cli_json(d, "cluster", "join", "%s:%d" % (h.addr(1), PORT), "--token", tok)
        assert st["enabled"]
    for d in (d1, d2, d3):
        wait_for(lambda d=d: cli_json(d, "cluster", "status")["online"] == 3, 20, "3 online")
    hosts = {x["name"]: x for x in cli_json(d2, "host", "list")["hosts"]}
    assert all(len(x["cert_fingerprint"] or "") == 64 for x in hosts.values()), hosts
    assert hosts["h3"]["cluster_url"] == "https://%s:%d" % (h.addr(3), PORT + 1)
    step("h2, h3 joined (host certificates issued)")

    for d, name in ((d1, "v1"), (d3, "v3"), (d2, "v2")):
        r = d.api.post("/api/v1/vms", spec(name, boot))
        assert r.status == 201, r
    wait_for(lambda: {"v1", "v2", "v3"} <= set(listing(d2)), 10, "h2 lists every VM")
    vms = listing(d2)
    assert (vms["v1"]["host"], vms["v2"]["host"], vms["v3"]["host"]) == ("h1", "h2", "h3")
    assert set(listing(d2, "?host=h3")) == {"v3"}
    assert set(listing(d2, "?host=h2")) == {"v2"}
    step("v1 on h1, v2 on h2, v3 on h3: h2 lists all with hosts")

    r = d2.api.post("/api/v1/vms", spec("v1", boot))
    assert r.status == 409 and "h1" in r.json["error"]["message"], r
    step("duplicate name refused cluster-wide (409 naming h1)")

    # start v3 from h1: forwarded to h3, its QEMU runs there
    r = d1.api.post("/api/v1/vms/v3/start", {"wait": 60}, timeout=90)
    assert r.status == 200, r
    vm = d3.api.get("/api/v1/vms/v3").json
    assert vm["state"] == "running" and vm["pid"], vm
    assert netns(vm["pid"]) == netns(d3.pid) != netns(d1.pid)
    with open("/proc/%d/cgroup" % vm["pid"]) as f:
        assert "kvmhost-h3" in f.read()
    shown = d1.api.get("/api/v1/vms/v3").json  # forwarded too
    assert shown["host"] == "h3" and shown["pid"] == vm["pid"], shown
    p = khlib.cli(d1, "vm", "list")
    assert p.returncode == 0 and "HOST" in p.stdout and "h3" in p.stdout, p.stdout
    step("v3 started from h1: runs on h3 (netns, cgroup)")

    # the owner's audit names who asked on which host, not just "a peer"
    audit = d3.api.get("/api/v1/audit?path=/api/v1/vms/v3/start").json["entries"]
    assert [e["principal"] for e in audit] == ["root@local via h1"], audit
    step("h3's audit: the forwarded start by root@local via h1")

    # host-to-host listener: no client certificate, no entry
    url = "https://%s:%d/api/v1/vms" % (h.addr(3), PORT + 1)
    p = h.run(1, ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", url], timeout=10)
    assert p.stdout.strip() in ("401", "000"), (p.stdout, p.stderr)
    tls = os.path.join(d1.state_dir, "cluster-tls")
    p = h.run(1, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                  tls + "/ca.pem", "--cert", tls + "/host.pem", "--key", tls + "/host.key", url],
              timeout=10)
    assert p.stdout.strip() == "200", (p.stdout, p.stderr)
    step("host-to-host: refused without a client certificate, 200 with one")

    # partition h1: no live claim there; h2 still manages its own VM
    h.partition(1)
    try:
        wait_for(lambda: cli_json(d1, "cluster", "status")["fenced"], 20, "h1 fenced")
        r = d1.api.post("/api/v1/vms/v1/start", {"wait": 10}, timeout=30)
        assert r.status == 503 and "lease" in r.json["error"]["message"], r
        # h2 may have renewed through h1's etcd member: it can be fenced for a
        # moment too, until its keeper moves to a reachable member
        wait_for(lambda: states(d2).get("h1") == "offline", TTL + 15, "h1 offline for h2")
        wait_for(lambda: not cli_json(d2, "cluster", "status")["fenced"], 20, "h2 not fenced")
        r = d2.api.post("/api/v1/vms/v2/start", {"wait": 60}, timeout=90)
        assert r.status == 200, r
        assert d2.api.get("/api/v1/vms/v2").json["state"] == "running"
        r = d2.api.post("/api/v1/vms/v2/kill", {"wait": 30}, timeout=60)
        assert r.status == 200, r
        step("h1 cut off: start refused (503); h2 starts and kills v2")
    finally:
        h.heal(1)
    wait_for(lambda: cli_json(d1, "cluster", "status")["quorum"], 30, "h1 quorum again")
    r = d1.api.post("/api/v1/vms/v3/kill", {"wait": 30}, timeout=60)  # forwarded
    assert r.status == 200, r
    assert d3.api.get("/api/v1/vms/v3").json["state"] == "stopped"
    r = d1.api.delete("/api/v1/vms/v3")  # forwarded delete
    assert r.status == 204, r
    wait_for(lambda: "v3" not in listing(d2), 10, "v3 gone from h2's list")
    r = d2.api.post("/api/v1/vms", spec("v3", boot))  # the name is free again
    assert r.status == 201, r
    step("healed: kill + delete forwarded, the name is free again")
