"""Live migration of a VM with a TPM 2.0 (issue 14: the TPM state follows the
VM): three hosts as in test_migration.py, the test guest with `tpm: true` on
a shared directory; h1 -> h2. The migration succeeds, the target runs a
swtpm of its own for the VM with a state written (encrypted with its own
host's key: QEMU's tpm-emulator takes swtpm's state out decrypted and sets
it on the target's swtpm), the source's swtpm ends with its QEMU, and the
guest runs on. What this does not show: that the state's content is the
source's (the small guest's PVH boot cannot see the CRB TPM; the Debian
tests check a TPM's content across restart and revert on one host).

Run: KH_BUILD_DIR=$PWD/build-asan /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
     tests/cluster/test_migration_tpm.py
"""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "blackbox"))
sys.path.insert(0, os.path.dirname(__file__))

import khlib  # noqa: E402
from test_membership import (Phase, pytest_runtest_makereport,  # noqa: E402,F401
                             three, wait_for)
from test_migration import check_moved, form_cluster, migrate_api, vm_or_none  # noqa: E402


def swtpm_pids(needle):
    """swtpm processes whose argv names needle (a VM's state dir)."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        argv = khlib.proc_cmdline(int(p))
        if argv and argv[0].endswith("swtpm") and any(needle in a for a in argv):
            pids.append(int(p))
    return pids


def tpm_files(d, vm_id):
    tpm = os.path.join(d.state_dir, "vms", vm_id, "tpm")
    return sorted(n for n in os.listdir(tpm) if not n.startswith(".")) \
        if os.path.isdir(tpm) else []


def test_migration_with_tpm(three):
    h, (d1, d2, d3) = three
    paths = khlib.guest_paths()
    if paths is None:
        pytest.skip("no test guest")
    guest = khlib.Guest(*paths)
    step = Phase()
    shared = tempfile.mkdtemp(prefix="khmig-tpm-", dir="/tmp")
    os.chmod(shared, 0o755)
    name = "tpm1"
    try:
        form_cluster(h, (d1, d2, d3))
        step("cluster of h1, h2, h3")

        spec = guest.spec(name, shared, memory_mib=256)
        spec["tpm"] = True
        d1.api.create(spec)
        st, j = d1.api.action(name, "start", wait=60)
        assert st == 200, j
        d1.api.wait_console(name, khlib.GUEST_READY, timeout=120)
        vm_id = d1.api.wait_state(name, "running", timeout=30)["id"]
        src_state = os.path.join(d1.state_dir, "vms", vm_id)
        assert len(swtpm_pids(src_state)) == 1
        wait_for(lambda: tpm_files(d1, vm_id), 15, "swtpm's state written on h1")
        step("guest with a TPM up on h1 (swtpm %s)" % tpm_files(d1, vm_id))

        r = migrate_api(d1, name, "h2")
        assert r.status == 200 and r.json["state"] == "succeeded", r
        check_moved(d1, d2, name, vm_id)
        dst_state = os.path.join(d2.state_dir, "vms", vm_id)
        assert len(swtpm_pids(dst_state)) == 1, "no swtpm for the VM on h2"
        # the state came in the stream: swtpm on h2 wrote it
        assert tpm_files(d2, vm_id), "no TPM state on h2"
        wait_for(lambda: not swtpm_pids(src_state), 15, "h1's swtpm gone with its QEMU")
        con = khlib.Console(d2.socket, name)
        try:
            con.run("echo kh-$((%d+1))", timeout=30)
        finally:
            con.close()
        step("h1 -> h2 with the TPM: swtpm and its state on h2, none left on h1")
    finally:
        for d in (d1, d2, d3):
            if d.alive() and vm_or_none(d, name):
                d.api.action(name, "kill", wait=30)
                d.api.delete("/api/v1/vms/%s" % name)
        shutil.rmtree(shared, ignore_errors=True)
