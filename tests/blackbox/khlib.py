"""Helpers for the kvmhost black-box tests: the daemon process, an HTTP client
over a unix socket (or TCP), a WebSocket console client, guest paths and
/proc inspection of QEMU processes.

Only the standard library and Debian's python3-websocket are used.
"""

import glob
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import schemas

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_DIR = os.environ.get("KH_BUILD_DIR", os.path.join(REPO, "build"))
DAEMON_BIN = os.environ.get("KH_DAEMON", os.path.join(BUILD_DIR, "src", "daemon", "kvmhostd"))
CLI_BIN = os.environ.get("KH_CLI", os.path.join(BUILD_DIR, "src", "cli", "kvmhost"))

GUEST_READY = "KVMHOST-GUEST-READY"
GUEST_DISK = "KVMHOST-DISK: kvmhost-disk-ok"
GUEST_CMDLINE = "console=ttyS0 quiet panic=-1"

MIB = 1024 * 1024


class KhError(AssertionError):
    pass


# --------------------------------------------------------------------------
# HTTP


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix stream socket."""

    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


class Resp:
    def __init__(self, status, headers, data, method, path):
        self.status = status
        self.headers = headers  # dict, lower-case keys
        self.data = data
        self.method = method
        self.path = path
        self._json = None

    @property
    def text(self):
        return self.data.decode("utf-8", "replace")

    @property
    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.data)
            except ValueError as e:
                raise KhError("%s %s -> %d: body is not JSON (%s): %r"
                              % (self.method, self.path, self.status, e, self.data[:300]))
        return self._json

    @property
    def error(self):
        """The {"code", "message"} error object (asserting its shape)."""
        j = self.json
        assert isinstance(j, dict) and isinstance(j.get("error"), dict), \
            "%s %s -> %d: not an error object: %r" % (self.method, self.path, self.status, j)
        e = j["error"]
        assert isinstance(e.get("code"), str) and e["code"], "error without code: %r" % j
        assert isinstance(e.get("message"), str) and e["message"].strip(), \
            "error without message: %r" % j
        return e

    def __repr__(self):
        return "<%s %s -> %d %r>" % (self.method, self.path, self.status, self.data[:400])


class Api:
    """A small JSON client. unix_path or (host, port); token for TCP."""

    def __init__(self, unix_path=None, host=None, port=None, token=None, on_vm=None,
                 ssl_context=None):
        self.unix_path = unix_path
        self.host = host
        self.port = port
        self.token = token
        self.ssl_context = ssl_context  # TCP with TLS (the daemon's default)
        self.on_vm = on_vm  # callback(vm_dict) for every VM object seen (cleanup)

    def _conn(self, timeout):
        if self.unix_path:
            return UnixHTTPConnection(self.unix_path, timeout=timeout)
        if self.ssl_context:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, raw=None, headers=None, timeout=90):
        hdrs = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw if isinstance(raw, bytes) else raw.encode()
            hdrs["Content-Type"] = "application/json"
        if self.token:
            hdrs["Authorization"] = "Bearer " + self.token
        if headers:
            hdrs.update(headers)
        c = self._conn(timeout)
        try:
            c.request(method, path, body=data, headers=hdrs)
            r = c.getresponse()
            payload = r.read()
            resp = Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, payload, method, path)
        finally:
            c.close()
        schemas.check_exchange(self, method, path, body, resp)
        if self.on_vm and resp.headers.get("content-type", "").startswith("application/json"):
            try:
                self._note_vms(resp.json)
            except Exception:
                pass
        return resp

    def _note_vms(self, j):
        if isinstance(j, dict):
            if "id" in j and "name" in j and "memory_mib" in j:
                self.on_vm(j)
            for k in ("vms",):
                if isinstance(j.get(k), list):
                    for v in j[k]:
                        self._note_vms(v)
            if isinstance(j.get("result"), dict):
                self._note_vms(j["result"])

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def patch(self, path, body=None, **kw):
        return self.request("PATCH", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # ---- VM helpers

    def vms(self):
        r = self.get("/api/v1/vms")
        assert r.status == 200, r
        assert isinstance(r.json.get("vms"), list), r
        return r.json["vms"]

    def vm_names(self):
        return sorted(v["name"] for v in self.vms())

    def vm(self, name):
        r = self.get("/api/v1/vms/" + name)
        assert r.status == 200, r
        return r.json

    def create(self, spec):
        r = self.post("/api/v1/vms", spec)
        assert r.status == 201, r
        return r.json

    def action(self, name, verb, body=None, wait=60, poll_timeout=180):
        """POST an action; follow a 202 task until it finishes.
        Returns (status, json) where json is the final Task on success, or
        the error object's envelope on failure."""
        b = {"wait": wait}
        if body:
            b.update(body)
        r = self.post("/api/v1/vms/%s/%s" % (name, verb), b, timeout=wait + 60)
        if r.status != 202:
            return r.status, r.json if r.data else None
        task = r.json
        assert task.get("id"), r
        loc = r.headers.get("location")
        assert loc == "/api/v1/tasks/" + task["id"], "202 without the right Location: %r" % r.headers
        deadline = time.time() + poll_timeout
        while time.time() < deadline:
            t = self.get("/api/v1/tasks/" + task["id"])
            assert t.status == 200, t
            if t.json["state"] != "running":
                if t.json["state"] == "succeeded":
                    return 200, t.json
                err = t.json.get("error") or {}
                return 500, {"error": err, "task": t.json}
            time.sleep(0.2)
        raise KhError("task %s of %s %s did not finish in %ss" % (task["id"], verb, name, poll_timeout))

    def act_ok(self, name, verb, body=None, wait=60):
        st, j = self.action(name, verb, body, wait=wait)
        assert st == 200, "%s %s -> %s %r" % (verb, name, st, j)
        if isinstance(j, dict) and "kind" in j:
            assert j["state"] == "succeeded", j
            return j.get("result")
        return j

    def console_log(self, name, tail=None):
        p = "/api/v1/vms/%s/console/log" % name
        if tail is not None:
            p += "?tail=%d" % tail
        r = self.get(p)
        assert r.status == 200, r
        return r.text

    def wait_accel(self, timeout=15):
        """GET /host once the start-up KVM probe is over."""
        deadline = time.time() + timeout
        h = self.get("/api/v1/host").json
        while h.get("accelerator") == "probing" and time.time() < deadline:
            time.sleep(0.2)
            h = self.get("/api/v1/host").json
        return h

    def wait_state(self, name, states, timeout=60):
        if isinstance(states, str):
            states = (states,)
        deadline = time.time() + timeout
        vm = None
        while time.time() < deadline:
            vm = self.vm(name)
            if vm["state"] in states:
                return vm
            time.sleep(0.2)
        raise KhError("vm %s not in %s after %ss: %r" % (name, states, timeout, vm))

    def wait_console(self, name, marker, timeout=120, count=1):
        """Poll console/log every 200 ms until marker appears count times."""
        deadline = time.time() + timeout
        log = ""
        while time.time() < deadline:
            log = self.console_log(name)
            if log.count(marker) >= count:
                return log
            time.sleep(0.2)
        raise KhError("marker %r (x%d) not in console of %s after %ss; log tail:\n%s"
                      % (marker, count, name, timeout, log[-2000:]))

    def wait_consoles(self, names, marker, timeout=120):
        """The same for several VMs booting in parallel."""
        deadline = time.time() + timeout
        pending = set(names)
        logs = {}
        while pending and time.time() < deadline:
            for n in sorted(pending):
                log = self.console_log(n)
                logs[n] = log
                if marker in log:
                    pending.discard(n)
            if pending:
                time.sleep(0.2)
        if pending:
            raise KhError("marker %r not seen in %s after %ss; tails: %s"
                          % (marker, sorted(pending), timeout,
                             {n: logs.get(n, "")[-600:] for n in pending}))
        return logs


# --------------------------------------------------------------------------
# Server-sent events (raw socket, since http.client buffers)


class SSE:
    def __init__(self, unix_path, path="/api/v1/events", headers=None, timeout=10):
        # unix_path: a unix socket path, or (host, port) for TCP
        if isinstance(unix_path, tuple):
            self.s = socket.create_connection(unix_path, timeout=timeout)
        else:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.settimeout(timeout)
            self.s.connect(unix_path)
        req = "GET %s HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n" % path
        for k, v in (headers or {}).items():
            req += "%s: %s\r\n" % (k, v)
        self.s.sendall((req + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            d = self.s.recv(4096)
            if not d:
                break
            self.buf += d
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "")

    def read_until(self, pred, timeout=10):
        """Read events until pred(event_dict) is true; event_dict has the
        parsed 'data' JSON plus 'event'/'id' fields. Returns it or None."""
        deadline = time.time() + timeout
        text = ""
        while time.time() < deadline:
            # Decode what we have (ignore chunk framing: strip hex size lines)
            raw = self.buf.decode("utf-8", "replace")
            if self.chunked:
                raw = re.sub(r"(?m)^[0-9a-fA-F]+\r\n", "", raw)
            text = raw.replace("\r\n", "\n")
            for block in text.split("\n\n"):
                ev = {}
                data = []
                for ln in block.split("\n"):
                    if ln.startswith("data:"):
                        data.append(ln[5:].strip())
                    elif ln.startswith("event:"):
                        ev["event"] = ln[6:].strip()
                    elif ln.startswith("id:"):
                        ev["id"] = ln[3:].strip()
                if data:
                    try:
                        ev["data"] = json.loads("\n".join(data))
                    except ValueError:
                        continue
                    if pred(ev):
                        return ev
            r, _, _ = select.select([self.s], [], [], 0.2)
            if r:
                d = self.s.recv(65536)
                if not d:
                    break
                self.buf += d
        return None

    def close(self):
        self.s.close()


# --------------------------------------------------------------------------
# WebSocket console


class Console:
    """The serial console over the API's WebSocket; a reader thread collects
    everything received."""

    def __init__(self, unix_path, name, host=None, port=None, token=None, timeout=15,
                 ssl_context=None):
        import websocket  # python3-websocket
        hdr = []
        if token:
            hdr.append("Authorization: Bearer " + token)
        url_path = "/api/v1/vms/%s/console" % name
        if unix_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(unix_path)
            self.ws = websocket.create_connection("ws://localhost" + url_path, socket=sock,
                                                  header=hdr, timeout=timeout)
        else:
            if ssl_context:
                raw = socket.create_connection((host, port), timeout=timeout)
                sock = ssl_context.wrap_socket(raw, server_hostname=host)
                self.ws = websocket.create_connection("wss://%s:%d%s" % (host, port, url_path),
                                                      socket=sock, header=hdr, timeout=timeout)
            else:
                self.ws = websocket.create_connection("ws://%s:%d%s" % (host, port, url_path),
                                                      header=hdr, timeout=timeout)
        self.ws.settimeout(0.5)
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.closed = False
        self.close_reason = None
        self.t = threading.Thread(target=self._reader, daemon=True)
        self.t.start()

    def _reader(self):
        import websocket
        while not self.closed:
            try:
                op, data = self.ws.recv_data(control_frame=False)
            except websocket.WebSocketTimeoutException:
                continue
            except Exception as e:  # closed or broken
                self.close_reason = repr(e)
                self.closed = True
                return
            if op == websocket.ABNF.OPCODE_CLOSE:
                self.close_reason = "close frame"
                self.closed = True
                return
            if isinstance(data, str):
                data = data.encode()
            with self.lock:
                self.buf += data

    def text(self):
        with self.lock:
            return bytes(self.buf).decode("utf-8", "replace")

    def send(self, text):
        self.ws.send_binary(text.encode() if isinstance(text, str) else text)

    def wait_for(self, pattern, timeout=30, start=0):
        """Wait until regex pattern matches the received text (from offset
        start). Returns the match."""
        deadline = time.time() + timeout
        rx = re.compile(pattern)
        while time.time() < deadline:
            m = rx.search(self.text(), start)
            if m:
                return m
            if self.closed:
                break
            time.sleep(0.05)
        raise KhError("console: %r not seen in %ss (closed=%s %s); got tail:\n%r"
                      % (pattern, timeout, self.closed, self.close_reason, self.text()[-1500:]))

    def run(self, cmd_fmt, timeout=30, retries=3):
        """Type a shell command whose output proves it ran: cmd_fmt has one
        %d for a random number N; the command must print "kh-<N+1>"
        (e.g. 'echo kh-$((%d+1))'). Retries while the shell is not ready."""
        import random
        for attempt in range(retries):
            n = random.randint(10000, 999999)
            start = len(self.text())
            self.send((cmd_fmt % n) + "\n")
            try:
                return self.wait_for(r"kh-%d\b" % (n + 1), timeout=timeout / retries, start=start)
            except KhError:
                if attempt == retries - 1:
                    raise
        return None

    def close(self):
        self.closed = True
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass


# --------------------------------------------------------------------------
# /proc


def proc_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0")[:-1]]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def proc_status(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            out = {}
            for ln in f:
                k, _, v = ln.partition(":")
                out[k] = v.strip()
            return out
    except FileNotFoundError:
        return None


def pid_alive(pid):
    st = proc_status(pid)
    return st is not None and not st.get("State", "").startswith("Z")


def cgroup_dirs(vm_id):
    """The cgroup dirs of a VM that exist (v2: one; v1: one per controller)."""
    return sorted(glob.glob("/sys/fs/cgroup/kvmhost/vm-%s" % vm_id) +
                  glob.glob("/sys/fs/cgroup/*/kvmhost/vm-%s" % vm_id))


def qemu_cpu(pid):
    """The -cpu a running QEMU was given (its command line)."""
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        args = f.read().decode().split("\0")
    return args[args.index("-cpu") + 1]


def qemu_pids(needle):
    """PIDs of QEMU processes whose argv contains needle (e.g. a VM uuid)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        argv = proc_cmdline(pid)
        if not argv:
            continue
        if "qemu" not in os.path.basename(argv[0]):
            continue
        if any(needle in a for a in argv):
            st = proc_status(pid)
            if st and not st.get("State", "").startswith("Z"):
                out.append(pid)
    return out


def wait_pid_gone(pid, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


def kill_pid(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------
# Daemon


def wait_accel(api, timeout=15):
    return api.wait_accel(timeout)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


_LIVE = []  # daemons not cleaned up yet (for the atexit safety net)


# --------------------------------------------------------------------------
# Sanitizers: the ASan+UBSan build (KH_BUILD_DIR=build-asan) reports to
# stderr, which the harness keeps (BASE/daemon.log for a daemon, the captured
# stderr for the CLI) and scans. A report, or a daemon that did not exit 0
# after SIGTERM, fails the test. KH_TEST_LEAKS=0 turns LeakSanitizer off.

SANITIZER_RE = re.compile(r"runtime error:|AddressSanitizer|LeakSanitizer")
LEAKS = os.environ.get("KH_TEST_LEAKS", "1") != "0"


def sanitizer_env(env=None):
    """env (default os.environ) with the sanitizer options the harness needs
    appended (the last value of an option wins): reports to stderr, UBSan
    stops at its first finding, leak checking on unless KH_TEST_LEAKS=0."""
    env = dict(os.environ if env is None else env)

    def add(var, opts):
        env[var] = ":".join(x for x in (env.get(var, ""), opts) if x)

    add("ASAN_OPTIONS", "log_path=stderr:abort_on_error=0:detect_leaks=%d" % LEAKS)
    add("UBSAN_OPTIONS", "log_path=stderr:print_stacktrace=1:halt_on_error=1")
    add("LSAN_OPTIONS", "log_path=stderr")
    return env


def sanitizer_report(text, context=4000):
    """The sanitizer reports in text (a log or a stderr), "" when none: from
    the first line that names a sanitizer, up to context characters."""
    m = SANITIZER_RE.search(text or "")
    if not m:
        return ""
    start = text.rfind("\n", 0, m.start()) + 1
    return text[start:start + context]


def check_sanitizer(text, what):
    """Raise KhError with the report when text holds a sanitizer finding."""
    rep = sanitizer_report(text)
    if rep:
        raise KhError("sanitizer report in %s:\n%s" % (what, rep))


def finish_daemons(daemons, failed):
    """Teardown of a test's daemons: stop each one (SIGTERM), kill its QEMUs,
    print its log when the test failed or the daemon has findings, remove
    its dir. Raises KhError listing the findings (a sanitizer report in its
    log, a run that did not exit 0 after SIGTERM) so the test fails."""
    problems = []
    for d in daemons:
        try:
            d.cleanup()
            found = d.findings()
            problems += ["kvmhostd %s: %s" % (d.base, f) for f in found]
        finally:
            if failed or problems:
                print("\n----- kvmhostd log (%s) -----\n%s" % (d.base, d.log_tail(20000)))
            d.remove()
    if problems:
        raise KhError("\n".join(problems))


def cleanup_all_daemons():
    """Stop every daemon this process started and kill its QEMUs (QEMU
    outlives kvmhostd by design); for interrupted runs."""
    for d in list(_LIVE):
        try:
            d.cleanup()
            d.remove()
        except Exception:
            pass


class Daemon:
    """One kvmhostd in a fresh temp dir: BASE/state (state dir),
    BASE/sock (socket), BASE/daemon.log (stdout+stderr of every run)."""

    def __init__(self, base=None, listen=None, extra_args=None, tls=True, env=None,
                 open_policy=True):
        if not os.access(DAEMON_BIN, os.X_OK):
            raise FileNotFoundError("no daemon binary at %s (set KH_BUILD_DIR)" % DAEMON_BIN)
        self.base = base or tempfile.mkdtemp(prefix="khbb-", dir="/tmp")
        os.chmod(self.base, 0o755)
        self.state_dir = os.path.join(self.base, "state")
        self.socket = os.path.join(self.base, "sock")
        self.log_path = os.path.join(self.base, "daemon.log")
        self.listen = listen
        # TCP is TLS by default (a self-signed certificate in STATE/tls);
        # tls=False starts the daemon with --no-tls
        self.tls = tls
        self.env = dict(env or {})  # extra environment of the daemon
        self.extra_args = list(extra_args or [])
        # the tests' disks, pools and imports live in /tmp and the repo, and
        # their webhook receivers on loopback: open_policy=False keeps the
        # daemon's defaults (host paths in its state dir only, no webhooks
        # to internal addresses)
        self.open_policy = open_policy
        self.proc = None
        self.vm_ids = set()
        self.api = Api(self.socket, on_vm=self._note_vm)
        self.runs = 0
        self.procs = []  # every kvmhostd this object started, for cleanup
        # how the harness ended each run (Popen -> "sigterm" (must exit 0),
        # "kill9" (a test kills it on purpose: any status), "startup" (it
        # exited by itself while starting: start() raised; any status)
        self.ended = {}
        self.run_of = {}  # Popen -> its run number in daemon.log
        _LIVE.append(self)

    def _note_vm(self, vm):
        if isinstance(vm.get("id"), str):
            self.vm_ids.add(vm["id"])

    def argv(self):
        a = [DAEMON_BIN, "--state-dir", self.state_dir, "--socket", self.socket,
             "--log-level", "debug"]
        if self.listen:
            a += ["--listen", self.listen]
            if not self.tls:
                a += ["--no-tls"]
        if self.open_policy:
            a += ["--host-path-allow", "/tmp", "--host-path-allow", REPO,
                  "--webhook-allow-internal"]
        return a + self.extra_args

    def start(self, timeout=30):
        if self.alive():
            # a second kvmhostd on the same state dir is refused, and the
            # first one would answer for it: restart() stops first
            raise KhError("start() while run %d (pid %d) is alive: use restart(), or stop() first"
                          % (self.runs, self.proc.pid))
        self.runs += 1
        log = open(self.log_path, "ab")
        log.write(("\n===== run %d: %s\n" % (self.runs, " ".join(self.argv()))).encode())
        log.flush()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env=sanitizer_env(dict(os.environ, **self.env)))
        self.procs.append(self.proc)
        self.run_of[self.proc] = self.runs
        log.close()
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.ended[self.proc] = "startup"
                raise KhError("kvmhostd exited with %s during startup; log:\n%s"
                              % (self.proc.returncode, self.log_tail()))
            try:
                r = self.api.get("/api/v1/host", timeout=5)
                if r.status == 200:
                    return self
                last = r
            except (OSError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.05)
        raise KhError("kvmhostd did not answer GET /api/v1/host in %ss (last: %r); log:\n%s"
                      % (timeout, last, self.log_tail()))

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM, kill -9 after timeout. Returns the exit status."""
        if not self.proc:
            return None
        return self._term(self.proc, timeout)

    def _term(self, p, timeout=15):
        if p.poll() is None:
            self.ended.setdefault(p, "sigterm")
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
                with open(self.log_path, "ab") as f:
                    f.write(b"\n===== test harness: SIGTERM ignored for %ds, sent SIGKILL\n" % timeout)
        return p.returncode

    def kill9(self):
        """kill -9 on purpose (a crash the test simulates): its exit status is
        not checked."""
        if self.proc and self.proc.poll() is None:
            self.ended[self.proc] = "kill9"
            self.proc.kill()
            self.proc.wait(10)

    def findings(self):
        """What fails the test once the daemon is down: a sanitizer report
        in its log, a run that was stopped with SIGTERM (or died by itself
        during the test) and did not exit 0. Runs killed with kill9() or that
        exited during start() are exempt from the status check."""
        out = []
        for p in self.procs:
            how = self.ended.get(p, "died")
            rc = p.returncode
            if how in ("kill9", "startup") or rc is None:
                continue
            if rc != 0:
                run = "run %s (pid %d)" % (self.run_of.get(p, "?"), p.pid)
                if how == "sigterm":
                    out.append("%s exited %s after SIGTERM (expected 0)" % (run, rc))
                else:
                    out.append("%s died during the test with status %s" % (run, rc))
        rep = sanitizer_report(self.log())
        if rep:
            out.append("sanitizer report in %s:\n%s" % (self.log_path, rep))
        return out

    def restart(self, timeout=30):
        """Stop (SIGTERM; a no-op after kill9()) and start again."""
        self.stop()
        self.start(timeout=timeout)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=8000):
        return self.log()[-n:]

    def token(self):
        with open(os.path.join(self.state_dir, "api-token")) as f:
            return f.read().strip()

    @property
    def tls_cert(self):
        """The daemon's self-signed certificate (made at its first start)."""
        return os.path.join(self.state_dir, "tls", "cert.pem")

    def ssl_context(self):
        """Trusts exactly the daemon's own certificate (host name checked:
        the certificate names localhost, 127.0.0.1 and the listen address)."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.tls_cert)

    def tcp_api(self, token=None):
        host, port = self.listen.rsplit(":", 1)
        return Api(host=host, port=int(port), token=token, ssl_context=self.ssl_context())

    def tcp_connect(self, timeout=10, source=None):
        """A raw socket to the TCP listener (TLS-wrapped when TLS is on)."""
        host, port = self.listen.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=timeout,
                                     source_address=(source, 0) if source else None)
        ctx = self.ssl_context()
        return ctx.wrap_socket(s, server_hostname=host) if ctx else s

    def qemu_pids(self):
        """Every QEMU that belongs to this daemon: its VMs' uuids or its dirs
        in the argv."""
        pids = set(qemu_pids(self.base))
        for vid in self.vm_ids:
            pids.update(qemu_pids(vid))
        return sorted(pids)

    def cleanup(self):
        try:
            if self.alive():
                try:
                    for v in self.api.vms():
                        self._note_vm(v)
                except Exception:
                    pass
            self.stop()
        finally:
            # Every run this object started is down (start() refuses a
            # second live one; this is the safety net).
            for p in self.procs:
                if p.poll() is None:
                    try:
                        self._term(p)
                    except subprocess.TimeoutExpired:
                        pass
            for pid in self.qemu_pids():
                kill_pid(pid)
            for pid in self.qemu_pids():
                wait_pid_gone(pid, 10)
            # QEMUs killed here, with their daemon down, leave their cgroups
            # (the daemon would remove them when it reattached, but this one
            # never comes back): remove those of this daemon's VMs, empty now.
            # A killed QEMU leaves its cgroup a moment after its pid is gone
            # (EBUSY until the kernel has released its tasks): retry briefly.
            for vid in self.vm_ids:
                for cg in cgroup_dirs(vid):
                    deadline = time.time() + 3
                    while True:
                        try:
                            os.rmdir(cg)
                            break
                        except FileNotFoundError:
                            break
                        except OSError:
                            if time.time() > deadline:
                                break
                            time.sleep(0.05)
            if self in _LIVE:
                _LIVE.remove(self)

    def remove(self):
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------
# Guest


class Guest:
    def __init__(self, kernel, initrd, disk):
        self.kernel = kernel
        self.initrd = initrd
        self.disk = disk

    def spec(self, name, workdir, memory_mib=256, vcpus=1, disk=True, disk_path=None):
        """A VM spec for the test guest; the disk is a private copy in workdir."""
        s = {
            "name": name,
            "vcpus": vcpus,
            "memory_mib": memory_mib,
            "boot": {"kernel": self.kernel, "initrd": self.initrd, "cmdline": GUEST_CMDLINE},
            "serial": True,
            "graphics": "none",
        }
        if disk:
            path = disk_path or os.path.join(workdir, name + ".ext4")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            copy_disk(self.disk, path)
            s["disks"] = [{"path": path, "format": "raw", "readonly": False}]
        return s


def copy_disk(src, dst):
    subprocess.run(["cp", "--reflink=auto", "--sparse=always", src, dst], check=True)
    # QEMU runs unprivileged: let it open the copy whatever way the daemon
    # hands it over (path or fd).
    os.chmod(dst, 0o666)
    d = os.path.dirname(dst)
    while d and d != "/" and d.startswith("/tmp/"):
        os.chmod(d, os.stat(d).st_mode | 0o755)
        d = os.path.dirname(d)


def guest_paths():
    """(kernel, initrd, disk) from the environment or tests/guest/build.sh
    --print-env; builds the guest when its files are missing."""
    keys = ("KH_GUEST_KERNEL", "KH_GUEST_INITRD", "KH_GUEST_DISK")
    if all(os.environ.get(k) for k in keys):
        return tuple(os.environ[k] for k in keys)
    script = os.path.join(REPO, "tests", "guest", "build.sh")
    if not os.path.exists(script):
        return None

    def print_env():
        out = subprocess.run(["bash", script, "--print-env"], capture_output=True,
                             text=True, timeout=60)
        env = {}
        for ln in out.stdout.splitlines():
            k, _, v = ln.partition("=")
            env[k.strip().removeprefix("export ").strip()] = v.strip().strip("'\"")
        return tuple(env.get(k) for k in keys)

    paths = print_env()
    if not all(paths) or not all(os.path.exists(p) for p in paths):
        r = subprocess.run(["bash", script], capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise KhError("tests/guest/build.sh failed (%d):\n%s" % (r.returncode, r.stderr[-3000:]))
        paths = print_env()
    if not all(paths) or not all(os.path.exists(p) for p in paths):
        raise KhError("guest files missing after build: %r" % (paths,))
    return paths


# --------------------------------------------------------------------------
# CLI


def cli(daemon_or_socket, *args, input=None, timeout=60, json_out=False):
    """Run the kvmhost CLI against a socket. Returns CompletedProcess (text)."""
    sock = daemon_or_socket.socket if hasattr(daemon_or_socket, "socket") else daemon_or_socket
    argv = [CLI_BIN, "--socket", sock] + (["--json"] if json_out else []) + list(args)
    env = sanitizer_env(dict(os.environ, KVMHOST_SOCKET=sock))
    p = subprocess.run(argv, input=input, capture_output=True, text=True,
                       timeout=timeout, env=env, stdin=None if input is not None else subprocess.DEVNULL)
    check_sanitizer(p.stderr, "the stderr of `kvmhost %s` (exit %s)" % (" ".join(args), p.returncode))
    return p
