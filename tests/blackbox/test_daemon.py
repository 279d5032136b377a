"""The daemon process: TCP token auth, one daemon per state dir, signals."""

import os
import stat
import subprocess
import time

import khlib


def test_tcp_requires_token(daemons):
    port = khlib.free_port()
    d = daemons(listen="127.0.0.1:%d" % port)
    tok_path = os.path.join(d.state_dir, "api-token")
    st = os.stat(tok_path)
    assert stat.S_IMODE(st.st_mode) == 0o600, "api-token mode %o" % stat.S_IMODE(st.st_mode)
    token = d.token()
    assert len(token) >= 22, "token too short: %d chars" % len(token)

    r = d.tcp_api().get("/api/v1/host")
    assert r.status == 401 and r.error["code"] == "unauthorized", r
    r = d.tcp_api(token="wrong" + token).get("/api/v1/host")
    assert r.status == 401, r
    r = d.tcp_api(token=token[:-1]).get("/api/v1/host")
    assert r.status == 401, r
    r = d.tcp_api().get("/api/v1/vms")
    assert r.status == 401, r
    r = d.tcp_api().post("/api/v1/vms", {"name": "sneaky", "vcpus": 1, "memory_mib": 64})
    assert r.status == 401, r
    r = d.tcp_api().get("/api/v1/openapi.json")
    assert r.status == 401, r
    r = d.tcp_api(token=token).get("/api/v1/host")
    assert r.status == 200, r
    assert d.tcp_api(token=token).wait_accel()["accelerator"] == "tcg"
    r = d.tcp_api(token=token).get("/api/v1/vms")
    assert r.status == 200 and r.json == {"vms": []}, r
    assert d.api.vms() == []  # nothing was created by the unauthorized POST
    # the console WebSocket and the event stream need the token too
    import websocket
    host, port_s = d.listen.rsplit(":", 1)
    for path in ("/api/v1/vms/nope/console", "/api/v1/events"):
        try:
            ws = websocket.create_connection("wss://%s:%s%s" % (host, port_s, path), timeout=5,
                                             sslopt={"ca_certs": d.tls_cert})
            ws.close()
            raise AssertionError("WebSocket %s opened without a token" % path)
        except websocket.WebSocketBadStatusException as e:
            assert e.status_code == 401, (path, e)
    r = d.tcp_api().get("/api/v1/events")
    assert r.status == 401, r
    # the unix socket needs no token
    assert d.api.get("/api/v1/host").status == 200
    # the token survives a restart (same file, same token)
    d.stop()
    d.start()
    assert d.token() == token
    assert d.tcp_api(token=token).get("/api/v1/host").status == 200
    assert token not in d.log(), "the API token appears in the daemon log"


def test_tcp_listen_only_where_asked(daemons):
    port = khlib.free_port()
    daemons(listen="127.0.0.1:%d" % port)
    with open("/proc/net/tcp") as f:
        lines = f.read().splitlines()[1:]
    listening = [ln.split()[1] for ln in lines if ln.split()[3] == "0A"]
    assert "0100007F:%04X" % port in listening, listening
    assert "00000000:%04X" % port not in listening


def test_second_daemon_same_state_dir_refused(daemon):
    other_sock = os.path.join(daemon.base, "sock2")
    t = time.time()
    p = subprocess.run([khlib.DAEMON_BIN, "--state-dir", daemon.state_dir, "--socket", other_sock],
                       capture_output=True, text=True, timeout=20, env=khlib.sanitizer_env())
    took = time.time() - t
    khlib.check_sanitizer(p.stdout + p.stderr, "the refused second kvmhostd")
    assert p.returncode != 0, "second daemon exited 0: %r" % (p.stdout + p.stderr)
    assert took < 5, "second daemon took %.1fs to give up" % took
    msg = (p.stderr + p.stdout).lower()
    assert any(w in msg for w in ("already", "running", "lock", "in use")), \
        "unclear message: %r" % (p.stderr + p.stdout)
    assert not os.path.exists(other_sock)
    # the first one is unharmed
    assert daemon.alive()
    assert daemon.api.get("/api/v1/host").status == 200


def test_second_daemon_same_socket_refused(daemon):
    """Another state dir but the same socket path: must not steal the socket."""
    base2 = daemon.base + "-2"
    os.makedirs(base2)
    try:
        p = subprocess.Popen([khlib.DAEMON_BIN, "--state-dir", os.path.join(base2, "state"),
                              "--socket", daemon.socket], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True,
                             env=khlib.sanitizer_env())
        try:
            out, _ = p.communicate(timeout=8)
        except subprocess.TimeoutExpired:
            # still running: did it take the first daemon's socket over?
            r = daemon.api.get("/api/v1/host")
            p.kill()
            out, _ = p.communicate()
            raise AssertionError("a second kvmhostd on the socket of a running one kept running "
                                 "(GET /host now answers state_dir=%s): %r"
                                 % (r.json.get("state_dir"), out[-500:])) from None
        assert p.returncode != 0, out
        khlib.check_sanitizer(out.decode("utf-8", "replace"), "the refused second kvmhostd")
        assert daemon.api.get("/api/v1/host").json["state_dir"] == daemon.state_dir
    finally:
        subprocess.run(["rm", "-rf", base2])


def test_lock_released_by_kill9(daemon):
    """A crash leaves nothing that needs deleting by hand (case 20)."""
    daemon.kill9()
    daemon.start()
    assert daemon.api.get("/api/v1/host").status == 200


def test_sigterm_exits_cleanly(daemon):
    rc = daemon.stop()
    assert rc == 0, "kvmhostd exit status %s after SIGTERM" % rc
    assert "SIGKILL" not in daemon.log()


def test_bad_command_line(daemon):
    p = subprocess.run([khlib.DAEMON_BIN, "--no-such-option"], capture_output=True,
                       text=True, timeout=10, env=khlib.sanitizer_env())
    assert p.returncode != 0 and p.stderr.strip(), p
    khlib.check_sanitizer(p.stderr, "kvmhostd --no-such-option")
