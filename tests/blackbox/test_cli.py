"""The kvmhost CLI: noun-verb commands, --json, exit codes, and the issue's
"done when" walk: create, start, console, kill -9 the daemon, restart, still
running with its console, stop."""

import json
import os
import random
import re

import pytest

import khlib
from khlib import cli


@pytest.fixture(autouse=True)
def _need_cli():
    if not os.access(khlib.CLI_BIN, os.X_OK):
        pytest.fail("kvmhost CLI not built at %s" % khlib.CLI_BIN)


def create_args(name, spec):
    a = ["vm", "create", name]
    if "vcpus" in spec:
        a += ["--vcpus", str(spec["vcpus"])]
    if "memory_mib" in spec:
        a += ["--memory", str(spec["memory_mib"])]
    boot = spec.get("boot") or {}
    for k in ("kernel", "initrd", "cmdline"):
        if k in boot:
            a += ["--" + k, boot[k]]
    for disk in spec.get("disks", []):
        a += ["--disk", disk["path"].replace(",", ",,") + ",format=" + disk["format"]]
    return a


def parse_json(p):
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    try:
        return json.loads(p.stdout)
    except ValueError:
        raise AssertionError("--json output is not JSON: %r" % p.stdout[:500])


def vm_list_json(d):
    j = parse_json(cli(d, "vm", "list", json_out=True))
    return j["vms"] if isinstance(j, dict) else j


def test_cli_exit_codes(daemon, fake_boot):
    spec = {"vcpus": 1, "memory_mib": 64, "boot": fake_boot}
    p = cli(daemon, *create_args("clivm", spec))
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert daemon.api.vm("clivm")["memory_mib"] == 64

    p = cli(daemon, "vm", "show", "nosuchvm")
    assert p.returncode == 4, (p.returncode, p.stderr)
    assert p.stderr.strip(), "no message on stderr"
    p = cli(daemon, "vm", "start", "nosuchvm")
    assert p.returncode == 4, (p.returncode, p.stderr)

    p = cli(daemon, *create_args("../x", spec))
    assert p.returncode == 2, (p.returncode, p.stderr)
    p = cli(daemon, *create_args("badmem", dict(spec, memory_mib=0)))
    assert p.returncode == 2, (p.returncode, p.stderr)
    p = cli(daemon, "vm", "frobnicate", "clivm")
    assert p.returncode == 2, (p.returncode, p.stderr)

    p = cli(daemon, *create_args("clivm", spec))
    assert p.returncode == 5, (p.returncode, p.stderr)
    p = cli(daemon, "vm", "pause", "clivm")
    assert p.returncode == 5, (p.returncode, p.stderr)

    assert daemon.api.vm_names() == ["clivm"]

    missing = os.path.join(daemon.base, "no-daemon.sock")
    p = cli(missing, "vm", "list")
    assert p.returncode == 7, (p.returncode, p.stderr)
    assert p.stderr.strip()


def test_cli_list_show_json(daemon, fake_boot):
    spec = {"vcpus": 2, "memory_mib": 128, "boot": fake_boot}
    for n in ("alpha", "beta"):
        assert cli(daemon, *create_args(n, spec)).returncode == 0
    p = cli(daemon, "vm", "list")
    assert p.returncode == 0, p.stderr
    assert "alpha" in p.stdout and "beta" in p.stdout and "stopped" in p.stdout, p.stdout
    vms = vm_list_json(daemon)
    assert sorted(v["name"] for v in vms) == ["alpha", "beta"], vms
    assert all(v["state"] == "stopped" for v in vms)
    j = parse_json(cli(daemon, "vm", "show", "alpha", json_out=True))
    assert j["name"] == "alpha" and j["vcpus"] == 2 and j["memory_mib"] == 128, j
    assert j["id"] == daemon.api.vm("alpha")["id"]
    p = cli(daemon, "vm", "delete", "beta")
    assert p.returncode == 0, p.stderr
    assert daemon.api.vm_names() == ["alpha"]
    khlib.wait_accel(daemon.api)
    p = cli(daemon, "host", "show", json_out=True)
    if p.returncode == 0:
        assert json.loads(p.stdout)["accelerator"] == "tcg"


def test_cli_alerts(daemon, workdir):
    """kvmhost alert: rules from a file, the webhook set and cleared (the rules
    kept), the list; a bad file changes nothing and exits non-zero."""
    p = cli(daemon, "help")
    assert p.returncode == 0 and "alert rules set" in p.stdout, p.stdout
    rules = [
        {"name": "load_high", "scope": "host", "metric": "load1", "op": ">",
         "threshold": 1000, "for_seconds": 30},
        {"name": "vm_hot", "scope": "vm", "metric": "cpu_percent", "op": ">=",
         "threshold": 99, "for_seconds": 0},
    ]
    path = os.path.join(workdir, "rules.json")
    with open(path, "w") as f:
        json.dump({"rules": rules}, f)
    p = cli(daemon, "alert", "rules", "set", "--file", path)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "load_high" in p.stdout and "vm_hot" in p.stdout, p.stdout
    got = daemon.api.get("/api/v1/alerts").json
    assert [r["name"] for r in got["rules"]] == ["load_high", "vm_hot"], got
    assert got["webhook"] is None

    url = "http://127.0.0.1:9/hook"
    p = cli(daemon, "alert", "webhook", "set", url, "--timeout", "7")
    assert p.returncode == 0, (p.stdout, p.stderr)
    got = daemon.api.get("/api/v1/alerts").json
    assert got["webhook"]["url"] == url and got["webhook"]["timeout_seconds"] == 7, got
    assert [r["name"] for r in got["rules"]] == ["load_high", "vm_hot"], got
    # --json alert rules prints what rules set reads back, webhook included.
    j = parse_json(cli(daemon, "alert", "rules", json_out=True))
    assert j["webhook"] == {"url": url, "timeout_seconds": 7}, j
    assert [r["name"] for r in j["rules"]] == ["load_high", "vm_hot"], j
    # A file with only rules keeps the webhook.
    with open(path, "w") as f:
        json.dump(rules[:1], f)
    p = cli(daemon, "alert", "rules", "set", "--file", path)
    assert p.returncode == 0, (p.stdout, p.stderr)
    got = daemon.api.get("/api/v1/alerts").json
    assert [r["name"] for r in got["rules"]] == ["load_high"], got
    assert got["webhook"]["url"] == url, got

    p = cli(daemon, "alert", "list")
    assert p.returncode == 0, p.stderr
    assert "webhook: " + url in p.stdout and "sent 0" in p.stdout, p.stdout
    j = parse_json(cli(daemon, "alert", "list", json_out=True))
    assert j["active"] == [] and j["webhook"]["sent"] == 0, j

    p = cli(daemon, "alert", "webhook", "clear")
    assert p.returncode == 0, (p.stdout, p.stderr)
    got = daemon.api.get("/api/v1/alerts").json
    assert got["webhook"] is None and [r["name"] for r in got["rules"]] == ["load_high"], got
    assert "webhook: none" in cli(daemon, "alert", "list").stdout

    # Bad input: nothing changes, a message, exit status 2 (4 for no file).
    bad = {
        "notjson": ("{rules: [", 2, "at line 1"),
        "shape": ('{"rules": "all"}', 2, "must hold"),
        "rule": (json.dumps([dict(rules[0], metric="nope")]), 2, "metric"),
    }
    for name, (text, code, msg) in bad.items():
        with open(path, "w") as f:
            f.write(text)
        p = cli(daemon, "alert", "rules", "set", "--file", path)
        assert p.returncode == code, (name, p.returncode, p.stderr)
        assert msg in p.stderr, (name, p.stderr)
    p = cli(daemon, "alert", "rules", "set", "--file", os.path.join(workdir, "none.json"))
    assert p.returncode == 4 and "none.json" in p.stderr, (p.returncode, p.stderr)
    p = cli(daemon, "alert", "rules", "set")
    assert p.returncode == 2 and "--file" in p.stderr, (p.returncode, p.stderr)
    p = cli(daemon, "alert", "webhook", "set", "ftp://x/")
    assert p.returncode == 2 and "scheme" in p.stderr, (p.returncode, p.stderr)
    got = daemon.api.get("/api/v1/alerts").json
    assert [r["name"] for r in got["rules"]] == ["load_high"] and got["webhook"] is None, got


def console_roundtrip(d, name, timeout=20, tries=3):
    """printf 'echo kh-$((N+1))\\n' | kvmhost vm console NAME --timeout 5"""
    for _ in range(tries):
        n = random.randint(10000, 999999)
        p = cli(d, "vm", "console", name, "--timeout", "5",
                input="echo kh-$((%d+1))\n" % n, timeout=timeout)
        if "kh-%d" % (n + 1) in p.stdout:
            assert p.returncode == 0, (p.returncode, p.stderr)
            return p.stdout
    raise AssertionError("console did not echo: rc=%s out=%r err=%r"
                         % (p.returncode, p.stdout[-800:], p.stderr[-800:]))


@pytest.mark.slow
def test_cli_done_when(daemon, guest, workdir):
    """The issue's acceptance walk, with the CLI alone."""
    spec = guest.spec("demo", workdir)
    p = cli(daemon, *create_args("demo", spec))
    assert p.returncode == 0, (p.stdout, p.stderr)
    p = cli(daemon, "vm", "start", "demo", timeout=120)
    assert p.returncode == 0, (p.stdout, p.stderr)
    khlib.Api(daemon.socket).wait_console("demo", khlib.GUEST_READY, timeout=150)
    # the boot is visible in the console (the log is replayed to a new viewer
    # or at least the shell answers)
    console_roundtrip(daemon, "demo")
    vm = [v for v in vm_list_json(daemon) if v["name"] == "demo"][0]
    assert vm["state"] == "running" and vm["pid"], vm
    pid = vm["pid"]

    daemon.kill9()
    p = cli(daemon, "vm", "list")
    assert p.returncode == 7, (p.returncode, p.stderr)
    assert khlib.pid_alive(pid)
    daemon.restart()

    p = cli(daemon, "vm", "list")
    assert p.returncode == 0 and re.search(r"demo\s.*running", p.stdout), p.stdout
    vm = [v for v in vm_list_json(daemon) if v["name"] == "demo"][0]
    assert vm["state"] == "running" and vm["pid"] == pid, vm
    console_roundtrip(daemon, "demo")

    p = cli(daemon, "vm", "stop", "demo", "--timeout", "3", timeout=120)
    # 9: the guest (busybox ignores the ACPI button) was killed after 3 s
    assert p.returncode in (0, 9), (p.returncode, p.stdout, p.stderr)
    if p.returncode == 9:
        assert "vm demo did not power off within 3 s and was killed" in p.stderr, p.stderr
    vm = [v for v in vm_list_json(daemon) if v["name"] == "demo"][0]
    assert vm["state"] == "stopped", vm
    assert khlib.wait_pid_gone(pid, 10)
    p = cli(daemon, "vm", "stop", "demo")
    assert p.returncode == 5, (p.returncode, p.stderr)
