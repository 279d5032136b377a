"""Several "hosts" on one machine for cluster tests: network namespaces on a
bridge, one etcd member in each.

    with Hosts(3) as h:          # namespaces khc<pid>h1..h3 + khc<pid>br
        h.start_etcd()           # a 3-member cluster, waits until healthy
        h.put(1, "/k", "v"); assert h.get(3, "/k") == "v"
        h.partition(1); ...; h.heal(1)
        h.kill(2); ...; h.restart(2)
        h.popen(1, ["kvmhostd", ...])   # anything else inside host 1

Each host i (1-based) has eth0 = 10.79.X.i/24 on a bridge that lives in its
own namespace, so nothing touches the machine's own network: the only
traffic is between these namespaces (and each one's loopback). X is picked
from the pid so that concurrent runs differ, and so that no route of the
machine overlaps. Processes run in a namespace through
`nsenter --net=/var/run/netns/NAME` (not `ip netns exec`, which mounts a
fresh /sys without the cgroup v1 hierarchies). Every wait is bounded;
close() (also at exit, and from the context manager on failure) kills what
was started, deletes the namespaces and removes the temp dir. Needs root,
iproute2, nsenter, and etcd/etcdctl (Debian: etcd-server, etcd-client).
"""

import atexit
import ctypes
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

PREFIX = "khc"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
CLIENT_PORT = 2379
PEER_PORT = 2380

_live = []  # every Hosts not yet closed, for the atexit sweep


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=10)


def _pdeathsig():
    # etcd dies with the test process even if it is killed without cleanup
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def sweep_stale(tmpdir=None):
    """Delete the namespaces and temp dirs left by earlier runs whose process
    is gone (killed with -9: nothing of theirs could clean up)."""
    tmpdir = tmpdir or tempfile.gettempdir()
    for d in os.listdir(tmpdir):
        m = re.match(r"^kh-cluster-(\d+)-", d)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(os.path.join(tmpdir, d), ignore_errors=True)
    out = _ip("netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(r"^%s(\d+)(h\d+|br)$" % PREFIX, name)
        if m and not _pid_alive(int(m.group(1))):
            _ip("netns", "del", name, check=False)


def pick_subnet(pid=None):
    """10.79.X.0/24 with X from the pid, skipping any that overlaps a route
    of the machine."""
    pid = os.getpid() if pid is None else pid
    routes = []
    out = subprocess.run(["ip", "-4", "-j", "route", "show", "table", "all"],
                         capture_output=True, text=True, timeout=10).stdout
    for r in json.loads(out or "[]"):
        dst = r.get("dst", "")
        if dst in ("default", ""):
            continue
        try:
            routes.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
        except ValueError:
            pass
    for k in range(250):
        x = (pid + k) % 250 + 1
        net = ipaddress.ip_network("10.79.%d.0/24" % x)
        if not any(net.overlaps(r) for r in routes):
            return net
    raise RuntimeError("no free 10.79.X.0/24 on this machine")


class Hosts:
    def __init__(self, n=3, tmpdir=None):
        if os.geteuid() != 0:
            raise RuntimeError("the cluster harness needs root (network namespaces)")
        for tool in ("ip", "nsenter"):
            if not shutil.which(tool):
                raise RuntimeError("the cluster harness needs %s" % tool)
        self.n = n
        self.pid = os.getpid()
        self.tag = "%s%d" % (PREFIX, self.pid)
        self.bridge_ns = self.tag + "br"
        self.ns = {i: "%sh%d" % (self.tag, i) for i in range(1, n + 1)}
        self.net = pick_subnet(self.pid)
        sweep_stale(tmpdir)
        self.dir = tempfile.mkdtemp(prefix="kh-cluster-%d-" % self.pid, dir=tmpdir)
        self.procs = {}   # name -> Popen
        self.last_error = ""  # etcdctl's stderr of the last put
        self.etcd_args = {}
        self.created = []
        self.closed = False
        _live.append(self)
        try:
            self._make_network()
        except BaseException:
            self.close()
            raise

    # ---- network ----

    def addr(self, i):
        return str(self.net.network_address + i)

    def nsenter(self, i):
        """The argv prefix that runs a command in host i's network namespace."""
        return ["nsenter", "--net=/var/run/netns/" + self.ns[i]]

    def _make_network(self):
        br = self.bridge_ns
        _ip("netns", "add", br)
        self.created.append(br)
        _ip("-n", br, "link", "add", "br0", "type", "bridge")
        _ip("-n", br, "link", "set", "br0", "up")
        for i, ns in self.ns.items():
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # unique names while the pair is created, renamed inside
            v, p = "k%dv%d" % (self.pid, i), "k%dp%d" % (self.pid, i)
            _ip("link", "add", v[:15], "netns", ns, "type", "veth", "peer", "name", p[:15],
                "netns", br)
            _ip("-n", br, "link", "set", p[:15], "name", "p%d" % i)
            _ip("-n", br, "link", "set", "p%d" % i, "master", "br0")
            _ip("-n", br, "link", "set", "p%d" % i, "up")
            _ip("-n", ns, "link", "set", v[:15], "name", "eth0")
            _ip("-n", ns, "addr", "add", "%s/%d" % (self.addr(i), self.net.prefixlen),
                "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def partition(self, i):
        """Cut host i off the others (its eth0 down; its loopback stays)."""
        _ip("-n", self.ns[i], "link", "set", "eth0", "down")

    def heal(self, i):
        _ip("-n", self.ns[i], "link", "set", "eth0", "up")

    # ---- processes ----

    def popen(self, i, argv, name=None, log=None, **kw):
        """Start argv in host i's namespace; killed at close(). name defaults
        to argv[0]@h<i>; output goes to <dir>/<name>.log."""
        name = name or "%s@h%d" % (os.path.basename(argv[0]), i)
        logf = open(log or os.path.join(self.dir, name + ".log"), "ab")
        try:
            p = subprocess.Popen(self.nsenter(i) + list(argv), stdout=logf,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 preexec_fn=_pdeathsig, **kw)
        finally:
            logf.close()
        self.procs[name] = p
        return p

    def run(self, i, argv, timeout=10):
        """Run argv in host i's namespace to the end (bounded): CompletedProcess."""
        try:
            return subprocess.run(self.nsenter(i) + list(argv), capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(e.cmd, 124, e.stdout or "", "timed out")

    def _stop(self, name, sig=signal.SIGKILL, wait=5):
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        try:
            p.send_signal(sig)
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)

    # ---- etcd ----

    def client_url(self, i):
        return "http://%s:%d" % (self.addr(i), CLIENT_PORT)

    def peer_url(self, i):
        return "http://%s:%d" % (self.addr(i), PEER_PORT)

    def endpoints(self):
        return [self.client_url(i) for i in self.ns]

    def start_etcd(self, timeout=20):
        """One member per host, a new cluster; returns when all are healthy."""
        if not os.access(ETCD, os.X_OK):
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        cluster = ",".join("h%d=%s" % (i, self.peer_url(i)) for i in self.ns)
        token = self.tag
        for i in self.ns:
            self.etcd_args[i] = [
                ETCD, "--name", "h%d" % i, "--data-dir", os.path.join(self.dir, "etcd%d" % i),
                "--listen-peer-urls", self.peer_url(i),
                "--initial-advertise-peer-urls", self.peer_url(i),
                "--listen-client-urls", "%s,http://127.0.0.1:%d" % (self.client_url(i),
                                                                    CLIENT_PORT),
                "--advertise-client-urls", self.client_url(i),
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", token, "--log-level", "warn",
            ]
            self.popen(i, self.etcd_args[i], name="etcd@h%d" % i)
        self.wait_healthy(timeout=timeout)

    def kill(self, i):
        """kill -9 host i's member."""
        self._stop("etcd@h%d" % i)

    def restart(self, i, timeout=20):
        """Start host i's member again on its data dir and wait until healthy."""
        self._stop("etcd@h%d" % i)
        self.popen(i, self.etcd_args[i], name="etcd@h%d" % i)
        self.wait_healthy([i], timeout=timeout)

    def etcdctl(self, i, *args, timeout=3.0, endpoint=None):
        """etcdctl in host i's namespace against its own member (or endpoint)."""
        argv = [ETCDCTL, "--endpoints=" + (endpoint or self.client_url(i)),
                "--dial-timeout=1s", "--command-timeout=%gs" % timeout, *args]
        return self.run(i, argv, timeout=timeout + 3)

    def healthy(self, i):
        r = self.etcdctl(i, "endpoint", "health", timeout=1.5)
        return r.returncode == 0

    def wait_healthy(self, members=None, timeout=20):
        """Wait until each member answers its health check (it has a leader
        and serves a quorum read)."""
        members = list(members or self.ns)
        end = time.monotonic() + timeout
        while True:
            members = [i for i in members if not self.healthy(i)]
            if not members:
                return
            if time.monotonic() > end:
                raise TimeoutError("etcd members %s not healthy after %ss; logs in %s"
                                   % (members, timeout, self.dir))
            time.sleep(0.2)

    def put(self, i, key, value, timeout=3.0):
        """Write through host i's member: True if committed."""
        r = self.etcdctl(i, "put", key, value, timeout=timeout)
        self.last_error = r.stderr.strip()
        return r.returncode == 0

    def get(self, i, key, timeout=3.0):
        """Read (linearizable) through host i's member: the value, or None if absent.
        Raises on error."""
        r = self.etcdctl(i, "get", key, "--print-value-only", timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("etcdctl get %s via h%d: %s" % (key, i, r.stderr.strip()))
        return r.stdout[:-1] if r.stdout.endswith("\n") else (r.stdout or None)

    def leader(self, i):
        """The member id of the leader as host i's member sees it (0 = none)."""
        r = self.etcdctl(i, "endpoint", "status", "-w", "json", timeout=1.5)
        if r.returncode != 0:
            return 0
        try:
            return json.loads(r.stdout)[0]["Status"]["leader"]
        except (ValueError, KeyError, IndexError):
            return 0

    # ---- teardown ----

    def close(self):
        """Kill everything started, delete the namespaces, remove the temp dir.
        Idempotent; never raises."""
        if self.closed:
            return
        self.closed = True
        for name in list(self.procs):
            try:
                self._stop(name)
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        for ns in reversed(self.created):
            _ip("netns", "del", ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self in _live:
            _live.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


@atexit.register
def _close_all():
    for h in list(_live):
        h.close()
