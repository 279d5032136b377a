"""The web console's side of the daemon: static files from --web-dir, and
browser sessions on TCP (POST /api/v1/session: a cookie for the token, a
CSRF token for writes) through the real route table."""

import http.client
import json
import os
import socket

import khlib


_CTX = {}  # port -> the daemon's ssl context (TLS is the default on TCP)


def _req(port, method, path, body=None, headers=None):
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=_CTX[port])
    h = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    raw = r.read()
    c.close()
    j = None
    if raw and "json" in (r.getheader("Content-Type") or ""):
        j = json.loads(raw)
    return r.status, r.getheader("Set-Cookie"), j, raw, r


def _web_daemon(daemons, workdir):
    web = os.path.join(workdir, "web")
    os.mkdir(web)
    os.chmod(web, 0o755)
    with open(os.path.join(web, "index.html"), "w") as f:
        f.write("<!doctype html><title>kvmhost</title>")
    port = khlib.free_port()
    d = daemons(listen="127.0.0.1:%d" % port, extra_args=["--web-dir", web])
    _CTX[port] = d.ssl_context()
    return d, port


def test_web_dir_served_without_token(daemons, workdir):
    d, port = _web_daemon(daemons, workdir)
    st, _, _, raw, r = _req(port, "GET", "/")
    assert st == 200 and b"<title>kvmhost</title>" in raw
    assert "frame-ancestors 'none'" in r.getheader("Content-Security-Policy")
    # the API still needs credentials
    st, _, j, _, _ = _req(port, "GET", "/api/v1/vms")
    assert st == 401, j
    # a page asks whether it is logged in without a 401
    st, _, j, _, _ = _req(port, "GET", "/api/v1/session")
    assert st == 200 and j == {"authenticated": False, "oidc": False}, j


def test_session_cookie_and_csrf(daemons, workdir, fake_boot):
    d, port = _web_daemon(daemons, workdir)
    token = d.token()
    st, cookie, j, _, _ = _req(port, "POST", "/api/v1/session", {"token": "x" + token})
    assert st == 401 and cookie is None, j
    st, cookie, j, _, _ = _req(port, "POST", "/api/v1/session", {"token": token, "user": "a"})
    assert st == 400 and j["error"]["code"] == "invalid", j
    st, cookie, j, _, _ = _req(port, "POST", "/api/v1/session", {"token": token})
    assert st == 201, j
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    csrf = j["csrf_token"]
    ck = {"Cookie": cookie.split(";")[0]}
    st, _, j, _, _ = _req(port, "GET", "/api/v1/session", headers=ck)
    assert j["authenticated"] and j["via"] == "session" and j["csrf_token"] == csrf, j

    spec = {"name": "w1", "vcpus": 1, "memory_mib": 64, "boot": fake_boot}
    st, _, j, _, _ = _req(port, "POST", "/api/v1/vms", spec, headers=ck)
    assert st == 403 and j["error"]["code"] == "forbidden", j
    st, _, j, _, _ = _req(port, "POST", "/api/v1/vms", spec,
                          headers=dict(ck, **{"X-CSRF-Token": "0" * 64}))
    assert st == 403, j
    assert d.api.vms() == []  # nothing was created
    st, _, j, _, _ = _req(port, "POST", "/api/v1/vms", spec,
                          headers=dict(ck, **{"X-CSRF-Token": csrf}))
    assert st == 201 and j["name"] == "w1", j
    st, _, j, _, _ = _req(port, "GET", "/api/v1/vms", headers=ck)
    assert st == 200 and [v["name"] for v in j["vms"]] == ["w1"], j
    # a write from another site's page: refused even with the CSRF token
    st, _, j, _, _ = _req(port, "DELETE", "/api/v1/vms/w1",
                          headers=dict(ck, **{"X-CSRF-Token": csrf,
                                              "Origin": "http://evil.example"}))
    assert st == 403, j

    # the event stream takes the cookie (EventSource cannot send a header)
    s = d.tcp_connect()
    s.sendall(("GET /api/v1/events?since=0 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
               "Accept: text/event-stream\r\n%s\r\n\r\n" % (port, "Cookie: " + ck["Cookie"]))
              .encode())
    buf = b""
    while b"vm.created" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    s.close()
    assert buf.startswith(b"HTTP/1.1 200") and b"vm.created" in buf, buf[:300]

    # logout: needs the CSRF token, then the cookie is dead
    st, _, j, _, _ = _req(port, "DELETE", "/api/v1/session", headers=ck)
    assert st == 403, j
    st, cookie2, _, _, _ = _req(port, "DELETE", "/api/v1/session",
                                headers=dict(ck, **{"X-CSRF-Token": csrf}))
    assert st == 204 and "Max-Age=0" in cookie2
    st, _, j, _, _ = _req(port, "GET", "/api/v1/vms", headers=ck)
    assert st == 401, j
    assert token not in d.log(), "the API token appears in the daemon log"
    assert ck["Cookie"].split("=", 1)[1] not in d.log(), "a session id appears in the log"
