#!/usr/bin/env python3
"""bench/cluster_list.py - the cluster-wide VM list: GET /api/v1/vms on one
host of a 3-host cluster holding 300 VMs (100 defined on each host, their
records in etcd), beside a peer figure: a raw etcd range read of the same
records (/kvmhost/vms/, through the same etcd member's JSON gateway, from
inside that host's namespace). Target (issue 11): <= 20 ms.

Three network namespaces with a kvmhostd each (tests/cluster/hosts.py, as
the cluster tests); needs root and etcd. Uses the normal build (-O2):

    meson setup build && ninja -C build
    python3 bench/cluster_list.py [--vms 300] [--runs 50] [--build build]
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PEER = r"""
import base64, http.client, json, os, ssl, statistics, sys, time
host, port, runs, tls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = None
if os.path.exists(os.path.join(tls, "ca.pem")):  # etcd speaks mutual TLS (the cluster CA)
    ctx = ssl.create_default_context(cafile=os.path.join(tls, "ca.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(os.path.join(tls, "host.pem"), os.path.join(tls, "host.key"))
k = b"/kvmhost/vms/"
body = json.dumps({"key": base64.b64encode(k).decode(),
                   "range_end": base64.b64encode(k[:-1] + b"0").decode()})
ts, n = [], 0
for _ in range(runs):
    t = time.perf_counter()
    c = (http.client.HTTPSConnection(host, port, timeout=10, context=ctx) if ctx
         else http.client.HTTPConnection(host, port, timeout=10))
    c.request("POST", "/v3/kv/range", body, {"Content-Type": "application/json"})
    r = json.loads(c.getresponse().read())
    c.close()
    ts.append((time.perf_counter() - t) * 1000)
    n = len(r.get("kvs", []))
print(json.dumps({"median_ms": statistics.median(ts), "p90_ms": sorted(ts)[int(len(ts) * .9)],
                  "keys": n}))
"""


class UnixConn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def get_vms(sock_path, query="", parse=True):
    c = UnixConn(sock_path)
    c.request("GET", "/api/v1/vms" + query)
    r = c.getresponse()
    body = r.read()
    c.close()
    assert r.status == 200, (r.status, body[:300])
    return json.loads(body)["vms"] if parse else body


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=300)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--perf", metavar="FILE",
                    help="also record h1's daemon with perf (call graphs) while it answers "
                         "--runs more full lists, into FILE (perf report -i FILE)")
    a = ap.parse_args()
    os.environ["KH_BUILD_DIR"] = os.path.abspath(a.build)
    sys.path.insert(0, os.path.join(ROOT, "tests", "cluster"))
    sys.path.insert(0, os.path.join(ROOT, "tests", "blackbox"))
    import hosts as hostslib
    import khlib
    from test_membership import PORT, HostDaemon

    h = hostslib.Hosts(3)
    ds = []
    try:
        for i in (1, 2, 3):
            d = HostDaemon(h, i)
            d.extra_args += ["--log-level", "warn"]
            ds.append(d)
            d.start()
        d1 = ds[0]
        assert khlib.cli(d1, "cluster", "create", "--name", "bench").returncode == 0
        for d in ds[1:]:
            tok = json.loads(khlib.cli(d1, "cluster", "token", json_out=True).stdout)["token"]
            p = khlib.cli(d, "cluster", "join", "%s:%d" % (h.addr(1), PORT), "--token", tok)
            assert p.returncode == 0, p.stderr
        kernel, initrd = khlib.guest_paths()[:2]
        t0 = time.perf_counter()
        per = a.vms // 3
        for i, d in enumerate(ds):
            for j in range(per):
                spec = {"name": "b%d-%03d" % (i + 1, j), "vcpus": 1, "memory_mib": 64,
                        "graphics": "none", "serial": True,
                        "boot": {"kernel": kernel, "initrd": initrd}}
                r = d.api.post("/api/v1/vms", spec, timeout=30)
                assert r.status == 201, r
        made = time.perf_counter() - t0
        deadline = time.time() + 60
        while len(get_vms(d1.socket)) < per * 3 and time.time() < deadline:
            time.sleep(0.2)
        vms = get_vms(d1.socket)
        assert len(vms) == per * 3, len(vms)
        hosts = {v["host"] for v in vms}
        print("bench: %d VMs created on 3 hosts in %.1f s; h1 lists %d (hosts %s)"
              % (per * 3, made, len(vms), ",".join(sorted(hosts))), file=sys.stderr)
        for _ in range(5):
            get_vms(d1.socket)  # warm
        def timed(query="", parse=True):
            ts = []
            for _ in range(a.runs):
                t = time.perf_counter()
                get_vms(d1.socket, query, parse)
                ts.append((time.perf_counter() - t) * 1000)
            return {"median_ms": statistics.median(ts), "p90_ms": sorted(ts)[int(len(ts) * .9)]}

        kh = timed()
        raw = timed(parse=False)
        size = len(get_vms(d1.socket, parse=False))
        if a.perf:
            rec = subprocess.Popen(["perf", "record", "-q", "-F", "2999", "-g", "-o", a.perf,
                                    "-p", str(d1.proc.pid)], stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            timed()
            rec.send_signal(2)
            rec.wait(30)
        local = timed("?host=h1")
        remote = timed("?host=h2")
        p = h.run(1, ["/usr/bin/python3", "-c", PEER, h.addr(1), "2379", str(a.runs),
                      os.path.join(d1.state_dir, "cluster-tls")], timeout=120)
        peer = json.loads(p.stdout) if p.returncode == 0 else None
        if not peer:
            print("peer: etcd range failed: %s" % p.stderr[-300:], file=sys.stderr)
            peer = {"median_ms": float("nan"), "p90_ms": float("nan"), "keys": 0}
        print("load average: %.2f %.2f %.2f" % os.getloadavg())
        print("%-44s %10s %10s %8s" % ("cluster-wide vm list, %d VMs / 3 hosts" % (per * 3),
                                         "median", "p90", "target"))
        print("%-44s %8.2f ms %7.2f ms %8s %s" % ("kvmhost GET /api/v1/vms (h1, unix socket)",
                                                  kh["median_ms"], kh["p90_ms"], "<= 20 ms",
                                                  "ok" if kh["median_ms"] <= 20 else "OVER"))
        print("%-44s %8.2f ms %7.2f ms" % ("  the same, bytes only (%d KiB, no JSON parse)"
                                           % (size // 1024), raw["median_ms"], raw["p90_ms"]))
        for what, f in (("  of it: ?host=h1 (its own %d, from SQLite+QEMU)" % per, local),
                        ("  of it: ?host=h2 (%d from the etcd mirror)" % per, remote)):
            print("%-44s %8.2f ms %7.2f ms" % (what, f["median_ms"], f["p90_ms"]))
        print("%-44s %8.2f ms %7.2f ms %8s (%d keys)" % ("peer: etcd range /kvmhost/vms/ (h1's member)",
                                                         peer["median_ms"], peer["p90_ms"], "",
                                                         peer["keys"]))
    finally:
        khlib.finish_daemons(ds, False)
        h.close()


if __name__ == "__main__":
    main()
