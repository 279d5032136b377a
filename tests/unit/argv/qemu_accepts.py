#!/usr/bin/env python3
"""Run every golden argv (DATA/*.args) under the real QEMU, with TCG.

For each golden: every absolute host path is moved under a temporary
directory (commas, quotes and all, so QEMU must take the JSON filename
verbatim), the images are created in the declared format, the inherited
fds (QMP, serial, -add-fd disks) are real listening sockets and files at
the same numbers, -accel kvm becomes tcg (-cpu host becomes max), and a
tiny PVH kernel stands in for the guest kernel: it prints KH-GUEST-OK on
COM1 and powers off through ACPI (q35).

Then over QMP: status must be "prelaunch" (-S), the block nodes must be
exactly the golden's (one file node per disk, with the right filename), the
vnc server must listen on the unescaped path; after `cont` a kernel boot
must print through the serial socket, and on q35 the guest power-off must
leave QEMU in "shutdown" (-no-shutdown). The pidfile must hold QEMU's pid.
Finally `quit`, and QEMU must exit 0.

Usage: qemu_accepts.py DATA_DIR [NAME...]. Exit 77 (skip) without QEMU.
"""
import fcntl
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

QEMU = os.environ.get("KVMHOST_QEMU") or shutil.which("qemu-system-x86_64")
MEM_CAP_MIB = 1024


SECRET = "kh-test-passphrase"
TAPS = [0]


def pvh_kernel():
    """A 32-bit ELF with a Xen PVH entry note: print, power off, halt."""
    base, ehsize, phsize = 0x100000, 52, 32
    note_off = ehsize + 2 * phsize
    note = struct.pack("<III", 4, 4, 18) + b"Xen\0"  # XEN_ELFNOTE_PHYS32_ENTRY
    code_off = note_off + len(note) + 4
    entry = base + code_off
    msg_addr = entry + 0x1e
    code = (b"\xbe" + struct.pack("<I", msg_addr) +  # mov $msg, %esi
            b"\xac\x84\xc0\x74\x07"                   # lodsb; test; jz done
            b"\x66\xba\xf8\x03\xee\xeb\xf4"           # mov $0x3f8,%dx; out; jmp
            b"\x66\xba\x04\x06\x66\xb8\x00\x20\x66\xef"  # outw 0x2000 -> 0x604 (S5)
            b"\xf4\xeb\xfd" +                          # hlt; jmp hlt
            b"KH-GUEST-OK\n\0")
    note += struct.pack("<I", entry)
    size = code_off + len(code)
    eh = (b"\x7fELF\x01\x01\x01" + bytes(9) +
          struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, entry, ehsize, 0, 0, ehsize, phsize, 2,
                      40, 0, 0))
    load = struct.pack("<IIIIIIII", 1, 0, base, base, size, size, 5, 0x1000)
    pnote = struct.pack("<IIIIIIII", 4, note_off, base + note_off, base + note_off,
                        len(note), len(note), 4, 4)
    return eh + load + pnote + note + code


def opt_unescape(s):
    return s.replace(",,", ",")


def opt_escape(s):
    return s.replace(",", ",,")


class Case:
    def __init__(self, name, args, tmp):
        self.name, self.tmp = name, tmp
        self.args = list(args)
        self.fd_map = {}      # target fd -> our fd
        self.listeners = {}   # "qmp"/"serial0" -> listening socket
        self.files = []       # (path, driver) file nodes expected
        self.vnc_path = None
        self.pidfile = None
        self.kernel = False
        self.sercon = False
        self.machine = None
        self.keep = []
        self.procs = []       # helpers (swtpm), ended with the case

    def host(self, path):
        """Where an absolute path of the golden lives for this run."""
        p = self.tmp + path
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def listener(self, chardev_id, target_fd):
        path = os.path.join(self.tmp, chardev_id + ".sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(4)
        self.listeners[chardev_id] = (s, path)
        self.fd_map[target_fd] = s.fileno()

    def taps(self, netdev):
        """A -netdev's inherited fds as kvmhostd passes them: real tap
        queues (one multi-queue tap for "fds") and /dev/vhost-net handles;
        without vhost-net on this host the golden's vhost is turned off (the
        tap fds are still checked). The taps go with the last fd."""
        j = json.loads(netdev)
        fds = j.get("fds", j.get("fd"))
        if fds is None:
            return netdev
        fds = [int(x) for x in str(fds).split(":")]
        TAPS[0] += 1  # unique in this run: a golden's taps may outlive it a moment
        name = ("khacc%d-%d" % (os.getpid() % 100000, TAPS[0])).encode()
        flags = 0x0002 | 0x1000 | (0x0100 if len(fds) > 1 else 0)  # TAP, NO_PI, MULTI_QUEUE
        for target in fds:
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", name, flags))  # TUNSETIFF
            self.keep.append(fd)
            self.fd_map[target] = fd
        vfds = j.get("vhostfds", j.get("vhostfd"))
        if vfds is not None:
            if os.path.exists("/dev/vhost-net"):
                for target in [int(x) for x in str(vfds).split(":")]:
                    fd = os.open("/dev/vhost-net", os.O_RDWR)
                    self.keep.append(fd)
                    self.fd_map[target] = fd
            else:
                j.pop("vhostfds", None)
                j.pop("vhostfd", None)
                j["vhost"] = False
        return json.dumps(j)

    def prepare(self):
        a = self.args
        a[0] = QEMU
        addfd = {}  # set -> target fd
        fw_code = None  # UEFI: the real firmware file the golden names
        formats = {}  # file node -> (format driver, read-only)
        encrypted = set()  # file nodes under a LUKS-encrypted qcow2 node
        for i in range(1, len(a) - 1):
            if a[i] == "-blockdev":
                j = json.loads(a[i + 1])
                if j.get("node-name") == "fw-code-file":
                    fw_code = j["filename"]
                if j["driver"] in ("raw", "qcow2"):
                    formats[j["file"]] = (j["driver"], j.get("read-only", False))
                    if "encrypt" in j:
                        encrypted.add(j["file"])
            if a[i] == "-object":
                j = json.loads(a[i + 1])
                if j.get("qom-type") == "secret":
                    # the passphrase comes from an inherited fd, as kvmhostd passes it
                    assert j["file"].startswith("/proc/self/fd/"), j
                    p = os.path.join(self.tmp, "secret-" + j["id"])
                    with open(p, "w") as f:
                        f.write(SECRET)
                    fd = os.open(p, os.O_RDONLY)
                    self.keep.append(fd)
                    self.fd_map[int(j["file"][len("/proc/self/fd/"):])] = fd
            if a[i] == "-add-fd":
                kv = dict(x.split("=", 1) for x in a[i + 1].split(","))
                addfd[kv["set"]] = int(kv["fd"])
        i = 1
        while i < len(a):
            opt = a[i]
            val = a[i + 1] if i + 1 < len(a) else None
            if opt == "-accel" and val == "kvm":
                a[i + 1] = "tcg"
            elif opt == "-cpu" and val == "host":
                a[i + 1] = "max"
            elif opt == "-machine":
                self.machine = val.split(",")[0]
            elif opt == "-object" and '"memory-backend-memfd"' in val:
                # The test host reserves no huge pages: the same backend
                # without hugetlb proves the rest of the syntax.
                o = json.loads(val)
                if o.pop("hugetlb", False):
                    o.pop("hugetlbsize", None)
                a[i + 1] = json.dumps(o)
            elif opt == "-m":
                mib = int(val[len("size="):-1])
                if mib > MEM_CAP_MIB:  # TCG on a test host cannot map 16 TiB
                    a[i + 1] = "size=%dM" % MEM_CAP_MIB
            elif opt == "-kernel":
                p = self.host(val)
                with open(p, "wb") as f:
                    f.write(pvh_kernel())
                a[i + 1] = p
                self.kernel = True
            elif opt == "-initrd":
                p = self.host(val)
                with open(p, "wb") as f:
                    f.write(b"initrd" * 100)
                a[i + 1] = p
            elif opt == "-fw_cfg" and val.startswith("name=etc/sercon-port,file="):
                # SeaBIOS's serial console port, from an inherited fd as kvmhostd passes it
                fn = val[len("name=etc/sercon-port,file="):]
                assert fn.startswith("/proc/self/fd/"), val
                p = os.path.join(self.tmp, "sercon-port")
                with open(p, "wb") as f:
                    f.write(struct.pack("<H", 0x3f8))
                fd = os.open(p, os.O_RDONLY)
                self.keep.append(fd)
                self.fd_map[int(fn[len("/proc/self/fd/"):])] = fd
                self.sercon = True
            elif opt == "-pidfile":
                self.pidfile = a[i + 1] = self.host(val)
            elif opt == "-chardev" and "server=on" not in val:
                # a connected socket to a real swtpm (the TPM), as kvmhostd does
                kv = dict(x.split("=", 1) for x in val.split(",")[1:] if "=" in x)
                ours, theirs = socket.socketpair()
                os.makedirs(os.path.join(self.tmp, "tpm"), exist_ok=True)
                self.procs.append(subprocess.Popen(
                    ["swtpm", "socket", "--tpm2", "-t", "--tpmstate",
                     "dir=" + os.path.join(self.tmp, "tpm"),
                     "--ctrl", "type=unixio,clientfd=%d" % theirs.fileno()],
                    pass_fds=[theirs.fileno()], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL))
                theirs.close()
                self.keep.append(ours)
                self.fd_map[int(kv["fd"])] = ours.fileno()
            elif opt == "-chardev":
                kv = dict(x.split("=", 1) for x in val.split(",")[1:] if "=" in x)
                self.listener(kv["id"], int(kv["fd"]))
            elif opt == "-netdev":
                a[i + 1] = self.taps(val)
            elif opt == "-vnc":
                assert val.startswith("vnc=unix:"), val
                path = opt_unescape(val[len("vnc=unix:"):])
                self.vnc_path = self.host(path)
                a[i + 1] = "vnc=unix:" + opt_escape(self.vnc_path)
            elif opt == "-blockdev" and json.loads(val).get("node-name") == "fw-code-file":
                self.files.append(json.loads(val)["filename"])  # the host's OVMF, read-only
            elif opt == "-blockdev" and json.loads(val).get("node-name") == "fw-vars-file":
                # the VM's VARS copy: of the template that goes with the code
                vars_src = fw_code.replace("OVMF_CODE", "OVMF_VARS")
                img = os.path.join(self.tmp, "vars.fd")
                shutil.copyfile(vars_src, img)
                fn = json.loads(val)["filename"]
                fd = os.open(img, os.O_RDWR)
                self.keep.append(fd)
                self.fd_map[addfd[fn[len("/dev/fdset/"):]]] = fd
                self.files.append(fn)
            elif opt == "-blockdev":
                j = json.loads(val)
                if j["driver"] == "file":
                    fmt, ro = formats[j["node-name"]]
                    img = os.path.join(self.tmp, "img-%s" % j["node-name"])
                    enc = []
                    if j["node-name"] in encrypted:
                        enc = ["--object", "secret,id=s0,data=" + SECRET,
                               "-o", "encrypt.format=luks,encrypt.key-secret=s0"]
                    # LUKS times its PBKDF on this CPU: on a loaded host qemu-img
                    # sometimes cannot measure ("accurate CPU usage"); try again
                    for attempt in range(5):
                        p = subprocess.run(["qemu-img", "create", "-q", "-f", fmt] + enc +
                                           [img, "16M"], capture_output=True, text=True)
                        if p.returncode == 0 or "accurate CPU" not in p.stderr:
                            break
                    if p.returncode != 0:
                        raise RuntimeError("qemu-img create: " + p.stderr.strip())
                    fn = j["filename"]
                    if fn.startswith("/dev/fdset/"):
                        target = addfd[fn[len("/dev/fdset/"):]]
                        fd = os.open(img, os.O_RDONLY if ro else os.O_RDWR)
                        self.keep.append(fd)
                        self.fd_map[target] = fd
                    else:
                        p = self.host(fn)
                        os.rename(img, p)
                        j["filename"] = p
                        a[i + 1] = json.dumps(j)
                    self.files.append(j["filename"])
            i += 1

    def spawn(self, log):
        # copy our fds above 100 first, so no dup2 onto a golden's number
        # can clobber another source
        actions, high = [], []
        for target, fd in self.fd_map.items():
            h = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
            high.append(h)
            actions.append((os.POSIX_SPAWN_DUP2, h, target))
        logfd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        actions += [(os.POSIX_SPAWN_DUP2, logfd, 1), (os.POSIX_SPAWN_DUP2, logfd, 2)]
        pid = os.posix_spawn(self.args[0], self.args, os.environ, file_actions=actions)
        for h in high:
            os.close(h)
        os.close(logfd)
        return pid


class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(30)
        self.s.connect(path)
        self.f = self.s.makefile("rw")
        self.events = []
        greeting = json.loads(self.f.readline())
        assert "QMP" in greeting, greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError("QMP closed during " + name)
            r = json.loads(line)
            if "event" in r:
                self.events.append(r)
                continue
            if "error" in r:
                raise RuntimeError("%s: %s" % (name, r["error"]))
            return r["return"]


def read_until(sock, needle, timeout):
    buf, end = b"", time.time() + timeout
    sock.setblocking(False)
    while needle not in buf and time.time() < end:
        r, _, _ = select.select([sock], [], [], 0.2)
        if r:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
    return buf


def run(name, args):
    tmp = tempfile.mkdtemp(prefix="kh-argv-")
    c = Case(name, args, tmp)
    pid = None
    try:
        c.prepare()
        log = os.path.join(tmp, "qemu.log")
        pid = c.spawn(log)
        qmp_path = c.listeners["qmp"][1]
        deadline = time.time() + 30
        while True:
            try:
                q = Qmp(qmp_path)
                break
            except OSError:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    pid = None
                    raise RuntimeError("QEMU exited: " + open(log).read().strip())
                if time.time() > deadline:
                    raise RuntimeError("QEMU did not answer QMP: " + open(log).read())
                time.sleep(0.1)
        st = q.cmd("query-status")["status"]
        want = "inmigrate" if "-incoming" in c.args else "prelaunch"
        assert st == want, "status %s, want %s" % (st, want)
        nodes = q.cmd("query-named-block-nodes", flat=True)
        files = sorted(n["file"] for n in nodes if n["drv"] == "file")
        assert files == sorted(c.files), "file nodes %s, want %s" % (files, c.files)
        assert len(nodes) == 2 * len(c.files), "%d block nodes" % len(nodes)
        for n in nodes:
            if n["drv"] == "qcow2":
                assert "backing_file" not in n["image"], n
        if c.vnc_path:
            srv = q.cmd("query-vnc-servers")
            got = [s["service"] for v in srv for s in v["server"]]
            assert got == [c.vnc_path], "vnc on %s, want %s" % (got, c.vnc_path)
        if c.pidfile:
            got = int(open(c.pidfile).read().strip())
            assert got == pid, "pidfile says %d, qemu is %d" % (got, pid)
        serial = None
        if "serial0" in c.listeners:
            serial = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            serial.connect(c.listeners["serial0"][1])
            time.sleep(0.2)
        detail = ""
        if "-incoming" in c.args:
            # a migration target waits for its state (migrate-incoming):
            # it does not boot; "inmigrate" above is the check
            detail += " inmigrate"
        else:
            q.cmd("cont")
        if "-incoming" in c.args:
            pass
        elif c.kernel and serial:
            out = read_until(serial, b"KH-GUEST-OK", 30)
            assert b"KH-GUEST-OK" in out, "serial said %r" % out
            detail += " serial-ok"
        if c.sercon and serial:
            # no boot loader on the blank disks: SeaBIOS says so on COM1
            out = read_until(serial, b"SeaBIOS", 30)
            assert b"SeaBIOS" in out, "serial said %r" % out
            detail += " firmware-serial-ok"
        if "-incoming" in c.args:
            pass
        elif c.kernel and c.machine == "q35":
            end = time.time() + 30
            while q.cmd("query-status")["status"] != "shutdown" and time.time() < end:
                time.sleep(0.2)
            st = q.cmd("query-status")["status"]
            assert st == "shutdown", "after guest power-off: %s" % st
            detail += " poweroff->shutdown"
        else:
            st = q.cmd("query-status")["status"]
            assert st == "running", st
            detail += " running"
        try:
            q.cmd("quit")
        except RuntimeError:
            pass
        _, status = os.waitpid(pid, 0)
        pid = None
        assert os.waitstatus_to_exitcode(status) == 0, "exit %s: %s" % (status, open(log).read())
        return True, detail.strip()
    except Exception as e:  # report, then clean up
        return False, str(e)
    finally:
        if pid:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
        for p in c.procs:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    if not QEMU or not shutil.which("qemu-img"):
        print("1..0 # SKIP no qemu-system-x86_64 / qemu-img")
        return 77
    data = sys.argv[1]
    names = sys.argv[2:] or sorted(f[:-5] for f in os.listdir(data) if f.endswith(".args"))
    print("1..%d" % len(names))
    failed = 0
    for n, name in enumerate(names, 1):
        with open(os.path.join(data, name + ".args")) as f:
            args = f.read().splitlines()
        ok, detail = run(name, args)
        print("%s %d - %s %s" % ("ok" if ok else "not ok", n, name, detail))
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
