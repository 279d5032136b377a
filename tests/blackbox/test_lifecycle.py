"""A VM's life through the API with the real test guest under TCG: boot to
the marker, the WebSocket console (two viewers), pause/resume, reboot, stop,
kill, start again; the QEMU process (unprivileged, seccomp, one drive per
disk, security cases 2 and 25).

The tests of this module share one daemon and VMs booted in parallel; they
run in file order."""

import json
import os
import re
import time

import pytest

import khlib
from conftest import DaemonFactory, boot_vms
from storagelib import shell_value

pytestmark = pytest.mark.slow

COMMA_DIR = "a,file="  # the disk lives at WORKDIR/a,file=/etc/shadow


@pytest.fixture(scope="module")
def env(request, guest, tmp_path_factory):
    f = DaemonFactory()
    d = f()
    work = d.base + "/w"
    os.makedirs(work)
    os.chmod(work, 0o755)
    evil = os.path.join(work, COMMA_DIR, "etc", "shadow")
    # c1: console, pause, reboot, stop; k1: kill; drv: a disk path with ",file="
    d.api.create(guest.spec("drv", work, disk_path=evil))
    vms = boot_vms(d.api, guest, work, ["c1", "k1"], marker=khlib.GUEST_READY, timeout=180)
    st, j = d.api.action("drv", "start")
    assert st == 200, j
    vms["drv"] = d.api.vm("drv")
    yield {"daemon": d, "api": d.api, "vms": vms, "work": work, "evil": evil}
    failed = any(getattr(i, "rep_call", None) is not None and i.rep_call.failed
                 for i in request.session.items if i.module is request.module)
    f.finish(failed)


def test_booted_to_marker(env):
    api = env["api"]
    for n in ("c1", "k1"):
        vm = api.vm(n)
        assert vm["state"] == "running", vm
        assert isinstance(vm["pid"], int) and khlib.pid_alive(vm["pid"]), vm
        assert vm["accelerator"] == "tcg", vm
        assert vm["started_at"], vm
        log = api.wait_console(n, khlib.GUEST_DISK, timeout=60)
        assert log.count(khlib.GUEST_READY) == 1, log[-1000:]
    host = api.get("/api/v1/host").json
    assert host["vms"]["total"] == 3 and host["vms"]["running"] == 3, host["vms"]
    r = api.get("/api/v1/vms/c1/console/log?tail=100")
    assert r.status == 200 and 0 < len(r.data) <= 100, r


def test_qemu_is_one_per_vm_with_its_uuid(env):
    for n, vm in env["vms"].items():
        vm = env["api"].vm(n)
        assert khlib.qemu_pids(vm["id"]) == [vm["pid"]], (n, vm)


def test_qemu_unprivileged_and_sandboxed(env):
    for n in ("c1", "k1", "drv"):
        vm = env["api"].vm(n)
        st = khlib.proc_status(vm["pid"])
        uids = st["Uid"].split()
        gids = st["Gid"].split()
        assert all(u != "0" for u in uids), "QEMU of %s runs with uid %s" % (n, st["Uid"])
        assert all(g != "0" for g in gids), "QEMU of %s runs with gid %s" % (n, st["Gid"])
        argv = khlib.proc_cmdline(vm["pid"])
        assert "-sandbox" in argv, argv
        sb = argv[argv.index("-sandbox") + 1]
        assert sb.startswith("on"), sb
        assert st.get("Seccomp") == "2", "seccomp filter not active: Seccomp=%s" % st.get("Seccomp")


def test_qemu_has_no_capabilities(env):
    vm = env["api"].vm("c1")
    st = khlib.proc_status(vm["pid"])
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, (st["CapEff"], st["CapPrm"])
    assert st.get("NoNewPrivs") == "1", st.get("NoNewPrivs")


def _file_nodes(node, out):
    """Collect the protocol (file) nodes of a -blockdev JSON tree."""
    if isinstance(node, dict):
        if node.get("driver") in ("file", "host_device") or "filename" in node:
            out.append(node)
        for v in node.values():
            _file_nodes(v, out)
    return out


def test_disk_path_with_comma_is_one_drive(env):
    """Security case 2: a disk at .../a,file=/etc/shadow is one drive with
    that whole path, and the guest sees our disk."""
    api = env["api"]
    api.wait_console("drv", khlib.GUEST_DISK, timeout=150)
    vm = api.vm("drv")
    argv = khlib.proc_cmdline(vm["pid"])
    assert "-drive" not in argv, argv
    blockdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-blockdev"]
    nodes = []
    for b in blockdevs:
        assert b.startswith("{"), "blockdev not in JSON form: %r" % b
        _file_nodes(json.loads(b), nodes)
    assert len(nodes) == 1, "expected one file node for one disk: %r" % blockdevs
    fn = nodes[0]["filename"]
    if fn.startswith("/dev/fdset/"):
        # passed as an fd: the fd must be our file
        targets = [os.readlink("/proc/%d/fd/%s" % (vm["pid"], fd))
                   for fd in os.listdir("/proc/%d/fd" % vm["pid"])]
        assert env["evil"] in targets, targets
    else:
        assert fn == env["evil"], fn
    # /etc/shadow itself is never opened
    targets = [os.readlink("/proc/%d/fd/%s" % (vm["pid"], fd))
               for fd in os.listdir("/proc/%d/fd" % vm["pid"])]
    assert "/etc/shadow" not in targets, targets
    # nothing but JSON blockdevs mentions the path
    for a in argv:
        if "/etc/shadow" in a:
            assert a in blockdevs, a


def test_two_console_viewers(env, consoles):
    d, api = env["daemon"], env["api"]
    a = consoles(d, "c1")
    b = consoles(d, "c1")
    time.sleep(0.3)
    m = a.run("echo kh-$((%d+1))")
    b.wait_for(re.escape(m.group(0)) + r"\b", timeout=10)
    # the viewer that did not type sees it too, and so does the log
    assert m.group(0) in api.console_log("c1")
    # and b can type as well
    m2 = b.run("echo kh-$((%d+1))")
    a.wait_for(re.escape(m2.group(0)), timeout=10)


def test_running_vm_rules(env):
    api = env["api"]
    before = api.vm("c1")
    r = api.post("/api/v1/vms/c1/start", {"wait": 5})
    assert r.status == 409 and r.error["code"] == "conflict", r
    r = api.delete("/api/v1/vms/c1")
    assert r.status == 409, r
    r = api.patch("/api/v1/vms/c1", {"memory_mib": 512})
    assert r.status == 409, r
    r = api.patch("/api/v1/vms/c1", {"description": "busy"})
    assert r.status == 200 and r.json["description"] == "busy", r
    after = api.vm("c1")
    assert after["pid"] == before["pid"] and after["memory_mib"] == before["memory_mib"], after
    assert khlib.qemu_pids(after["id"]) == [after["pid"]]


def test_pause_resume(env, consoles):
    d, api = env["daemon"], env["api"]
    c = consoles(d, "c1")
    time.sleep(0.3)
    c.send("i=0; while :; do i=$((i+1)); echo tick$i; sleep 0.5; done &\n")
    c.wait_for(r"tick3\b", timeout=30)
    vm = api.act_ok("c1", "pause")
    assert vm["state"] == "paused", vm
    assert api.vm("c1")["state"] == "paused"
    time.sleep(0.5)
    log1 = api.console_log("c1")
    seen1 = len(c.text())
    time.sleep(3)
    assert api.console_log("c1") == log1, "console log grew while paused"
    assert len(c.text()) == seen1, "console viewer got output while paused"
    r = api.post("/api/v1/vms/c1/pause", {})
    assert r.status == 409, r
    vm = api.act_ok("c1", "resume")
    assert vm["state"] == "running", vm
    last = max(int(x) for x in re.findall(r"tick(\d+)", log1))
    c.wait_for(r"tick%d\b" % (last + 2), timeout=20)
    c.send("kill %1; kill $!\n")
    r = api.post("/api/v1/vms/c1/resume", {})
    assert r.status == 409, r


def test_reboot(env):
    api = env["api"]
    pid = api.vm("c1")["pid"]
    assert api.console_log("c1").count(khlib.GUEST_READY) == 1
    vm = api.act_ok("c1", "reboot")
    assert vm["state"] == "running", vm
    log = api.wait_console("c1", khlib.GUEST_READY, count=2, timeout=150)
    assert log.count(khlib.GUEST_READY) == 2
    assert api.vm("c1")["pid"] == pid, "reboot must keep the same QEMU"


def test_stop_acpi_or_timeout(env):
    """The busybox guest ignores the ACPI power button: stop with a timeout
    ends in a kill. Either way the VM ends stopped, and the reason says how."""
    api = env["api"]
    vm = api.vm("c1")
    t = time.time()
    st, j = api.action("c1", "stop", {"timeout": 5}, wait=60)
    took = time.time() - t
    assert st == 200, (st, j)
    vm2 = api.vm("c1")
    assert vm2["state"] == "stopped" and vm2["pid"] is None, vm2
    reason = vm2["state_reason"].lower()
    assert re.search(r"shut|power|kill|timeout|timed out|stop", reason), reason
    assert took < 30, "stop with timeout 5 took %.1fs" % took
    assert khlib.wait_pid_gone(vm["pid"], 10), "QEMU still there after stop"
    assert khlib.qemu_pids(vm["id"]) == []
    assert khlib.cgroup_dirs(vm["id"]) == [], "a stopped VM left its cgroup"
    # the log is kept after the VM stops
    assert khlib.GUEST_READY in api.console_log("c1")


def test_stop_running_vm_with_timeout_zero_and_start_again(env):
    api = env["api"]
    log0 = api.console_log("c1")
    vm = api.act_ok("c1", "start")
    assert vm["state"] == "running" and vm["pid"], vm
    deadline = time.time() + 150
    while True:  # a new READY: appended to the old log, or in a fresh one
        log = api.console_log("c1")
        if log.count(khlib.GUEST_READY) > log0.count(khlib.GUEST_READY) or \
                (not log.startswith(log0) and khlib.GUEST_READY in log):
            break
        assert time.time() < deadline, "no boot marker after start again: %r" % log[-1000:]
        time.sleep(0.2)
    st, j = api.action("c1", "stop", {"timeout": 0})
    assert st == 200, j
    assert api.vm("c1")["state"] == "stopped"
    assert khlib.wait_pid_gone(vm["pid"], 10)


def test_kill(env):
    api = env["api"]
    vm = api.vm("k1")
    assert vm["state"] == "running"
    cgroups_running = khlib.cgroup_dirs(vm["id"])
    t = time.time()
    res = api.act_ok("k1", "kill")
    assert time.time() - t < 10
    assert res["state"] == "stopped", res
    vm2 = api.vm("k1")
    assert vm2["state"] == "stopped" and vm2["pid"] is None, vm2
    assert "kill" in vm2["state_reason"].lower(), vm2["state_reason"]
    assert khlib.wait_pid_gone(vm["pid"], 10)
    r = api.post("/api/v1/vms/k1/kill", {})
    assert r.status == 409, r
    # tasks record what happened
    tasks = api.get("/api/v1/tasks").json["tasks"]
    kinds = {(t["kind"], t["vm"], t["state"]) for t in tasks}
    assert ("vm.kill", "k1", "succeeded") in kinds, kinds
    assert ("vm.start", "k1", "succeeded") in kinds, kinds
    assert khlib.cgroup_dirs(vm["id"]) == [], "a killed VM left its cgroup"
    # deletable once stopped
    assert api.delete("/api/v1/vms/k1").status == 204
    assert khlib.cgroup_dirs(vm["id"]) == [], "a deleted VM left its cgroup"
    if api.get("/api/v1/host").json.get("cgroup") not in (None, "none"):
        assert cgroups_running, "the running VM had no cgroup dir to check"


def test_guest_poweroff_shows_stopped(env, consoles):
    d, api = env["daemon"], env["api"]
    vm = api.vm("drv")
    c = consoles(d, "drv")
    time.sleep(0.3)
    c.run("echo kh-$((%d+1))")
    c.send("poweroff -f\n")
    vm2 = api.wait_state("drv", "stopped", timeout=60)
    assert vm2["pid"] is None, vm2
    assert re.search(r"shut|power|guest", vm2["state_reason"].lower()), vm2["state_reason"]
    assert khlib.wait_pid_gone(vm["pid"], 10)
    assert khlib.cgroup_dirs(vm["id"]) == [], "a powered-off VM left its cgroup"


def test_microvm_boots_to_its_disk(env, guest):
    """microvm (virtio-mmio, no PCI, no firmware) boots the same guest; under
    TCG the daemon tells the kernel the TSC frequency or the boot stalls."""
    api = env["api"]
    spec = guest.spec("mv", env["work"])
    spec["machine"] = "microvm"
    r = api.post("/api/v1/vms", spec)
    assert r.status == 201, r
    st, j = api.action("mv", "start")
    assert st == 200, j
    try:
        log = api.wait_console("mv", khlib.GUEST_DISK, timeout=120)
        assert khlib.GUEST_READY in log
        vm = api.vm("mv")
        with open("/proc/%d/cmdline" % vm["pid"], "rb") as f:
            args = f.read().split(b"\0")
        assert b"microvm,dump-guest-core=off" in args
        assert any(a.startswith(b"console=ttyS0") and b"tsc_early_khz=" in a for a in args)
    finally:
        api.action("mv", "kill")


def test_cpu_model(env, guest):
    """cpu_model is QEMU's -cpu as given; unset, the accelerator's default
    (under TCG x86-64-v2-AES, not max); a patch takes effect at the next
    start; option syntax and hostile strings are refused with 400."""
    api = env["api"]
    spec = guest.spec("cpu1", env["work"])
    spec["cpu_model"] = "Nehalem,+aes"
    r = api.post("/api/v1/vms", spec)
    assert r.status == 201, r
    assert api.vm("cpu1")["cpu_model"] == "Nehalem,+aes"
    st, j = api.action("cpu1", "start")
    assert st == 200, j
    try:
        api.wait_console("cpu1", khlib.GUEST_READY, timeout=120)
        vm = api.vm("cpu1")
        assert khlib.qemu_cpu(vm["pid"]) == "Nehalem,+aes"
        # the guest sees it: SSE4.2 and AES, no AVX
        con = khlib.Console(env["daemon"].socket, "cpu1")
        try:
            flags = shell_value(con, "$(grep -m1 ^flags /proc/cpuinfo | tr ' ' '\\n' "
                                     "| grep -x -e aes -e sse4_2 -e avx | sort | tr '\\n' +)",
                                timeout=60)
        finally:
            con.close()
        assert flags == "aes+sse4_2+", flags
        # changed while stopped only (as machine)
        r = api.patch("/api/v1/vms/cpu1", {"cpu_model": None})
        assert r.status == 409 and "cpu_model" in r.json["error"]["message"], r
    finally:
        api.action("cpu1", "kill")
    api.wait_state("cpu1", "stopped", timeout=30)
    # unset: the accelerator's default at the next start
    r = api.patch("/api/v1/vms/cpu1", {"cpu_model": None})
    assert r.status == 200, r
    assert "cpu_model" not in api.vm("cpu1")
    st, j = api.action("cpu1", "start")
    assert st == 200, j
    try:
        vm = api.wait_state("cpu1", "running", timeout=60)
        cpu = khlib.qemu_cpu(vm["pid"])
        if vm["accelerator"] == "tcg":
            assert cpu == "qemu64,+aes,+cx16,+lahf_lm,+pclmulqdq,+popcnt,+sse4.1,+sse4.2,+ssse3"
        else:
            assert cpu == "host"
    finally:
        api.action("cpu1", "kill")
    for bad in ("max -m 1", "max,x=/etc/passwd", "-machine", "", "a" * 200, "max\nx", 7):
        r = api.patch("/api/v1/vms/cpu1", {"cpu_model": bad})
        assert r.status == 400 and "cpu_model" in r.json["error"]["message"], (bad, r)
        s = dict(spec, name="cpu2", cpu_model=bad)
        r = api.post("/api/v1/vms", s)
        assert r.status == 400 and "cpu_model" in r.json["error"]["message"], (bad, r)
    assert api.get("/api/v1/vms/cpu2").status == 404
    # the CLI: --cpu on set, shown by show
    p = khlib.cli(env["daemon"], "vm", "edit", "cpu1", "--cpu", "Westmere")
    assert p.returncode == 0, (p.stdout, p.stderr)
    p = khlib.cli(env["daemon"], "vm", "show", "cpu1")
    assert re.search(r"cpu\s*:?\s+Westmere", p.stdout), p.stdout
    p = khlib.cli(env["daemon"], "vm", "edit", "cpu1", "--cpu", "max -m 1")
    assert p.returncode != 0 and "cpu_model" in p.stderr, (p.returncode, p.stderr)
