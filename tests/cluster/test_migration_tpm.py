"""Live migration of a VM with a TPM 2.0 (issue 14: the TPM state follows the
VM): three hosts as in test_migration.py, the test guest with `tpm: true` on
a shared directory; h1 -> h2. The guest extends PCR 16 with a raw
TPM2_PCR_Extend written to /dev/tpm0 (the kernel's CRB driver is built
in; a VM with a TPM boots its bzImage, not through PVH, which hid the ACPI
tables and so the TPM); after the migration the target's swtpm (its own,
encrypting with its own host's key: QEMU's tpm-emulator takes swtpm's
state out decrypted and sets it on the target's swtpm) has the same PCR
value: SHA-256(zeros || digest), not the initial zeros. The source's swtpm
ends with its QEMU, and the guest runs on.

Run: KH_BUILD_DIR=$PWD/build-asan /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
     tests/cluster/test_migration_tpm.py
"""

import hashlib
import os
import random
import re
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


PCR = 16  # the debug PCR: extendable at locality 0, unused by firmware


def pcr_extend_cmd(index, digest):
    """A TPM2_PCR_Extend command (TPM_ST_SESSIONS, TPM_CC_PCR_Extend) of one
    SHA-256 digest into PCR index, with an empty password session, as a
    busybox printf of octal escapes."""
    body = (index.to_bytes(4, "big")
            + (9).to_bytes(4, "big")                       # authorization size
            + bytes.fromhex("40000009") + b"\0\0" + b"\0" + b"\0\0"  # TPM_RS_PW, empty
            + (1).to_bytes(4, "big") + bytes.fromhex("000b") + digest)  # 1 x SHA-256
    cmd = bytes.fromhex("8002") + (10 + len(body)).to_bytes(4, "big") \
        + bytes.fromhex("00000182") + body
    return "".join("\\%03o" % b for b in cmd)


def guest_sh(con, cmd, timeout=30):
    """Run cmd once in the guest's shell (no retry: cmd may not be
    idempotent); returns its output up to the end marker."""
    n = random.randint(10000, 999999)
    start = len(con.text())
    con.send("%s; echo kh-$((%d+1))\n" % (cmd, n))
    m = con.wait_for(r"kh-%d\b" % (n + 1), timeout=timeout, start=start)
    return con.text()[start:m.start()]


def read_pcr(con):
    out = guest_sh(con, "echo pcr=$(cat /sys/class/tpm/tpm0/pcr-sha256/%d)" % PCR)
    m = re.search(r"pcr=([0-9A-Fa-f]{64})", out)
    assert m, "no PCR %d in the guest's output: %r" % (PCR, out)
    return m.group(1).lower()


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
        con = khlib.Console(d1.socket, name)
        try:
            con.run("echo kh-$((%d+1))", timeout=60)  # the shell is up
            assert read_pcr(con) == "0" * 64
            digest = hashlib.sha256(b"kvmhost-tpm-migration").digest()
            want = hashlib.sha256(b"\0" * 32 + digest).hexdigest()
            out = guest_sh(con, "exec 3<>/dev/tpm0; printf '%s' >&3; "
                                "echo rsp=$(dd bs=64 count=1 <&3 2>/dev/null | od -An -tx1); "
                                "exec 3>&-" % pcr_extend_cmd(PCR, digest))
            # the response: TPM_ST_SESSIONS, its size, TPM_RC_SUCCESS
            assert re.search(r"rsp=\s*80 02 00 00 00 13 00 00 00 00", out), out
            assert read_pcr(con) == want
        finally:
            con.close()
        step("guest with a TPM up on h1 (swtpm %s), PCR %d extended" % (tpm_files(d1, vm_id),
                                                                         PCR))

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
            assert read_pcr(con) == want, "PCR %d on h2 is not the one extended on h1" % PCR
        finally:
            con.close()
        step("h1 -> h2 with the TPM: swtpm and its state on h2 (PCR %d as extended on h1), "
             "none left on h1" % PCR)
    finally:
        for d in (d1, d2, d3):
            if d.alive() and vm_or_none(d, name):
                d.api.action(name, "kill", wait=30)
                d.api.delete("/api/v1/vms/%s" % name)
        shutil.rmtree(shared, ignore_errors=True)
