"""A backup of the cluster CA key: h1 creates the cluster (it alone holds the
CA key), h2 joins. h2 cannot export the key, nor admit h3 (409). h1 exports
it encrypted with a passphrase (`cluster ca-export`, a 0600 file with an
encrypted PKCS#8 key); h2 imports it (`cluster ca-import`): a wrong
passphrase is refused, the right one installs it; then h3 joins through h2
with a token made on h2. No guest boots.

Run: KH_BUILD_DIR=$PWD/build-asan /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
     tests/cluster/test_ca.py
"""

import json
import os
import stat
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "blackbox"))

import khlib  # noqa: E402
from test_membership import (PORT, Phase, cli_json, pytest_runtest_makereport,  # noqa: E402,F401
                             three, wait_for)


def test_ca_backup(three):
    h, (d1, d2, d3) = three
    step = Phase()
    cli_json(d1, "cluster", "create", "--name", "lab")
    tok = cli_json(d1, "cluster", "token")["token"]
    assert cli_json(d2, "cluster", "join", "%s:%d" % (h.addr(1), PORT), "--token", tok)["enabled"]
    step("h1 created the cluster, h2 joined")

    pw = os.path.join(h.dir, "pass")
    with open(pw, "w") as f:
        f.write("correct horse battery\n")
    bad = os.path.join(h.dir, "bad")
    with open(bad, "w") as f:
        f.write("wrong passphrase\n")
    out = os.path.join(h.dir, "ca.json")

    p = khlib.cli(d2, "cluster", "ca-export", out, "--passphrase-file", pw)
    assert p.returncode != 0 and "does not hold the cluster CA key" in p.stderr, p.stderr
    tok = cli_json(d2, "cluster", "token")["token"]
    p = khlib.cli(d3, "cluster", "join", "%s:%d" % (h.addr(2), PORT), "--token", tok)
    assert p.returncode != 0 and "CA key" in p.stderr, p.stderr
    r = d1.api.post("/api/v1/cluster/ca/export", {"passphrase": "short"})
    assert r.status == 400, r
    step("h2 can neither export the key nor admit h3")

    p = khlib.cli(d1, "cluster", "ca-export", out, "--passphrase-file", pw)
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    with open(out) as f:
        bundle = json.load(f)
    assert "-----BEGIN ENCRYPTED PRIVATE KEY-----" in bundle["key"], bundle["key"][:80]
    assert bundle["fingerprint"] == d1.api.get("/api/v1/cluster/ca").json["fingerprint"]
    step("h1 exports the CA key, encrypted")

    p = khlib.cli(d2, "cluster", "ca-import", out, "--passphrase-file", bad)
    assert p.returncode != 0 and "passphrase" in p.stderr, p.stderr
    p = khlib.cli(d2, "cluster", "ca-import", out, "--passphrase-file", pw)
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(os.stat(os.path.join(d2.state_dir, "cluster-tls", "ca.key")).st_mode) \
        == 0o600
    step("h2 imports it (a wrong passphrase refused)")

    tok = cli_json(d2, "cluster", "token")["token"]
    st = cli_json(d3, "cluster", "join", "%s:%d" % (h.addr(2), PORT), "--token", tok)
    assert st["enabled"] and st["name"] == "lab"
    wait_for(lambda: cli_json(d1, "cluster", "status")["online"] == 3, 20, "3 online")
    # h3's record with its certificate reaches h1 through the etcd watch
    # (online may show first)
    h3 = wait_for(lambda: (lambda x: len(x.get("cert_fingerprint") or "") == 64 and x)(
        {y["name"]: y for y in cli_json(d1, "host", "list")["hosts"]}["h3"]), 20,
        "h3's certificate fingerprint on h1")
    assert len(h3["cert_fingerprint"]) == 64, h3
    step("h3 joins through h2, certificate signed there")
