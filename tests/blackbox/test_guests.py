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

    iso = os.path.join(run_dir(daemon, vm_id), "cidata.iso")
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
