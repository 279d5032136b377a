"""Console and VNC relayed to the owner: two hosts of a cluster (h1, h2 as in
test_membership.py). A VM runs on h2 with a serial console and a VNC
display; through h1's API socket its console is read and typed into (the
guest's shell answers), the CLI's `vm console` on h1 shows it, and the VNC
WebSocket speaks RFB from QEMU on h2. When the VM stops on h2, the relayed
console closes on h1. h1's event stream (SSE) shows c2 created, running and
deleted on h2, each event with "host". One guest boot.

Run: KH_BUILD_DIR=$PWD/build-asan /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
     tests/cluster/test_relay.py
"""

import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "blackbox"))

import khlib  # noqa: E402
from test_membership import (PORT, Phase, cli_json, pytest_runtest_makereport,  # noqa: E402,F401
                             three, wait_for)
from test_vms import spec  # noqa: E402


def vnc_ws(d, name, timeout=15):
    import websocket  # python3-websocket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(d.socket)
    return websocket.create_connection("ws://localhost/api/v1/vms/%s/vnc" % name, socket=sock,
                                       timeout=timeout)


def ev_is(e, typ, vm, state=None):
    d = e.get("data") or {}
    return (d.get("type") == typ and d.get("vm") == vm and
            (state is None or (d.get("data") or {}).get("state") == state))


def test_relay(three):
    h, (d1, d2, _d3) = three
    step = Phase()
    paths = khlib.guest_paths()
    assert paths, "no test guest"
    cli_json(d1, "cluster", "create", "--name", "lab")
    tok = cli_json(d1, "cluster", "token")["token"]
    assert cli_json(d2, "cluster", "join", "%s:%d" % (h.addr(1), PORT), "--token", tok)["enabled"]
    wait_for(lambda: cli_json(d1, "cluster", "status")["online"] == 2, 20, "2 online")
    sse = khlib.SSE(d1.socket)  # h1's event stream shows h2's VMs
    s = spec("c2", paths[:2])
    s["graphics"] = "vnc"
    r = d2.api.post("/api/v1/vms", s)
    assert r.status == 201, r
    wait_for(lambda: "c2" in {v["name"] for v in d1.api.get("/api/v1/vms").json["vms"]}, 10,
             "h1 lists c2")
    ev = sse.read_until(lambda e: ev_is(e, "vm.created", "c2"), timeout=10)
    assert ev and ev["data"]["data"]["host"] == "h2", ev
    r = d1.api.post("/api/v1/vms/c2/start", {"wait": 60}, timeout=90)  # forwarded
    assert r.status == 200, r
    ev = sse.read_until(lambda e: ev_is(e, "vm.state", "c2", "running"), timeout=10)
    assert ev and ev["data"]["data"]["host"] == "h2", ev
    assert ev["data"]["data"]["previous"] == "starting", ev
    step("h1's event stream: c2 created and running on h2")
    d2.api.wait_console("c2", khlib.GUEST_READY, timeout=150)
    step("c2 runs on h2, its guest is up")

    con = khlib.Console(d1.socket, "c2")  # h1's socket: relayed to h2
    try:
        con.run("echo kh-$((%d+1))", timeout=60)
        con.run("echo kh-$((%d+1)); hostname >/dev/null", timeout=30)
        step("console of c2 read and typed through h1")

        # a second relayed viewer at the same time: typed there, seen on both
        con2 = khlib.Console(d1.socket, "c2")
        try:
            start1 = len(con.text())
            m = con2.run("echo kh-$((%d+1))", timeout=30)
            con.wait_for(m.group(0), timeout=10, start=start1)
        finally:
            con2.close()

        # the CLI against h1: `vm console` shows the guest's answer
        p = subprocess.Popen([khlib.CLI_BIN, "--socket", d1.socket, "vm", "console", "c2"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            time.sleep(1)
            p.stdin.write(b"echo cli-$((40+2))\n")
            p.stdin.flush()
            time.sleep(3)
        finally:
            p.kill()
            out, _ = p.communicate(timeout=10)
        assert b"cli-42" in out, out[-500:]
        step("kvmhost vm console c2 on h1 shows the guest")

        ws = vnc_ws(d1, "c2")
        try:
            buf = b""
            while len(buf) < 12:
                op, data = ws.recv_data()
                assert op == 2, (op, data)
                buf += data
            assert buf[:12] == b"RFB 003.008\n", buf
        finally:
            ws.close()
        step("VNC of c2 through h1: QEMU's RFB greeting")

        # the VM stops on h2: the relayed console closes on h1
        r = d2.api.post("/api/v1/vms/c2/kill", {"wait": 30}, timeout=60)
        assert r.status == 200, r
        wait_for(lambda: con.closed, 10, "the relayed console closed")
        step("c2 killed on h2: the console on h1 closed")
    finally:
        con.close()
    # an owner that cannot be reached: the upgrade is accepted, then closed
    r = d1.api.post("/api/v1/vms/c2/start", {"wait": 60}, timeout=90)
    assert r.status == 200, r
    h.partition(2)
    try:
        c = khlib.Console(d1.socket, "c2")
        wait_for(lambda: c.closed, 20, "a console to an unreachable owner closed")
        c.close()
    finally:
        h.heal(2)
    step("owner cut off: the relayed console closes")
    r = d2.api.post("/api/v1/vms/c2/kill", {"wait": 30}, timeout=60)
    assert r.status == 200, r
    assert d2.api.delete("/api/v1/vms/c2").status == 204
    ev = sse.read_until(lambda e: ev_is(e, "vm.deleted", "c2"), timeout=10)
    assert ev and ev["data"]["data"]["host"] == "h2", ev
    sse.close()
    step("h1's event stream: c2 deleted on h2")
