"""Resource control on a running guest (issue 5): vCPU hot-plug and unplug,
emulator and iothread pinning, NUMA memory binding, hugepage backing."""

import os
import re
import time

import pytest

import khlib
from test_metrics import parse_prom, sample


def guest_cpus(c, what):
    """The guest's /sys/devices/system/cpu/<what> list, e.g. "0-1"."""
    m = c.run("echo cpus=$(cat /sys/devices/system/cpu/%s)=; echo kh-$((%%d+1))" % what,
              timeout=30)
    found = re.findall(r"cpus=([0-9,-]+)=", c.text()[:m.start()])
    assert found, c.text()[-500:]
    return found[-1]


def count_cpus(lst):
    n = 0
    for part in lst.split(","):
        a, _, b = part.partition("-")
        n += int(b or a) - int(a) + 1
    return n


@pytest.mark.slow
def test_vcpu_hotplug_and_unplug(daemons, guest, consoles):
    d = daemons()
    api = d.api
    work = d.base + "/w"
    os.makedirs(work)
    os.chmod(work, 0o755)
    spec = guest.spec("hp", work, memory_mib=128)
    # Bad specs: nothing is created.
    for bad, msg in (({"vcpus": 2, "max_vcpus": 1}, "more than max_vcpus"),
                     ({"max_vcpus": 256}, "max_vcpus"),
                     ({"max_vcpus": 2, "machine": "microvm"}, "q35")):
        r = api.request("POST", "/api/v1/vms", dict(spec, **bad))
        assert r.status == 400 and msg in r.error["message"], (bad, r)
    assert api.get("/api/v1/vms/hp").status == 404
    r = api.request("POST", "/api/v1/vms", dict(spec, max_vcpus=3))
    assert r.status == 201 and r.json["vcpus"] == 1 and r.json["max_vcpus"] == 3, r
    st, j = api.action("hp", "start")
    assert st == 200, j
    api.wait_console("hp", khlib.GUEST_READY, timeout=150)
    pid = api.vm("hp")["pid"]
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        assert b"\0-smp\x001,maxcpus=3\0" in f.read()
    c = consoles(d, "hp")
    assert guest_cpus(c, "present") == "0"

    # Bad live changes: clear errors, nothing changes.
    r = api.patch("/api/v1/vms/hp", {"vcpus": 4})
    assert r.status == 400 and "max_vcpus (3)" in r.error["message"], r
    r = api.patch("/api/v1/vms/hp", {"vcpus": 2, "memory_mib": 256})
    assert r.status == 409 and "vcpus alone" in r.error["message"], r
    r = api.patch("/api/v1/vms/hp", {"vcpus": "two"})
    assert r.status == 400, r
    r = api.patch("/api/v1/vms/hp", {"max_vcpus": 8})
    assert r.status == 409, r
    assert api.vm("hp")["vcpus"] == 1

    # Hot-plug through the CLI (vm edit --vcpus is the PATCH).
    p = khlib.cli(d, "vm", "edit", "hp", "--vcpus", "2")
    assert p.returncode == 0, p
    vm = api.vm("hp")
    assert vm["vcpus"] == 2 and vm["max_vcpus"] == 3, vm
    assert guest_cpus(c, "present") == "0-1"
    m = c.run("echo 1 > /sys/devices/system/cpu/cpu1/online; echo kh-$((%d+1))", timeout=30)
    assert guest_cpus(c, "online") == "0-1"
    m = parse_prom(api.get("/metrics").text)
    assert sample(m, "kvmhost_vm_vcpus", vm="hp") == 2
    r = api.patch("/api/v1/vms/hp", {"vcpus": 3})
    assert r.status == 200 and r.json["vcpus"] == 3, r
    assert guest_cpus(c, "present") == "0-2"
    # The per-vCPU counters follow (sampled asynchronously).
    deadline = time.time() + 15
    while time.time() < deadline:
        m = parse_prom(api.get("/metrics").text)
        if sample(m, "kvmhost_vm_vcpu_seconds_total", vm="hp", vcpu="2") is not None:
            break
        time.sleep(0.5)
    assert sample(m, "kvmhost_vm_vcpu_seconds_total", vm="hp", vcpu="2") is not None

    # Unplug needs the guest: whatever happens, the spec tells what is present.
    r = api.patch("/api/v1/vms/hp", {"vcpus": 1})
    present = guest_cpus(c, "present")
    vm = api.vm("hp")
    print("\nfigures: unplug 3 -> 1: HTTP %d, guest present %s, spec vcpus %d"
          % (r.status, present, vm["vcpus"]))
    if r.status == 200:
        assert r.json["vcpus"] == 1 and present == "0", (r, present)
    else:
        assert r.status == 504 and "did not release" in r.error["message"], r
        assert vm["vcpus"] == count_cpus(present), (vm, present)
    # The boot vCPU cannot go.
    r = api.patch("/api/v1/vms/hp", {"vcpus": 0})
    assert r.status == 400, r

    if api.vm("hp")["accelerator"] == "tcg":
        # QEMU 7.2 under TCG crashes on a plug after an unplug: refused.
        r = api.patch("/api/v1/vms/hp", {"vcpus": 2})
        assert r.status == 409 and "restart the VM" in r.error["message"], r
        assert api.vm("hp")["state"] == "running"
        st, j = api.action("hp", "kill")
        assert st == 200, j
        st, j = api.action("hp", "start")
        assert st == 200, j
        api.wait_console("hp", khlib.GUEST_READY, timeout=150)

    # Persisted: a restart boots with the recorded count.
    p = khlib.cli(d, "vm", "edit", "hp", "--vcpus", "2")
    assert p.returncode == 0, p
    st, j = api.action("hp", "kill")
    assert st == 200, j
    st, j = api.action("hp", "start")
    assert st == 200, j
    pid = api.vm("hp")["pid"]
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        assert b"\0-smp\x002,maxcpus=3\0" in f.read()
    st, j = api.action("hp", "kill")
    assert st == 200, j
