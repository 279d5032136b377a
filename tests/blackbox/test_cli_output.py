"""The CLI for people: security groups on NICs from the CLI, the VM's
addresses in `vm show` and `vm list`, `vm top`'s memory columns, `vm limit`
naming its disk, `vm edit --help` on what applies live, readable host,
lease, network and volume output, templates marked in `vm list`, and
`volume list POOL`. --json output stays what it was. The network tests run
their daemon in a network namespace of their own (netlib)."""

import json
import os
import re
import time

import pytest

import khlib
import netlib
from khlib import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def nsd(request):
    ns = netlib.NetNS()
    d = netlib.NsDaemon(ns)
    d.start()
    yield d
    failed = any(getattr(request.node, "rep_" + w, None) is not None and
                 getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
    try:
        d.cleanup()
    finally:
        if failed:
            print("\n----- kvmhostd log (%s) -----\n%s" % (d.base, d.log_tail(20000)))
        d.remove()
        ns.delete()


def ok(p):
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p.stdout


def test_cli_nic_security_groups(nsd, fake_boot):
    """--nic NET,security_groups=a+b on vm create and vm nic add."""
    ok(cli(nsd, "network", "create", "lan", "--type", "nat", "--subnet", "10.94.0.0/24"))
    ok(cli(nsd, "secgroup", "create", "web", "--proto", "tcp", "--ports", "80"))
    ok(cli(nsd, "secgroup", "create", "ssh", "--proto", "tcp", "--ports", "22"))
    ok(cli(nsd, "vm", "create", "sg1", "--kernel", fake_boot["kernel"],
           "--nic", "lan,security_groups=web+ssh,ip=10.94.0.9"))
    nics = nsd.api.vm("sg1")["nics"]
    assert nics[0]["security_groups"] == ["web", "ssh"] and nics[0]["ip"] == "10.94.0.9", nics
    ok(cli(nsd, "vm", "nic", "add", "sg1", "lan,security_groups=web"))
    nics = nsd.api.vm("sg1")["nics"]
    assert len(nics) == 2 and nics[1]["security_groups"] == ["web"], nics
    out = ok(cli(nsd, "vm", "show", "sg1"))
    assert "security groups web+ssh" in out, out
    for bad in ("lan,security_groups=web++ssh", "lan,security_groups=", "lan,security_groups=nope"):
        p = cli(nsd, "vm", "create", "sg2", "--kernel", fake_boot["kernel"], "--nic", bad)
        assert p.returncode == 2, (bad, p.returncode, p.stderr)
    help_ = ok(cli(nsd, "vm", "create", "--help"))
    assert "security_groups=G1+G2" in help_, help_
    assert "security_groups=" in ok(cli(nsd, "vm", "nic", "add", "--help"))


def test_cli_vm_addresses(nsd, fake_boot):
    """The API's VM carries each NIC's known addresses (reservation, DHCP
    lease); vm list has an ADDRESS column, vm show a line per NIC; leases
    and network show are readable; --json is the API's JSON."""
    ok(cli(nsd, "network", "create", "lan", "--type", "nat", "--subnet", "10.95.0.0/24"))
    ok(cli(nsd, "vm", "create", "ad1", "--kernel", fake_boot["kernel"],
           "--nic", "lan,ip=10.95.0.20", "--nic", "lan,mac=52:54:00:aa:bb:01"))
    ok(cli(nsd, "network", "forward", "lan", "--vm", "ad1", "--host-port", "8080",
           "--vm-port", "80"))
    net = nsd.api.get("/api/v1/networks/lan").json
    leases = os.path.join(nsd.state_dir, "networks", net["id"], "leases")
    netlib.wait_for(lambda: os.path.exists(leases), what="dnsmasq's lease file")
    with open(leases, "a") as f:
        f.write("%d 52:54:00:aa:bb:01 10.95.0.77 guest1 *\n" % (time.time() + 3150))
    nics = nsd.api.vm("ad1")["nics"]
    assert nics[0]["addresses"] == [{"ip": "10.95.0.20", "family": "ipv4",
                                     "source": "reservation"}], nics
    a1 = nics[1]["addresses"]
    assert len(a1) == 1 and a1[0]["ip"] == "10.95.0.77" and a1[0]["source"] == "dhcp" and \
        a1[0]["expires"] > time.time(), a1
    listed = [v for v in nsd.api.get("/api/v1/vms").json["vms"] if v["name"] == "ad1"][0]
    assert listed["nics"][1]["addresses"][0]["ip"] == "10.95.0.77", listed

    out = ok(cli(nsd, "vm", "list"))
    assert re.search(r"^NAME\s+TYPE\s+STATE\s+.*ADDRESS", out, re.M), out
    assert re.search(r"^ad1\s+vm\s+stopped\s.*10\.95\.0\.20,10\.95\.0\.77", out, re.M), out
    out = ok(cli(nsd, "vm", "show", "ad1"))
    assert "0: lan, mac " in out and "address 10.95.0.20 (reserved)" in out, out
    assert re.search(r"1: lan, mac 52:54:00:aa:bb:01, address 10\.95\.0\.77 "
                     r"\(DHCP, lease expires in 5\dm\)", out), out
    assert '{"' not in out, out
    j = json.loads(ok(cli(nsd, "vm", "show", "ad1", json_out=True)))
    assert j["nics"][0]["ip"] == "10.95.0.20" and "addresses" in j["nics"][0], j

    out = ok(cli(nsd, "network", "leases", "lan"))
    assert re.search(r"^10\.95\.0\.77\s+52:54:00:aa:bb:01\s+ad1\s+guest1\s+in 5\dm$", out,
                     re.M), out
    j = json.loads(ok(cli(nsd, "network", "leases", "lan", json_out=True)))
    assert isinstance(j["leases"][0]["expires"], int), j
    out = ok(cli(nsd, "network", "show", "lan"))
    assert "tcp host port 8080 -> vm ad1 port 80 (10.95.0.20)" in out, out
    assert "vm ad1, mac 52:54:00:aa:bb:01" in out and '{"' not in out, out


def test_cli_vm_limit_names_the_disk(daemon, fake_boot, workdir):
    disk = os.path.join(workdir, "d0.img")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    ok(cli(daemon, "vm", "create", "lim1", "--kernel", fake_boot["kernel"],
           "--disk", disk + ",format=raw"))
    out = ok(cli(daemon, "vm", "limit", "lim1", "--disk-iops", "100"))
    assert "disk 0 (%s)" % disk in out and "no --disk INDEX" in out, out
    assert "disk0:" in out and disk in out, out
    out = ok(cli(daemon, "vm", "limit", "lim1"))
    assert re.search(r"^disk0:\s+%s$" % re.escape(disk), out, re.M), out
    j = json.loads(ok(cli(daemon, "vm", "limit", "lim1", json_out=True)))
    assert j == {"disk": [{"index": 0, "iops_total": 100}]}, j


def test_cli_vm_edit_help_says_what_applies_live():
    out = ok(cli("/nonexistent.sock", "vm", "edit", "--help"))
    flat = " ".join(out.split())
    assert "a running one only --description" not in flat, out
    assert "--vcpus given alone" in flat and "hot-plug" in flat, out
    assert "(the only field a running VM accepts)" not in flat, out
    # The console's security-group page: groups filter IPv6 too.
    with open(os.path.join(REPO, "web", "src", "pages", "secgroups.js")) as f:
        page = f.read()
    assert "Inbound IPv4 rules" not in page and "inbound IPv4 connections" not in page
    assert "IPv4 and IPv6" in page


def test_cli_vm_top_guest_ram_apart(daemon, fake_boot):
    ok(cli(daemon, "vm", "create", "top1", "--memory", "512", "--kernel", fake_boot["kernel"]))
    out = ok(cli(daemon, "vm", "top", "--once", "--all"))
    assert re.search(r"^NAME\s+STATE\s+CPU%\s+GUEST-RAM\s+QEMU-RSS\s+CGROUP-MEM\s", out,
                     re.M), out
    assert re.search(r"^top1\s+stopped\s+-\s+512\.0 MiB\s+-", out, re.M), out
    help_ = " ".join(ok(cli(daemon, "vm", "top", "--help")).split())
    assert "GUEST-RAM" in help_ and "QEMU-RSS" in help_ and "CGROUP-MEM" in help_, help_


def test_cli_output_for_people(daemon, fake_boot):
    out = ok(cli(daemon, "host", "show"))
    assert re.search(r"^load_average:\s+\d+\.\d\d \d+\.\d\d \d+\.\d\d$", out, re.M), out
    assert re.search(r"^kvmhostd_uptime:\s+(\d+d )?(\d+h )?(\d+m|\d+s)$", out, re.M), out
    j = json.loads(ok(cli(daemon, "host", "show", json_out=True)))
    assert isinstance(j["uptime_seconds"], float) and len(j["load_average"]) == 3, j

    ok(cli(daemon, "volume", "create", "big", "--size", "20G"))
    out = ok(cli(daemon, "volume", "show", "big"))
    assert re.search(r"^capacity:\s+20\.0 GiB$", out, re.M), out
    assert "21474836480" not in out, out
    assert re.search(r"^backing_chain:\s+default/big: qcow2, 20\.0 GiB virtual", out, re.M), out
    j = json.loads(ok(cli(daemon, "volume", "show", "big", json_out=True)))
    assert j["capacity"] == 21474836480, j
    for argv in (("volume", "list", "default"), ("volume", "list"),
                 ("volume", "list", "--pool", "default")):
        out = ok(cli(daemon, *argv))
        assert re.search(r"^default/big\s+qcow2\s+20\.0 GiB\s", out, re.M), (argv, out)
    p = cli(daemon, "volume", "list", "nosuchpool")
    assert p.returncode == 4, p
    p = cli(daemon, "volume", "list", "default", "--pool", "other")
    assert p.returncode == 2, p
    out = ok(cli(daemon, "pool", "show", "default"))
    assert re.search(r"^capacity:\s+\d+\.\d [KMGTP]iB$", out, re.M), out

    ok(cli(daemon, "volume", "create", "troot", "--size", "64M"))
    ok(cli(daemon, "vm", "create", "tpl1", "--kernel", fake_boot["kernel"],
           "--disk", "volume=default/troot"))
    ok(cli(daemon, "vm", "create", "plain1", "--kernel", fake_boot["kernel"]))
    ok(cli(daemon, "template", "create", "tpl1"))
    out = ok(cli(daemon, "vm", "list"))
    assert re.search(r"^tpl1\s+template\s+stopped\s", out, re.M), out
    assert re.search(r"^plain1\s+vm\s+stopped\s", out, re.M), out
