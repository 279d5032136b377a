"""Resource control on a running guest (issue 5): vCPU hot-plug and unplug,
emulator and iothread pinning, NUMA memory binding, hugepage backing."""

import os
import re
import time

import pytest

import khlib
import netlib
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
    assert r.status == 409 and "max_vcpus (3)" in r.error["message"], r
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

    # A CPU cap above what fewer vCPUs can use blocks the unplug.
    r = api.patch("/api/v1/vms/hp", {"limits": {"cpu_max_percent": 250}})
    assert r.status == 200, r
    r = api.patch("/api/v1/vms/hp", {"vcpus": 2})
    assert r.status == 400 and "cpu_max_percent" in r.error["message"], r
    r = api.patch("/api/v1/vms/hp", {"limits": {"cpu_max_percent": None}})
    assert r.status == 200 and api.vm("hp")["vcpus"] == 3, r

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
        # ... and so does any device_add (seen with a NIC): a disk is refused
        # too, and the VM keeps running with its disks unchanged.
        r = api.post("/api/v1/pools/default/volumes", {"name": "hpd", "size": "1M"})
        assert r.status == 201, r
        ndisks = len(api.vm("hp")["disks"])
        r = api.post("/api/v1/vms/hp/disks", {"volume": "default/hpd"})
        assert r.status == 409 and "restart the VM before adding a disk" in \
            r.error["message"], r
        assert api.vm("hp")["state"] == "running"
        assert len(api.vm("hp")["disks"]) == ndisks
        # The mark lives with the QEMU, not the daemon: after kill -9 and a
        # restart of kvmhostd the same QEMU is still refused.
        pid = api.vm("hp")["pid"]
        d.kill9()
        d.restart()
        api.wait_state("hp", "running", timeout=20)
        assert api.vm("hp")["pid"] == pid
        r = api.patch("/api/v1/vms/hp", {"vcpus": 2})
        assert r.status == 409 and "restart the VM" in r.error["message"], r
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


@pytest.mark.slow
def test_refused_vcpu_unplug_leaves_hotplug_usable(daemons, guest):
    """A vCPU unplug that is refused before anything reaches QEMU (the VM
    started with 2: boot vCPUs cannot go) must not mark the QEMU as "a vCPU
    was unplugged": vCPU and disk hot-plug keep working without a restart."""
    d = daemons()
    api = d.api
    work = d.base + "/w"
    os.makedirs(work)
    os.chmod(work, 0o755)
    spec = dict(guest.spec("ru", work, memory_mib=128, vcpus=2), max_vcpus=3)
    r = api.request("POST", "/api/v1/vms", spec)
    assert r.status == 201, r
    st, j = api.action("ru", "start")
    assert st == 200, j
    api.wait_console("ru", khlib.GUEST_READY, timeout=150)
    p = khlib.cli(d, "vm", "edit", "ru", "--vcpus", "1")
    assert p.returncode != 0 and "only vCPUs plugged while it runs" in p.stderr, p
    assert api.vm("ru")["vcpus"] == 2
    # Nothing was unplugged: a vCPU and a disk still plug in.
    r = api.patch("/api/v1/vms/ru", {"vcpus": 3})
    assert r.status == 200 and r.json["vcpus"] == 3, r
    r = api.post("/api/v1/pools/default/volumes", {"name": "rud", "size": "1M"})
    assert r.status == 201, r
    ndisks = len(api.vm("ru")["disks"])
    r = api.post("/api/v1/vms/ru/disks", {"volume": "default/rud"})
    assert r.status in (200, 201), r
    assert len(api.vm("ru")["disks"]) == ndisks + 1
    assert api.vm("ru")["state"] == "running"
    st, j = api.action("ru", "kill")
    assert st == 200, j


def _cgroup_value(vm_id, v1_file, v2_file):
    for p in ("/sys/fs/cgroup/memory/kvmhost/vm-%s/%s" % (vm_id, v1_file),
              "/sys/fs/cgroup/kvmhost/vm-%s/%s" % (vm_id, v2_file)):
        if os.path.exists(p):
            with open(p) as f:
                return f.read().strip()
    return None


@pytest.mark.slow
def test_cgroups_under_ip_netns_exec(guest, workdir):
    """`ip netns exec` mounts a fresh /sys without the cgroup mounts: the
    daemon mounts the hierarchies in its own mount namespace, a VM gets its
    cgroup and its limits; a limit whose controller is missing is refused,
    naming it; GET /api/v1/host and `kvmhost host show` tell what is missing."""
    ns = netlib.NetNS()
    d = netlib.NsDaemon(ns)
    try:
        d.start()
        api = d.api
        h = api.get("/api/v1/host").json
        assert h["cgroup"] in ("v1", "v2") and h["cgroup_mounted_private"] is True, h
        assert isinstance(h["cgroup_missing"], list), h
        p = khlib.cli(d, "host", "show")
        assert p.returncode == 0 and "cgroup_missing" in p.stdout, p
        os.chmod(workdir, 0o755)
        spec = guest.spec("cgns", workdir, memory_mib=128, disk=False)
        spec["limits"] = {"memory_max_mib": 200}
        if "memory" in h["cgroup_missing"]:
            r = api.request("POST", "/api/v1/vms", spec)
            assert r.status == 415 and "memory" in r.error["message"], r
            return
        r = api.request("POST", "/api/v1/vms", spec)
        assert r.status == 201, r
        st, j = api.action("cgns", "start")
        assert st == 200, j
        vm = api.vm("cgns")
        assert khlib.cgroup_dirs(vm["id"]), "the VM has no cgroup"
        assert _cgroup_value(vm["id"], "memory.limit_in_bytes", "memory.max") == \
            str(200 << 20)
        with open("/proc/%d/cgroup" % vm["pid"]) as f:
            assert "kvmhost/vm-%s" % vm["id"] in f.read()
        # every controller the host lacks refuses the limits that need it
        need = {"cpu": {"cpu_weight": 200}, "cpuset": {"numa_nodes": [0]}}
        for ctrl in h["cgroup_missing"]:
            if ctrl in need:
                r = api.patch("/api/v1/vms/cgns", {"limits": need[ctrl]})
                assert r.status == 415 and ctrl in r.error["message"], r
        st, j = api.action("cgns", "kill")
        assert st == 200, j
    finally:
        try:
            d.cleanup()
        finally:
            d.remove()
            ns.delete()


def thread_affinity(pid):
    """[(tid, comm, Cpus_allowed_list)] for every thread of a process."""
    out = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                comm = f.read().strip()
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                allowed = [ln.split(":", 1)[1].strip() for ln in f
                           if ln.startswith("Cpus_allowed_list:")][0]
        except OSError:
            continue  # a worker thread that ended
        out.append((int(tid), comm, allowed))
    return out


def classify(pid, iothread_cpus):
    """vCPU, iothread and emulator affinities. QEMU names vCPU threads
    "CPU n/TCG"; the disk's iothread ("IO iothread-disk0" is too long for a
    thread name, so it keeps QEMU's) is the one thread besides the vCPUs
    whose affinity is iothread_cpus."""
    t = thread_affinity(pid)
    vcpu = [a for _, c, a in t if c.startswith("CPU ")]
    main = [a for tid, _, a in t if tid == pid]
    rest = [a for tid, c, a in t if tid != pid and not c.startswith("CPU ")]
    io = [a for a in rest if a == iothread_cpus]
    emu = main + [a for a in rest if a != iothread_cpus]
    return vcpu, io, emu, t


def cpuset_mems(vm_id):
    for p in ("/sys/fs/cgroup/cpuset/kvmhost/vm-%s/cpuset.mems" % vm_id,
              "/sys/fs/cgroup/kvmhost/vm-%s/cpuset.mems" % vm_id):
        if os.path.exists(p):
            with open(p) as f:
                return f.read().strip()
    return None


@pytest.mark.slow
def test_emulator_iothread_pinning_and_numa(daemons, guest):
    if os.cpu_count() < 2:
        pytest.skip("needs two host CPUs")
    d = daemons()
    api = d.api
    work = d.base + "/w"
    os.makedirs(work)
    os.chmod(work, 0o755)
    spec = guest.spec("pin", work, memory_mib=128)
    nodes = sorted(int(n[4:]) for n in os.listdir("/sys/devices/system/node")
                   if re.fullmatch(r"node\d+", n))
    for bad, msg in (({"emulator_cpus": [os.cpu_count()]}, "no CPU"),
                     ({"iothread_cpus": []}, "non-empty"),
                     ({"numa_nodes": [max(nodes) + 1]}, "no NUMA node"),
                     ({"numa_nodes": [0, 0]}, "appears twice")):
        r = api.request("POST", "/api/v1/vms", dict(spec, limits=bad))
        assert r.status == 400 and msg in r.error["message"], (bad, r)
    assert api.get("/api/v1/vms/pin").status == 404
    spec["limits"] = {"cpu_affinity": [0], "emulator_cpus": [1], "iothread_cpus": [0],
                      "numa_nodes": [nodes[0]]}
    r = api.request("POST", "/api/v1/vms", spec)
    assert r.status == 201, r
    st, j = api.action("pin", "start")
    assert st == 200, j
    vm = api.vm("pin")
    pid, vid = vm["pid"], vm["id"]
    # Applied at start, before the guest runs: read back from /proc.
    vcpu, io, emu, t = classify(pid, "0")
    assert vcpu and all(a == "0" for a in vcpu), t
    assert len(io) == 1, t  # the one disk's iothread
    assert emu and all(a == "1" for a in emu), t  # main loop, RCU, monitor, workers
    assert cpuset_mems(vid) == str(nodes[0]), cpuset_mems(vid)
    # Live: the emulator moves, the iothread is unpinned, vCPUs keep theirs.
    p = khlib.cli(d, "vm", "limit", "pin", "--emulator-cpus", "0", "--iothread-cpus", "none")
    assert p.returncode == 0, p
    lim = api.vm("pin")["limits"]
    assert lim["emulator_cpus"] == [0] and "iothread_cpus" not in lim, lim
    p = khlib.cli(d, "vm", "limit", "pin", "--numa-nodes", "0,x")
    assert p.returncode == 2 and "--numa-nodes" in p.stderr, p
    allcpus = "0-%d" % (os.cpu_count() - 1)
    deadline = time.time() + 10
    while time.time() < deadline:
        vcpu, io, emu, t = classify(pid, allcpus)
        if len(io) == 1 and all(a == "0" for a in emu):
            break
        time.sleep(0.2)
    assert len(io) == 1 and all(a == "0" for a in emu + vcpu), t
    r = api.patch("/api/v1/vms/pin", {"limits": {"numa_nodes": None}})
    assert r.status == 200, r
    with open("/sys/devices/system/node/online") as f:
        online = f.read().strip()
    assert cpuset_mems(vid) in (online, ""), cpuset_mems(vid)
    r = api.patch("/api/v1/vms/pin", {"limits": {"numa_nodes": [max(nodes) + 1]}})
    assert r.status == 400 and "no NUMA node" in r.error["message"], r
    assert api.vm("pin")["limits"].get("numa_nodes") is None
    st, j = api.action("pin", "kill")
    assert st == 200, j


def hugepages_free():
    with open("/proc/meminfo") as f:
        return int(re.search(r"HugePages_Free:\s+(\d+)", f.read()).group(1))


@pytest.mark.slow
def test_hugepage_backing(daemons, guest):
    path = "/proc/sys/vm/nr_hugepages"
    with open(path) as f:
        old = int(f.read())
    d = daemons()
    api = d.api
    work = d.base + "/w"
    os.makedirs(work)
    os.chmod(work, 0o755)
    try:
        free0 = hugepages_free()
        with open(path, "w") as f:
            f.write(str(old + 64))  # 128 MiB
        if hugepages_free() < free0 + 64:
            pytest.skip("the host could not reserve 64 huge pages")
        spec = guest.spec("huge", work, memory_mib=128)
        spec["hugepages"] = True
        r = api.request("POST", "/api/v1/vms", dict(spec, memory_mib=129))
        assert r.status == 400 and "multiple of 2" in r.error["message"], r
        r = api.request("POST", "/api/v1/vms", dict(spec, name="huge2", memory_mib=1024))
        assert r.status == 201 and r.json["hugepages"] is True, r
        # Too few free pages: a clear 409, nothing started.
        st, j = api.action("huge2", "start")
        assert st == 409 and "huge pages" in j["error"]["message"], j
        assert api.vm("huge2")["state"] == "stopped"
        r = api.request("POST", "/api/v1/vms", spec)
        assert r.status == 201, r
        before = hugepages_free()
        st, j = api.action("huge", "start")
        assert st == 200, j
        api.wait_console("huge", khlib.GUEST_READY, timeout=150)
        after = hugepages_free()
        print("\nfigures: HugePages_Free %d -> %d with a 128 MiB hugepage guest" % (before, after))
        assert before - after == 64, (before, after)
        st, j = api.action("huge", "kill")
        assert st == 200, j
        deadline = time.time() + 10
        while hugepages_free() < before and time.time() < deadline:
            time.sleep(0.2)
        assert hugepages_free() == before
    finally:
        for n in ("huge", "huge2"):
            if api.get("/api/v1/vms/" + n).status == 200 and api.vm(n)["state"] != "stopped":
                api.action(n, "kill")
        with open(path, "w") as f:
            f.write(str(old))
