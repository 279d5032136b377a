"""REST API v1 basics (docs/api.md), no guest boots."""

import os
import re
import time

import khlib

UUID_RX = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RFC3339_RX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def doc_routes():
    """(method, path) rows of the Routes table of docs/api.md."""
    with open(os.path.join(khlib.REPO, "docs", "api.md")) as f:
        text = f.read()
    rows = re.findall(r"^\|\s*(GET|POST|PUT|PATCH|DELETE)\s*\|\s*(/api/v1/\S*)\s*\|", text, re.M)
    assert len(rows) >= 18, "routes table of docs/api.md not parsed: %r" % rows
    return rows


def test_host_facts(daemon, api):
    r = api.get("/api/v1/host")
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    # The KVM probe runs in the background at start-up (up to ~2 s); the
    # daemon says "probing" meanwhile (not in docs/api.md).
    h = khlib.wait_accel(api)
    # /dev/kvm cannot run guests on this machine: TCG, with the reason why.
    assert h["accelerator"] == "tcg", h
    assert isinstance(h.get("accelerator_reason"), str) and len(h["accelerator_reason"]) > 5, h
    assert h["qemu"]["binary"].endswith("qemu-system-x86_64"), h
    assert re.match(r"^\d+\.\d+", h["qemu"]["version"]), h
    assert h["version"], h
    assert h["cpus"] >= 1 and h["memory_mib"] > 0, h
    assert h["vms"]["total"] == 0 and h["vms"]["running"] == 0, h
    assert os.path.realpath(h["state_dir"]) == os.path.realpath(daemon.state_dir), h
    assert os.path.realpath(h["socket"]) == os.path.realpath(daemon.socket), h
    assert isinstance(h["uptime_seconds"], (int, float)) and h["uptime_seconds"] >= 0, h


def test_socket_mode(daemon):
    st = os.stat(daemon.socket)
    assert st.st_mode & 0o007 == 0, "socket is world-accessible: %o" % st.st_mode


def test_vm_crud(daemon, api, fake_boot):
    assert api.vms() == []
    spec = {"name": "web1", "vcpus": 1, "memory_mib": 256, "boot": fake_boot,
            "description": "first"}
    r = api.post("/api/v1/vms", spec)
    assert r.status == 201, r
    vm = r.json
    assert UUID_RX.match(vm["id"]), vm
    assert vm["name"] == "web1" and vm["vcpus"] == 1 and vm["memory_mib"] == 256, vm
    # defaults
    assert vm["machine"] == "q35" and vm["serial"] is True and vm["graphics"] == "none", vm
    assert vm["boot"]["kernel"] == fake_boot["kernel"], vm
    assert vm["state"] == "stopped" and vm["pid"] is None, vm
    assert isinstance(vm["state_reason"], str), vm
    assert RFC3339_RX.match(vm["created_at"]) and RFC3339_RX.match(vm["updated_at"]), vm

    lst = api.vms()
    assert [v["name"] for v in lst] == ["web1"] and lst[0]["id"] == vm["id"], lst
    got = api.vm("web1")
    assert got["id"] == vm["id"] and got["memory_mib"] == 256, got

    # duplicate name
    r = api.post("/api/v1/vms", spec)
    assert r.status == 409 and r.error["code"] == "conflict", r

    # patch
    time.sleep(1.1)
    r = api.patch("/api/v1/vms/web1", {"memory_mib": 512, "vcpus": 2, "description": "second"})
    assert r.status == 200, r
    assert r.json["memory_mib"] == 512 and r.json["vcpus"] == 2, r
    assert r.json["description"] == "second" and r.json["id"] == vm["id"], r
    assert r.json["updated_at"] != vm["updated_at"], r
    assert api.vm("web1")["memory_mib"] == 512
    before = api.vm("web1")
    for bad in ({"name": "other"}, {"id": "x"}, {"state": "running"}, {"pid": 1},
                {"owner": "x"}, {"qemu_args": ["-x"]}):
        r = api.patch("/api/v1/vms/web1", bad)
        assert r.status == 400 and r.error["code"] == "invalid", (bad, r)
    assert api.vm("web1") == before

    host = api.get("/api/v1/host").json
    assert host["vms"]["total"] == 1, host

    # paths on disk come from the VM's id, never from its name (case 1)
    for root, dirs, files in os.walk(daemon.state_dir):
        for n in dirs + files:
            assert "web1" not in n, "state dir entry named after the VM: %s" % os.path.join(root, n)

    # delete
    r = api.delete("/api/v1/vms/web1")
    assert r.status == 204 and r.data == b"", r
    r = api.get("/api/v1/vms/web1")
    assert r.status == 404 and r.error["code"] == "not_found", r
    assert api.vms() == []
    r = api.delete("/api/v1/vms/web1")
    assert r.status == 404, r


def test_vm_name_rules_accept(api, fake_boot):
    for name in ("a", "A1.b-c_d", "x" * 64, "9lives"):
        r = api.post("/api/v1/vms", {"name": name, "vcpus": 1, "memory_mib": 64, "boot": fake_boot})
        assert r.status == 201, (name, r)
        assert api.vm(name)["name"] == name
    assert len(api.vms()) == 4


def test_errors_and_routing(api):
    r = api.get("/api/v1/vms/nope")
    assert r.status == 404 and r.error["code"] == "not_found", r
    r = api.get("/api/v1/no-such-route")
    assert r.status == 404 and r.error["code"] == "not_found", r
    r = api.request("PUT", "/api/v1/host")
    assert r.status == 405 and r.error["code"] == "method_not_allowed", r
    r = api.request("DELETE", "/api/v1/vms")
    assert r.status == 405, r
    for verb in ("start", "stop", "kill", "reboot", "pause", "resume"):
        r = api.post("/api/v1/vms/nope/" + verb, {})
        assert r.status == 404 and r.error["code"] == "not_found", (verb, r)
    r = api.get("/api/v1/vms/nope/console/log")
    assert r.status == 404, r
    r = api.get("/api/v1/tasks/00000000-0000-0000-0000-000000000000")
    assert r.status == 404 and r.error["code"] == "not_found", r
    r = api.get("/api/v1/tasks")
    assert r.status == 200 and isinstance(r.json["tasks"], list), r


def test_actions_forbidden_on_stopped_vm(api, fake_boot):
    api.create({"name": "idle", "vcpus": 1, "memory_mib": 64, "boot": fake_boot})
    before = api.vm("idle")
    for verb in ("pause", "resume", "reboot"):
        r = api.post("/api/v1/vms/idle/" + verb, {})
        assert r.status == 409 and r.error["code"] == "conflict", (verb, r)
    assert api.vm("idle") == before


def test_console_log_of_never_started_vm(api, fake_boot):
    api.create({"name": "quiet", "vcpus": 1, "memory_mib": 64, "boot": fake_boot})
    r = api.get("/api/v1/vms/quiet/console/log")
    assert r.status == 200 and r.data == b"", r
    assert r.headers.get("content-type", "").startswith("text/plain"), r.headers


def test_openapi_lists_every_documented_route(api):
    r = api.get("/api/v1/openapi.json")
    assert r.status == 200, r
    doc = r.json
    assert str(doc.get("openapi", "")).startswith("3."), doc.get("openapi")
    paths = doc["paths"]

    def norm(p):
        return re.sub(r"\{[^}]+\}", "{}", p)

    have = {}
    for p, ops in paths.items():
        have.setdefault(norm(p), set()).update(k.lower() for k in ops)
    missing = [(m, p) for m, p in doc_routes() if m.lower() not in have.get(norm(p), set())]
    assert not missing, "routes of docs/api.md missing from openapi.json: %r" % missing


def test_events_stream(daemon, api, fake_boot):
    sse = khlib.SSE(daemon.socket)
    try:
        assert sse.status == 200, sse.status
        assert sse.headers.get("content-type", "").startswith("text/event-stream"), sse.headers
        api.create({"name": "ev1", "vcpus": 1, "memory_mib": 64, "boot": fake_boot})
        ev = sse.read_until(lambda e: e["data"].get("type") == "vm.created"
                            and e["data"].get("vm") == "ev1")
        assert ev, "no vm.created event for ev1; got %r" % sse.buf[-500:]
        assert isinstance(ev["data"]["id"], int), ev
    finally:
        sse.close()
    # replay from the buffer
    sse = khlib.SSE(daemon.socket, "/api/v1/events?since=0")
    try:
        ev = sse.read_until(lambda e: e["data"].get("type") == "vm.created"
                            and e["data"].get("vm") == "ev1")
        assert ev, "vm.created not replayed with ?since=0"
    finally:
        sse.close()


def test_start_that_qemu_refuses(daemon, api, fake_boot):
    """A kernel and initrd of zeros (QEMU refuses to load them): the start
    fails cleanly (never 500), the VM is stopped with a reason, and no QEMU
    is left behind."""
    vm = api.create({"name": "broken", "vcpus": 1, "memory_mib": 64, "boot": fake_boot})
    r = api.post("/api/v1/vms/broken/start", {"wait": 60}, timeout=120)
    assert r.status >= 400 and r.status != 500, r
    e = r.error
    if r.status in (502, 504):
        assert e.get("task"), "a failed task's error names the task: %r" % r.json
        t = api.get("/api/v1/tasks/" + e["task"])
        assert t.status == 200 and t.json["state"] == "failed", t
    after = api.wait_state("broken", "stopped", timeout=30)
    assert after["pid"] is None and after["state_reason"], after
    assert khlib.qemu_pids(vm["id"]) == []
    assert daemon.alive()
