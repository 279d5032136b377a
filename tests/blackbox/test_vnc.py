"""The graphical console: GET /api/v1/vms/{name}/vnc relays QEMU's VNC unix
socket over a WebSocket (what noVNC in the web console speaks). One boot of
the real test guest with "graphics": "vnc"."""

import socket
import struct

import khlib


def _ws(daemon, name, timeout=15):
    import websocket  # python3-websocket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(daemon.socket)
    return websocket.create_connection("ws://localhost/api/v1/vms/%s/vnc" % name, socket=sock,
                                       timeout=timeout)


class _Reader:
    """Bytes from the relay's binary frames, however QEMU's writes were cut."""

    def __init__(self, ws):
        self.ws = ws
        self.buf = b""

    def __call__(self, n):
        while len(self.buf) < n:
            op, data = self.ws.recv_data()
            assert op == 2, "a text or close frame from the VNC relay: %r %r" % (op, data)
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def test_vnc_relay(daemon, guest, workdir):
    api = daemon.api
    api.wait_accel()
    spec = guest.spec("g1", workdir, disk=False)
    spec["graphics"] = "vnc"
    api.create(spec)
    api.create(guest.spec("plain", workdir, disk=False))
    # no display while stopped, and never without graphics
    r = api.get("/api/v1/vms/g1/vnc", headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                               "Sec-WebSocket-Version": "13",
                                               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert r.status == 409 and "no display now" in r.error["message"], r
    r = api.get("/api/v1/vms/plain/vnc", headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                                  "Sec-WebSocket-Version": "13",
                                                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert r.status == 409 and "graphics" in r.error["message"], r

    api.act_ok("g1", "start")
    api.wait_console("g1", khlib.GUEST_READY, timeout=120)
    ws = _ws(daemon, "g1")
    recv = _Reader(ws)
    try:
        # RFB handshake through the relay: version, security "none", init
        assert recv(12) == b"RFB 003.008\n"
        ws.send_binary(b"RFB 003.008\n")
        n = recv(1)[0]
        types = recv(n)
        assert 1 in types, "QEMU's VNC offers no 'none' security: %r" % types
        ws.send_binary(b"\x01")
        assert recv(4) == b"\0\0\0\0"  # SecurityResult OK
        ws.send_binary(b"\x01")  # ClientInit, shared
        init = recv(24)
        w, h = struct.unpack(">HH", init[:4])
        name_len = struct.unpack(">I", init[20:24])[0]
        name = recv(name_len)
        assert w >= 320 and h >= 200, (w, h)
        assert name, "empty desktop name"
        # a framebuffer update request gets an update (message type 0)
        ws.send_binary(struct.pack(">BBHHHH", 3, 0, 0, 0, w, h))
        assert recv(1) == b"\x00"
    finally:
        ws.close()
    # a second viewer works after the first left
    ws = _ws(daemon, "g1")
    assert _Reader(ws)(12) == b"RFB 003.008\n"
    # the relay ends when the VM stops
    api.act_ok("g1", "kill")
    import websocket
    try:
        while True:
            op, _ = ws.recv_data()
            if op == 8:
                break
    except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
        pass
    ws.close()
