"""Resource control and observability (issue 5): GET /metrics checked by
promtool and scraped by a real Prometheus, the history endpoints, `vm top`,
limits validated, applied at start and changed live (cgroup counters and the
cgroup files prove the CPU cap; a guest dd proves the IOPS cap)."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

import khlib
from conftest import DaemonFactory


def parse_prom(text):
    """{(name, frozenset(labels.items())): value} from the text format."""
    out = {}
    rx = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
    lrx = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        m = rx.match(ln)
        assert m, "bad exposition line: %r" % ln
        labels = frozenset(lrx.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def sample(metrics, name, **labels):
    for (n, ls), v in metrics.items():
        if n == name and all((k, str(val)) in ls for k, val in labels.items()):
            return v
    return None


def promtool_check(data):
    if not shutil.which("promtool"):
        pytest.fail("promtool missing: scripts/install-deps.sh --test installs prometheus")
    p = subprocess.run(["promtool", "check", "metrics"], input=data, capture_output=True,
                       timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode()


# --------------------------------------------------------------------------
# Quick tests: no guest boots


@pytest.fixture(scope="module")
def qd(request):
    f = DaemonFactory()
    port = khlib.free_port()
    d = f(listen="127.0.0.1:%d" % port, extra_args=["--sample-interval-ms", "200"])
    yield d
    failed = any(getattr(i, "rep_call", None) is not None and i.rep_call.failed
                 for i in request.session.items if i.module is request.module)
    f.finish(failed)


def test_metrics_unix_socket_and_promtool(qd, fake_boot):
    api = qd.api
    assert api.create({"name": "idle1", "boot": fake_boot, "vcpus": 2,
                       "memory_mib": 64})["state"] == "stopped"
    # An odd but valid name must stay a well-formed label.
    assert api.create({"name": "x.y_z-1", "boot": fake_boot})["name"] == "x.y_z-1"
    api.wait_accel()
    api.get("/api/v1/nope")  # a 404 shows in the request counters
    r = api.get("/metrics")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    rc, out = promtool_check(r.data)
    assert rc == 0 and out.strip() == "", out
    m = parse_prom(r.text)
    assert sample(m, "kvmhost_vms", state="stopped") == 2
    assert sample(m, "kvmhost_vms", state="running") == 0
    assert sample(m, "kvmhost_vm_state", vm="idle1", state="stopped") == 1
    assert sample(m, "kvmhost_vm_state", vm="idle1", state="running") == 0
    assert sample(m, "kvmhost_vm_vcpus", vm="idle1") == 2
    assert sample(m, "kvmhost_vm_memory_configured_bytes", vm="idle1") == 64 * khlib.MIB
    assert sample(m, "kvmhost_vm_vcpus", vm="x.y_z-1") == 1
    assert sample(m, "kvmhost_host_memory_total_bytes") > 0
    assert sample(m, "kvmhost_host_cpu_seconds_total", mode="idle") > 0
    assert sample(m, "kvmhost_host_accelerator_info", accelerator="tcg") == 1 or \
        sample(m, "kvmhost_host_accelerator_info", accelerator="kvm") == 1
    assert sample(m, "kvmhost_http_requests_total", method="POST", route="/api/v1/vms",
                  code="201") >= 2
    assert sample(m, "kvmhost_http_requests_total", method="GET", route="none",
                  code="404") >= 1
    assert sample(m, "kvmhost_http_request_duration_seconds_count",
                  route="/api/v1/vms") >= 2
    assert sample(m, "kvmhost_sampler_runs_total") >= 1
    # A stopped VM has no runtime series.
    assert sample(m, "kvmhost_vm_cpu_seconds_total", vm="idle1") is None
    # Host disks (whole disks only, as /proc/diskstats counts them),
    # filesystems (the state dir and each pool) and interfaces.
    disks = {}
    with open("/proc/diskstats") as f:
        for ln in f:
            x = ln.split()
            disks[x[2]] = (int(x[3]), int(x[5]) * 512)
    whole = [d for d in disks if os.path.exists("/sys/block/" + d.replace("/", "!"))
             and not d.startswith(("loop", "ram", "fd"))]
    assert whole, disks
    for d in whole:
        assert sample(m, "kvmhost_host_disk_read_ops_total", device=d) <= disks[d][0] + 1e6
        assert sample(m, "kvmhost_host_disk_read_bytes_total", device=d) >= 0
    parts = [d for d in disks if d not in whole]
    for d in parts:
        assert sample(m, "kvmhost_host_disk_read_bytes_total", device=d) is None, d
    st = os.statvfs(qd.state_dir)
    size = sample(m, "kvmhost_host_filesystem_size_bytes", path=qd.state_dir)
    assert size == st.f_blocks * st.f_frsize, (size, st)
    assert 0 < sample(m, "kvmhost_host_filesystem_avail_bytes", path=qd.state_dir) <= size
    assert sample(m, "kvmhost_host_filesystem_size_bytes", pool="default") == size
    with open("/proc/net/dev") as f:
        devs = [ln.split(":")[0].strip() for ln in f if ":" in ln]
    assert "lo" in devs
    for d in devs:
        assert sample(m, "kvmhost_host_network_receive_bytes_total", device=d) is not None, d
        assert sample(m, "kvmhost_host_network_transmit_drop_total", device=d) is not None, d
    lo = sample(m, "kvmhost_host_network_receive_packets_total", device="lo")
    assert lo > 0


def test_metrics_tcp_needs_token_unless_loopback_public(qd, daemons):
    r = qd.tcp_api().get("/metrics")
    assert r.status == 401, r
    assert r.headers.get("www-authenticate") == "Bearer", r.headers
    r = qd.tcp_api(token="wrong").get("/metrics")
    assert r.status == 401, r
    r = qd.tcp_api(token=qd.token()).get("/metrics")
    assert r.status == 200 and b"kvmhost_vms{" in r.data, r
    # --metrics-public: /metrics open to loopback clients, nothing else.
    port = khlib.free_port()
    pub = daemons(listen="127.0.0.1:%d" % port, extra_args=["--metrics-public"])
    t = pub.tcp_api()
    r = t.get("/metrics")
    assert r.status == 200 and b"kvmhost_vms{" in r.data, r
    assert t.get("/api/v1/vms").status == 401
    assert t.get("/api/v1/host/metrics").status == 401


def test_history_endpoints(qd, fake_boot):
    api = qd.api
    api.create({"name": "hist1", "boot": fake_boot})
    deadline = time.time() + 10
    while time.time() < deadline:
        h = api.get("/api/v1/host/metrics?range=60").json
        if len(h["samples"]) >= 2:
            break
        time.sleep(0.2)
    assert h["fields"][:3] == ["time", "cpu_percent", "memory_used_bytes"], h
    assert len(h["samples"]) >= 2, h
    row = h["samples"][-1]
    assert len(row) == len(h["fields"])
    assert abs(row[0] - time.time()) < 30
    assert 0 <= row[1] <= 100 and row[3] > 0, row
    assert h["fields"][6:] == ["disk_used_bytes", "disk_total_bytes",
                               "disk_read_bytes_per_second", "disk_write_bytes_per_second",
                               "net_rx_bytes_per_second", "net_tx_bytes_per_second"], h
    st = os.statvfs(qd.state_dir)
    assert row[7] == st.f_blocks * st.f_frsize, row
    assert 0 < row[6] <= row[7], row
    assert all(v >= 0 for v in row[8:]), row
    assert h["interval_seconds"] == 0.2
    assert h["vms"]["hist1"]["state"] == "stopped", h["vms"]
    assert h["vms"]["hist1"]["cpu_percent"] is None
    # range keeps only recent samples
    short = api.get("/api/v1/host/metrics?range=1").json
    assert 1 <= len(short["samples"]) <= 8, short
    v = api.get("/api/v1/vms/hist1/metrics?range=60")
    assert v.status == 200 and v.json["vm"] == "hist1" and v.json["samples"] == [], v
    assert "cpu_percent" in v.json["fields"]
    assert api.get("/api/v1/vms/nope/metrics").status == 404
    for bad in ("0", "-5", "abc", "3601", "", "1e3"):
        r = api.get("/api/v1/vms/hist1/metrics?range=" + bad)
        assert r.status == 400 and "range" in r.error["message"], (bad, r)
    assert api.get("/api/v1/host/metrics?range=x").status == 400


def test_limits_validation(qd, fake_boot, workdir):
    api = qd.api
    disk = os.path.join(workdir, "d.img")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    spec = {"name": "lim1", "boot": fake_boot, "vcpus": 2, "memory_mib": 128,
            "disks": [{"path": disk, "format": "raw"}]}
    bad = [
        ({"cpu_max_percent": 201}, "cpu_max_percent"),
        ({"cpu_max_percent": 0}, "cpu_max_percent"),
        ({"cpu_weight": 10001}, "cpu_weight"),
        ({"memory_max_mib": 64}, "memory_max_mib"),
        ({"memory_max_mib": "1G"}, "memory_max_mib"),
        ({"disk": [{"index": 1, "iops_total": 10}]}, "index"),
        ({"disk": [{"index": 0, "iops_total": 10, "iops_read": 5}]}, "iops_total"),
        ({"disk": [{"index": 0, "bps_read_max": 10}]}, "bps_read"),
        ({"owner": "root"}, "owner"),
        ({"cpu_max_percent": 1.5}, "cpu_max_percent"),
    ]
    for lim, word in bad:
        r = api.post("/api/v1/vms", dict(spec, limits=lim))
        assert r.status == 400 and word in r.error["message"], (lim, r)
        assert "lim1" not in api.vm_names()
    good = {"cpu_weight": 200, "cpu_max_percent": 150, "memory_max_mib": 512,
            "disk": [{"index": 0, "iops_total": 100, "iops_total_max": 200, "bps_read": 1048576}]}
    vm = api.create(dict(spec, limits=good))
    assert vm["limits"] == good, vm
    # PATCH merges key by key; null removes; a bad value changes nothing.
    r = api.patch("/api/v1/vms/lim1", {"limits": {"cpu_max_percent": 20, "cpu_weight": None}})
    assert r.status == 200, r
    lim = api.vm("lim1")["limits"]
    assert lim.get("cpu_max_percent") == 20 and "cpu_weight" not in lim, lim
    assert lim["disk"] == good["disk"], lim
    r = api.patch("/api/v1/vms/lim1", {"limits": {"cpu_max_percent": 500}})
    assert r.status == 400, r
    assert api.vm("lim1")["limits"] == lim
    r = api.patch("/api/v1/vms/lim1", {"vcpus": 1, "limits": {"cpu_max_percent": 150}})
    assert r.status == 400 and "cpu_max_percent" in r.error["message"], r
    # Persisted: the limits survive a daemon restart.
    qd.stop()
    qd.start()
    assert api.vm("lim1")["limits"] == lim
    r = api.patch("/api/v1/vms/lim1", {"limits": None})
    assert r.status == 200 and "limits" not in r.json, r


def test_cli_vm_limit_and_top(qd, fake_boot):
    qd.api.create({"name": "clim", "boot": fake_boot, "vcpus": 2})
    p = khlib.cli(qd, "vm", "limit", "clim")
    assert p.returncode == 0 and "no limits" in p.stdout, p
    p = khlib.cli(qd, "vm", "limit", "clim", "--cpu-max", "30", "--memory-max", "1G",
                  "--cpu-weight", "50")
    assert p.returncode == 0, p
    assert re.search(r"cpu_max_percent:\s+30", p.stdout), p.stdout
    assert qd.api.vm("clim")["limits"] == {"cpu_max_percent": 30, "memory_max_mib": 1024,
                                           "cpu_weight": 50}
    p = khlib.cli(qd, "vm", "limit", "clim", "--cpu-max", "none", json_out=True)
    assert p.returncode == 0 and json.loads(p.stdout) == {"memory_max_mib": 1024,
                                                         "cpu_weight": 50}, p
    p = khlib.cli(qd, "vm", "limit", "clim", "--cpu-max", "201")
    assert p.returncode != 0 and "cpu_max_percent" in p.stderr, p
    p = khlib.cli(qd, "vm", "limit", "clim", "--cpu-max", "abc")
    assert p.returncode == 2 and "--cpu-max" in p.stderr, p
    p = khlib.cli(qd, "vm", "limit", "clim", "--balloon", "256M", json_out=True)
    assert p.returncode == 0 and json.loads(p.stdout)["balloon_mib"] == 256, p
    p = khlib.cli(qd, "vm", "limit", "clim", "--balloon", "none", json_out=True)
    assert p.returncode == 0 and "balloon_mib" not in json.loads(p.stdout), p
    p = khlib.cli(qd, "vm", "limit", "clim", "--cpu-affinity", "0", json_out=True)
    assert p.returncode == 0 and json.loads(p.stdout)["cpu_affinity"] == [0], p
    p = khlib.cli(qd, "vm", "limit", "clim", "--cpu-affinity", "0,x")
    assert p.returncode == 2 and "--cpu-affinity" in p.stderr, p
    p = khlib.cli(qd, "vm", "limit", "clim", "--cpu-affinity", "none", json_out=True)
    assert p.returncode == 0 and "cpu_affinity" not in json.loads(p.stdout), p
    p = khlib.cli(qd, "vm", "limit", "clim", "--disk-iops", "10")
    assert p.returncode != 0 and "no disk 0" in p.stderr, p
    p = khlib.cli(qd, "vm", "top", "--once", "--all")
    assert p.returncode == 0 and p.stdout.startswith("host: "), p
    assert re.search(r"^clim\s+stopped", p.stdout, re.M), p.stdout
    deadline = time.time() + 10
    while True:  # the host row needs two samples after the restart above
        p = khlib.cli(qd, "vm", "top", json_out=True)
        assert p.returncode == 0, p
        j = json.loads(p.stdout)
        if j["host"] or time.time() > deadline:
            break
        time.sleep(0.2)
    assert j["vms"]["clim"]["state"] == "stopped" and "memory_total_bytes" in j["host"], j
    p = khlib.cli(qd, "vm", "top", "--once", "--sort", "bogus")
    assert p.returncode == 2, p


def rule_of(e):
    return (e.get("data") or {}).get("data", {}).get("rule")


def test_alert_rules_fire_and_resolve(qd):
    api = qd.api
    names = [r["name"] for r in api.get("/api/v1/alerts").json["rules"]]
    assert names == ["host_memory_high", "host_disk_high", "host_disk_full_soon",
                     "vm_cpu_saturated"], names
    bad = [
        {"rules": [{"name": "x", "scope": "host", "metric": "nope", "op": ">", "threshold": 1}]},
        {"rules": [{"name": "x", "scope": "host", "metric": "load1", "op": "~", "threshold": 1}]},
        {"rules": "all"},
        {},
    ]
    for b in bad:
        r = api.request("PUT", "/api/v1/alerts/rules", b)
        assert r.status == 400, (b, r)
    assert [r["name"] for r in api.get("/api/v1/alerts").json["rules"]] == names
    sse = khlib.SSE(qd.socket)
    try:
        rule = {"name": "load_any", "scope": "host", "metric": "load1", "op": ">=",
                "threshold": 0, "for_seconds": 0}
        r = api.request("PUT", "/api/v1/alerts/rules", {"rules": [rule]})
        assert r.status == 200 and r.json["rules"][0]["name"] == "load_any", r
        ev = sse.read_until(lambda e: e.get("event") == "alert.firing"
                            and rule_of(e) == "load_any", timeout=10)
        assert ev, "no alert.firing event"
        assert ev["data"]["vm"] is None and ev["data"]["data"]["value"] >= 0, ev
        act = api.get("/api/v1/alerts").json["active"]
        assert act and act[0]["rule"] == "load_any" and act[0]["state"] == "firing", act
        r = api.request("PUT", "/api/v1/alerts/rules", {"rules": []})
        assert r.status == 200 and r.json == {"rules": [], "active": [], "webhook": None}, r
        ev = sse.read_until(lambda e: e.get("event") == "alert.resolved"
                            and rule_of(e) == "load_any", timeout=10)
        assert ev, "no alert.resolved event"
    finally:
        sse.close()


class Hook:
    """A tiny HTTP server on loopback that records the JSON bodies POSTed to it."""

    def __init__(self, status=204, delay=0):
        import http.server
        import threading
        self.bodies = []
        self.cond = threading.Condition()
        hook = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n))
                with hook.cond:
                    hook.bodies.append((self.path, self.headers.get("Content-Type"), body))
                    hook.cond.notify_all()
                time.sleep(delay)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/hook?k=1" % self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, pred, timeout=15):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for b in self.bodies:
                    if pred(b[2]):
                        return b
                left = deadline - time.time()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_alert_webhook_change_keeps_firing_alerts(qd):
    """`alert webhook set` while an alert fires: the old URL gets no
    alert.resolved, no event resolves or fires again, the alert stays firing
    (same since); the new URL is told once of the alert firing now."""
    api = qd.api
    old, new = Hook(), Hook()
    sse = khlib.SSE(qd.socket)
    try:
        rule = {"name": "hook_keep", "scope": "host", "metric": "load1", "op": ">=",
                "threshold": 0, "for_seconds": 0}
        r = api.request("PUT", "/api/v1/alerts/rules",
                        {"rules": [rule], "webhook": {"url": old.url, "timeout_seconds": 2}})
        assert r.status == 200, r
        assert old.wait(lambda b: b["type"] == "alert.firing"
                        and b["data"]["rule"] == "hook_keep"), old.bodies
        assert sse.read_until(lambda e: e.get("event") == "alert.firing"
                              and rule_of(e) == "hook_keep", timeout=10)
        since = [a for a in api.get("/api/v1/alerts").json["active"]
                 if a["rule"] == "hook_keep"][0]["since"]
        sse.buf = b""  # read_until scans the whole buffer: only what follows counts
        p = khlib.cli(qd, "alert", "webhook", "set", new.url)
        assert p.returncode == 0, (p.stdout, p.stderr)
        assert new.wait(lambda b: b["type"] == "alert.firing"
                        and b["data"]["rule"] == "hook_keep"), new.bodies
        # a few sampler rounds (200 ms each)
        ev = sse.read_until(lambda e: e.get("event") in ("alert.firing", "alert.resolved")
                            and rule_of(e) == "hook_keep", timeout=3)
        assert ev is None, ev
        assert [b for b in old.bodies if b[2]["type"] == "alert.resolved"] == [], old.bodies
        assert len(old.bodies) == 1, old.bodies
        assert len([b for b in new.bodies if b[2]["type"] == "alert.firing"]) == 1, new.bodies
        act = [a for a in api.get("/api/v1/alerts").json["active"] if a["rule"] == "hook_keep"]
        assert len(act) == 1 and act[0]["state"] == "firing" and act[0]["since"] == since, act
        # The same URL again (a timeout change): nothing is re-announced.
        p = khlib.cli(qd, "alert", "webhook", "set", new.url, "--timeout", "3")
        assert p.returncode == 0, (p.stdout, p.stderr)
        time.sleep(1)
        assert len(new.bodies) == 1, new.bodies
        # The rule removed: the current receiver gets the resolve.
        r = api.request("PUT", "/api/v1/alerts/rules", {"rules": [], "webhook": None})
        assert r.status == 200, r
    finally:
        sse.close()
        old.close()
        new.close()


def test_alert_webhook_fires_and_resolves(qd):
    api = qd.api
    hook = Hook()
    sse = khlib.SSE(qd.socket)
    try:
        for bad in ({"url": "file:///etc/passwd"}, {"url": "ftp://127.0.0.1/"},
                    {"url": "http://127.0.0.1/", "timeout_seconds": 600}, "http://x/"):
            r = api.request("PUT", "/api/v1/alerts/rules", {"rules": [], "webhook": bad})
            assert r.status == 400 and "webhook" in r.error["message"], (bad, r)
        assert api.get("/api/v1/alerts").json["webhook"] is None
        rule = {"name": "hook_load", "scope": "host", "metric": "load1", "op": ">=",
                "threshold": 0, "for_seconds": 0}
        r = api.request("PUT", "/api/v1/alerts/rules",
                        {"rules": [rule], "webhook": {"url": hook.url, "timeout_seconds": 2}})
        assert r.status == 200 and r.json["webhook"]["url"] == hook.url, r
        got = hook.wait(lambda b: b["type"] == "alert.firing"
                        and b["data"]["rule"] == "hook_load")
        assert got, hook.bodies
        path, ctype, body = got
        assert path == "/hook?k=1" and ctype == "application/json", got
        assert body["vm"] is None and body["data"]["metric"] == "load1", body
        assert abs(body["time"] - time.time()) < 30
        assert sse.read_until(lambda e: e.get("event") == "alert.firing"
                              and rule_of(e) == "hook_load", timeout=10)
        # Rules replaced: the alert resolves; the webhook stays (not named).
        r = api.request("PUT", "/api/v1/alerts/rules", {"rules": []})
        assert r.status == 200 and r.json["webhook"]["url"] == hook.url, r
        assert hook.wait(lambda b: b["type"] == "alert.resolved"
                         and b["data"]["rule"] == "hook_load"), hook.bodies
        deadline = time.time() + 10
        while api.get("/api/v1/alerts").json["webhook"]["sent"] < 2 and time.time() < deadline:
            time.sleep(0.1)
        wh = api.get("/api/v1/alerts").json["webhook"]
        assert wh["sent"] >= 2 and wh["failed"] == 0, wh
        m = parse_prom(api.get("/metrics").text)
        assert sample(m, "kvmhost_alert_webhook_posts_total", result="sent") >= 2
        # A dead endpoint: counted as failed, not retried, the daemon carries on.
        dead = "http://127.0.0.1:%d/" % khlib.free_port()
        r = api.request("PUT", "/api/v1/alerts/rules",
                        {"rules": [rule], "webhook": {"url": dead, "timeout_seconds": 1}})
        assert r.status == 200, r
        deadline = time.time() + 10
        while api.get("/api/v1/alerts").json["webhook"]["failed"] < 1 and time.time() < deadline:
            time.sleep(0.1)
        assert api.get("/api/v1/alerts").json["webhook"]["failed"] == 1
        # A receiver slower than the timeout: the POST times out on a worker
        # thread and is counted; the API answers meanwhile.
        slow = Hook(delay=4)
        try:
            r = api.request("PUT", "/api/v1/alerts/rules", {"rules": []})
            r = api.request("PUT", "/api/v1/alerts/rules",
                            {"rules": [rule], "webhook": {"url": slow.url, "timeout_seconds": 1}})
            assert r.status == 200, r
            assert slow.wait(lambda b: b["type"] == "alert.firing"), slow.bodies
            t0 = time.time()
            assert api.get("/api/v1/host").status == 200
            assert time.time() - t0 < 0.5
            deadline = time.time() + 10
            while api.get("/api/v1/alerts").json["webhook"]["failed"] < 2 and \
                    time.time() < deadline:
                time.sleep(0.1)
            assert api.get("/api/v1/alerts").json["webhook"]["failed"] == 2
        finally:
            slow.close()
        r = api.request("PUT", "/api/v1/alerts/rules", {"rules": [], "webhook": None})
        assert r.status == 200 and r.json["webhook"] is None, r
    finally:
        sse.close()
        hook.close()


def test_alert_trend_disk_fills(qd):
    """A trend rule on the state dir's filesystem: writing fast predicts a
    crossing (fires), deleting the file flattens the line (resolves)."""
    api = qd.api
    st = os.statvfs(qd.state_dir)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    rule = {"name": "fills", "scope": "host", "metric": "disk_used_bytes", "op": ">=",
            "threshold": used + 1024 ** 3, "predict_seconds": 600, "window_seconds": 2}
    hook = Hook()
    sse = khlib.SSE(qd.socket)
    big = os.path.join(qd.state_dir, "filler")
    try:
        r = api.request("PUT", "/api/v1/alerts/rules", {"rules": [rule],
                                                        "webhook": {"url": hook.url}})
        assert r.status == 200 and r.json["rules"][0]["predict_seconds"] == 600, r
        with open(big, "wb") as f:
            chunk = b"\1" * (4 << 20)
            deadline = time.time() + 20
            ev = None
            while time.time() < deadline and not ev:
                f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
                ev = sse.read_until(lambda e: e.get("event") == "alert.firing"
                                    and rule_of(e) == "fills", timeout=0.2)
        assert ev, "no trend alert while the disk filled"
        d = ev["data"]["data"]
        assert d["predicted"] >= rule["threshold"] and 0 < d["eta_seconds"] <= 600, d
        assert d["value"] < rule["threshold"], d
        assert hook.wait(lambda b: b["type"] == "alert.firing"
                         and b["data"]["rule"] == "fills"), hook.bodies
        os.unlink(big)
        ev = sse.read_until(lambda e: e.get("event") == "alert.resolved"
                            and rule_of(e) == "fills", timeout=30)
        assert ev, "the trend alert did not resolve"
    finally:
        if os.path.exists(big):
            os.unlink(big)
        api.request("PUT", "/api/v1/alerts/rules", {"rules": [], "webhook": None})
        sse.close()
        hook.close()


# --------------------------------------------------------------------------
# A real Prometheus scrapes the daemon


def test_prometheus_scrapes_kvmhost(daemons, fake_boot):
    prom = shutil.which("prometheus")
    if not prom:
        pytest.fail("prometheus missing: scripts/install-deps.sh --test installs it")
    port = khlib.free_port()
    d = daemons(listen="127.0.0.1:%d" % port)
    d.api.create({"name": "scraped", "boot": fake_boot})
    work = tempfile.mkdtemp(prefix="khbb-prom-", dir="/tmp")
    pport = khlib.free_port()
    cfg = os.path.join(work, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: kvmhost\n"
                "    scheme: https\n    tls_config:\n      ca_file: %s\n"
                "    authorization:\n      type: Bearer\n      credentials_file: %s\n"
                "    static_configs:\n      - targets: ['127.0.0.1:%d']\n"
                % (d.tls_cert, os.path.join(d.state_dir, "api-token"), port))
    log = open(os.path.join(work, "prometheus.log"), "wb")
    p = subprocess.Popen([prom, "--config.file=" + cfg, "--storage.tsdb.path=" + work + "/data",
                          "--web.listen-address=127.0.0.1:%d" % pport],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        q = urllib.parse.quote('kvmhost_vm_state{vm="scraped",state="stopped"}')
        url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (pport, q)
        deadline = time.time() + 90
        result, last = None, None
        while time.time() < deadline and p.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    last = json.loads(r.read())
                if last.get("data", {}).get("result"):
                    result = last["data"]["result"]
                    break
            except OSError as e:
                last = e
            time.sleep(0.5)
        assert result, "no kvmhost series in Prometheus: %r\n%s" % (
            last, open(os.path.join(work, "prometheus.log")).read()[-3000:])
        assert result[0]["metric"]["job"] == "kvmhost"
        assert result[0]["value"][1] == "1", result
        # The scrape was authenticated and healthy.
        url = "http://127.0.0.1:%d/api/v1/query?query=up" % pport
        with urllib.request.urlopen(url, timeout=5) as r:
            up = json.loads(r.read())["data"]["result"]
        assert up and up[0]["value"][1] == "1", up
    finally:
        os.killpg(p.pid, 15)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------
# With a booted guest


def cgroup_file(vm_id, v1_ctrl, name):
    """The path of a cgroup file of the VM (v1 or v2 layout)."""
    v1 = "/sys/fs/cgroup/%s/kvmhost/vm-%s/%s" % (v1_ctrl, vm_id, name)
    if os.path.exists(v1):
        return v1
    return "/sys/fs/cgroup/kvmhost/vm-%s/%s" % (vm_id, name)


def cpu_seconds(api, name):
    m = parse_prom(api.get("/metrics").text)
    return sample(m, "kvmhost_vm_cpu_seconds_total", vm=name)


def cpu_rate(api, name, seconds=3.0):
    a, t0 = cpu_seconds(api, name), time.time()
    time.sleep(seconds)
    b, t1 = cpu_seconds(api, name), time.time()
    return (b - a) / (t1 - t0)


@pytest.mark.slow
def test_busy_guest_cpu_cap_and_iops_cap(daemons, guest, consoles, workdir):
    rules = os.path.join(workdir, "rules.json")
    with open(rules, "w") as f:
        json.dump({"rules": [{"name": "vm_busy", "scope": "vm", "metric": "cpu_percent",
                              "op": ">", "threshold": 30, "for_seconds": 2}]}, f)
    d = daemons(extra_args=["--sample-interval-ms", "1000", "--alert-rules", rules])
    api = d.api
    work = d.base + "/w"
    os.makedirs(work)
    os.chmod(work, 0o755)
    spec = guest.spec("busy", work, memory_mib=128)
    spec["limits"] = {"disk": [{"index": 0, "iops_total": 20}], "memory_max_mib": 2048}
    api.create(spec)
    st, j = api.action("busy", "start")
    assert st == 200, j
    api.wait_console("busy", khlib.GUEST_READY, timeout=150)
    vm = api.vm("busy")
    vid = vm["id"]

    # Applied at start: the memory limit is in the cgroup and in /metrics.
    with open(cgroup_file(vid, "memory", "memory.limit_in_bytes")
              if os.path.exists("/sys/fs/cgroup/memory") else
              cgroup_file(vid, "memory", "memory.max")) as f:
        assert int(f.read()) == 2048 * khlib.MIB
    m = parse_prom(api.get("/metrics").text)
    assert sample(m, "kvmhost_vm_memory_limit_bytes", vm="busy") == 2048 * khlib.MIB
    assert sample(m, "kvmhost_vm_rss_bytes", vm="busy") > 16 * khlib.MIB
    assert sample(m, "kvmhost_vm_uptime_seconds", vm="busy") > 0
    assert sample(m, "kvmhost_vm_state", vm="busy", state="running") == 1
    rc, out = promtool_check(api.get("/metrics").data)
    assert rc == 0 and out.strip() == "", out

    c = consoles(d, "busy")
    c.run("echo kh-$((%d+1))", timeout=60)

    # IOPS cap: 100 direct 4 KiB reads at 20 IOPS take about 5 s; without the
    # cap the same reads take well under that.
    def timed_dd(skip):
        m_ = c.run("t0=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/vda of=/dev/null bs=4096 "
                   "count=100 skip=%d iflag=direct 2>/dev/null; t1=$(cut -d' ' -f1 /proc/uptime);"
                   " echo kh-$((%%d+1)) dd=$t0,$t1" % skip, timeout=90, retries=1)
        # the marker may arrive before the rest of its line
        mm = c.wait_for(r"dd=([\d.]+),([\d.]+)\r?\n", timeout=10, start=m_.start())
        return float(mm.group(2)) - float(mm.group(1))

    capped = timed_dd(1000)
    assert capped >= 3.0, "100 reads at 20 IOPS took only %.2fs" % capped
    r = api.patch("/api/v1/vms/busy", {"limits": {"disk": None}})
    assert r.status == 200 and "disk" not in r.json["limits"], r
    time.sleep(0.5)
    free = timed_dd(3000)
    print("\nfigures: 100 direct reads capped at 20 IOPS %.2fs, uncapped %.2fs" % (capped, free))
    assert free < capped / 2, "uncapped %.2fs vs capped %.2fs" % (free, capped)
    # The reads show in the per-disk counters (sampled asynchronously).
    deadline = time.time() + 10
    while time.time() < deadline:
        m = parse_prom(api.get("/metrics").text)
        ops = sample(m, "kvmhost_vm_disk_read_ops_total", vm="busy", disk="disk0")
        if ops and ops >= 200:
            break
        time.sleep(0.5)
    assert ops and ops >= 200, ops
    assert sample(m, "kvmhost_vm_disk_read_bytes_total", vm="busy", disk="disk0") >= 200 * 4096

    # A busy guest: CPU seconds rise.
    c.run("while :; do :; done & echo kh-$((%d+1))", timeout=30)
    busy = cpu_rate(api, "busy")
    assert busy > 0.25, "busy guest used only %.2f CPU" % busy
    sse = khlib.SSE(d.socket, path="/api/v1/events?since=0")
    ev = sse.read_until(lambda e: e.get("event") == "alert.firing" and rule_of(e) == "vm_busy",
                        timeout=15)
    assert ev and ev["data"]["vm"] == "busy" and ev["data"]["data"]["value"] > 30, ev

    # CPU cap 20%, live: the cgroup file and the counters both show it.
    t_cap = time.time()
    r = api.patch("/api/v1/vms/busy", {"limits": {"cpu_max_percent": 20}})
    assert r.status == 200 and r.json["limits"]["cpu_max_percent"] == 20, r
    v1 = cgroup_file(vid, "cpu", "cpu.cfs_quota_us")
    if os.path.exists(v1):
        assert int(open(v1).read()) == 20000
    else:
        assert open(cgroup_file(vid, "cpu", "cpu.max")).read().split() == ["20000", "100000"]
    time.sleep(0.5)
    capped_cpu = cpu_rate(api, "busy")
    print("figures: busy guest %.2f CPU, with cpu_max_percent=20 %.2f CPU" % (busy, capped_cpu))
    assert 0.05 <= capped_cpu <= 0.30, "with a 20%% cap the VM used %.2f CPU" % capped_cpu
    ev = sse.read_until(lambda e: e.get("event") == "alert.resolved" and rule_of(e) == "vm_busy",
                        timeout=15)
    sse.close()
    assert ev and ev["data"]["vm"] == "busy" and ev["data"]["data"]["value"] <= 30, ev

    # History: the sampler saw it (cpu_percent column) and vm top lists it.
    h = api.get("/api/v1/vms/busy/metrics?range=120").json
    cpu_col = h["fields"].index("cpu_percent")
    assert any(row[cpu_col] > 25 for row in h["samples"]), h["samples"]
    # the samples of whole seconds under the cap: none above it (a little
    # noise aside), and the guest still ran (a loaded host may give the
    # VMs' cgroup next to nothing in one second: no lower bound per sample)
    capped_rows = [row[cpu_col] for row in h["samples"] if row[0] >= t_cap + 1.5]
    assert capped_rows and max(capped_rows) <= 35 and max(capped_rows) >= 1, h["samples"][-5:]
    p = khlib.cli(d, "vm", "top", "--once")
    assert p.returncode == 0 and re.search(r"^busy\s+running\s+\d", p.stdout, re.M), p

    # vCPU pinning, live: every vCPU thread ("CPU n/TCG" or "CPU n/KVM") may
    # run on CPU 0 only; removing it lets them run anywhere again.
    def vcpu_allowed(pid):
        out = []
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                if not f.read().startswith("CPU "):
                    continue
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                out += [ln.split(":", 1)[1].strip() for ln in f
                        if ln.startswith("Cpus_allowed_list:")]
        return out
    pid = api.vm("busy")["pid"]
    r = api.patch("/api/v1/vms/busy", {"limits": {"cpu_affinity": [0]}})
    assert r.status == 200 and r.json["limits"]["cpu_affinity"] == [0], r
    deadline = time.time() + 10
    while time.time() < deadline and vcpu_allowed(pid) != ["0"]:
        time.sleep(0.2)
    assert vcpu_allowed(pid) == ["0"], vcpu_allowed(pid)
    r = api.patch("/api/v1/vms/busy", {"limits": {"cpu_affinity": [os.cpu_count()]}})
    assert r.status == 400 and "no CPU" in r.error["message"], r
    r = api.patch("/api/v1/vms/busy", {"limits": {"cpu_affinity": None}})
    assert r.status == 200, r
    deadline = time.time() + 10
    while time.time() < deadline and vcpu_allowed(pid) == ["0"]:
        time.sleep(0.2)
    assert vcpu_allowed(pid) != ["0"] and os.cpu_count() > 1, vcpu_allowed(pid)

    # Balloon: the guest gives back memory (its MemTotal shrinks), QEMU
    # reports the new size, and deflating gives it back.
    def guest_memtotal_kib():
        m_ = c.run("grep MemTotal /proc/meminfo; echo kh-$((%d+1))", timeout=30)
        mm = re.findall(r"MemTotal:\s+(\d+) kB", c.text()[:m_.start()])
        assert mm, c.text()[-500:]
        return int(mm[-1])
    before = guest_memtotal_kib()
    r = api.patch("/api/v1/vms/busy", {"limits": {"balloon_mib": 96}})
    assert r.status == 200 and r.json["limits"]["balloon_mib"] == 96, r
    deadline = time.time() + 30
    actual = None
    while time.time() < deadline:
        m = parse_prom(api.get("/metrics").text)
        actual = sample(m, "kvmhost_vm_balloon_actual_bytes", vm="busy")
        if actual is not None and actual <= 96 * khlib.MIB:
            break
        time.sleep(0.5)
    assert actual is not None and actual <= 96 * khlib.MIB, actual
    after = guest_memtotal_kib()
    print("figures: guest MemTotal %d KiB, with balloon_mib=96 (of 128) %d KiB"
          % (before, after))
    assert after <= before - 24 * 1024, (before, after)
    assert sample(m, "kvmhost_vm_guest_memory_total_bytes", vm="busy") is None or \
        sample(m, "kvmhost_vm_guest_memory_total_bytes", vm="busy") > 0
    r = api.patch("/api/v1/vms/busy", {"limits": {"balloon_mib": None}})
    assert r.status == 200, r
    deadline = time.time() + 30
    while time.time() < deadline and guest_memtotal_kib() < before - 1024:
        time.sleep(0.5)
    assert guest_memtotal_kib() >= before - 1024

    # Removing the cap lifts it.
    r = api.patch("/api/v1/vms/busy", {"limits": {"cpu_max_percent": None}})
    assert r.status == 200, r
    if os.path.exists(v1):
        assert int(open(v1).read()) == -1
    # Only limits and description change on a running VM.
    r = api.patch("/api/v1/vms/busy", {"vcpus": 2})
    assert r.status == 409, r
    # The cap is applied at start too: kill, set it while stopped, start.
    api.act_ok("busy", "kill")
    r = api.patch("/api/v1/vms/busy", {"limits": {"cpu_max_percent": 30}})
    assert r.status == 200, r
    st, j = api.action("busy", "start")
    assert st == 200, j
    if os.path.exists(v1):
        assert int(open(v1).read()) == 30000
    else:
        assert open(cgroup_file(vid, "cpu", "cpu.max")).read().split()[0] == "30000"


def test_alert_rules_and_webhook_survive_restart(daemon, workdir):
    """Rules and webhook set with the CLI are saved: a restart keeps them. An
    --alert-rules file wins at start when new or changed; an unchanged one
    does not undo what was set since."""
    rules = [{"name": "r_load", "scope": "host", "metric": "load1", "op": ">",
              "threshold": 50, "for_seconds": 30},
             {"name": "r_vm", "scope": "vm", "metric": "cpu_percent", "op": ">=",
              "threshold": 99}]
    path = os.path.join(workdir, "rules.json")
    with open(path, "w") as f:
        json.dump({"rules": rules}, f)
    p = khlib.cli(daemon, "alert", "rules", "set", "--file", path)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "alert rules replaced: 2 rules, saved" in p.stdout, p.stdout
    p = khlib.cli(daemon, "alert", "webhook", "set", "http://127.0.0.1:9/hook", "--timeout", "4")
    assert p.returncode == 0 and "alert webhook set, saved" in p.stdout, (p.stdout, p.stderr)

    def names():
        return [r["name"] for r in daemon.api.get("/api/v1/alerts").json["rules"]]

    daemon.restart()
    assert names() == ["r_load", "r_vm"]
    a = daemon.api.get("/api/v1/alerts").json
    assert a["webhook"]["url"] == "http://127.0.0.1:9/hook" and \
        a["webhook"]["timeout_seconds"] == 4, a["webhook"]
    assert a["rules"][0]["for_seconds"] == 30, a["rules"][0]

    # a new --alert-rules file wins at start ...
    fpath = os.path.join(workdir, "start.json")
    with open(fpath, "w") as f:
        json.dump({"rules": [dict(rules[0], name="from_file")]}, f)
    daemon.extra_args += ["--alert-rules", fpath]
    daemon.restart()
    assert names() == ["from_file"]
    # ... the CLI changes them, and the same unchanged file keeps the change
    p = khlib.cli(daemon, "alert", "rules", "set", "--file", path)
    assert p.returncode == 0, p.stderr
    daemon.restart()
    assert names() == ["r_load", "r_vm"]
    p = khlib.cli(daemon, "alert", "webhook", "clear")
    assert p.returncode == 0 and "alert webhook cleared, saved" in p.stdout, p.stdout
    daemon.restart()
    assert daemon.api.get("/api/v1/alerts").json["webhook"] is None
