"""Storage test helpers shared by test_storage.py and test_disks.py: the
qemu-img binary, a volume's file, a guest VM spec with given disks, and a
value read from the guest's shell."""

import os

QIMG = "/usr/bin/qemu-img"


def vol_path(daemon, vol):
    return os.path.join(daemon.state_dir, "pools", "default", vol["id"])


def guest_vm(guest, name, disks):
    s = guest.spec(name, None, disk=False)
    s["disks"] = disks
    return s


def shell_value(con, expr, timeout=60):
    """Run expr in the guest shell; returns its one-word output."""
    import random
    n = random.randint(10000, 999999)
    start = len(con.text())
    con.send("echo kh-$((%d+1))-%s\n" % (n, expr))
    # up to the line end: a read that ends mid-word must not count ("writte")
    return con.wait_for(r"kh-%d-(\S+)\r?\n" % (n + 1), timeout=timeout, start=start).group(1)
