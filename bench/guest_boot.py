#!/usr/bin/python3
"""Time from `vm start` to the first SSH login, Debian 12 disk under TCG:
kvmhost vs raw QEMU, same image, same cloud-init seed, one run each
(--runs N for more), alternating.

kvmhost: a kvmhostd (KH_BUILD_DIR, default build/) in a network namespace,
a nat network and a port forward 127.0.0.1:PORT -> guest 22, cloud_init with
a fresh key; timed from POST .../start to `ssh true` succeeding.
raw QEMU: qemu-system-x86_64 -machine q35 -accel tcg with kvmhost's TCG CPU
model (KH_CPU_TCG), virtio-blk, user-mode
networking with hostfwd, a cidata ISO (genisoimage) with the same user-data;
timed from the spawn to `ssh true` succeeding.
The two run at the same time (threads), so that on a shared, busy host both
see the same load; --serial runs them one after the other.

libvirt: `virsh start` of the same image (a qcow2 overlay) with a NoCloud
ISO of the same user-data, the CPU as virt-install leaves it under TCG (no
<cpu>: QEMU's qemu64), on a libvirt NAT network, by a private libvirtd
in a network namespace (bench/libvirt_peer.py), at the same time as the two
others; skipped with a printed line when libvirt is not installed.

Needs root and tests/guest/build-debian.sh's disk. Prints a table and, with
--out FILE, the raw figures as JSON. No assertions: figures only.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "blackbox"))
import khlib  # noqa: E402
import netlib  # noqa: E402
import libvirt_peer  # noqa: E402

QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"


def kvmhost_tcg_cpu():
    """kvmhost's -cpu under TCG (KH_CPU_TCG in src/qemu/argv.h): raw QEMU
    gets the same guest CPU, so that its column is the same guest hardware."""
    import re
    with open(os.path.join(HERE, "..", "src", "qemu", "argv.h")) as f:
        return re.search(r'#define KH_CPU_TCG "([^"]+)"', f.read()).group(1)


CLEANUPS = []  # what main() undoes when interrupted (the worker threads cannot)


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def debian_disk():
    env = os.path.join(HERE, "..", "tests", "guest", "out", "debian.env")
    if not os.path.exists(env):
        subprocess.run([os.path.join(HERE, "..", "tests", "guest", "build-debian.sh")],
                       check=True)
    vals = dict(l.strip().split("=", 1) for l in open(env) if "=" in l)
    return vals["KH_DEBIAN_DISK"]


def copy(src, dst):
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", src, dst], check=True)
    os.chmod(dst, 0o666)


def ssh_until(prefix, key, port, timeout, proc=None):
    argv = prefix + ["ssh", "-i", key, "-p", str(port), "-o", "BatchMode=yes",
                     "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                     "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "kh@127.0.0.1", "true"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("QEMU ended (status %s) before an ssh login" % proc.returncode)
        if subprocess.run(argv, capture_output=True, timeout=30).returncode == 0:
            return time.perf_counter()
        time.sleep(1)
    raise RuntimeError("no ssh login in %ss" % timeout)


def seed(pub):
    return {"hostname": "bench",
            "users": [{"name": "kh", "ssh_authorized_keys": [pub], "sudo": True}]}


def cloud_config(spec):
    """The seed as cloud-init reads it: `"sudo": true` is kvmhost's API
    shorthand (src/qemu/cidata.c writes the rule); cloud-init 22.4 wants the
    rule (a boolean makes users_groups fail before the keys are written)."""
    users = [dict(u, sudo="ALL=(ALL) NOPASSWD:ALL") if u.get("sudo") is True else u
             for u in spec.get("users", [])]
    return dict(spec, users=users)


def run_kvmhost(disk, work, key, pub, timeout):
    ns = netlib.NetNS()
    d = netlib.NsDaemon(ns)
    CLEANUPS.append(ns.delete)  # kills everything in it (daemon, QEMU, dnsmasq)
    try:
        d.start()
        api = d.api
        assert api.post("/api/v1/networks", {"name": "lan", "type": "nat",
                                             "subnet": "10.86.0.0/24"}).status == 201
        vdisk = os.path.join(work, "kh.qcow2")
        copy(disk, vdisk)
        r = api.post("/api/v1/vms", {"name": "b", "memory_mib": 1024, "serial": True,
                                     "disks": [{"path": vdisk, "format": "qcow2"}],
                                     "nics": [{"network": "lan", "ip": "10.86.0.50"}],
                                     "cloud_init": seed(pub)})
        assert r.status == 201, r
        assert api.post("/api/v1/networks/lan/forwards",
                        {"host_port": 2299, "vm": "b", "vm_port": 22}).status in (200, 201)
        t0 = time.perf_counter()
        api.act_ok("b", "start")
        t1 = ssh_until(["ip", "netns", "exec", ns.name], key, 2299, timeout)
        api.act_ok("b", "kill")
        return t1 - t0
    finally:
        khlib.finish_daemons([d], False)
        ns.delete()


def run_qemu(disk, work, key, pub, timeout):
    import socket
    s = socket.socket()  # a free port (another run of this bench may hold one)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    vdisk = os.path.join(work, "raw.qcow2")
    copy(disk, vdisk)
    sd = os.path.join(work, "seed")
    os.makedirs(sd, exist_ok=True)
    with open(os.path.join(sd, "meta-data"), "w") as f:
        json.dump({"instance-id": "bench-raw-0", "local-hostname": "bench"}, f)
    with open(os.path.join(sd, "user-data"), "w") as f:
        f.write("#cloud-config\n" + json.dumps(cloud_config(seed(pub)), indent=2) + "\n")
    iso = os.path.join(work, "cidata.iso")
    subprocess.run(["genisoimage", "-quiet", "-volid", "cidata", "-joliet", "-rock",
                    "-input-charset", "utf-8", "-output", iso, sd], check=True)
    argv = [QEMU, "-machine", "q35", "-accel", "tcg", "-cpu", kvmhost_tcg_cpu(), "-m", "1024",
            "-display", "none", "-serial", "file:" + os.path.join(work, "raw-console.log"),
            "-blockdev", json.dumps({"driver": "qcow2", "node-name": "d0",
                                     "file": {"driver": "file", "filename": vdisk}}),
            "-device", "virtio-blk-pci,drive=d0,bootindex=1",
            "-drive", "file=%s,format=raw,if=none,id=cd0,readonly=on" % iso,
            "-device", "ide-cd,drive=cd0,bus=ide.1",
            "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:%d-:22" % port,
            "-device", "virtio-net-pci,netdev=n0"]
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    CLEANUPS.append(p.kill)
    try:
        t1 = ssh_until([], key, port, timeout, p)
    finally:
        p.kill()
        p.wait()
    return t1 - t0


def _sigterm(signum, frame):
    # `timeout` sends SIGTERM: unwind so that the daemons, QEMUs and the
    # network namespace are cleaned up
    raise KeyboardInterrupt("SIGTERM")


def main():
    import signal
    signal.signal(signal.SIGTERM, _sigterm)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--out")
    ap.add_argument("--serial", action="store_true", help="one after the other")
    a = ap.parse_args()
    disk = debian_disk()
    work = tempfile.mkdtemp(prefix="khbench-boot-", dir="/tmp")
    os.chmod(work, 0o755)
    key = os.path.join(work, "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    pub = open(key + ".pub").read().strip()
    res = {"kvmhost": [], "qemu": [], "libvirt": []}
    lvfn = libvirt_peer.boot_runner(lambda pub: cloud_config(seed(pub)), CLEANUPS)
    import threading
    try:
        for i in range(a.runs):
            threads, errors = [], []
            for name, fn in (("kvmhost", run_kvmhost), ("qemu", run_qemu)) + (
                    (("libvirt", lvfn),) if lvfn else ()):
                def one(name=name, fn=fn):
                    try:
                        s = fn(disk, work, key, pub, a.timeout)
                        log("run %d %s: %.1f s" % (i + 1, name, s))
                        res[name].append(s)
                    except Exception as e:  # reported below
                        errors.append("%s: %s" % (name, e))
                t = threading.Thread(target=one, daemon=True)
                t.start()
                if a.serial:
                    t.join()
                threads.append(t)
            for t in threads:
                t.join()
            if errors:
                raise SystemExit("bench: " + "; ".join(errors))
    finally:
        for undo in CLEANUPS:
            try:
                undo()
            except Exception:
                pass
        shutil.rmtree(work, ignore_errors=True)
    kh, q = min(res["kvmhost"]), min(res["qemu"])
    print("| metric | kvmhost | raw qemu | ratio |")
    print("|---|---|---|---|")
    print("| vm start -> ssh login (Debian 12, TCG), best of %d | %.1f s | %.1f s | %.2fx |"
          % (a.runs, kh, q, kh / q))
    print(libvirt_peer.boot_row(res["libvirt"], kh, a.runs))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
