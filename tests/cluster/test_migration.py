"""Live migration end to end on a shared pool: three hosts (network
namespaces, a kvmhostd + etcd member each, as test_membership.py), a
cluster over them, the test guest (kernel + initrd + a raw disk in one
directory every host sees at the same path: on one machine every directory
is shared) running on h1 with a heartbeat loop typed into its console;
`kvmhost vm migrate` h1 -> h2 (it runs on h2, QEMU in h2's daemon, gone
from h1, the heartbeat goes on in h2's console log), then h2 -> h3 through
the API; then the target's QEMU SIGKILLed during a migration: the source
keeps running the guest and the target forgets it; then the source's
daemon killed -9 during a migration: at its restart the migration rolls
back (the guest runs on the source, the target forgets it); then the
target's daemon killed -9 during a migration: at its restart the fence
decides, and exactly one QEMU runs the guest, on the owner. Bounded; every process,
namespace and file goes at the end.

Run: KH_BUILD_DIR=$PWD/build /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
     tests/cluster/test_migration.py
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "blackbox"))
sys.path.insert(0, os.path.dirname(__file__))

import khlib  # noqa: E402
from test_membership import (PORT, Phase, cli_json, pytest_runtest_makereport,  # noqa: E402,F401
                             three, wait_for)


def form_cluster(h, daemons):
    d1 = daemons[0]
    cli_json(d1, "cluster", "create", "--name", "mig")
    for d in daemons[1:]:
        tok = cli_json(d1, "cluster", "token")
        cli_json(d, "cluster", "join", "%s:%d" % (h.addr(1), PORT), "--token", tok["token"])
    for d in daemons:
        wait_for(lambda d=d: cli_json(d, "cluster", "status")["online"] == 3, 30,
                 "3 members online seen from h%d" % d.i)


def qemu_major():
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                         text=True).stdout
    m = re.search(r"version (\d+)\.", out)
    return int(m.group(1)) if m else 0


def vm_or_none(d, name):
    r = d.api.get("/api/v1/vms/%s" % name)
    return r.json if r.status == 200 else None


def local_vm(d, name):
    """The VM as host d itself has it (a GET by name goes to the owner)."""
    r = d.api.get("/api/v1/vms?host=h%d" % d.i)
    return next((v for v in r.json["vms"] if v["name"] == name), None) if r.status == 200 \
        else None


def heartbeats(text):
    return [int(x) for x in re.findall(r"hb-(\d+)", text)]


def migrate_api(d, name, target, wait=120):
    r = d.api.post("/api/v1/vms/%s/migrate" % name, {"target": target, "wait": wait},
                   timeout=wait + 30)
    return r


def check_moved(src, dst, name, vm_id):
    vm = wait_for(lambda: (vm_or_none(dst, name) or {}).get("state") == "running"
                  and vm_or_none(dst, name), 30, "%s running on h%d" % (name, dst.i))
    assert vm["id"] == vm_id
    pids = khlib.qemu_pids(vm_id)
    assert pids == [vm["pid"]], (pids, vm)
    # the source keeps no definition: its own VMs (?host=) no longer list it,
    # and asked there, the cluster says it runs on the target
    wait_for(lambda: local_vm(src, name) is None, 30, "%s gone from h%d" % (name, src.i))
    assert (vm_or_none(src, name) or {}).get("host") == "h%d" % dst.i
    return vm


def one_runs(daemons, name, vm_id, timeout=90):
    """After a kill -9 mid-migration: exactly one QEMU runs the guest, the
    owner's (per etcd, as every host reports it), running; returns it."""
    def settled():
        pids = khlib.qemu_pids(vm_id)
        if len(pids) != 1:
            return None
        for d in daemons:
            vm = local_vm(d, name)
            if vm and vm.get("state") == "running" and vm.get("pid") == pids[0]:
                seen = {(vm_or_none(o, name) or {}).get("host") for o in daemons}
                return d if seen == {"h%d" % d.i} else None
        return None
    d = wait_for(settled, timeout, "exactly one QEMU, running on the owner")
    others = [o for o in daemons if o is not d]
    wait_for(lambda: all(local_vm(o, name) is None for o in others), 30,
             "the other hosts forgot the VM")
    return d


def test_migration(three):
    h, (d1, d2, d3) = three
    paths = khlib.guest_paths()
    if paths is None:
        pytest.skip("no test guest")
    guest = khlib.Guest(*paths)
    step = Phase()
    shared = tempfile.mkdtemp(prefix="khmig-pool-", dir="/tmp")
    os.chmod(shared, 0o755)
    try:
        form_cluster(h, (d1, d2, d3))
        step("cluster of h1, h2, h3")

        # the guest on h1, its disk in the shared directory
        name = "mig1"
        spec = guest.spec(name, shared, memory_mib=256)
        d1.api.create(spec)
        st, j = d1.api.action(name, "start", wait=60)
        assert st == 200, j
        d1.api.wait_console(name, khlib.GUEST_READY, timeout=120)
        vm = d1.api.wait_state(name, "running", timeout=30)
        vm_id = vm["id"]
        con = khlib.Console(d1.socket, name)
        try:
            con.run("echo kh-$((%d+1))", timeout=30)
            con.send("i=0; while true; do echo hb-$i; i=$((i+1)); sleep 0.2; done &\n")
            con.wait_for(r"hb-3\b", timeout=20)
        finally:
            con.close()
        step("guest up on h1, heartbeat running")

        # the guest's CPU: under TCG kvmhost's x86-64-v2-AES baseline, which
        # the target's QEMU gets from the source
        cpu = khlib.qemu_cpu(vm["pid"])
        if vm["accelerator"] == "tcg":
            assert cpu.startswith("qemu64,") and "+sse4.2" in cpu and "avx" not in cpu, cpu

        # h1 -> h2 with the CLI
        t0 = time.monotonic()
        p = khlib.cli(d1, "vm", "migrate", name, "h2", json_out=True)
        took = time.monotonic() - t0
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr, d1.log_tail())
        # the source's QEMU goes only once the target runs the guest: when
        # the migration says done, the target already says running
        assert (local_vm(d2, name) or {}).get("state") == "running", local_vm(d2, name)
        vm2 = check_moved(d1, d2, name, vm_id)
        assert vm2["state"] == "running"
        assert khlib.qemu_cpu(vm2["pid"]) == cpu
        before = max(heartbeats(d2.api.console_log(name)) or [-1])
        wait_for(lambda: max(heartbeats(d2.api.console_log(name)) or [-1]) >= before + 5, 20,
                 "heartbeat going on in h2's console log")
        step("h1 -> h2 (CLI) in %.2f s; heartbeat on h2" % took)

        # h2 -> h3 with the API: the task's result has the numbers
        r = migrate_api(d2, name, "h3")
        assert r.status == 200, r
        res = r.json["result"]
        assert r.json["state"] == "succeeded" and res["target"] == "h3", r.json
        assert res["tls"] is True and res["disks_copied"] == 0, res
        # QEMU < 9.0 under TCG (this machine) loses guest writes made while
        # a migration runs (qemu/migrate.h; the guest crashed right after the
        # switch here, 2 of 8 moves with a 10 ms limit, 1 of 4 runs with 2000
        # ms): there the guest is paused for the RAM copy; the phases the time
        # went to
        lossy = res["accel"] == "tcg" and qemu_major() < 9
        assert res["live"] is (not lossy) and res["downtime_limit_ms"] == 10, res
        ph = res["phases"]
        assert all(ph[k] >= 0 for k in ("dirty_rate_s", "target_prepare_s", "prepare_s",
                                          "memory_s", "switch_s", "finish_s")), ph
        assert ph["disks_s"] == -1, ph
        # a guest paused for the copy dirties nothing: no 1 s dirty-rate step
        assert not lossy or ph["dirty_rate_s"] < 0.5, ph
        assert (local_vm(d3, name) or {}).get("state") == "running", local_vm(d3, name)
        check_moved(d2, d3, name, vm_id)
        before = max(heartbeats(d3.api.console_log(name)) or [-1])
        wait_for(lambda: max(heartbeats(d3.api.console_log(name)) or [-1]) >= before + 5, 20,
                 "heartbeat going on in h3's console log")
        step("h2 -> h3 (API): total %.2f s, QEMU downtime %d ms, RAM %d MiB sent"
             % (res["total_s"], res["downtime_ms"], res["ram_transferred"] >> 20))

        # the target's QEMU killed during a migration: the source keeps it
        # (the RAM copy slowed to 16 MiB/s: the memory phase lasts seconds;
        # forced, as a guest paused for such a copy would be refused)
        r = d3.api.post("/api/v1/vms/%s/migrate" % name,
                        {"target": "h1", "wait": 0, "max_bandwidth_mib": 16, "force": True})
        assert r.status == 202, r
        task = r.json["id"]
        src_pid = vm_or_none(d3, name)["pid"]
        # once the target listens (reason "incoming"): the memory phase
        wait_for(lambda: (local_vm(d1, name) or {}).get("state_reason") == "incoming", 30,
                 "the target's QEMU on h1 listening")
        tgt = [p for p in khlib.qemu_pids(vm_id) if p != src_pid]
        assert len(tgt) == 1, tgt
        os.kill(tgt[0], signal.SIGKILL)
        t = wait_for(lambda: (lambda j: j["state"] != "running" and j)(
            d3.api.get("/api/v1/tasks/%s" % task).json), 60, "the migration task ends")
        assert t["state"] == "failed", t
        vm3 = d3.api.wait_state(name, "running", timeout=30)
        assert vm3["pid"] == src_pid and khlib.pid_alive(src_pid)
        wait_for(lambda: local_vm(d1, name) is None, 30, "h1 forgot the aborted VM")
        assert khlib.qemu_pids(vm_id) == [src_pid]
        con = khlib.Console(d3.socket, name)
        try:
            con.run("echo kh-$((%d+1))", timeout=30)
        finally:
            con.close()
        step("target QEMU killed mid-migration: the source runs on (%s)"
             % t["error"]["message"][:80])

        # kill -9 of the source's daemon in the memory phase: at its restart
        # the pending migration rolls back (cancel, cont, the target aborts)
        r = d3.api.post("/api/v1/vms/%s/migrate" % name,
                        {"target": "h1", "wait": 0, "max_bandwidth_mib": 16, "force": True})
        assert r.status == 202, r
        wait_for(lambda: (local_vm(d1, name) or {}).get("state_reason") == "incoming", 30,
                 "the target's QEMU on h1 listening")
        d3.kill9()
        t0 = time.monotonic()
        d3.start()
        vm3 = d3.api.wait_state(name, "running", timeout=60)
        assert vm3["pid"] == src_pid and khlib.pid_alive(src_pid)
        wait_for(lambda: local_vm(d1, name) is None, 60, "h1 forgot the aborted VM")
        wait_for(lambda: khlib.qemu_pids(vm_id) == [src_pid], 30, "one QEMU left")
        con = khlib.Console(d3.socket, name)
        try:
            con.run("echo kh-$((%d+1))", timeout=30)
        finally:
            con.close()
        step("source daemon kill -9 mid-migration: rolled back at its restart in %.1f s"
             % (time.monotonic() - t0))

        # kill -9 of the target's daemon in the memory phase: at its restart
        # it resolves by the fence (owner still h3: fenced, its QEMU goes,
        # the source's migration fails and it resumes; owner moved: the
        # guest runs on h1). Either way one QEMU, on the owner.
        # (the restarted h3 resolves its rollback with etcd reads alone; its
        # lease, which a write needs, may come a moment later)
        wait_for(lambda: d3.api.get("/api/v1/cluster").json.get("quorum") is True, 30,
                 "h3's lease back after its restart")
        r = d3.api.post("/api/v1/vms/%s/migrate" % name,
                        {"target": "h1", "wait": 0, "max_bandwidth_mib": 16, "force": True})
        assert r.status == 202, r
        wait_for(lambda: (local_vm(d1, name) or {}).get("state_reason") == "incoming", 30,
                 "the target's QEMU on h1 listening")
        d1.kill9()
        t0 = time.monotonic()
        time.sleep(1)
        d1.start()
        owner = one_runs((d1, d2, d3), name, vm_id)
        con = khlib.Console(owner.socket, name)
        try:
            con.run("echo kh-$((%d+1))", timeout=30)
        finally:
            con.close()
        step("target daemon kill -9 mid-migration: resolved in %.1f s, the guest on h%d"
             % (time.monotonic() - t0, owner.i))
    finally:
        for d in (d1, d2, d3):
            if d.alive() and vm_or_none(d, "mig1"):
                d.api.action("mig1", "kill", wait=30)
                d.api.delete("/api/v1/vms/mig1")
        shutil.rmtree(shared, ignore_errors=True)
