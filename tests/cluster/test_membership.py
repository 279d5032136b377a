"""Cluster membership end to end: three hosts (network namespaces from
hosts.py), one kvmhostd per host (own state dir, socket, TCP listener on
its namespace address, instance name; its own etcd member, supervised), a
5 s member lease. cluster create on h1, token + join on h2 and h3, status
and host list everywhere, kill -9 of h2's daemon (offline after the TTL,
online after a restart), one etcd member stopped (writes still work), h1
cut off (its writes fail with 503, its reads work), healed. Every wait is
bounded; every process and namespace is removed at the end.

Run: KH_BUILD_DIR=$PWD/build /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
     tests/cluster/test_membership.py
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "blackbox"))

import hosts as hostslib  # noqa: E402
import khlib  # noqa: E402

TTL = 5
PORT = 8443


class HostDaemon(khlib.Daemon):
    """kvmhostd inside host i's namespace (nsenter execs it: the pid is the
    daemon's)."""

    def __init__(self, hosts, i):
        # the defaults a user gets: the client API speaks TLS with the
        # daemon's self-signed certificate (no --no-tls); joins pin it
        # through the token, host-to-host calls use the cluster CA's mutual
        # TLS listener
        super().__init__(listen="%s:%d" % (hosts.addr(i), PORT),
                         extra_args=["--instance", "h%d" % i, "--cluster-ttl", str(TTL)])
        self.hosts = hosts
        self.i = i

    def argv(self):
        return self.hosts.nsenter(self.i) + super().argv()


def wait_for(fn, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError("%s not met in %ss (last: %r)" % (what, timeout, last))


def cli_json(d, *args, ok=True):
    p = khlib.cli(d, *args, json_out=True)
    if ok:
        assert p.returncode == 0, (args, p.returncode, p.stderr)
        return json.loads(p.stdout) if p.stdout.strip() else None
    return p


def states(d):
    r = d.api.get("/api/v1/hosts", timeout=10)
    assert r.status == 200, r
    return {h["name"]: h["state"] for h in r.json["hosts"]}


class Phase:
    def __init__(self):
        self.t = time.monotonic()

    def __call__(self, what):
        now = time.monotonic()
        print("  %-52s %5.1f s" % (what, now - self.t))
        self.t = now


@pytest.fixture
def three(request):
    if not os.access(hostslib.ETCD, os.X_OK):
        pytest.skip("etcd is not installed (apt-get install etcd-server etcd-client)")
    h = hostslib.Hosts(3)
    made = []
    try:
        for i in (1, 2, 3):
            d = HostDaemon(h, i)
            made.append(d)
            d.start()
        yield h, made
    finally:
        failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
        try:
            khlib.finish_daemons(made, failed)
        finally:
            h.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def test_membership(three):
    h, (d1, d2, d3) = three
    step = Phase()
    # a single host before: no cluster, host list shows itself
    st = cli_json(d1, "cluster", "status")
    assert st["enabled"] is False
    assert [x["state"] for x in cli_json(d1, "host", "list")["hosts"]] == ["online"]

    st = cli_json(d1, "cluster", "create", "--name", "lab")
    assert st["enabled"] and st["name"] == "lab" and st["etcd"]["mode"] == "local"
    step("cluster create on h1")

    # the token pins the cluster CA and h1's API key (self-signed): a token
    # whose API pin is not h1's key is refused before anything is sent
    tok = cli_json(d1, "cluster", "token")
    parts = tok["token"].split(".")
    assert len(parts) == 3 and all(len(x) == 64 for x in parts[1:]), tok
    bad = ".".join(parts[:2] + ["%064x" % (int(parts[2], 16) ^ 1)])
    p = cli_json(d2, "cluster", "join", "%s:%d" % (h.addr(1), PORT), "--token", bad, ok=False)
    assert p.returncode != 0 and "pinned in the join token" in p.stderr, p.stderr
    assert cli_json(d2, "cluster", "status")["enabled"] is False
    step("a token with a wrong API pin: refused")

    for d in (d2, d3):
        tok = cli_json(d1, "cluster", "token")
        assert tok["address"] == "https://%s:%d" % (h.addr(1), PORT)
        st = cli_json(d, "cluster", "join", "%s:%d" % (h.addr(1), PORT), "--token", tok["token"])
        assert st["enabled"] and st["name"] == "lab"
        # a token is good once
        r = d1.api.post("/api/v1/cluster/members", {"host_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12,
                                                    "name": "x", "peer_url": "https://192.0.2.9:2380"},
                        headers={"Authorization": "KH-Join " + tok["token"]})
        assert r.status == 401, r
    step("token + join on h2 and h3")

    for d in (d1, d2, d3):
        wait_for(lambda d=d: cli_json(d, "cluster", "status")["online"] == 3, 20,
                 "3 members online seen from h%d" % d.i)
        st = cli_json(d, "cluster", "status")
        assert st["quorum"] is True and st["fenced"] is False
        # etcd's member list is read on the loop without blocking it: as last read
        wait_for(lambda d=d: len(cli_json(d, "cluster", "status")["etcd"].get("members", [])) == 3,
                 10, "3 etcd members seen from h%d" % d.i)
        assert sum(1 for m in st["members"] if m["self"]) == 1
    ids = {cli_json(d, "cluster", "status")["host_id"] for d in (d1, d2, d3)}
    assert len(ids) == 3
    step("status on each: 3 members online")

    # etcd speaks mutual TLS from the cluster CA: no client certificate, no entry
    assert all(u.startswith("https://")
               for u in cli_json(d1, "cluster", "status")["etcd"]["endpoints"].split(","))
    etcd_url = "https://%s:2379/v3/kv/range" % h.addr(1)
    tls3 = os.path.join(d3.state_dir, "cluster-tls")
    curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-d",
            '{"key": "L2t2bWhvc3QvY2x1c3Rlcg=="}', "--cacert", tls3 + "/ca.pem", etcd_url]
    assert h.run(3, curl, timeout=10).stdout.strip() == "000"
    assert h.run(3, curl + ["--cert", tls3 + "/host.pem", "--key", tls3 + "/host.key"],
                 timeout=10).stdout.strip() == "200"
    step("etcd: refused without a client certificate, 200 with h3's")

    p = khlib.cli(d3, "host", "list")
    assert p.returncode == 0, p.stderr
    for name in ("h1", "h2", "h3"):
        assert name in p.stdout
    hl = cli_json(d3, "host", "list")["hosts"]
    assert {x["name"] for x in hl} == {"h1", "h2", "h3"}
    assert all(x["state"] == "online" and x["capacity"]["cpus"] >= 1 for x in hl)
    assert all(x["api_url"] == "https://%s:%d" % (x["address"], PORT) for x in hl)
    step("host list from h3")

    # the CLI against another host's default TLS API: its own certificate
    # as --cacert, the API token; without --cacert it is refused
    cli = [khlib.CLI_BIN, "--url", "https://%s:%d" % (h.addr(1), PORT), "--token-file",
           os.path.join(d1.state_dir, "api-token"), "--json"]
    p = h.run(3, cli + ["--cacert", d1.tls_cert, "host", "list"], timeout=30)
    assert p.returncode == 0, p.stderr
    assert {x["name"] for x in json.loads(p.stdout)["hosts"]} == {"h1", "h2", "h3"}
    p = h.run(3, cli + ["host", "list"], timeout=30)
    assert p.returncode != 0 and "certificate" in p.stderr.lower(), (p.returncode, p.stderr)
    step("CLI over https with --cacert from h3; refused without")

    # kill -9 h2's daemon (its etcd dies with it): offline after the TTL
    d2.kill9()
    t0 = time.monotonic()
    wait_for(lambda: states(d1).get("h2") == "offline", TTL + 10, "h2 offline")
    took = time.monotonic() - t0
    assert took >= TTL - 3, took  # by the lease, not at once
    assert states(d1)["h1"] == "online" and states(d3)["h3"] == "online"
    step("kill -9 h2: offline after %.1f s (TTL %d s)" % (took, TTL))
    d2.start()
    wait_for(lambda: states(d1).get("h2") == "online", 30, "h2 online again")
    wait_for(lambda: cli_json(d2, "cluster", "status")["quorum"], 30, "h2 has quorum")
    step("h2 restarted: online again")

    # stop one etcd member (h3's): the other two keep quorum, writes work
    pid3 = cli_json(d3, "cluster", "status")["etcd"]["pid"]
    os.kill(pid3, signal.SIGSTOP)
    try:
        tok = cli_json(d1, "cluster", "token")
        assert tok["token"]
        tok = cli_json(d2, "cluster", "token")
        assert tok["token"]
    finally:
        os.kill(pid3, signal.SIGCONT)
    step("h3's etcd stopped: writes from h1 and h2 work")

    # partition h1: its writes fail with 503, its reads work; heal
    h.partition(1)
    try:
        wait_for(lambda: not cli_json(d1, "cluster", "status")["quorum"], 20, "h1 loses quorum")
        step("h1 cut off: it sees it has no quorum")
        r = d1.api.post("/api/v1/cluster/tokens", {}, timeout=20)
        assert r.status == 503, r
        assert "quorum" in r.json["error"]["message"]
        p = cli_json(d1, "cluster", "token", ok=False)
        assert p.returncode != 0 and "quorum" in p.stderr
        assert d1.api.get("/api/v1/vms").status == 200
        assert d1.api.get("/api/v1/hosts").status == 200
        assert d1.api.get("/api/v1/cluster").status == 200
        step("h1: writes 503, reads 200")
        # the majority side goes on
        wait_for(lambda: states(d2).get("h1") == "offline", TTL + 15, "h1 offline for h2")
        assert cli_json(d2, "cluster", "token")["token"]
        step("h2 sees h1 offline and writes")
    finally:
        h.heal(1)
    wait_for(lambda: cli_json(d1, "cluster", "status")["quorum"], 30, "h1 quorum again")
    wait_for(lambda: states(d2).get("h1") == "online", 30, "h1 online again for h2")
    step("healed: h1 has quorum and is online")

    # remove a host, and leave: h3 leaves, h2 is removed by h1
    # (etcd refuses member changes until a returning member counts again: 503, retry)
    st = wait_for(lambda: json.loads(khlib.cli(d3, "--json", "cluster", "leave").stdout or "{}"),
                  20, "h3 leaves")
    assert st["enabled"] is False
    wait_for(lambda: "h3" not in states(d1), 20, "h3 gone from h1's view")
    # h2's host certificate, kept to try it after the removal
    tls = os.path.join(h.dir, "h2-tls")
    shutil.copytree(os.path.join(d2.state_dir, "cluster-tls"), tls)
    url = "https://%s:%d/api/v1/vms" % (h.addr(1), PORT + 1)

    def with_h2_cert():
        p = h.run(2, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                      tls + "/ca.pem", "--cert", tls + "/host.pem", "--key", tls + "/host.key",
                      url], timeout=10)
        return p.stdout.strip()

    # ... and h1's etcd, as a client (etcd's --client-crl-file)
    etcd_h1 = "https://%s:2379/v3/kv/range" % h.addr(1)

    def h2_cert_to_etcd():
        p = h.run(2, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                      "-d", '{"key": "L2t2bWhvc3QvY2x1c3Rlcg=="}', "--cacert", tls + "/ca.pem",
                      "--cert", tls + "/host.pem", "--key", tls + "/host.key", etcd_h1],
                  timeout=10)
        return p.stdout.strip()

    assert with_h2_cert() == "200"
    assert h2_cert_to_etcd() == "200"
    crl = os.path.join(d1.state_dir, "cluster-tls", "crl.pem")
    assert os.path.exists(crl) and ("crl=" + crl) in d1.log()
    wait_for(lambda: khlib.cli(d1, "cluster", "remove", "h2").returncode == 0, 20, "h2 removed")
    wait_for(lambda: set(states(d1)) == {"h1"}, 20, "only h1 left")
    # the removed host, still running, learns it at its next record write
    # and is a single host again; its record never comes back
    wait_for(lambda: cli_json(d2, "cluster", "status")["enabled"] is False, 20,
             "h2 knows it was removed")
    time.sleep(2)
    assert set(states(d1)) == {"h1"}, states(d1)
    # its certificate (signed by the cluster CA) is refused from now on
    wait_for(lambda: with_h2_cert() == "403", 10, "h2's certificate refused by h1")
    # h1's etcd too (the CRL now lists its serial; etcd re-reads it at each
    # handshake): the TLS handshake fails, no HTTP status
    wait_for(lambda: h2_cert_to_etcd() == "000", 10, "h2's certificate refused by h1's etcd")
    p = subprocess.run(["openssl", "crl", "-in", crl, "-noout", "-text"], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 0 and p.stdout.count("Serial Number:") == 2, p.stdout  # h3, h2
    p = subprocess.run(["openssl", "crl", "-in", crl, "-noout", "-CAfile",
                        os.path.join(d1.state_dir, "cluster-tls", "ca.pem")],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and "verify OK" in p.stdout + p.stderr, (p.stdout, p.stderr)
    wait_for(lambda: len(cli_json(d1, "cluster", "status")["etcd"].get("members", [])) == 1, 10,
             "1 etcd member left")
    step("h3 left, h2 removed")
