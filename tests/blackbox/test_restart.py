"""Faults: kill -9 of the daemon with VMs running (case 19), a guest that
powers off while the daemon is down, kill -9 during a start (case 18), two
concurrent starts (case 16)."""

import re
import threading
import time

import pytest

import khlib

pytestmark = pytest.mark.slow


def consistent(api, ids, settle=20):
    """No QEMU without a record, no record saying running without its QEMU.
    Waits up to settle seconds for transitional states to end."""
    deadline = time.time() + settle
    while True:
        vms = {v["id"]: v for v in api.vms()}
        problems = []
        for vid in ids:
            procs = khlib.qemu_pids(vid)
            v = vms.get(vid)
            if v is None:
                if procs:
                    problems.append("QEMU %s for vm id %s without a record" % (procs, vid))
                continue
            if v["state"] in ("running", "paused"):
                if procs != [v["pid"]]:
                    problems.append("%s is %s with pid %s but QEMUs are %s"
                                    % (v["name"], v["state"], v["pid"], procs))
            elif v["state"] == "stopped":
                if procs or v["pid"] is not None:
                    problems.append("%s is stopped (pid %s) but QEMUs are %s"
                                    % (v["name"], v["pid"], procs))
            else:
                problems.append("%s still %s" % (v["name"], v["state"]))
        if not problems:
            return vms
        if time.time() > deadline:
            raise AssertionError("inconsistent after restart: %s" % problems)
        time.sleep(0.3)


def test_kill9_daemon_vms_keep_running(daemon, boot, consoles):
    api = daemon.api
    vms = boot(["r1", "r2"])
    pids = {n: v["pid"] for n, v in vms.items()}

    # -- phase 1: kill -9 with both running; restart; same QEMUs, consoles work
    c = consoles(daemon, "r1")
    time.sleep(0.3)
    before = c.run("echo kh-$((%d+1))").group(0)
    daemon.kill9()
    time.sleep(1)
    for n, pid in pids.items():
        assert khlib.pid_alive(pid), "QEMU of %s died with the daemon" % n
    daemon.restart()
    for n, pid in pids.items():
        vm = api.vm(n)
        assert vm["state"] == "running" and vm["pid"] == pid, vm
    log = api.console_log("r1")
    assert khlib.GUEST_READY in log and before in log, "console log lost across restart"
    for n in ("r1", "r2"):
        c2 = consoles(daemon, n)
        time.sleep(0.3)
        c2.run("echo kh-$((%d+1))")
    # actions work on an adopted VM (QMP reattached)
    assert api.act_ok("r2", "pause")["state"] == "paused"
    assert api.act_ok("r2", "resume")["state"] == "running"

    # -- phase 2: r2 powers off while the daemon is down
    c3 = consoles(daemon, "r2")
    time.sleep(0.3)
    c3.run("echo kh-$((%d+1))")
    c3.send("sleep 2; poweroff -f\n")
    c3.wait_for(r"poweroff -f", timeout=10)
    daemon.kill9()
    # QEMU may stay after the guest's power-off (-no-shutdown): give the
    # guest time to power off, not QEMU time to exit.
    gone = khlib.wait_pid_gone(pids["r2"], 12)
    assert khlib.pid_alive(pids["r1"])
    daemon.restart()
    r2 = api.wait_state("r2", "stopped", timeout=20)
    assert r2["pid"] is None, r2
    assert r2["state_reason"] and r2["state_reason"] != "started", r2
    assert re.search(r"down|exit|shut|power|guest", r2["state_reason"].lower()), r2["state_reason"]
    if not gone:  # QEMU kept alive after guest shutdown (-no-shutdown): the daemon reaps it
        assert khlib.wait_pid_gone(pids["r2"], 20), "shut-down QEMU left behind"
    r1 = api.vm("r1")
    assert r1["state"] == "running" and r1["pid"] == pids["r1"], r1
    consistent(api, daemon.vm_ids)
    # the stopped one starts again
    assert api.act_ok("r2", "start")["state"] == "running"
    api.act_ok("r2", "kill")
    api.act_ok("r1", "stop", {"timeout": 0})
    consistent(api, daemon.vm_ids)


def test_kill9_during_start(daemons, guest, workdir):
    """kill -9 of the daemon at different moments of a start: after restart
    the QEMU is adopted or gone, and records agree with processes."""
    for i, delay in enumerate((0.0, 0.05, 0.2, 0.6)):
        d = daemons()
        api = d.api
        api.create(guest.spec("half", workdir, disk=False))
        r = api.post("/api/v1/vms/half/start", {"wait": 0})
        assert r.status in (200, 202), r
        time.sleep(delay)
        d.kill9()
        time.sleep(1)
        d.restart()
        vms = consistent(api, d.vm_ids)
        vm = list(vms.values())[0]
        # a stopped leftover can be started; an adopted one is really running
        if vm["state"] == "stopped":
            assert api.act_ok("half", "start")["state"] == "running"
        api.act_ok("half", "kill")
        consistent(api, d.vm_ids)
        d.cleanup()


def test_concurrent_starts_one_qemu(daemon, guest, workdir):
    api = daemon.api
    names = ["cc1", "cc2"]
    for n in names:
        api.create(guest.spec(n, workdir, disk=False))
    results = {n: [] for n in names}
    barrier = threading.Barrier(4 * len(names))

    def go(n):
        barrier.wait()
        r = api.post("/api/v1/vms/%s/start" % n, {"wait": 60}, timeout=120)
        results[n].append(r)

    ts = [threading.Thread(target=go, args=(n,)) for n in names for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(150)
    for n in names:
        statuses = sorted(r.status for r in results[n])
        assert statuses.count(409) == 3 and len(statuses) == 4, (n, results[n])
        assert [s for s in statuses if s != 409][0] in (200, 202), results[n]
        for r in results[n]:
            if r.status == 409:
                assert r.error["code"] == "conflict", r
        vm = api.wait_state(n, "running", timeout=60)
        assert khlib.qemu_pids(vm["id"]) == [vm["pid"]], (n, khlib.qemu_pids(vm["id"]), vm)
    time.sleep(2)
    for n in names:
        vm = api.vm(n)
        assert khlib.qemu_pids(vm["id"]) == [vm["pid"]]
        api.act_ok(n, "kill")
