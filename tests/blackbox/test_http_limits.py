"""The TCP listener against abuse (issue 12, defects 2, 5, 7, 8 and TLS by
default): ambiguous HTTP framing refused before any handler, slowloris,
per-caller rate limits (429 + Retry-After) with stop/kill in their own lane,
/metrics --metrics-public against DNS rebinding, TLS with HSTS by default."""

import http.client
import json
import multiprocessing
import os
import socket
import ssl
import threading
import time

import khlib


def _read_all(s, timeout=5):
    s.settimeout(timeout)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return out, "closed"
            out += b
    except socket.timeout:
        return out, "timeout"
    except (ConnectionResetError, ssl.SSLError):
        return out, "closed"


def _raw(d, data, timeout=5):
    s = d.tcp_connect(timeout=timeout)
    try:
        s.sendall(data)
        return _read_all(s, timeout)
    finally:
        s.close()


def _status(out):
    line = out.split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else None


def test_tls_by_default_hsts_and_fingerprint(daemons):
    port = khlib.free_port()
    d = daemons(listen="127.0.0.1:%d" % port)
    assert os.stat(os.path.join(d.state_dir, "tls", "key.pem")).st_mode & 0o077 == 0
    # the certificate verifies for 127.0.0.1 (it names it), HSTS is sent
    r = d.tcp_api(token=d.token()).get("/api/v1/host")
    assert r.status == 200, r
    assert "max-age=" in r.headers.get("strict-transport-security", ""), r.headers
    # plain HTTP on the TLS port gets nothing usable
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /api/v1/host HTTP/1.1\r\nHost: x\r\n\r\n")
    out, _ = _read_all(s, 5)
    s.close()
    assert not out.startswith(b"HTTP/1.1 200"), out[:100]
    # the fingerprint in the log is the certificate's, and stays across restarts
    der = ssl.PEM_cert_to_DER_cert(open(d.tls_cert).read())
    import hashlib
    fp = ":".join("%02X" % b for b in hashlib.sha256(der).digest())
    assert "sha256=" + fp in d.log(), fp
    d.restart()
    assert ssl.PEM_cert_to_DER_cert(open(d.tls_cert).read()) == der
    assert "made=no sha256=" + fp in d.log()
    # --no-tls: plain HTTP, said so in the log
    port2 = khlib.free_port()
    p = daemons(listen="127.0.0.1:%d" % port2, tls=False)
    assert p.tcp_api(token=p.token()).get("/api/v1/host").status == 200
    assert "--no-tls" in p.log()


FRAMING = [
    # (what, raw request, expected status)
    ("differing Content-Length",
     b"POST /api/v1/vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Content-Length: 2\r\nContent-Length: 60\r\n\r\n{}"
     b"GET /api/v1/host HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("Content-Length with Transfer-Encoding",
     b"POST /api/v1/vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
     b"GET /api/v1/host HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("whitespace before the colon",
     b"GET /api/v1/host HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer x\r\n\r\n", 400),
    ("NUL in a header value",
     b"GET /api/v1/host HTTP/1.1\r\nHost: x\r\nX-A: b\x00hidden\r\nX-B: c\r\n\r\n", 400),
    ("NUL in the last header value",
     b"GET /api/v1/host HTTP/1.1\r\nHost: x\r\nX-A: b\x00hidden\r\n\r\n", 400),
    ("bare CR in a header value",
     b"GET /api/v1/host HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n", 400),
    ("HTTP/1.1 without Host", b"GET /api/v1/host HTTP/1.1\r\n\r\n", 400),
    ("two Host headers", b"GET /api/v1/host HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("unknown Transfer-Encoding",
     b"POST /api/v1/vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Transfer-Encoding: xchunked\r\n\r\n", 501),
    ("1000 query arguments",
     b"GET /api/v1/host?" + b"&".join(b"a%d=b" % i for i in range(1000)) +
     b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
]


def test_ambiguous_framing_refused(daemons):
    port = khlib.free_port()
    d = daemons(listen="127.0.0.1:%d" % port)
    tok = d.token()
    for what, data, want in FRAMING:
        # with a valid token: the refusal comes before authentication and
        # before any handler
        data = data.replace(b"Host: x\r\n", b"Host: x\r\nAuthorization: Bearer %s\r\n"
                            % tok.encode(), 1) if b"Authorization" not in data else data
        out, how = _raw(d, data)
        assert _status(out) == want, (what, out[:300])
        assert out.count(b"HTTP/1.1 ") == 1 or b"an HTTP/1.1 request" in out, (what, out)
        assert how == "closed", (what, how)  # nothing after it is read as a request
        body = json.loads(out.split(b"\r\n\r\n", 1)[1])
        assert body["error"]["message"], body
    assert d.api.vms() == []
    # well-formed requests still work, keep-alive too, and a request with
    # exactly repeated Content-Length is fine
    s = d.tcp_connect()
    for _ in range(2):
        s.sendall(b"GET /api/v1/host HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Authorization: Bearer %s\r\n\r\n" % tok.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        assert _status(buf) == 200, buf[:200]
        head, rest = buf.split(b"\r\n\r\n", 1)
        n = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
                 if ln.lower().startswith(b"content-length")][0])
        while len(rest) < n:
            rest += s.recv(65536)
    s.close()
    out, _ = _raw(d, b"POST /api/v1/vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 2\r\n"
                  b"Connection: close\r\n\r\n{}" % tok.encode())
    assert _status(out) == 400 and b"invalid" in out, out[:300]  # the handler's own 400


def test_slowloris_keeps_tcp_answering(daemons):
    port = khlib.free_port()
    d = daemons(listen="127.0.0.1:%d" % port, tls=False)
    tok = d.token()
    slow = []
    # 400 connections from 8 loopback addresses trickle a request head
    for i in range(400):
        s = socket.socket()
        s.bind(("127.0.0.%d" % (1 + i % 8), 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /api/v1/host HTTP/1.1\r\n")
        slow.append(s)
    # and one whose head is complete but whose body trickles
    body = socket.socket()
    body.bind(("127.0.0.40", 0))
    body.settimeout(5)
    body.connect(("127.0.0.1", port))
    body.sendall(b"POST /api/v1/vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
                 % tok.encode())
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            for s in slow + [body]:
                try:
                    s.send(b"X" if s is not body else b" ")
                except OSError:
                    pass
            stop.wait(1)
    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        time.sleep(2)
        t0 = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                       source_address=("127.0.0.20", 0))
        c.request("GET", "/api/v1/host", headers={"Authorization": "Bearer " + tok})
        r = c.getresponse()
        r.read()
        c.close()
        took = time.monotonic() - t0
        assert r.status == 200 and took < 1.0, (r.status, took)
        # one address cannot hold more than 64 connections
        extra = []
        for _ in range(80):
            s = socket.socket()
            s.bind(("127.0.0.30", 0))
            s.settimeout(3)
            s.connect(("127.0.0.1", port))
            extra.append(s)
        time.sleep(1)
        cut = 0
        for s in extra:
            s.setblocking(False)
            try:
                cut += s.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                cut += 1
            s.close()
        assert cut >= 80 - 64, cut
        # the trickling heads are cut at the head timeout (10 s), bytes or not
        deadline = time.monotonic() + 15
        closed = 0
        while time.monotonic() < deadline:
            closed = 0
            for s in slow:
                s.setblocking(False)
                try:
                    closed += s.recv(1) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    closed += 1
            if closed == len(slow):
                break
            time.sleep(0.5)
        assert closed == len(slow), closed
        body.setblocking(False)
        try:
            gone = body.recv(1) == b""
        except BlockingIOError:
            gone = False
        except OSError:
            gone = True
        assert gone, "the trickled body's connection is still open"
    finally:
        stop.set()
        t.join(5)
        for s in slow:
            s.close()
        body.close()
    assert "request head not complete in time" in d.log()
    assert "request body slower than the minimum rate" in d.log()
    assert d.api.vms() == []


def _rss_kib(pid):
    return int(khlib.proc_status(pid)["VmRSS"].split()[0])


def _burst(port, cafile, tok, nthreads, per_thread, results, started):
    ctx = ssl.create_default_context(cafile=cafile)
    go = threading.Event()

    def one():
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ctx)
        mine, ra = {}, set()
        go.wait()
        for _ in range(per_thread):
            try:
                c.request("GET", "/api/v1/host", headers={"Authorization": "Bearer " + tok})
                r = c.getresponse()
                r.read()
                mine[r.status] = mine.get(r.status, 0) + 1
                if r.status == 429:
                    ra.add(r.getheader("Retry-After"))
            except (OSError, http.client.HTTPException):
                mine["error"] = mine.get("error", 0) + 1
                c.close()
                c = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ctx)
        c.close()
        results.put((mine, ra))
    threads = [threading.Thread(target=one) for _ in range(nthreads)]
    for t in threads:
        t.start()
    go.set()
    started.set()
    for t in threads:
        t.join()


def test_rate_limit_burst_and_kill_lane(daemons, guest, workdir):
    port = khlib.free_port()
    # a small ASan quarantine: freed memory is reused, so RSS shows what is kept
    d = daemons(listen="127.0.0.1:%d" % port,
                env={"ASAN_OPTIONS": "quarantine_size_mb=4:thread_local_quarantine_size_kb=64"})
    tok = d.token()
    d.api.create(guest.spec("rl1", workdir))
    assert d.api.post("/api/v1/vms/rl1/start", {"wait": 60}).status == 200
    d.api.wait_console("rl1", khlib.GUEST_READY, timeout=180)
    ctx = d.ssl_context()
    rss0 = _rss_kib(d.pid)
    # the burst runs in another process (its threads would starve this
    # one's timing of the kill of the GIL): 20 keep-alive TLS connections,
    # 500 requests each, same token as the kill
    results = multiprocessing.get_context("fork").Queue()
    started = multiprocessing.get_context("fork").Event()
    proc = multiprocessing.get_context("fork").Process(
        target=_burst, args=(port, d.tls_cert, tok, 20, 500, results, started))
    proc.start()
    assert started.wait(30)
    time.sleep(1.0)
    # during the burst, same token: kill answers at once (17-111 ms seen on
    # this 2-core host; the bound is loose for a loaded CI machine, but far
    # below the seconds the burst takes, so it fails if kill waits behind it)
    kc = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    kc.connect()  # the TLS handshake is not the API's answer time
    t0 = time.monotonic()
    kc.request("POST", "/api/v1/vms/rl1/kill", body=json.dumps({"wait": 0}),
               headers={"Authorization": "Bearer " + tok, "Content-Type": "application/json"})
    kr = kc.getresponse()
    kr.read()
    kill_ms = (time.monotonic() - t0) * 1000
    kc.close()
    burst_alive = proc.is_alive()
    counts, retry_after = {}, set()
    for _ in range(20):
        mine, ra = results.get(timeout=300)
        for k, v in mine.items():
            counts[k] = counts.get(k, 0) + v
        retry_after |= ra
    proc.join(30)
    per_thread = 500
    rss1 = _rss_kib(d.pid)
    print("burst: %r, kill answered in %.1f ms (burst still running: %s), RSS %d -> %d KiB"
          % (counts, kill_ms, burst_alive, rss0, rss1))
    assert kr.status in (200, 202), kr.status
    assert burst_alive, "the burst ended before the kill: the test measured nothing"
    assert kill_ms < 1000, kill_ms
    assert sum(counts.values()) == 20 * per_thread
    assert counts.get(429, 0) >= 5000 and counts.get(200, 0) >= 200, counts
    assert counts.get("error", 0) == 0, counts
    assert retry_after and all(v and v.isdigit() and int(v) >= 1 for v in retry_after), retry_after
    # bounded memory: the burst leaves no per-request state behind
    assert rss1 - rss0 < 48 * 1024, (rss0, rss1)
    d.api.wait_state("rl1", ["stopped"], timeout=30)
    # the unix socket is not limited
    assert all(d.api.get("/api/v1/host").status == 200 for _ in range(300))


def test_metrics_public_checks_host(daemons):
    port = khlib.free_port()
    d = daemons(listen="127.0.0.1:%d" % port, extra_args=["--metrics-public"])
    ctx = d.ssl_context()

    def get(host):
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
        c.putrequest("GET", "/metrics", skip_host=True)
        c.putheader("Host", host)
        c.endheaders()
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data
    for host in ("127.0.0.1:%d" % port, "localhost:%d" % port, "127.0.0.1", "[::1]:%d" % port):
        st, data = get(host)
        assert st == 200 and b"kvmhost_vms{" in data, (host, st, data[:200])
    # a DNS-rebinding page: its own name resolved to 127.0.0.1
    for host in ("evil.example:%d" % port, "evil.example", "127.0.0.2.nip.io", "10.0.0.1"):
        st, data = get(host)
        assert st == 421 and b"kvmhost_vms" not in data, (host, st, data[:200])
        assert json.loads(data)["error"]["code"] == "forbidden"
    # with the token, the Host does not matter (not a browser's ambient access)
    c = d.tcp_api(token=d.token())
    assert c.get("/metrics", headers={"Host": "evil.example"}).status == 200
