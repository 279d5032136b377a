"""The CRL of a host without the cluster CA key is signed by the CA, by
a host that holds the key (src/cluster/crl.c): h1 creates the cluster (it
alone holds the CA key), h2 and h3 join; `cluster remove h3` is asked of
h2. Every host writes its CRL listing h3's serial at once; h2 (no CA key)
first with its own key, then asks h1 over the host-to-host mutual TLS
(POST /api/v1/cluster/crl) and replaces it with the CA-signed one, which
`openssl crl -CAfile ca.pem` verifies. The route answers only another
host: a user on the API gets 403, a peer asking a host without the key
gets 409. No guest boots.

Run: KH_BUILD_DIR=$PWD/build-asan /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
     tests/cluster/test_cluster_crl.py
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "blackbox"))

import khlib  # noqa: E402
from test_membership import (PORT, Phase, cli_json, pytest_runtest_makereport,  # noqa: E402,F401
                             three, wait_for)


def crl_facts(d):
    """(issuer, serials, verified by the cluster CA) of d's CRL file."""
    tls = os.path.join(d.state_dir, "cluster-tls")
    crl = os.path.join(tls, "crl.pem")
    p = subprocess.run(["openssl", "crl", "-in", crl, "-noout", "-issuer", "-text"],
                       capture_output=True, text=True, timeout=10)
    if p.returncode != 0:
        return None, [], False
    issuer = p.stdout.splitlines()[0]
    serials = [ln.split(":", 1)[1].strip().upper() for ln in p.stdout.splitlines()
               if "Serial Number:" in ln]
    v = subprocess.run(["openssl", "crl", "-in", crl, "-noout", "-CAfile",
                        os.path.join(tls, "ca.pem")], capture_output=True, text=True, timeout=10)
    return issuer, serials, v.returncode == 0 and "verify OK" in v.stdout + v.stderr


def test_crl_signed_by_the_ca_holder(three):
    h, (d1, d2, d3) = three
    step = Phase()
    cli_json(d1, "cluster", "create", "--name", "crl")
    for d in (d2, d3):
        tok = cli_json(d1, "cluster", "token")["token"]
        cli_json(d, "cluster", "join", "%s:%d" % (h.addr(1), PORT), "--token", tok)
    for d in (d1, d2, d3):
        wait_for(lambda d=d: cli_json(d, "cluster", "status")["online"] == 3, 30,
                 "3 online seen from h%d" % d.i)
    step("h1 created the cluster (CA key), h2 and h3 joined")

    # h3's certificate serial, as its CRL entry will show it
    p = subprocess.run(["openssl", "x509", "-in", os.path.join(d3.state_dir, "cluster-tls",
                                                                "host.pem"),
                        "-noout", "-serial"], capture_output=True, text=True, timeout=10)
    serial3 = p.stdout.strip().split("=", 1)[1].upper()
    ca_subject = subprocess.run(
        ["openssl", "x509", "-in", os.path.join(d1.state_dir, "cluster-tls", "ca.pem"),
         "-noout", "-subject"], capture_output=True, text=True, timeout=10).stdout.strip()
    assert "CA" in ca_subject, ca_subject

    # the route is for hosts only: a user (root on the socket) is refused
    r = d1.api.post("/api/v1/cluster/crl", {"serials": [serial3]})
    assert r.status == 403 and "host-to-host" in r.json["error"]["message"], r
    # a peer asking a host without the CA key: 409
    tls = os.path.join(d1.state_dir, "cluster-tls")
    p = h.run(1, ["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", "-H",
                  "Content-Type: application/json", "-d", json.dumps({"serials": [serial3]}),
                  "--cacert", tls + "/ca.pem", "--cert", tls + "/host.pem", "--key",
                  tls + "/host.key", "https://%s:%d/api/v1/cluster/crl" % (h.addr(2), PORT + 1)],
              timeout=10)
    body, code = p.stdout.rsplit("\n", 1)
    assert code == "409" and "CA key" in body, (code, body)
    step("POST /cluster/crl: 403 for a user, 409 from a host without the CA key")

    wait_for(lambda: khlib.cli(d2, "cluster", "remove", "h3").returncode == 0, 30,
             "h3 removed (asked of h2)")
    # h2 has no CA key: its CRL comes signed by the CA (h1 signed it)
    def ca_signed(d):
        issuer, serials, ok = crl_facts(d)
        return ok and serials == [serial3] and issuer.split("=", 1)[1].strip() in ca_subject
    wait_for(lambda: ca_signed(d2), 20, "h2's CRL signed by the cluster CA, listing h3")
    assert "signer=ca via=h1" in d2.log(), "h2 did not log the CA-signed CRL from h1"
    assert "cluster.crl.sign revoked=1" in d1.log()
    wait_for(lambda: ca_signed(d1), 20, "h1's CRL (its own CA key) listing h3")
    step("remove asked of h2: h2's CRL signed by the CA through h1, verified")
