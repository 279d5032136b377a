"""bench/libvirt_peer.py - the libvirt column of the benches (migrate.py,
backup.py, guest_boot.py): private libvirtds started and stopped here.

Each Libvirtd runs in a network namespace of its own making (or shared by
the two of a migration) and in a private mount + UTS namespace where a
scratch dir is bind-mounted over /etc/libvirt, /run/libvirt, /var/lib/libvirt,
/var/log/libvirt and /var/cache/libvirt (and a tmpfs over /run); its sockets are in the scratch dir
(unix_sock_dir), clients reach it with qemu:///system?socket=PATH. Its QEMUs
run as root under TCG (domain type='qemu'), no cgroups, no security driver,
no virtlogd. Nothing of the host's libvirt (config, state, units, networks)
or network is touched; stop() destroys its domains, ends the daemon and the
QEMUs it left (by pid), deletes the namespace and the scratch dir.

Figures (each function returns a dict; the benches print it):
  migrate_runs()  `virsh migrate --live` between two libvirtds (distinct
                  host_uuid and hostname), the test guest, loopback: wall
                  time of the command, libvirt's downtime and elapsed time
                  (domjobinfo --completed), the gap the guest saw.
  backup_full()   `virsh backup-begin` (push, full) of a disk to a qcow2 on
                  the same filesystem, timed until the job completed and the
                  file is synced.
  boot_to_ssh()   `virsh start` of a Debian disk (overlay) with a NoCloud
                  seed ISO on a libvirt NAT network, until `ssh true` works.
skip_reason() says why the column cannot be measured (None when it can).
"""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST = os.path.join(ROOT, "tests", "guest", "out")
QEMU = "/usr/bin/qemu-system-x86_64"
LIBVIRTD = "/usr/sbin/libvirtd"
PKGS = "libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu"

QEMU_CONF = """user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
"""

LIBVIRTD_CONF = """unix_sock_dir = "{sock}"
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
host_uuid = "{uuid}"
log_outputs = "3:file:{log}"
"""


def skip_reason():
    """None when the libvirt column can be measured, else why not."""
    for exe in (LIBVIRTD, shutil.which("virsh") or "/usr/bin/virsh", QEMU):
        if not os.access(exe, os.X_OK):
            return "libvirt is not installed (%s missing; apt-get install %s)" % (exe, PKGS)
    if os.geteuid() != 0:
        return "needs root (private libvirtds in namespaces)"
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare and ip (util-linux, iproute2)"
    return None


def run(argv, check=True, timeout=120, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(argv), (p.stderr or p.stdout).strip()))
    return p


class NetNS:
    """A network namespace with lo up; delete() ends what runs in it."""

    def __init__(self):
        self.name = "khlv-%08x" % random.getrandbits(32)
        run(["ip", "netns", "add", self.name])
        run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"])

    def prefix(self):
        return ["ip", "netns", "exec", self.name]

    def pids(self):
        r = run(["ip", "netns", "pids", self.name], check=False)
        return [int(p) for p in r.stdout.split()]

    def delete(self):
        # only processes this module started live in it (libvirtd, QEMU, dnsmasq)
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        run(["ip", "netns", "delete", self.name], check=False)


class Libvirtd:
    """One private libvirtd. cache: a dir shared with another instance (the
    QEMU capabilities are probed once); ns: a NetNS (made when None)."""

    def __init__(self, name, ns=None, cache=None):
        self.name = name
        self.own_ns = ns is None
        self.ns = ns or NetNS()
        self.work = tempfile.mkdtemp(prefix="khbench-lv-%s-" % name, dir="/tmp")
        os.chmod(self.work, 0o755)
        self.cache = cache or os.path.join(self.work, "cache")
        self.sock = os.path.join(self.work, "sock")
        self.uri = "qemu:///system?socket=%s/libvirt-sock" % self.sock
        self.proc = None
        self.stopped = False

    def path(self, *p):
        return os.path.join(self.work, *p)

    def start(self, timeout=300):
        for d in ("etc/qemu/networks/autostart", "etc/storage", "run", "lib/qemu",
                  "lib/dnsmasq", "lib/network", "log/qemu", "sock"):
            os.makedirs(self.path(d), exist_ok=True)
        os.makedirs(os.path.join(self.cache, "qemu"), exist_ok=True)
        with open(self.path("etc", "qemu.conf"), "w") as f:
            f.write(QEMU_CONF)
        conf = self.path("etc", "libvirtd.conf")
        with open(conf, "w") as f:
            f.write(LIBVIRTD_CONF.format(sock=self.sock, uuid=str(uuid.uuid4()),
                                         log=self.path("libvirtd.log")))
        binds = [("etc", "/etc/libvirt"), ("run", "/run/libvirt"), ("lib", "/var/lib/libvirt"),
                 ("log", "/var/log/libvirt")]
        # a tmpfs over /run: /run/libvirt made there, not on the host
        script = "set -e; mount -t tmpfs -o mode=0755 khbench-run /run; mkdir /run/libvirt; "
        for d in ("/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt", "/etc/libvirt"):
            script += "mkdir -p %s; " % d
        for src, dst in binds:
            script += "mount --bind %s %s; " % (self.path(src), dst)
        script += "mount --bind %s /var/cache/libvirt; " % self.cache
        script += "hostname khlv-%s-%s; " % (self.name, self.ns.name[5:])
        script += "exec %s --config %s --pid-file %s" % (LIBVIRTD, conf, self.path("libvirtd.pid"))
        self.proc = subprocess.Popen(
            self.ns.prefix() + ["unshare", "-m", "-u", "--propagation", "private",
                                "sh", "-c", script],
            stdout=open(self.path("stdout.log"), "w"), stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("libvirtd %s ended: %s" % (self.name, self.logs()))
            if self.virsh("version", check=False).returncode == 0:
                break
            if time.monotonic() > end:
                raise RuntimeError("libvirtd %s did not answer in %ds" % (self.name, timeout))
            time.sleep(0.2)
        # the QEMU capabilities, probed now rather than inside a timed step
        self.virsh("domcapabilities", "--virttype", "qemu", "--machine", "q35", timeout=timeout)
        return self

    def logs(self):
        out = ""
        for f in ("stdout.log", "libvirtd.log"):
            try:
                out += open(self.path(f)).read()[-2000:]
            except OSError:
                pass
        return out

    def virsh(self, *args, check=True, timeout=300):
        return run(["virsh", "-q", "-c", self.uri] + list(args), check=check, timeout=timeout)

    def domain_log(self, dom):
        try:
            return open(self.path("log", "qemu", dom + ".log")).read()[-3000:]
        except OSError:
            return ""

    def stop(self):
        if self.stopped:
            return
        self.stopped = True
        try:
            if self.proc and self.proc.poll() is None:
                r = self.virsh("list", "--all", "--name", check=False, timeout=30)
                for dom in r.stdout.split():
                    self.virsh("destroy", dom, check=False, timeout=30)
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            # QEMUs it left (their pid files are in its run dir)
            qd = self.path("run", "qemu")
            for f in os.listdir(qd) if os.path.isdir(qd) else ():
                if f.endswith(".pid"):
                    try:
                        os.kill(int(open(os.path.join(qd, f)).read().strip()), signal.SIGKILL)
                    except (ValueError, OSError):
                        pass
        finally:
            if self.own_ns:
                self.ns.delete()
            shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------- guests

def test_guest_xml(name, mem, disk, serial):
    """The test guest (tests/guest/out) as bench/migrate.py's raw QEMU runs it."""
    return """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <cpu mode='maximum' check='none'/>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>{qemu}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='unix'><source mode='bind' path='{serial}'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
""".format(name=name, mem=mem, kernel=os.path.join(GUEST, "vmlinuz"),
           initrd=os.path.join(GUEST, "initrd.img"), qemu=QEMU, disk=disk, serial=serial)


def jobinfo(lv, dom):
    """`virsh domjobinfo --completed` as {key: value string}."""
    out = lv.virsh("domjobinfo", dom, "--completed").stdout
    return {k.strip(): v.strip() for k, v in
            (l.split(":", 1) for l in out.splitlines() if ":" in l)}


def ms(v):
    m = re.match(r"([\d.]+)\s*ms", v or "")
    return float(m.group(1)) if m else None


def migrate_runs(mem=256, runs=3, console_cls=None):
    """`virsh migrate --live` of the test guest back and forth between two
    libvirtds over loopback (the disk shared: --unsafe, as the raw QEMU run
    shares it). console_cls: migrate.py's Console (heartbeats on the serial
    socket). Returns a list of {wall_s, downtime_ms, elapsed_ms, guest_gap_ms,
    counted_on}."""
    ns = NetNS()
    cache = tempfile.mkdtemp(prefix="khbench-lv-cache-", dir="/tmp")
    lvs = []
    out = []
    try:
        for n in ("a", "b"):  # one after the other: b finds a's capability cache
            lvs.append(Libvirtd(n, ns=ns, cache=cache).start())
        a, b = lvs
        disk = os.path.join(a.work, "disk.raw")
        shutil.copy(os.path.join(GUEST, "disk.ext4"), disk)
        ser = os.path.join(a.work, "serial.sock")
        xml = os.path.join(a.work, "dom.xml")
        with open(xml, "w") as f:
            f.write(test_guest_xml("khbench-mig", mem, disk, ser))
        a.virsh("create", xml)
        con = console_cls(ser)
        con.wait("kvmhost test guest: shell", 120)
        con.send("\ni=0; while true; do echo HB $i; i=$((i+1)); usleep 100000; done &\n")
        con.wait(r"^HB 5$", 60)
        src, dst = a, b
        for i in range(runs):
            port = 49152 + random.randrange(0, 4000)  # the namespace's loopback is ours
            # the target's serial socket: a path of its own (the source
            # removes its socket when it ends)
            dxml = os.path.join(a.work, "dst-%d.xml" % i)
            cur = ser
            ser = os.path.join(a.work, "serial-%d.sock" % i)
            with open(dxml, "w") as f:
                f.write(src.virsh("dumpxml", "--migratable", "khbench-mig").stdout
                        .replace("path='%s'" % cur, "path='%s'" % ser))
            n0 = len(con.heartbeats())
            got = []  # the target's console, connected as soon as its socket exists

            def attach(path=ser):
                end = time.monotonic() + 600
                while not got and time.monotonic() < end:
                    if os.path.exists(path):
                        try:
                            got.append(console_cls(path))
                            return
                        except OSError:
                            pass
                    time.sleep(0.01)
            th = threading.Thread(target=attach, daemon=True)
            th.start()
            t0 = time.monotonic()
            src.virsh("migrate", "--live", "--unsafe", "khbench-mig", dst.uri,
                      "--migrateuri", "tcp://127.0.0.1:%d" % port, "--xml", dxml, timeout=600)
            wall = time.monotonic() - t0
            th.join(30)
            if not got:
                raise RuntimeError("no serial socket on the target")
            new = got[0]
            info = jobinfo(dst, "khbench-mig")  # the target keeps the stats
            # the guest counts on, on the target's console
            last = con.heartbeats()[-1][1]
            wait_until(lambda: any(n > last + 5 for _, n in new.heartbeats()), 60,
                       "heartbeats on the target")
            hb = con.heartbeats()[n0:] + [x for x in new.heartbeats() if x[1] > last]
            gaps = [y[0] - x[0] for x, y in zip(hb, hb[1:])]
            nums = [n for _, n in hb]
            out.append({"wall_s": wall, "downtime_ms": ms(info.get("Total downtime")),
                        "elapsed_ms": ms(info.get("Time elapsed")),
                        "guest_gap_ms": max(gaps) * 1000 if gaps else None,
                        "counted_on": nums == sorted(set(nums))
                        and nums[-1] - nums[0] + 1 - len(nums) <= 1})
            con.s.close()
            con = new
            src, dst = dst, src
        return out
    finally:
        for lv in lvs:
            lv.stop()
        ns.delete()
        shutil.rmtree(cache, ignore_errors=True)


def wait_until(fn, timeout, what):
    end = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > end:
            raise TimeoutError("libvirt: no " + what)
        time.sleep(0.05)


# ---------------------------------------------------------------- backup

def backup_full(disk, outdir, fmt="qcow2"):
    """`virsh backup-begin` (push, full) of disk (a qcow2) into a qcow2 in
    outdir, the domain paused (the guest does not run: like a stopped VM's
    backup). Returns {seconds, bytes}: from backup-begin until the job
    completed and the target is synced."""
    lv = Libvirtd("bk")
    target = os.path.join(outdir, "libvirt-backup.qcow2")
    try:
        lv.start()
        xml = lv.path("dom.xml")
        with open(xml, "w") as f:
            f.write("""<domain type='qemu'>
  <name>khbench-bk</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>{qemu}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
""".format(qemu=QEMU, fmt=fmt, disk=disk))
        lv.virsh("create", xml, "--paused")
        bxml = lv.path("backup.xml")
        with open(bxml, "w") as f:
            f.write("""<domainbackup mode='push'>
  <disks>
    <disk name='vda' type='file'>
      <target file='{t}'/>
      <driver type='qcow2'/>
    </disk>
  </disks>
</domainbackup>
""".format(t=target))
        # one connection, polled every 20 ms (a virsh per poll costs more
        # than that on a loaded host); python3-libvirt, virsh without it
        try:
            import libvirt
        except ImportError:
            libvirt = None
        if libvirt:
            conn = libvirt.open(lv.uri)
            dom = conn.lookupByName("khbench-bk")
            bx = open(bxml).read()
            t0 = time.monotonic()
            dom.backupBegin(bx, None, 0)
            while dom.jobStats().get("type", 0) != libvirt.VIR_DOMAIN_JOB_NONE:
                time.sleep(0.02)
            st = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
            run(["sync", "-f", target])
            secs = time.monotonic() - t0
            conn.close()
            if st.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED:
                raise RuntimeError("backup job: %s" % st)
            elapsed = st.get("time_elapsed")
        else:
            t0 = time.monotonic()
            lv.virsh("backup-begin", "khbench-bk", bxml)
            while not re.search(r"Job type:\s+None",
                                lv.virsh("domjobinfo", "khbench-bk", check=False).stdout):
                time.sleep(0.02)
            info = jobinfo(lv, "khbench-bk")
            run(["sync", "-f", target])
            secs = time.monotonic() - t0
            if info.get("Job type") != "Completed":
                raise RuntimeError("backup job: %s" % info)
            elapsed = ms(info.get("Time elapsed"))
        return {"seconds": secs, "bytes": os.path.getsize(target),
                "libvirt_elapsed_ms": elapsed}
    finally:
        lv.stop()
        try:
            os.unlink(target)
        except OSError:
            pass


# ---------------------------------------------------------------- boot

NAT_XML = """<network>
  <name>khbench</name>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='off' delay='0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
      <host mac='52:54:00:4b:48:01' ip='192.168.122.50'/>
    </dhcp>
  </ip>
</network>
"""


def boot_to_ssh(disk, seed_iso, key, timeout=600, mem=1024, cleanups=None):
    """`virsh start` of a Debian disk (a qcow2 overlay on disk; disk is not
    modified) with the NoCloud seed_iso, on a libvirt NAT network (its
    bridge and dnsmasq, in the libvirtd's own network namespace), until
    `ssh true` works on the guest's DHCP address. Returns seconds."""
    lv = Libvirtd("boot")
    if cleanups is not None:  # the caller's SIGTERM path (worker threads do not unwind)
        cleanups.append(lv.stop)
    try:
        lv.start()
        ovl = lv.path("overlay.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
             os.path.abspath(disk), ovl])
        netxml = lv.path("net.xml")
        with open(netxml, "w") as f:
            f.write(NAT_XML)
        lv.virsh("net-create", netxml)
        xml = lv.path("dom.xml")
        with open(xml, "w") as f:
            f.write("""<domain type='qemu'>
  <name>khbench-boot</name>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <!-- no <cpu>: what virt-install 4.1 writes for a TCG (type='qemu') x86
       guest (virtinst/domain/cpu.py sets a mode only for KVM): QEMU's
       default model, qemu64 -->
  <devices>
    <emulator>{qemu}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{ovl}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='{iso}'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <source network='khbench'/>
      <mac address='52:54:00:4b:48:01'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
  </devices>
</domain>
""".format(mem=mem, qemu=QEMU, ovl=ovl, iso=os.path.abspath(seed_iso),
           console=lv.path("console.log")))
        lv.virsh("define", xml)
        t0 = time.monotonic()
        lv.virsh("start", "khbench-boot")
        argv = lv.ns.prefix() + [
            "ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR", "kh@192.168.122.50", "true"]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if subprocess.run(argv, capture_output=True, timeout=30).returncode == 0:
                return time.monotonic() - t0
            time.sleep(1)
        raise RuntimeError("libvirt guest: no ssh login in %ss" % timeout)
    finally:
        lv.stop()


# ---------------------------------------------------------------- columns
# What the benches call: one line each there, the printing here.

def migrate_column(mem, runs, console_cls):
    """bench/migrate.py's libvirt rows (shared disk, loopback)."""
    why = skip_reason()
    if why:
        print("libvirt virsh migrate --live: skipped: " + why, flush=True)
        return None
    try:
        rows = migrate_runs(mem, runs, console_cls)
    except Exception as e:  # a figure left out, said so; the other columns stand
        print("libvirt virsh migrate --live: failed: %s" % e, flush=True)
        return None
    print("%-22s %8s %8s %10s %10s %7s" % ("mode", "wall_s", "total_s", "qemu_dt_ms",
                                          "guest_gap", "counts"))
    for r in rows:
        print("%-22s %8.2f %8.2f %10s %10.0f %7s" % (
            "libvirt, shared disk", r["wall_s"], (r["elapsed_ms"] or 0) / 1000,
            "%.0f" % r["downtime_ms"] if r["downtime_ms"] is not None else "-",
            r["guest_gap_ms"] or 0, r["counted_on"]), flush=True)
    print("  (libvirt: wall_s = `virsh migrate --live` command; total_s and qemu_dt_ms = "
          "`virsh domjobinfo --completed` on the target: Time elapsed, Total downtime; "
          "QEMU's default downtime-limit 300 ms)", flush=True)
    return rows


def backup_line(disk, outdir, mib, t_kvmhost):
    """bench/backup.py's libvirt line: a full push backup of disk (qcow2) to
    outdir, beside kvmhost's full backup time t_kvmhost (s)."""
    why = skip_reason()
    if why:
        return "  libvirt backup-begin    skipped: " + why
    try:
        r = backup_full(disk, outdir)
    except Exception as e:  # a figure left out, said so; the other figures stand
        return "  libvirt backup-begin    failed: %s" % e
    el = r["libvirt_elapsed_ms"]
    return ("  libvirt backup-begin    %6.2f s  %7.1f MiB/s  -> kvmhost/libvirt throughput "
            "%.2fx  (push, full, qcow2 target, domain paused; until the job completed and "
            "the file synced; libvirt's job elapsed %s; stored %d MiB)"
            % (r["seconds"], mib / r["seconds"], r["seconds"] / t_kvmhost,
               "%.2f s" % (el / 1000) if el is not None else "-", r["bytes"] // (1 << 20)))


def boot_runner(seed_fn, cleanups=None):
    """bench/guest_boot.py's libvirt runner: fn(disk, work, key, pub, timeout)
    -> seconds, like its run_kvmhost/run_qemu, with a NoCloud ISO of the same
    seed_fn(pub) user-data; None (and a printed line) without libvirt."""
    why = skip_reason()
    if why:
        print("libvirt vm start -> ssh: skipped: " + why, flush=True)
        return None

    def fn(disk, work, key, pub, timeout):
        sd = tempfile.mkdtemp(prefix="lv-seed-", dir=work)
        with open(os.path.join(sd, "meta-data"), "w") as f:
            json.dump({"instance-id": "bench-lv-0", "local-hostname": "bench"}, f)
        with open(os.path.join(sd, "user-data"), "w") as f:
            f.write("#cloud-config\n" + json.dumps(seed_fn(pub), indent=2) + "\n")
        iso = os.path.join(work, "lv-cidata.iso")
        run(["genisoimage", "-quiet", "-volid", "cidata", "-joliet", "-rock",
             "-input-charset", "utf-8", "-output", iso, sd])
        return boot_to_ssh(disk, iso, key, timeout, cleanups=cleanups)
    return fn


def boot_row(times, kh, runs):
    """The libvirt row of bench/guest_boot.py's table (times: its runs)."""
    if not times:
        return "| vm start -> ssh login, libvirt | not measured | | |"
    lv = min(times)
    return ("| vm start -> ssh login, libvirt (`virsh start`, NoCloud ISO, NAT network), "
            "best of %d | kvmhost %.1f s | libvirt %.1f s | kvmhost/libvirt %.2fx |"
            % (runs, kh, lv, kh / lv))
