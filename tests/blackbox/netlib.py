"""Network test helpers: a network namespace per test, and a kvmhostd
running inside it, so the tests never touch the host's own interfaces,
addresses or nftables tables.

The namespace is `kh-t-<random>`; everything the daemon makes (bridges,
taps, the `inet kvmhost` table, dnsmasq) lives in it and disappears with
it at teardown.
"""

import json
import os
import random
import signal
import subprocess
import time

import khlib


def run(argv, check=True, timeout=30):
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


class NetNS:
    def __init__(self):
        self.name = "kh-t-%08x" % random.getrandbits(32)
        run(["ip", "netns", "add", self.name])
        self.sh("ip link set lo up")

    def exec(self, argv, check=True, timeout=30):
        return run(["ip", "netns", "exec", self.name] + list(argv), check=check, timeout=timeout)

    def sh(self, cmd, check=True, timeout=30):
        return self.exec(["sh", "-c", cmd], check=check, timeout=timeout)

    def links(self):
        out = self.exec(["ip", "-j", "-d", "link", "show"]).stdout
        return {l["ifname"]: l for l in json.loads(out or "[]")}

    def nft_table(self):
        """The rules of `inet kvmhost` (list of rule dicts), None when absent."""
        r = self.exec(["nft", "-j", "list", "table", "inet", "kvmhost"], check=False)
        if r.returncode != 0:
            return None
        return [x["rule"] for x in json.loads(r.stdout)["nftables"] if "rule" in x]

    def nft_tables(self):
        r = self.exec(["nft", "-j", "list", "tables"])
        return sorted((t["table"]["family"], t["table"]["name"])
                      for t in json.loads(r.stdout)["nftables"] if "table" in t)

    def pids(self):
        r = run(["ip", "netns", "pids", self.name], check=False)
        return [int(p) for p in r.stdout.split()]

    def delete(self):
        # Everything left in the namespace was started by this test (the
        # daemon, its QEMUs and dnsmasqs): end it, then drop the namespace.
        for p in self.pids():
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.pids():
            khlib.wait_pid_gone(p, 10)
        run(["ip", "netns", "delete", self.name], check=False)


class NsDaemon(khlib.Daemon):
    """kvmhostd inside a network namespace (ip netns exec execs it, so the
    pid is the daemon's)."""

    def __init__(self, ns, **kw):
        super().__init__(**kw)
        self.ns = ns

    def argv(self):
        return ["ip", "netns", "exec", self.ns.name] + super().argv()


def dnsmasq_pids(state_dir):
    """dnsmasq processes whose config lives under state_dir."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"dnsmasq") and any(
                a.startswith(b"--conf-file=" + state_dir.encode()) for a in argv):
            out.append(int(d))
    return sorted(out)


def wait_for(fn, timeout=10, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise khlib.KhError("%s not met in %ss (last: %r)" % (what, timeout, last))
