"""Real guest operating systems (issue 14): firmware (SeaBIOS, UEFI, Secure
Boot), TPM 2.0 (swtpm), cloud-init NoCloud (the cidata CD-ROM), the guest
agent channel.

The quick tests use the small test guest (tests/guest/build.sh): its Debian
kernel has the TPM CRB driver built in. The Debian tests boot the real
Debian 12 disk of tests/guest/build-debian.sh (built once, cached; skipped
when it is missing and KH_DEBIAN_BUILD is not 1) from its own boot loader,
log in over SSH with the key cloud-init installed, through a nat network
port forward inside a network namespace (netlib).
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

import khlib
import netlib

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOyN0GJv1lDFkNl9f8m1sCkCzCq5h4bDk4Z6tI1JQW3K kh@test"


def run_dir(d, vm_id):
    return os.path.join(d.state_dir, "run", "vms", vm_id)


def vm_state_dir(d, vm_id):
    return os.path.join(d.state_dir, "vms", vm_id)


def iso_files(iso):
    """The files of an ISO9660 image, {name: text} (xorriso extracts)."""
    out = tempfile.mkdtemp(prefix="khbb-iso-")
    try:
        subprocess.run(["xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", out],
                       check=True, capture_output=True, timeout=30)
        files = {}
        for n in os.listdir(out):
            with open(os.path.join(out, n)) as f:
                files[n] = f.read()
        label = subprocess.run(["xorriso", "-indev", iso, "-pvd_info"], capture_output=True,
                               text=True, timeout=30).stdout
        return files, label
    finally:
        shutil.rmtree(out, ignore_errors=True)


def swtpm_pids(state):
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            argv = khlib.proc_cmdline(int(p))
        except Exception:
            continue
        if argv and argv[0].endswith("swtpm") and any(state in a for a in argv):
            pids.append(int(p))
    return pids


# ---------------------------------------------------------------- quick

def test_guest_os_spec(api, fake_boot, workdir):
    """firmware, secure_boot, tpm and cloud_init: accepted, shown, edited;
    nonsense refused with 400 and a message naming the field."""
    disk = os.path.join(workdir, "d.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"], check=True)
    spec = {"name": "g1", "disks": [{"path": disk, "format": "qcow2"}],
            "firmware": "uefi", "secure_boot": True, "tpm": True,
            "cloud_init": {"hostname": "g1-host", "ssh_authorized_keys": [KEY],
                           "users": [{"name": "ops", "ssh_authorized_keys": [KEY], "sudo": True}],
                           "packages": ["htop"], "runcmd": ["touch /x"],
                           "network_config": {"version": 2,
                                              "ethernets": {"eth0": {"dhcp4": True}}}}}
    r = api.post("/api/v1/vms", spec)
    assert r.status == 201, r
    vm = r.json
    assert vm["firmware"] == "uefi" and vm["secure_boot"] is True and vm["tpm"] is True
    assert vm["cloud_init"]["hostname"] == "g1-host"
    # a VM without them keeps its old shape
    r = api.post("/api/v1/vms", {"name": "plain", "boot": fake_boot})
    assert r.status == 201 and "firmware" not in r.json and "cloud_init" not in r.json, r
    # edit: re-provision, then drop cloud-init
    r = api.patch("/api/v1/vms/g1", {"cloud_init": dict(spec["cloud_init"], reprovision=1)})
    assert r.status == 200 and r.json["cloud_init"]["reprovision"] == 1, r
    r = api.patch("/api/v1/vms/g1", {"cloud_init": None, "secure_boot": None})
    assert r.status == 200 and "cloud_init" not in r.json and "secure_boot" not in r.json, r
    bad = [
        ({"secure_boot": True}, "secure_boot"),
        ({"firmware": "coreboot"}, "firmware"),
        ({"cloud_init": {"user_data": "#cloud-config\n", "hostname": "x"}}, "cloud_init.hostname"),
        ({"cloud_init": {"hostname": "-bad-"}}, "cloud_init.hostname"),
        ({"cloud_init": {"network_config": {"version": 9}}}, "network_config.version"),
        ({"cloud_init": {"users": [{"name": "Root;rm"}]}}, "cloud_init.users[0].name"),
        ({"cloud_init": {"packages": ["a b"]}}, "cloud_init.packages[0]"),
        ({"cloud_init": {"runcmd": ["a\u0000b"]}}, "JSON"),  # refused by the parser
        ({"cloud_init": {"bogus": 1}}, "bogus"),
        ({"machine": "microvm", "boot": fake_boot, "disks": [], "tpm": True}, "tpm"),
    ]
    for extra, field in bad:
        body = {"name": "b", "disks": [{"path": disk, "format": "qcow2"}]}
        body.update(extra)
        r = api.post("/api/v1/vms", body)
        assert r.status == 400 and field in r.error["message"], (extra, r)


def test_cli_cloud_init_flags(daemon, workdir):
    """kvmhost vm create --ssh-key FILE --hostname H --secure-boot --tpm."""
    keyfile = os.path.join(workdir, "id.pub")
    with open(keyfile, "w") as f:
        f.write("# a comment\n%s\n\n%s-2\n" % (KEY, KEY))
    ud = os.path.join(workdir, "ud")
    with open(ud, "w") as f:
        f.write("#cloud-config\nhostname: fromfile\n")
    disk = os.path.join(workdir, "d.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"], check=True)
    p = khlib.cli(daemon, "vm", "create", "c1", "--disk", disk + ",format=qcow2",
                  "--ssh-key", keyfile, "--hostname", "c1-h", "--secure-boot", "--tpm",
                  json_out=True)
    assert p.returncode == 0, p.stderr
    vm = json.loads(p.stdout)
    assert vm["firmware"] == "uefi" and vm["secure_boot"] and vm["tpm"]
    assert vm["cloud_init"] == {"hostname": "c1-h", "ssh_authorized_keys": [KEY, KEY + "-2"]}
    p = khlib.cli(daemon, "vm", "create", "c2", "--disk", disk + ",format=qcow2",
                  "--user-data", ud, json_out=True)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["cloud_init"] == {"user_data": "#cloud-config\nhostname: fromfile\n"}
    p = khlib.cli(daemon, "vm", "create", "c3", "--disk", disk + ",format=qcow2",
                  "--user-data", ud, "--hostname", "x")
    assert p.returncode != 0 and "cloud_init.hostname" in p.stderr, p.stderr


# ---------------------------------------------------------------- small guest

@pytest.mark.slow
def test_tpm_and_cidata_small_guest(daemon, guest, consoles, workdir):
    """The VM's swtpm lives as long as its QEMU and keeps its state in the VM's
    state dir; the cidata ISO holds the rendered seed; a live edit swaps the
    medium. (The small guest's PVH boot has no usable ACPI tables, so its
    kernel cannot see the CRB TPM: the Debian test checks the guest side.)"""
    api = daemon.api
    spec = guest.spec("tp", workdir, disk=False)
    spec["tpm"] = True
    spec["cloud_init"] = {"hostname": "tp-host", "ssh_authorized_keys": [KEY]}
    r = api.post("/api/v1/vms", spec)
    assert r.status == 201, r
    vm_id = r.json["id"]
    api.act_ok("tp", "start")
    con = consoles(daemon, "tp")
    con.wait_for(khlib.GUEST_READY, timeout=150)
    state = vm_state_dir(daemon, vm_id)
    pids = swtpm_pids(state)
    assert len(pids) == 1, pids
    assert os.listdir(os.path.join(state, "tpm")), "no TPM state written"

    iso = os.path.join(run_dir(daemon, vm_id), "qemu", "cidata.iso")
    files, pvd = iso_files(iso)
    assert re.search(r"Volume Id\s*:\s*cidata", pvd), pvd
    meta = json.loads(files["meta-data"])
    assert meta == {"instance-id": vm_id + "-0", "local-hostname": "tp-host"}
    assert files["user-data"].startswith("#cloud-config\n")
    ud = json.loads(files["user-data"].split("\n", 1)[1])
    assert ud == {"hostname": "tp-host", "ssh_authorized_keys": [KEY]}
    assert "network-config" not in files

    # a live edit writes a new seed and swaps the CD-ROM's medium
    r = api.patch("/api/v1/vms/tp", {"cloud_init": {"hostname": "tp2", "reprovision": 3}})
    assert r.status == 200, r
    files, _ = iso_files(iso)
    assert json.loads(files["meta-data"])["instance-id"] == vm_id + "-3"
    netlib.wait_for(lambda: "event=vm.cidata vm=tp swapped=true" in open(daemon.log_path).read(),
                    timeout=15, what="blockdev-change-medium done")

    api.act_ok("tp", "kill")
    api.wait_state("tp", ["stopped"], timeout=30)
    netlib.wait_for(lambda: not swtpm_pids(state), timeout=15, what="swtpm gone with QEMU")


@pytest.mark.slow
def test_tpm_state_snapshot_and_backup(daemon, workdir):
    """The TPM state follows the VM's disks (no guest needed: QEMU's
    tpm-emulator initialises swtpm, which writes its state at once): a
    disk-only snapshot of the stopped VM keeps it and its revert puts it
    back; a backup stores it and a restore over the VM brings it back (a
    restore as a new VM gets a TPM of its own: the state is sealed with the
    VM's key); swtpm starts on the restored state."""
    api = daemon.api
    r = api.post("/api/v1/pools/default/volumes", {"name": "tb-d0", "size": "16M"})
    assert r.status == 201, r
    r = api.post("/api/v1/vms", {"name": "tb", "memory_mib": 256, "tpm": True,
                                 "disks": [{"volume": "default/tb-d0"}]})
    assert r.status == 201, r
    vm_id = r.json["id"]
    state = vm_state_dir(daemon, vm_id)
    tdir = os.path.join(state, "tpm")

    def files():
        return {n: open(os.path.join(tdir, n), "rb").read() for n in sorted(os.listdir(tdir))
                if not n.startswith(".")}  # swtpm's .lock

    def spoil():
        for n in files():
            with open(os.path.join(tdir, n), "wb") as f:
                f.write(b"spoilt")

    def run_once():
        api.act_ok("tb", "start")
        netlib.wait_for(lambda: os.path.isdir(tdir) and os.listdir(tdir), timeout=60,
                        what="swtpm's state written")
        time.sleep(1)
        api.act_ok("tb", "kill")
        api.wait_state("tb", ["stopped"], timeout=30)

    run_once()
    before = files()
    assert before and all(before.values()), before

    # a disk-only snapshot of the stopped VM, its revert
    r = api.post("/api/v1/vms/tb/snapshots", {"name": "s1", "wait": 60})
    assert r.status == 200 and r.json["result"]["memory"] is False, r
    spoil()
    r = api.post("/api/v1/vms/tb/snapshots/s1/revert", {"wait": 60})
    assert r.status == 200 and r.json["state"] == "succeeded", r
    assert files() == before
    r = api.delete("/api/v1/vms/tb/snapshots/s1?wait=60")
    assert r.status == 200, r
    assert not os.listdir(os.path.join(state, "tpm-snapshots"))

    # a backup, a restore over the VM
    store = os.path.join(workdir, "store")
    assert api.post("/api/v1/backup-stores", {"name": "s", "path": store}).status == 201
    r = api.post("/api/v1/vms/tb/backups", {"wait": 60})
    assert r.status == 200 and r.json["state"] == "succeeded", r
    b = r.json["result"]
    assert b.get("tpm_chunk"), b
    assert api.get("/api/v1/backups/" + b["id"]).json["spec"]["tpm"] is True
    spoil()
    r = api.post("/api/v1/backups/%s/restore" % b["id"], {"vm": "tb", "wait": 60})
    assert r.status == 200 and r.json["state"] == "succeeded", r
    assert files() == before
    assert "tpm=restored" in open(daemon.log_path).read()
    # swtpm takes the restored state (its key is the VM's)
    run_once()
    log = open(os.path.join(state, "swtpm.log")).read()
    assert "rror" not in log, log
    # as a new VM: the spec's TPM, a state of its own
    r = api.post("/api/v1/backups/%s/restore" % b["id"], {"as": "tb2", "wait": 60})
    assert r.status == 200 and r.json["state"] == "succeeded", r
    vm2 = api.vm("tb2")
    assert vm2["tpm"] is True
    assert not os.path.exists(os.path.join(vm_state_dir(daemon, vm2["id"]), "tpm"))


# ---------------------------------------------------------------- Debian 12

def debian_paths():
    """(disk, unsigned overlay) of tests/guest/build-debian.sh, or None."""
    env = os.path.join(HERE, "..", "guest", "out", "debian.env")
    if not os.path.exists(env) and os.environ.get("KH_DEBIAN_BUILD") == "1":
        subprocess.run([os.path.join(HERE, "..", "guest", "build-debian.sh")], check=True,
                       timeout=3600)
    if not os.path.exists(env):
        return None
    vals = dict(l.strip().split("=", 1) for l in open(env) if "=" in l)
    disk, unsigned = vals.get("KH_DEBIAN_DISK"), vals.get("KH_DEBIAN_UNSIGNED")
    if not (disk and os.path.exists(disk) and unsigned and os.path.exists(unsigned)):
        return None
    return disk, unsigned


@pytest.fixture(scope="session")
def debian():
    p = debian_paths()
    if p is None and os.environ.get("KH_DEBIAN_REQUIRED") == "1":
        # make test: the disk was to be built; its absence is a failure
        pytest.fail("no Debian guest disk: tests/guest/build-debian.sh failed (log: %s)" %
                    os.environ.get("KH_DEBIAN_LOG", "its output"), pytrace=False)
    if p is None:
        pytest.skip("no Debian guest disk: run tests/guest/build-debian.sh (or KH_DEBIAN_BUILD=1)")
    return p


def private_copy(src, workdir, name):
    """A standalone qcow2 copy (no backing file: kvmhostd refuses those)
    that QEMU, another user, may open."""
    dst = os.path.join(workdir, name)
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", src, dst], check=True,
                   timeout=300)
    os.chmod(dst, 0o666)
    return dst


@pytest.fixture
def netns():
    ns = netlib.NetNS()
    yield ns
    ns.delete()


@pytest.fixture
def nsd(request, netns):
    d = netlib.NsDaemon(netns)
    d.start()
    yield d
    failed = any(getattr(request.node, "rep_" + w, None) is not None and
                 getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
    khlib.finish_daemons([d], failed)


class Ssh:
    """ssh into the guest from inside the namespace, through the port
    forward on 127.0.0.1. One master connection carries the commands
    (ControlMaster): under TCG each new login (sshd's re-exec, the key
    exchange) takes seconds, more on a loaded machine. close() ends it
    (before the guest stops or a revert rewinds it)."""

    def __init__(self, netns, workdir, port, user="kh"):
        self.netns, self.port, self.user = netns, port, user
        self.key = os.path.join(workdir, "id_ed25519")
        self.ctl = os.path.join(workdir, "ssh-%d.ctl" % port)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key],
                       check=True)
        self.pub = open(self.key + ".pub").read().strip()

    def _argv(self, *extra):
        return ["ssh", "-i", self.key, "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=60", "-o", "LogLevel=ERROR",
                "-o", "ControlMaster=auto", "-o", "ControlPath=" + self.ctl,
                "-o", "ControlPersist=120", "-o", "ServerAliveInterval=10",
                "-o", "ServerAliveCountMax=6"] + list(extra) + ["%s@127.0.0.1" % self.user]

    def run(self, cmd, timeout=120, check=True):
        r = self.netns.exec(self._argv() + [cmd], check=False, timeout=timeout)
        if check and r.returncode != 0:
            raise khlib.KhError("ssh %r: exit %d: %s" % (cmd, r.returncode, r.stderr))
        return r

    def close(self):
        self.netns.exec(self._argv("-O", "exit"), check=False, timeout=30)
        if os.path.exists(self.ctl):
            os.unlink(self.ctl)

    def wait(self, api, vm, timeout=1500):
        """Log in (a fresh connection); the time it took since now."""
        self.close()
        t0 = time.time()
        deadline = t0 + timeout
        last = None
        while time.time() < deadline:
            try:
                last = self.run("true", timeout=90, check=False)
            except subprocess.TimeoutExpired:
                self.close()
                continue
            if last.returncode == 0:
                return time.time() - t0
            time.sleep(3)
        raise khlib.KhError("no ssh login in %ss: %s; console:\n%s" % (
            timeout, last and last.stderr, api.console_log(vm)[-3000:]))


def volume_copy(d, src, name):
    """src as a qcow2 volume of pool default (snapshots and backups need
    volumes): its "ref"."""
    size = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", src],
                                     capture_output=True, text=True, check=True).stdout)
    r = d.api.post("/api/v1/pools/default/volumes",
                   {"name": name, "size": size["virtual-size"], "format": "qcow2"})
    assert r.status == 201, r
    dst = os.path.join(d.state_dir, "pools", "default", r.json["id"])
    subprocess.run(["qemu-img", "convert", "-q", "-n", "-O", "qcow2", src, dst], check=True,
                   timeout=300)
    return "default/" + name


def debian_vm(api, netns, workdir, disk, name, port, ssh, **extra):
    """A Debian VM on nat network "lan" with a static address and a port
    forward 127.0.0.1:port -> 22, its cloud-init user kh with ssh's key.
    disk: a file, or {"volume": REF}."""
    if not api.get("/api/v1/networks/lan").status == 200:
        r = api.post("/api/v1/networks", {"name": "lan", "type": "nat",
                                          "subnet": "10.87.0.0/24"})
        assert r.status == 201, r
    ip = "10.87.0.%d" % (50 + port % 100)
    spec = {"name": name, "vcpus": 1, "memory_mib": 1024, "serial": True,
            "disks": [disk if isinstance(disk, dict) else {"path": disk, "format": "qcow2"}],
            "nics": [{"network": "lan", "ip": ip}],
            "cloud_init": {"hostname": name + "-ci",
                           "users": [{"name": "kh", "ssh_authorized_keys": [ssh.pub],
                                      "sudo": True}]}}
    spec.update(extra)
    r = api.post("/api/v1/vms", spec)
    assert r.status == 201, r
    r = api.post("/api/v1/networks/lan/forwards", {"host_port": port, "vm": name,
                                                    "vm_port": 22})
    assert r.status in (200, 201), r
    return r


@pytest.mark.slow
def test_debian_bios_cloud_init_ssh(nsd, netns, debian, workdir):
    """The Debian disk boots from its own GRUB under SeaBIOS; cloud-init
    (NoCloud, the cidata CD-ROM) sets the hostname and installs the key; we
    log in over SSH through the port forward."""
    api = nsd.api
    disk = private_copy(debian[0], workdir, "deb.qcow2")
    ssh = Ssh(netns, workdir, 2201)
    debian_vm(api, netns, workdir, disk, "deb", 2201, ssh)
    api.act_ok("deb", "start")
    took = ssh.wait(api, "deb")
    print("debian bios: vm start to ssh login %.0f s" % took)
    assert ssh.run("hostname").stdout.strip() == "deb-ci"
    assert ssh.run("test -d /sys/firmware/efi || echo bios").stdout.strip() == "bios"
    # the seed's instance-id: the VM id and re-provision counter 0
    iid = ssh.run("cat /run/cloud-init/.instance-id").stdout.strip()
    assert iid == api.vm("deb")["id"] + "-0", iid
    # the guest agent (virtio-serial org.qemu.guest_agent.0): OS, hostname, addresses
    info = None
    for _ in range(30):
        r = api.get("/api/v1/vms/deb/guest")
        if r.status == 200:
            info = r.json
            break
        assert r.status == 409, r  # the agent is not up yet
        time.sleep(2)
    assert info, "the guest agent never answered"
    assert info["os"]["id"] == "debian" and info["hostname"] == "deb-ci", info
    ips = [a["ip"] for i in info["interfaces"] for a in i["addresses"]]
    assert "10.87.0.51" in ips, info
    mac = api.vm("deb")["nics"][0]["mac"]
    assert any(i.get("mac") == mac for i in info["interfaces"]), info
    p = khlib.cli(nsd, "vm", "guest", "deb")
    assert p.returncode == 0 and "hostname: deb-ci" in p.stdout and "10.87.0.51/24" in p.stdout, p
    # the answer is kept in the VM's view (and refreshed by the poller)
    g = api.vm("deb")["guest"]
    assert g["os"]["id"] == "debian" and g["hostname"] == "deb-ci", g
    assert {"ip": "10.87.0.51", "prefix": 24, "family": "ipv4", "interface": "eth0",
            "mac": mac} in g["addresses"], g
    p = khlib.cli(nsd, "vm", "show", "deb")
    assert p.returncode == 0 and "10.87.0.51/24 (eth0)" in p.stdout, p.stdout

    # a guest that ignores ACPI (logind told to ignore the power button) is
    # still stopped cleanly: the resent request goes to the agent as well
    # (qemu-guest-agent's `shutdown -P +0` goes through logind)
    ssh.run("sudo -n mkdir -p /etc/systemd/logind.conf.d && "
            "printf '[Login]\\nHandlePowerKey=ignore\\n' | "
            "sudo -n tee /etc/systemd/logind.conf.d/ignore.conf >/dev/null && "
            "sudo -n systemctl restart systemd-logind")
    ssh.close()
    api.act_ok("deb", "stop", {"timeout": 300}, wait=320)
    vm = api.wait_state("deb", ["stopped"], timeout=60)
    assert "killed" not in vm["state_reason"], vm
    assert "guest" not in vm, vm
    assert "event=vm.stop_agent vm=deb sent=true" in open(nsd.log_path).read()


def tpm_files(d, vm_id):
    """The VM's swtpm state files, {name: bytes}."""
    tdir = os.path.join(vm_state_dir(d, vm_id), "tpm")
    return {n: open(os.path.join(tdir, n), "rb").read() for n in sorted(os.listdir(tdir))
            if not n.startswith(".")}  # swtpm's .lock


def snapshot(api, vm, name, **body):
    body.update(name=name, wait=600)
    r = api.post("/api/v1/vms/%s/snapshots" % vm, body, timeout=660)
    assert r.status == 200 and r.json["state"] == "succeeded", r
    return r.json["result"]


def revert(api, vm, name):
    r = api.post("/api/v1/vms/%s/snapshots/%s/revert" % (vm, name), {"wait": 600}, timeout=660)
    assert r.status == 200 and r.json["state"] == "succeeded", r


@pytest.mark.slow
def test_debian_uefi_secure_boot_tpm(nsd, netns, debian, workdir):
    """UEFI with Secure Boot on: Debian's signed shim, grub and kernel boot;
    the guest sees Secure Boot enabled and a TPM 2.0 whose state follows the
    VM: a memory snapshot's revert rewinds it, it survives a restart, a
    disk-only snapshot of the stopped VM keeps it and its revert puts it
    back. A disk-only snapshot of the running VM freezes the guest's
    filesystems through the agent, and thaws them; so does a backup of the
    running VM (recorded "frozen": true), and the reverts that follow work
    although the backup left its dirty bitmap in the image."""
    api = nsd.api
    disk = {"volume": volume_copy(nsd, debian[0], "sb-disk")}
    ssh = Ssh(netns, workdir, 2202)
    debian_vm(api, netns, workdir, disk, "sb", 2202, ssh,
              firmware="uefi", secure_boot=True, tpm=True)
    vm_id = api.vm("sb")["id"]
    api.act_ok("sb", "start")
    took = ssh.wait(api, "sb")
    print("debian uefi+secure boot+tpm: vm start to ssh login %.0f s" % took)
    assert "SecureBoot enabled" in ssh.run("mokutil --sb-state").stdout
    assert ssh.run("cat /sys/class/tpm/tpm0/tpm_version_major").stdout.strip() == "2"
    nv = "sudo -n tpm2_nvwrite 0x1500016 -C o -i /tmp/v"
    ssh.run("sudo -n tpm2_nvdefine 0x1500016 -C o -s 8 -a 'ownerread|ownerwrite' && "
            "printf kvmhost1 > /tmp/v && " + nv)
    read = "sudo -n tpm2_nvread 0x1500016 -C o -s 8"

    # a snapshot with memory carries the TPM state: its revert rewinds it
    ssh.close()
    assert snapshot(api, "sb", "warm")["memory"] is True
    ssh.run("printf kvmhost2 > /tmp/v && " + nv)
    assert ssh.run(read).stdout == "kvmhost2"
    ssh.close()
    revert(api, "sb", "warm")
    assert ssh.run(read).stdout == "kvmhost1"
    print("debian uefi: memory snapshot revert rewound the TPM")

    # a disk-only snapshot of the running VM: the guest's filesystems frozen
    # through its agent around it, then thawed
    assert snapshot(api, "sb", "cold-live", memory=False)["memory"] is False
    log = open(nsd.log_path).read()
    m = re.search(r"event=vm.fsfreeze vm=sb count=(\d+)", log)
    assert m and int(m.group(1)) >= 1, [l for l in log.splitlines() if "fsfreeze" in l]
    assert re.search(r"event=vm.fsthaw vm=sb count=%s\b" % m.group(1), log), \
        [l for l in log.splitlines() if "fsthaw" in l]
    assert ssh.run("sudo -n touch /var/tmp/thawed && sync", timeout=60).returncode == 0
    print("debian uefi: disk-only live snapshot froze %s filesystems and thawed them" %
          m.group(1))

    # a backup of the running VM: frozen through the agent at its point in
    # time (recorded "frozen": true), thawed after it (a write goes through)
    store = os.path.join(workdir, "bkstore")
    assert api.post("/api/v1/backup-stores", {"name": "bk", "path": store}).status == 201
    t0 = time.time()
    r = api.post("/api/v1/vms/sb/backups", {"store": "bk", "wait": 600}, timeout=660)
    assert r.status == 200 and r.json["state"] == "succeeded", r
    b = r.json["result"]
    assert b["frozen"] is True and b["kind"] == "full", b
    log = open(nsd.log_path).read()
    fm = re.search(r"backup\.freeze vm=sb frozen=(\d+)", log)
    assert fm and int(fm.group(1)) >= 1, [l for l in log.splitlines() if "backup." in l]
    assert re.search(r"backup\.thaw vm=sb thawed=%s\b" % fm.group(1), log), \
        [l for l in log.splitlines() if "backup.thaw" in l]
    assert ssh.run("sudo -n touch /var/tmp/thawed-after-backup && sync",
                   timeout=60).returncode == 0
    print("debian uefi: backup of the running VM (%d MiB read) froze %s filesystems and "
          "thawed them, %.0f s" % (b["bytes_read"] >> 20, fm.group(1), time.time() - t0))

    # restart: the same swtpm state and UEFI variables come back
    ssh.close()
    api.act_ok("sb", "stop", wait=300)
    api.wait_state("sb", ["stopped"], timeout=120)
    # a disk-only snapshot of the stopped VM keeps the TPM state
    before = tpm_files(nsd, vm_id)
    snapshot(api, "sb", "cold")
    api.act_ok("sb", "start")
    took = ssh.wait(api, "sb")
    print("debian uefi+secure boot+tpm: restart to ssh login %.0f s" % took)
    assert ssh.run(read).stdout == "kvmhost1"
    assert "SecureBoot enabled" in ssh.run("mokutil --sb-state").stdout
    ssh.run("printf kvmhost3 > /tmp/v && " + nv)
    ssh.close()
    api.act_ok("sb", "stop", wait=300)
    api.wait_state("sb", ["stopped"], timeout=120)
    assert tpm_files(nsd, vm_id) != before
    # its revert puts it back: what the next start's swtpm loads
    revert(api, "sb", "cold")
    assert tpm_files(nsd, vm_id) == before


@pytest.mark.slow
def test_debian_unsigned_loader_refused(daemon, debian, workdir):
    """The Debian disk with an unsigned grub as its ESP's loader: the Secure
    Boot firmware refuses to start it ("Access Denied" on the console)."""
    api = daemon.api
    bad = private_copy(debian[1], workdir, "unsigned.qcow2")
    r = api.post("/api/v1/vms", {"name": "bad", "memory_mib": 512, "serial": True,
                                 "firmware": "uefi", "secure_boot": True,
                                 "disks": [{"path": bad, "format": "qcow2"}]})
    assert r.status == 201, r
    api.act_ok("bad", "start")
    api.wait_console("bad", "Access Denied", timeout=1200)  # OVMF+SMM under TCG: minutes
    assert "Welcome to GRUB" not in api.console_log("bad")
