"""Bad input: security cases 1, 2 (names), 3, 13, 14 of
shared/design/security-cases.md. Every bad request gets 400/413 with an error
message, and nothing changes: the VM list, the state dir's files outside it,
/etc."""

import json
import os
import socket
import time

import pytest

BAD_NAMES = [
    "../../etc/x", "x,file=/etc/shadow", "a\nb", "$(id)", ";", "a;b", "`id`",
    ".hidden", "-x", "", "x" * 65, "a b", "a/b", "a\x00b", "..", "a\tb", "ä",
]


def tree(path):
    out = set()
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            out.add(os.path.join(root, n))
    return out


@pytest.fixture
def snapshot(mdaemon):
    """Asserts at the end that the VM list, /etc and the daemon's base dir
    (outside its state dir) did not change."""
    api = mdaemon.api
    vms0 = api.vms()
    etc0 = set(os.listdir("/etc"))
    base0 = set(os.listdir(mdaemon.base))
    yield
    assert api.vms() == vms0, "VM list changed"
    assert set(os.listdir("/etc")) - etc0 == set(), "new files in /etc"
    assert set(os.listdir(mdaemon.base)) - base0 == set(), "new files next to the state dir"
    assert not os.path.exists("/etc/x")


def _assert_invalid(r, what, field=None):
    assert r.status == 400, (what, r)
    e = r.error
    assert e["code"] == "invalid", (what, r)
    if field and not e["message"].startswith("malformed JSON"):  # the message names the field
        assert field in e["message"], (what, e)


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[:20])
def test_bad_vm_name_rejected(mdaemon, snapshot, fake_boot, name):
    r = mdaemon.api.post("/api/v1/vms", {"name": name, "vcpus": 1, "memory_mib": 64, "boot": fake_boot})
    _assert_invalid(r, name, "name")


def test_bad_names_in_urls(mdaemon, snapshot):
    api = mdaemon.api
    for path in ("/api/v1/vms/..%2F..%2Fetc%2Fx", "/api/v1/vms/%24(id)", "/api/v1/vms/a%0Ab",
                 "/api/v1/vms/x,file=%2Fetc%2Fshadow"):
        r = api.get(path)
        assert r.status in (400, 404), (path, r)
        r.error
        r = api.post(path + "/start", {})
        assert r.status in (400, 404), (path, r)
        r = api.delete(path)
        assert r.status in (400, 404), (path, r)


def test_bad_strings_in_paths(mdaemon, snapshot, fake_boot):
    api = mdaemon.api
    k = fake_boot["kernel"]
    cases = [
        {"boot": dict(fake_boot, kernel=k + "\nx")},
        {"boot": dict(fake_boot, kernel=k + "\u0000")},
        {"boot": dict(fake_boot, kernel="vmlinuz")},              # not absolute
        {"boot": dict(fake_boot, initrd="../initrd.img")},
        {"boot": dict(fake_boot, cmdline="console=ttyS0\nx")},
        {"disks": [{"path": "/tmp/d\n.img", "format": "raw"}]},
        {"disks": [{"path": "relative.img", "format": "raw"}]},
        {"disks": [{"path": "/tmp/x.img", "format": "vmdk"}]},
        {"disks": [{"path": "/tmp/x.img"}]},                      # format is never guessed
        {"disks": [{"path": "/tmp/x.img", "format": "raw", "cache": "none"}]},
        {"disks": "/tmp/x.img"},
    ]
    for i, extra in enumerate(cases):
        spec = {"name": "strs%d" % i, "vcpus": 1, "memory_mib": 64, "boot": fake_boot}
        spec.update(extra)
        _assert_invalid(api.post("/api/v1/vms", spec), extra)


BAD_BODIES = [
    ("not json", b"{"),
    ("trailing garbage", b'{"name": "j1", "vcpus": 1, "memory_mib": 64} x'),
    ("array", b"[]"),
    ("null", b"null"),
    ("string", b'"j1"'),
    ("empty", b""),
    ("bad utf8", b'{"name": "j\xff1", "vcpus": 1, "memory_mib": 64}'),
]

BAD_FIELDS = [
    {"memory_mib": 0}, {"memory_mib": -1}, {"memory_mib": 10 ** 20}, {"memory_mib": "512"},
    {"memory_mib": 15}, {"memory_mib": 16777217}, {"memory_mib": 1.5},
    {"memory_mib": True}, {"vcpus": 0}, {"vcpus": 256}, {"vcpus": -1}, {"vcpus": "1"},
    {"vcpus": 1.5}, {"machine": "pc"}, {"machine": 1}, {"graphics": "spice"},
    {"serial": "yes"}, {"name": 5}, {"owner": "root"}, {"qemu_args": ["-device", "x"]},
    {"id": "00000000-0000-0000-0000-000000000000"}, {"state": "running"}, {"pid": 1},
    {"description": 5}, {"description": "x" * 5000}, {"boot": "/vmlinuz"},
    {"boot": {"kernel": "/vmlinuz", "extra": 1}},
]


@pytest.mark.parametrize("what,raw", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_malformed_json_rejected(mdaemon, snapshot, what, raw):
    _assert_invalid(mdaemon.api.post("/api/v1/vms", raw=raw), what)


@pytest.mark.parametrize("field", BAD_FIELDS, ids=lambda f: json.dumps(f)[:30])
def test_wrong_types_and_ranges_rejected(mdaemon, snapshot, fake_boot, field):
    spec = {"name": "typed", "vcpus": 1, "memory_mib": 64, "boot": fake_boot}
    spec.update(field)
    key = list(field)[0]
    _assert_invalid(mdaemon.api.post("/api/v1/vms", spec), field, key)


def test_bad_patch_changes_nothing(mdaemon, fake_boot):
    api = mdaemon.api
    api.create({"name": "patchme", "vcpus": 1, "memory_mib": 64, "boot": fake_boot})
    before = api.vm("patchme")
    for field in BAD_FIELDS:
        _assert_invalid(api.patch("/api/v1/vms/patchme", field), field)
        assert api.vm("patchme") == before, field
    for what, raw in BAD_BODIES:
        _assert_invalid(api.patch("/api/v1/vms/patchme", raw=raw), what)
    assert api.vm("patchme") == before
    assert api.delete("/api/v1/vms/patchme").status == 204


def test_boundaries_accepted(mdaemon, fake_boot):
    api = mdaemon.api
    r = api.post("/api/v1/vms", {"name": "bounds", "vcpus": 255, "memory_mib": 16, "boot": fake_boot})
    assert r.status == 201, r
    # the schema allows up to 16 TiB; a VM larger than the host's RAM is
    # refused (test_crashsafety.py): the host's RAM is the boundary
    with open("/proc/meminfo") as f:
        host_mib = int(f.readline().split()[1]) // 1024
    r = api.patch("/api/v1/vms/bounds", {"memory_mib": host_mib, "vcpus": 1})
    assert r.status == 200, r
    r = api.patch("/api/v1/vms/bounds", {"memory_mib": 16777216})
    assert r.status == 400 and "host's RAM" in r.error["message"], r
    assert api.delete("/api/v1/vms/bounds").status == 204


def _raw_request(sock_path, head, body_iter=(), timeout=10):
    """Send a request; returns (status, response bytes, sent_all)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    s.sendall(head)
    sent_all = True
    try:
        for chunk in body_iter:
            s.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError):
        sent_all = False
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            d = s.recv(65536)
            if not d:
                break
            data += d
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    assert data.startswith(b"HTTP/1."), "no HTTP response: %r (sent_all=%s)" % (data[:200], sent_all)
    return int(data.split()[1]), data, sent_all


def test_body_over_1mib_rejected_before_read(mdaemon, snapshot):
    """Content-Length over 1 MiB: 413 from the headers alone."""
    size = 2 * 1024 * 1024
    head = ("POST /api/v1/vms HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n" % size).encode()
    # Send only the headers: a server that buffers the body first would hang.
    status, data, _ = _raw_request(mdaemon.socket, head, timeout=10)
    assert status == 413, data[:300]


def test_body_over_1mib_sent_in_full(mdaemon, snapshot, fake_boot):
    body = json.dumps({"name": "huge", "vcpus": 1, "memory_mib": 64, "boot": fake_boot,
                       "description": "x" * (1024 * 1024 + 10)}).encode()
    r = mdaemon.api.post("/api/v1/vms", raw=body)
    assert r.status == 413, r
    assert r.error["code"] == "too_large", r


def test_chunked_body_over_1mib_rejected(mdaemon, snapshot):
    head = (b"POST /api/v1/vms HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536

    def body():
        first = b'{"name": "chunky", "description": "'
        yield b"%x\r\n%s\r\n" % (len(first), first)
        for _ in range(24):  # 1.5 MiB
            yield b"%x\r\n%s\r\n" % (len(chunk), chunk)
        last = b'"}'
        yield b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last)

    status, data, _ = _raw_request(mdaemon.socket, head, body(), timeout=20)
    assert status == 413, data[:300]


def test_body_exactly_under_limit_ok(mdaemon, fake_boot):
    """A large but legal body (just under 1 MiB of whitespace) is read."""
    spec = json.dumps({"name": "padded", "vcpus": 1, "memory_mib": 64, "boot": fake_boot}).encode()
    raw = spec[:-1] + b" " * (1024 * 1024 - len(spec) - 16) + b"}"
    r = mdaemon.api.post("/api/v1/vms", raw=raw)
    assert r.status == 201, r
    assert mdaemon.api.delete("/api/v1/vms/padded").status == 204


def test_daemon_still_healthy(mdaemon):
    assert mdaemon.alive()
    t = time.time()
    assert mdaemon.api.get("/api/v1/host").status == 200
    assert time.time() - t < 2
