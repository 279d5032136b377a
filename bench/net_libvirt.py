"""bench/net_libvirt.py - the libvirt side of bench/net.sh: libvirt's default
NAT network (virbr0, 192.168.122.0/24, its dnsmasq) and two test guests on
it under TCG, guest-to-guest TCP as kvmhost's side measures it.

Run by bench/net.sh inside the bench's network namespace and a private mount
namespace, where a libvirtd of its own runs (its sockets, state and config
on tmpfs): nothing of the host's network or libvirt is touched.
"""
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "blackbox"))
import khlib  # noqa: E402

VIRSH = ["virsh", "-q", "-c", "qemu:///system"]
QEMU = "/usr/bin/qemu-system-x86_64"

# libvirt's own default network (/usr/share/libvirt/networks/default.xml).
NET_XML = """<network>
  <name>default</name>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='on' delay='0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp>
  </ip>
</network>
"""

DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='maximum' check='none'/>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>{qemu}</emulator>
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
    <serial type='unix'><source mode='bind' path='{sock}'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def virsh(*args, check=True):
    p = subprocess.run(VIRSH + list(args), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError("virsh %s: %s" % (" ".join(args), p.stderr.strip()))
    return p.stdout


class SerialConsole:
    """The guest's serial port on a unix socket (libvirt binds it)."""

    def __init__(self, path):
        for _ in range(100):
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("no serial socket at " + path)
        self.buf = b""
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        while not self.closed:
            try:
                d = self.s.recv(65536)
            except OSError:
                return
            if not d:
                return
            with self.lock:
                self.buf += d

    def text(self):
        with self.lock:
            return self.buf.decode("utf-8", "replace")

    def wait_for(self, pattern, timeout, start=0):
        deadline = time.time() + timeout
        rx = re.compile(pattern)
        while time.time() < deadline:
            m = rx.search(self.text(), start)
            if m:
                return m
            time.sleep(0.05)
        raise RuntimeError("serial: %r not seen; tail %r" % (pattern, self.text()[-800:]))

    def run(self, cmd_fmt, timeout=60):
        import random
        n = random.randint(10000, 999999)
        start = len(self.text())
        self.s.sendall(((cmd_fmt % n) + "\n").encode())
        return self.wait_for(r"kh-%d\b" % (n + 1), timeout, start)

    def close(self):
        self.closed = True
        self.s.close()


def main():
    work = sys.argv[1]
    g = khlib.Guest(*khlib.guest_paths())
    t0 = time.perf_counter()
    with open(os.path.join(work, "net.xml"), "w") as f:
        f.write(NET_XML)
    virsh("net-create", os.path.join(work, "net.xml"))
    net_ms = (time.perf_counter() - t0) * 1000
    cons = {}
    try:
        for name in ("lv1", "lv2"):
            sock = os.path.join(work, name + ".sock")
            path = os.path.join(work, name + ".xml")
            with open(path, "w") as f:
                f.write(DOMAIN_XML.format(name=name, kernel=g.kernel, initrd=g.initrd, qemu=QEMU,
                                          cmdline=khlib.GUEST_CMDLINE + " kvmhost.net=dhcp",
                                          sock=sock))
            virsh("create", path)
            cons[name] = SerialConsole(sock)
        ips = {}
        for name, c in cons.items():
            m = c.wait_for(r"KVMHOST-NET: (\S+)", 180)
            ips[name] = m.group(1)
        assert all(ip.startswith("192.168.122.") for ip in ips.values()), ips
        c1, c2 = cons["lv1"], cons["lv2"]
        c2.run("mkdir -p /www && dd if=/dev/zero of=/www/big bs=64k count=512 2>/dev/null && "
               "httpd -p 80 -h /www && echo kh-$((%d+1))")
        runs = []
        for _ in range(3):
            m = c1.run("s=$(cut -d' ' -f1 /proc/uptime | tr -d .); wget -q -O - http://" +
                       ips["lv2"] + "/big | wc -c > /tmp/got; e=$(cut -d' ' -f1 /proc/uptime | "
                       "tr -d .); echo kh-$((%d+1)) cs=$((e-s)) got=$(cat /tmp/got)",
                       timeout=300)
            tail = c1.text()[m.start():m.start() + 200]
            cs = int(re.search(r"cs=(\d+)", tail).group(1))
            got = int(re.search(r"got=(\d+)", tail).group(1))
            assert got == 32 * 1024 * 1024, "received %d bytes: %r" % (got, tail)
            runs.append(32 / max(cs / 100.0, 0.01))
        mibs = statistics.median(runs)
        print(json.dumps({"libvirt_net_create_ms": round(net_ms, 1), "libvirt_mibs": round(mibs, 1),
                          "libvirt_runs": runs, "ips": ips}))
    finally:
        for c in cons.values():
            c.close()
        for name in ("lv1", "lv2"):
            virsh("destroy", name, check=False)
        virsh("net-destroy", "default", check=False)


main()
