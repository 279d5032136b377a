"""Networks (issue 4): nat / isolated / bridged networks, NICs, DHCP,
port forwards, restart safety. Every daemon here runs inside a network
namespace the test creates (netlib), never in the host's own.
"""

import os
import re
import time

import pytest

import khlib
import netlib

NET_CMDLINE = khlib.GUEST_CMDLINE + " kvmhost.net=dhcp"
# An address "beyond the bridge": a veth pair inside the namespace (the
# kernel here has no dummy links).
BEYOND = ("ip link add kh-va type veth peer name kh-vb && ip addr add 192.0.2.1/24 dev kh-va && "
          "ip link set kh-va up && ip link set kh-vb up")


@pytest.fixture
def netns():
    ns = netlib.NetNS()
    yield ns
    ns.delete()


@pytest.fixture
def nsdaemons(request, netns):
    made = []

    def make(start=True, **kw):
        d = netlib.NsDaemon(netns, **kw)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    failed = any(getattr(request.node, "rep_" + w, None) is not None and
                 getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
    khlib.finish_daemons(made, failed)


@pytest.fixture
def nsd(nsdaemons):
    return nsdaemons()


def create_net(api, body, status=201):
    r = api.post("/api/v1/networks", body)
    assert r.status == status, r
    return r.json


def net_vm_spec(guest, name, nics, memory_mib=192):
    return {
        "name": name, "vcpus": 1, "memory_mib": memory_mib,
        "boot": {"kernel": guest.kernel, "initrd": guest.initrd, "cmdline": NET_CMDLINE},
        "serial": True, "nics": nics,
    }


# ---------------------------------------------------------------- quick


def test_network_create_validate_delete(nsd, netns, fake_boot):
    api = nsd.api
    n = create_net(api, {"name": "lan", "type": "nat", "subnet": "10.91.0.0/24"})
    assert n["gateway"] == "10.91.0.1" and n["subnet"] == "10.91.0.0/24"
    assert n["dhcp"] == {"first": "10.91.0.2", "last": "10.91.0.254"}
    br = n["bridge"]
    assert re.fullmatch(r"khbr[0-9a-f]{8}", br)
    links = netns.links()
    assert br in links and links[br]["linkinfo"]["info_kind"] == "bridge"
    assert links[br].get("ifalias", "").startswith("kvmhost:")
    addrs = netns.exec(["ip", "-j", "addr", "show", br]).stdout
    assert '"10.91.0.1"' in addrs
    pids = netlib.dnsmasq_pids(nsd.state_dir)
    assert len(pids) == 1 and n["dnsmasq_pid"] == pids[0]
    rules = netns.nft_table()
    assert rules and any("masquerade" in str(r["expr"]) for r in rules)

    # bad input: 400, nothing made
    for body in ({"name": "x", "type": "nat", "subnet": "10.92.0.1/24"},
                 {"name": "x", "type": "nat", "subnet": "10.92.0.0/31"},
                 {"name": "x", "type": "nat", "subnet": "10.92.0.0"},
                 {"name": "x", "type": "nat", "subnet": "300.1.0.0/16"},
                 {"name": "x", "type": "nat", "subnet": "010.92.0.0/24"},
                 {"name": "x", "type": "bogus"},
                 {"name": "../x", "type": "nat"},
                 {"name": "", "type": "nat"},
                 {"name": "x", "type": "nat", "bridge": "br0"},
                 {"name": "x", "type": "bridged"},
                 {"name": "x", "type": "bridged", "bridge": "nosuchbr"},
                 {"name": "x", "type": "bridged", "bridge": "a b"},
                 {"name": "x", "type": "nat", "extra": 1}):
        r = api.post("/api/v1/networks", body)
        assert r.status == 400, (body, r)
        assert r.error["code"] == "invalid"
    assert [x["name"] for x in api.get("/api/v1/networks").json["networks"]] == ["lan"]
    # conflicts: same name, overlapping subnet
    assert api.post("/api/v1/networks", {"name": "lan", "type": "isolated"}).status == 409
    assert api.post("/api/v1/networks", {"name": "o", "subnet": "10.91.0.128/25"}).status == 409

    iso = create_net(api, {"name": "lab", "type": "isolated"})  # subnet picked
    assert iso["subnet"].endswith("/24") and iso["subnet"] != "10.91.0.0/24"
    netns.sh("ip link add brx type bridge")
    brd = create_net(api, {"name": "up", "type": "bridged", "bridge": "brx"})
    assert brd["bridge"] == "brx" and "dnsmasq_pid" not in brd
    assert len(netlib.dnsmasq_pids(nsd.state_dir)) == 2

    # a VM with NICs: MACs generated stable and unique, bad ones refused
    spec = {"name": "v1", "boot": fake_boot,
            "nics": [{"network": "lan"}, {"network": "lab", "ip": iso["dhcp"]["first"]}]}
    vm = api.create(spec)
    macs = [x["mac"] for x in vm["nics"]]
    assert all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", m) for m in macs)
    assert len(set(macs)) == 2
    assert api.vm("v1")["nics"] == vm["nics"]
    for nics, code in (([{"network": "nope"}], 400),
                       ([{"network": "lan", "mac": "01:00:5e:00:00:01"}], 400),
                       ([{"network": "lan", "mac": "52:54:00:zz:00:01"}], 400),
                       ([{"network": "lan", "mac": macs[0]}], 409),
                       ([{"network": "lan", "ip": "10.91.0.1"}], 400),   # the gateway
                       ([{"network": "lan", "ip": "10.99.0.5"}], 400),   # not in the subnet
                       ([{"network": "lab", "ip": iso["dhcp"]["first"]}], 409),
                       ([{"network": "up", "ip": "10.1.1.1"}], 400),
                       ([{"network": "lan", "bogus": 1}], 400),
                       ([{"network": "lan"}] * 9, 400)):
        r = api.post("/api/v1/vms", {"name": "v2", "boot": fake_boot, "nics": nics})
        assert r.status == code, (nics, r)
    hosts = open(os.path.join(nsd.state_dir, "networks", iso["id"], "hosts")).read()
    assert hosts == "%s,%s,v1\n" % (macs[1], iso["dhcp"]["first"])

    # in use: 409 and nothing changes
    r = api.delete("/api/v1/networks/lan")
    assert r.status == 409 and "v1" in r.error["message"], r
    assert br in netns.links()
    assert api.delete("/api/v1/vms/v1").status == 204
    for name in ("lan", "lab", "up"):
        assert api.delete("/api/v1/networks/" + name).status == 204
    assert api.get("/api/v1/networks/lan").status == 404
    assert br not in netns.links() and "brx" in netns.links()  # the admin's bridge stays
    netlib.wait_for(lambda: not netlib.dnsmasq_pids(nsd.state_dir), 5, "dnsmasq gone")
    assert netns.nft_table() is None
    assert not [t for t in netns.nft_tables() if t[1] == "kvmhost"]


def test_security_groups_api(nsd, netns, fake_boot):
    api = nsd.api
    r = api.request("PUT", "/api/v1/security-groups/web",
                    {"rules": [{"proto": "tcp", "ports": "80"}, {"proto": "udp", "ports": "5000-5010",
                                                                 "cidr": "10.0.0.0/8"}]})
    assert r.status == 201, r
    assert r.json["rules"][1] == {"direction": "in", "proto": "udp", "ports": "5000-5010",
                                  "cidr": "10.0.0.0/8"}
    for body in ({"rules": [{"direction": "out"}]}, {"rules": [{"ports": "0"}]},
                 {"rules": [{"proto": "icmp", "ports": "1"}]}, {"rules": [{"cidr": "1.2.3.4/8"}]},
                 {"name": "other"}, {"bogus": 1}):
        r = api.request("PUT", "/api/v1/security-groups/web", body)
        assert r.status == 400, (body, r)
    assert api.request("PUT", "/api/v1/security-groups/a%20b", {}).status in (400, 404)
    assert api.get("/api/v1/security-groups/web").json["rules"][0]["ports"] == "80"
    assert [g["name"] for g in api.get("/api/v1/security-groups").json["security_groups"]] == ["web"]
    create_net(api, {"name": "lan", "type": "nat", "subnet": "10.98.0.0/24"})
    r = api.post("/api/v1/vms", {"name": "v", "boot": fake_boot,
                                 "nics": [{"network": "lan", "security_groups": ["nosuch"]}]})
    assert r.status == 400, r
    api.create({"name": "v", "boot": fake_boot,
                "nics": [{"network": "lan", "security_groups": ["web"]}]})
    assert api.vm("v")["nics"][0]["security_groups"] == ["web"]
    table = netns.exec(["nft", "list", "table", "bridge", "kvmhost"]).stdout
    assert "tcp dport 80 accept" in table and table.count("drop") >= 2, table
    assert api.delete("/api/v1/security-groups/web").status == 409
    assert api.delete("/api/v1/vms/v").status == 204
    assert api.delete("/api/v1/security-groups/web").status == 204
    assert api.get("/api/v1/security-groups/web").status == 404
    # kept across restarts
    r = api.request("PUT", "/api/v1/security-groups/db", {"rules": []})
    assert r.status == 201, r
    nsd.stop()
    nsd.restart()
    assert [g["name"] for g in api.get("/api/v1/security-groups").json["security_groups"]] == ["db"]


def test_network_cli(nsd, netns, fake_boot):
    out = khlib.cli(nsd, "network", "create", "cl", "--type", "nat", "--subnet", "10.93.0.0/24")
    assert out.returncode == 0 and "10.93.0.1" in out.stdout, out
    out = khlib.cli(nsd, "network", "list")
    assert out.returncode == 0 and re.search(r"^cl\s+nat\s+khbr\w+\s+10\.93\.0\.0/24", out.stdout,
                                             re.M), out
    out = khlib.cli(nsd, "network", "show", "cl")
    assert out.returncode == 0 and "10.93.0.254" in out.stdout, out
    out = khlib.cli(nsd, "network", "create", "bad", "--type", "nat", "--subnet", "10.93.1.1/24")
    assert out.returncode == 2 and "host bits" in out.stderr, out
    out = khlib.cli(nsd, "network", "leases", "cl")
    assert out.returncode == 0, out
    out = khlib.cli(nsd, "vm", "create", "v", "--kernel", fake_boot["kernel"],
                    "--nic", "cl,ip=10.93.0.9", "--nic", "cl,mac=52:54:00:aa:bb:cc")
    assert out.returncode == 0, out
    nics = nsd.api.vm("v")["nics"]
    assert nics[0]["ip"] == "10.93.0.9" and nics[1]["mac"] == "52:54:00:aa:bb:cc", nics
    out = khlib.cli(nsd, "vm", "create", "w", "--kernel", fake_boot["kernel"], "--nic", "cl,x=1")
    assert out.returncode == 2, out
    out = khlib.cli(nsd, "network", "delete", "cl")
    assert out.returncode == 5 and "in use by vm v" in out.stderr, out
    out = khlib.cli(nsd, "vm", "edit", "v", "--no-nics")
    assert out.returncode == 0 and "nics" not in nsd.api.vm("v"), out
    out = khlib.cli(nsd, "network", "delete", "cl")
    assert out.returncode == 0, out
    out = khlib.cli(nsd, "network", "delete", "cl")
    assert out.returncode != 0 and "no network" in out.stderr, out


def test_network_kill9_restart_and_dnsmasq_supervision(nsdaemons, netns):
    d = nsdaemons()
    api = d.api
    a = create_net(api, {"name": "a", "type": "nat", "subnet": "10.94.0.0/24"})
    b = create_net(api, {"name": "b", "type": "isolated", "subnet": "10.95.0.0/24"})
    netns.sh("ip link add foreign0 type bridge")
    before = netns.nft_table()
    assert before
    # dnsmasq dies: the daemon starts a new one
    old = netlib.dnsmasq_pids(d.state_dir)
    assert len(old) == 2
    os.kill(old[0], 9)
    netlib.wait_for(lambda: len(netlib.dnsmasq_pids(d.state_dir)) == 2 and
                    old[0] not in netlib.dnsmasq_pids(d.state_dir), 10, "dnsmasq restarted")

    # kill -9 the daemon; meanwhile someone removes a bridge of ours
    d.kill9()
    netns.sh("ip link del " + a["bridge"])
    left = netlib.dnsmasq_pids(d.state_dir)
    d.restart()
    after = netns.nft_table()
    assert len(after) == len(before), (before, after)
    strip = lambda rules: sorted(str(r["expr"]) for r in rules)  # noqa: E731
    assert strip(after) == strip(before)
    assert [t for t in netns.nft_tables() if t[1] == "kvmhost"] == [("bridge", "kvmhost"),
                                                                   ("inet", "kvmhost")]
    links = netns.links()
    assert a["bridge"] in links and b["bridge"] in links and "foreign0" in links
    now = netlib.wait_for(lambda: len(netlib.dnsmasq_pids(d.state_dir)) == 2 and
                          netlib.dnsmasq_pids(d.state_dir), 10, "two dnsmasq")
    assert not set(now) & set(left)  # the old ones were replaced, no duplicates
    # a second restart in a row is still idempotent
    d.stop()
    d.restart()
    assert strip(netns.nft_table()) == strip(before)
    nets = {n["name"]: n for n in api.get("/api/v1/networks").json["networks"]}
    assert set(nets) == {"a", "b"} and nets["a"]["bridge"] == a["bridge"]


# ---------------------------------------------------------------- guests


def http_get(netns, url):
    """GET url from inside the namespace (the host's side of the forward)."""
    return netns.exec(["python3", "-c", "import sys, urllib.request; sys.stdout.write("
                       "urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())", url],
                      check=False)


def boot_net_vms(api, guest, specs, timeout=150):
    for s in specs:
        api.create(s)
    for s in specs:
        st, j = api.action(s["name"], "start", wait=0)
        assert st in (200, 202), (s["name"], st, j)
    ips = {}
    for s in specs:
        log = api.wait_console(s["name"], "KVMHOST-NET: ", timeout=timeout)
        m = re.search(r"KVMHOST-NET: (\S+)", log)
        ips[s["name"]] = m.group(1)
    return ips


@pytest.mark.slow
def test_nat_two_guests_ping_forward_restart(nsdaemons, netns, guest, consoles):
    d = nsdaemons()
    api = d.api
    n = create_net(api, {"name": "nat1", "type": "nat", "subnet": "10.96.0.0/24"})
    r = api.request("PUT", "/api/v1/security-groups/web", {"rules": [{"proto": "icmp"}]})
    assert r.status == 201, r
    netns.sh(BEYOND)
    ips = boot_net_vms(api, guest, [
        net_vm_spec(guest, "g1", [{"network": "nat1"}]),
        net_vm_spec(guest, "g2", [{"network": "nat1", "ip": "10.96.0.50",
                                   "security_groups": ["web"]}]),
    ])
    assert ips["g2"] == "10.96.0.50", ips  # the static reservation
    assert ips["g1"].startswith("10.96.0.") and ips["g1"] != "10.96.0.50", ips
    leases = api.get("/api/v1/networks/nat1/leases").json["leases"]
    assert sorted(l["vm"] for l in leases) == ["g1", "g2"], leases
    taps = [l for l in netns.links() if re.fullmatch(r"kh[0-9a-f]{12}", l)]
    assert len(taps) == 2

    c1 = consoles(d, "g1")
    c1.run("ping -c 1 -W 3 %s >/dev/null && echo kh-$((%%d+1))" % ips["g2"], timeout=30)
    c1.run("ping -c 1 -W 3 10.96.0.1 >/dev/null && echo kh-$((%d+1))", timeout=30)
    c1.run("ping -c 1 -W 3 192.0.2.1 >/dev/null && echo kh-$((%d+1))", timeout=30)

    # anti-spoofing: a guest that takes another MAC, or another IP, is dropped
    c2 = consoles(d, "g2")
    mac1 = api.vm("g1")["nics"][0]["mac"]
    c1.run("ip link set eth0 down; ip link set eth0 address 52:54:00:de:ad:01; "
           "ip link set eth0 up; ping -c 2 -W 2 10.96.0.1 >/dev/null || echo kh-$((%d+1))",
           timeout=40, retries=1)
    c1.run("ip link set eth0 down; ip link set eth0 address " + mac1 + "; ip link set eth0 up; "
           "sleep 1; ping -c 1 -W 3 10.96.0.1 >/dev/null && echo kh-$((%d+1))", timeout=40)
    c2.run("ip addr add 10.96.0.99/24 dev eth0; ping -c 2 -W 2 -I 10.96.0.99 10.96.0.1 "
           ">/dev/null || echo kh-$((%d+1))", timeout=40, retries=1)
    c2.run("ip addr del 10.96.0.99/24 dev eth0; ping -c 1 -W 3 -I 10.96.0.50 10.96.0.1 "
           ">/dev/null && echo kh-$((%d+1))", timeout=40)
    spoof = netns.exec(["nft", "list", "table", "bridge", "kvmhost"]).stdout
    assert spoof.count("ether saddr != ") == 2 and "10.96.0.50" in spoof, spoof

    # security group "web" on g2 allows icmp only (pings above went through):
    # its httpd is unreachable until the group allows tcp 80
    c2.run("mkdir -p /www && echo kvmhost-fwd-ok > /www/index.html && httpd -p 80 -h /www "
           "&& echo kh-$((%d+1))", timeout=30)
    assert "kvmhost-fwd-ok" not in http_get(netns, "http://10.96.0.50/").stdout
    assert api.delete("/api/v1/security-groups/web").status == 409  # in use
    r = api.request("PUT", "/api/v1/security-groups/web",
                    {"rules": [{"proto": "icmp"}, {"proto": "tcp", "ports": "80"}]})
    assert r.status == 200, r
    assert "kvmhost-fwd-ok" in http_get(netns, "http://10.96.0.50/").stdout

    # a port forward to the busybox httpd in g2
    r = api.post("/api/v1/networks/nat1/forwards",
                 {"proto": "tcp", "host_port": 18080, "vm": "g2", "vm_port": 80})
    assert r.status == 201, r
    assert r.json["forwards"][0]["ip"] == "10.96.0.50"
    assert api.post("/api/v1/networks/nat1/forwards",
                    {"proto": "tcp", "host_port": 18080, "vm": "g1", "vm_port": 80}).status == 409
    for addr in ("10.96.0.1", "192.0.2.1"):
        out = http_get(netns, "http://%s:18080/" % addr)
        assert "kvmhost-fwd-ok" in out.stdout, (addr, out)

    # in use
    assert api.delete("/api/v1/networks/nat1").status == 409

    # kill -9 and restart: same rules, no duplicates, guests still talk
    rules = netns.nft_table()
    c1.close()
    c2.close()
    d.kill9()
    d.restart()
    api.wait_state("g1", "running", timeout=30)
    after = netns.nft_table()
    assert sorted(str(r["expr"]) for r in after) == sorted(str(r["expr"]) for r in rules)
    out = http_get(netns, "http://10.96.0.1:18080/")
    assert "kvmhost-fwd-ok" in out.stdout, out
    c1 = consoles(d, "g1")
    c1.run("ping -c 1 -W 3 %s >/dev/null && echo kh-$((%%d+1))" % ips["g2"], timeout=30)
    # forward removal
    dnat = lambda: [r for r in netns.nft_table() if r["chain"] in ("prerouting", "output")]  # noqa: E731
    assert len(dnat()) == 2
    assert api.delete("/api/v1/networks/nat1/forwards/tcp/18080").status == 204
    assert api.delete("/api/v1/networks/nat1/forwards/tcp/18080").status == 404
    assert dnat() == []
    assert "kvmhost-fwd-ok" not in http_get(netns, "http://10.96.0.1:18080/").stdout


@pytest.mark.slow
def test_forward_answers_on_every_local_address(nsdaemons, netns, guest, consoles):
    """A port forward answers the host itself on 127.0.0.1 as well as on the
    gateway and the host's other addresses (docs/api.md: "from every local
    address")."""
    d = nsdaemons()
    api = d.api
    n = create_net(api, {"name": "natl", "type": "nat", "subnet": "10.98.0.0/24"})
    netns.sh(BEYOND)
    boot_net_vms(api, guest, [net_vm_spec(guest, "w1", [{"network": "natl",
                                                          "ip": "10.98.0.60"}])])
    c = consoles(d, "w1")
    c.run("mkdir -p /www && echo kvmhost-lo-ok > /www/index.html && httpd -p 80 -h /www "
          "&& echo kh-$((%d+1))", timeout=30)
    assert "kvmhost-lo-ok" in http_get(netns, "http://10.98.0.60/").stdout
    r = api.post("/api/v1/networks/natl/forwards",
                 {"proto": "tcp", "host_port": 18081, "vm": "w1", "vm_port": 80})
    assert r.status == 201, r
    for addr in ("127.0.0.1", "10.98.0.1", "192.0.2.1"):
        out = http_get(netns, "http://%s:18081/" % addr)
        assert "kvmhost-lo-ok" in out.stdout, (addr, out)
    localnet = "/proc/sys/net/ipv4/conf/%s/route_localnet" % n["bridge"]
    assert netns.exec(["cat", localnet]).stdout.strip() == "1"
    # the guest cannot reach the host's loopback through the bridge: only
    # replies to the forwarded connections may come in to 127/8
    rules = netns.exec(["nft", "list", "table", "inet", "kvmhost"]).stdout
    assert "ip daddr 127.0.0.0/8 ct state != { established, related } drop" in rules, rules
    # without forwards, route_localnet goes back off
    assert api.delete("/api/v1/networks/natl/forwards/tcp/18081").status == 204
    assert netns.exec(["cat", localnet]).stdout.strip() == "0"
    assert "kvmhost-lo-ok" not in http_get(netns, "http://127.0.0.1:18081/").stdout


@pytest.mark.slow
def test_isolated_guest_cannot_reach_beyond_bridge(nsdaemons, netns, guest, consoles):
    d = nsdaemons()
    api = d.api
    create_net(api, {"name": "iso", "type": "isolated", "subnet": "10.97.0.0/24"})
    netns.sh(BEYOND)
    ips = boot_net_vms(api, guest, [net_vm_spec(guest, "i1", [{"network": "iso"}])])
    assert ips["i1"].startswith("10.97.0."), ips
    taps = lambda: [l for l in netns.links() if re.fullmatch(r"kh[0-9a-f]{12}", l)]  # noqa: E731
    assert len(taps()) == 1
    c = consoles(d, "i1")
    # no default route is handed out; the gateway answers
    c.run("ip route | grep -q default || echo kh-$((%d+1))", timeout=20)
    c.run("ping -c 1 -W 3 10.97.0.1 >/dev/null && echo kh-$((%d+1))", timeout=30)
    # even with a route the guest adds itself, nothing beyond the bridge answers
    c.run("ip route add default via 10.97.0.1; ping -c 2 -W 2 192.0.2.1 >/dev/null "
          "|| echo kh-$((%d+1))", timeout=30)
    # the taps go away when the VM stops
    st, _ = api.action("i1", "kill", wait=30)
    assert st == 200
    netlib.wait_for(lambda: not taps(), 10, "tap removed")


# ---------------------------------------------------------------- NICs, CLI


def nic_call(api, method, path, body=None, status=200):
    r = api.request(method, path + ("&" if "?" in path else "?") + "wait=60", body)
    assert r.status == status, r
    return r


def test_nic_add_remove_link_stopped_and_cli(nsd, netns, fake_boot):
    api = nsd.api
    create_net(api, {"name": "lan", "type": "nat", "subnet": "10.89.0.0/24"})
    api.create({"name": "v", "boot": fake_boot, "nics": [{"network": "lan"}]})
    # stopped: the spec changes, the task is done at once
    r = nic_call(api, "POST", "/api/v1/vms/v/nics", {"network": "lan", "ip": "10.89.0.7"})
    assert r.json["state"] == "succeeded" and r.json["result"]["index"] == 1, r
    assert "port" not in r.json["result"]
    nics = api.vm("v")["nics"]
    assert len(nics) == 2 and nics[1]["ip"] == "10.89.0.7" and nics[1]["mac"] == r.json["result"]["mac"]
    assert r.json["result"]["tap"] == "kh" + nics[1]["mac"].replace(":", "")
    hosts = open(os.path.join(nsd.state_dir, "networks",
                              api.get("/api/v1/networks/lan").json["id"], "hosts")).read()
    assert "10.89.0.7" in hosts
    nic_call(api, "PATCH", "/api/v1/vms/v/nics/0", {"link": "down"})
    assert api.vm("v")["nics"][0]["link"] == "down"
    # bad input: 4xx, nothing changes
    before = api.vm("v")["nics"]
    for method, path, body, code in (
            ("POST", "/api/v1/vms/v/nics", {"network": "nope"}, 400),
            ("POST", "/api/v1/vms/v/nics", {"network": "lan", "bogus": 1}, 400),
            ("POST", "/api/v1/vms/v/nics", {"network": "lan", "ip": "10.89.0.7"}, 400),
            ("POST", "/api/v1/vms/v/nics", {"network": "lan", "mac": before[0]["mac"]}, 400),
            ("POST", "/api/v1/vms/v/nics", {"network": "lan", "link": "sideways"}, 400),
            ("POST", "/api/v1/vms/nosuch/nics", {"network": "lan"}, 404),
            ("DELETE", "/api/v1/vms/v/nics/2", None, 404),
            ("DELETE", "/api/v1/vms/v/nics/x", None, 404),
            ("DELETE", "/api/v1/vms/v/nics/01", None, 404),
            ("PATCH", "/api/v1/vms/v/nics/0", {"link": "sideways"}, 400),
            ("PATCH", "/api/v1/vms/v/nics/0", {"mac": "52:54:00:00:00:01"}, 400),
            ("PATCH", "/api/v1/vms/v/nics/5", {"link": "up"}, 404)):
        r = api.request(method, path, body)
        assert r.status == code, (method, path, body, r)
    r = api.request("POST", "/api/v1/vms/v/nics?wait=x", {"network": "lan"})
    assert r.status == 400, r
    assert api.vm("v")["nics"] == before
    nic_call(api, "DELETE", "/api/v1/vms/v/nics/0")
    nics = api.vm("v")["nics"]
    assert len(nics) == 1 and nics[0]["ip"] == "10.89.0.7"

    # the CLI
    out = khlib.cli(nsd, "vm", "nic", "add", "v", "lan,mac=52:54:00:aa:bb:01,link=down")
    assert out.returncode == 0 and "NIC 1 added" in out.stdout, out
    assert api.vm("v")["nics"][1] == {"network": "lan", "mac": "52:54:00:aa:bb:01",
                                      "link": "down"}
    out = khlib.cli(nsd, "vm", "nic", "link", "v", "1", "--state", "up")
    assert out.returncode == 0, out
    assert "link" not in api.vm("v")["nics"][1]
    out = khlib.cli(nsd, "vm", "nic", "add", "v", "nope")
    assert out.returncode == 2 and "nope" in out.stderr, out
    out = khlib.cli(nsd, "vm", "nic", "remove", "v", "7")
    assert out.returncode != 0 and "no NIC" in out.stderr, out
    out = khlib.cli(nsd, "vm", "nic", "remove", "v", "0")
    assert out.returncode == 0, out
    assert [n["mac"] for n in api.vm("v")["nics"]] == ["52:54:00:aa:bb:01"]


def test_secgroup_cli(nsd, netns, fake_boot):
    for words in (("help", "secgroup", "rule", "add"), ("secgroup", "rule", "delete", "--help"),
                  ("help", "vm", "nic", "add")):
        out = khlib.cli(nsd, *words)
        assert out.returncode == 0 and "NAME" in out.stdout, (words, out)
    out = khlib.cli(nsd, "secgroup", "create", "web", "--proto", "tcp", "--ports", "80")
    assert out.returncode == 0 and "created" in out.stdout, out
    out = khlib.cli(nsd, "secgroup", "create", "web")
    assert out.returncode == 5 and "exists" in out.stderr, out
    out = khlib.cli(nsd, "secgroup", "rule", "add", "web", "--proto", "udp", "--ports",
                    "5000-5010", "--cidr", "10.0.0.0/8")
    assert out.returncode == 0, out
    out = khlib.cli(nsd, "secgroup", "rule", "add", "web", "--proto", "icmp", "--ports", "1")
    assert out.returncode == 2, out  # icmp has no ports: 400, nothing changes
    rules = nsd.api.get("/api/v1/security-groups/web").json["rules"]
    assert [(r["proto"], r.get("ports")) for r in rules] == [("tcp", "80"), ("udp", "5000-5010")]
    out = khlib.cli(nsd, "secgroup", "show", "web")
    assert out.returncode == 0 and re.search(r"^1\s+in\s+udp\s+5000-5010\s+10\.0\.0\.0/8", out.stdout,
                                             re.M), out
    out = khlib.cli(nsd, "secgroup", "list")
    assert out.returncode == 0 and re.search(r"^web\s+2$", out.stdout, re.M), out
    out = khlib.cli(nsd, "--json", "secgroup", "show", "web")
    assert out.returncode == 0 and '"5000-5010"' in out.stdout, out
    # enforced: the NIC's rules follow the group
    create_net(nsd.api, {"name": "lan", "type": "nat", "subnet": "10.88.0.0/24"})
    nsd.api.create({"name": "v", "boot": fake_boot,
                    "nics": [{"network": "lan", "security_groups": ["web"]}]})
    table = lambda: netns.exec(["nft", "list", "table", "bridge", "kvmhost"]).stdout  # noqa: E731
    assert "udp dport 5000-5010" in table()
    out = khlib.cli(nsd, "secgroup", "rule", "delete", "web", "1")
    assert out.returncode == 0, out
    assert "udp dport 5000-5010" not in table() and "tcp dport 80" in table()
    out = khlib.cli(nsd, "secgroup", "rule", "delete", "web", "5")
    assert out.returncode == 4, out
    out = khlib.cli(nsd, "secgroup", "delete", "web")
    assert out.returncode == 5 and "v" in out.stderr, out  # in use
    assert nsd.api.delete("/api/v1/vms/v").status == 204
    out = khlib.cli(nsd, "secgroup", "delete", "web")
    assert out.returncode == 0, out
    out = khlib.cli(nsd, "secgroup", "show", "web")
    assert out.returncode == 4, out


def test_secgroup_rules_concurrent_add_delete(nsd, netns, fake_boot):
    """rule add / rule delete are one request each (POST .../rules, DELETE
    .../rules/{index}): concurrent CLI adds and API adds all land."""
    import threading
    api = nsd.api
    assert api.request("PUT", "/api/v1/security-groups/web", {"rules": []}).status == 201
    n = 24
    results = [None] * n

    def add(i):
        if i % 2:
            results[i] = khlib.cli(nsd, "secgroup", "rule", "add", "web", "--proto", "tcp",
                                   "--ports", str(1000 + i)).returncode
        else:
            results[i] = api.post("/api/v1/security-groups/web/rules",
                                  {"proto": "tcp", "ports": str(1000 + i)}).status

    threads = [threading.Thread(target=add, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r in (0, 201) for r in results), results
    rules = api.get("/api/v1/security-groups/web").json["rules"]
    assert sorted(int(r["ports"]) for r in rules) == [1000 + i for i in range(n)], rules
    # validated as in the group; unknown group / rule number
    for body in ({"proto": "icmp", "ports": "1"}, {"direction": "out"}, {"bogus": 1}, [1]):
        r = api.post("/api/v1/security-groups/web/rules", body)
        assert r.status == 400, (body, r)
    assert api.post("/api/v1/security-groups/nosuch/rules", {"proto": "tcp"}).status == 404
    for idx in ("24", "-1", "01", "x", "+1"):
        r = api.request("DELETE", "/api/v1/security-groups/web/rules/" + idx)
        assert r.status == 404, (idx, r)
    # concurrent deletes of rule 0: each removes one (the rules move up)
    threads = [threading.Thread(target=lambda: api.request(
        "DELETE", "/api/v1/security-groups/web/rules/0")) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(api.get("/api/v1/security-groups/web").json["rules"]) == n - 8
    r = api.request("DELETE", "/api/v1/security-groups/web/rules/0")
    assert r.status == 200 and len(r.json["rules"]) == n - 9, r
    # the limit holds for appends
    api.request("PUT", "/api/v1/security-groups/web",
                {"rules": [{"proto": "tcp", "ports": str(p)} for p in range(1, 65)]})
    r = api.post("/api/v1/security-groups/web/rules", {"proto": "udp"})
    assert r.status == 400 and "64" in r.text, r
    assert len(api.get("/api/v1/security-groups/web").json["rules"]) == 64


@pytest.mark.slow
def test_nic_hotplug_link_multiqueue_guest(nsdaemons, netns, guest, consoles):
    d = nsdaemons()
    api = d.api
    n = create_net(api, {"name": "hp", "type": "nat", "subnet": "10.87.0.0/24"})
    spec = net_vm_spec(guest, "h1", [{"network": "hp"}])
    spec["vcpus"] = 2
    ips = boot_net_vms(api, guest, [spec])
    assert ips["h1"].startswith("10.87.0."), ips
    c = consoles(d, "h1")
    # multiqueue: 2 vCPUs, 2 queue pairs on one multi-queue tap
    argv = " ".join(khlib.proc_cmdline(api.vm("h1")["pid"]))
    assert '"fds":"' in argv and '"mq":true' in argv and '"vectors":6' in argv, argv
    c.run("[ $(ls -d /sys/class/net/eth0/queues/rx-* | wc -l) = 2 ] && echo kh-$((%d+1))")
    tap0 = "kh" + api.vm("h1")["nics"][0]["mac"].replace(":", "")
    assert "multi_queue" in netns.exec(["ip", "-d", "link", "show", tap0]).stdout

    # link down: no carrier, no traffic; up again: both back
    nic_call(api, "PATCH", "/api/v1/vms/h1/nics/0", {"link": "down"})
    assert api.vm("h1")["nics"][0]["link"] == "down"
    c.run("[ $(cat /sys/class/net/eth0/carrier) = 0 ] && echo kh-$((%d+1))")
    c.run("ping -c 2 -W 2 10.87.0.1 >/dev/null || echo kh-$((%d+1))", timeout=40, retries=1)
    nic_call(api, "PATCH", "/api/v1/vms/h1/nics/0", {"link": "up"})
    c.run("usleep 500000; [ $(cat /sys/class/net/eth0/carrier) = 1 ] && "
          "ping -c 1 -W 3 10.87.0.1 >/dev/null && echo kh-$((%d+1))", timeout=30)

    # hot-plug: a tap on the bridge, eth1 in the guest, a DHCP lease, its rules
    t0 = time.time()
    r = nic_call(api, "POST", "/api/v1/vms/h1/nics", {"network": "hp"})
    plug_ms = (time.time() - t0) * 1000
    res = r.json["result"]
    assert res["index"] == 1 and res["port"] == "hp4", res
    tap = res["tap"]
    links = netns.links()
    assert tap in links and links[tap].get("master") == n["bridge"], links.get(tap)
    c.run("i=0; while [ ! -e /sys/class/net/eth1 ] && [ $i -lt 150 ]; do usleep 200000; "
          "i=$((i+1)); done; [ -e /sys/class/net/eth1 ] && echo kh-$((%d+1))", timeout=45,
          retries=1)
    c.run("ip link set eth1 up; udhcpc -i eth1 -q -n -t 10 -T 2 "
          "-s /usr/share/udhcpc/default.script >/dev/null 2>&1 && echo kh-$((%d+1))",
          timeout=60, retries=1)
    mac1 = res["mac"]
    leases = api.get("/api/v1/networks/hp/leases").json["leases"]
    assert any(l["mac"] == mac1 and l["vm"] == "h1" for l in leases), leases
    spoof = lambda: netns.exec(["nft", "list", "table", "bridge", "kvmhost"]).stdout  # noqa: E731
    assert ('"%s"' % tap) in spoof() and spoof().count("ether saddr != ") == 2
    assert [x["mac"] for x in api.vm("h1")["nics"]] == [api.vm("h1")["nics"][0]["mac"], mac1]
    assert [x["hotplugged"] for x in api.vm("h1")["nics"]] == [False, True]
    print("hot-plug took %.0f ms" % plug_ms)

    # kill -9 of the daemon and restart: the NIC, its tap and rules stay, once
    rules = sorted(str(r["expr"]) for r in netns.nft_table())
    bridge_rules = spoof()
    c.close()
    d.kill9()
    d.restart()
    api.wait_state("h1", "running", timeout=30)
    assert len(api.vm("h1")["nics"]) == 2 and tap in netns.links()
    assert [x["hotplugged"] for x in api.vm("h1")["nics"]] == [False, True]  # boot.json
    assert sorted(str(r["expr"]) for r in netns.nft_table()) == rules
    assert spoof() == bridge_rules
    c = consoles(d, "h1")

    # unplug: a NIC the VM started with cannot go (root bus); the hot-plugged one can
    r = api.request("DELETE", "/api/v1/vms/h1/nics/0?wait=60")
    assert r.status == 409 and "stop the VM" in r.error["message"], r
    t0 = time.time()
    nic_call(api, "DELETE", "/api/v1/vms/h1/nics/1")
    print("hot-unplug took %.0f ms" % ((time.time() - t0) * 1000))
    netlib.wait_for(lambda: tap not in netns.links(), 10, "tap removed")
    assert ('"%s"' % tap) not in spoof() and spoof().count("ether saddr != ") == 1
    assert len(api.vm("h1")["nics"]) == 1
    c.run("[ ! -e /sys/class/net/eth1 ] && echo kh-$((%d+1))", timeout=20)
    c.run("ping -c 1 -W 3 10.87.0.1 >/dev/null && echo kh-$((%d+1))", timeout=30)

    # a guest that does not release the NIC (paused): 504 after ?timeout, nothing
    # changes; resumed, it lets go and a second DELETE finishes
    r = nic_call(api, "POST", "/api/v1/vms/h1/nics", {"network": "hp"})
    tap2 = r.json["result"]["tap"]
    st, _ = api.action("h1", "pause", wait=30)
    assert st == 200
    r = api.request("DELETE", "/api/v1/vms/h1/nics/1?wait=60&timeout=2")
    assert r.status == 504 and r.error["code"] == "timeout", r
    assert len(api.vm("h1")["nics"]) == 2 and tap2 in netns.links()
    assert api.request("DELETE", "/api/v1/vms/h1/nics/1?timeout=0").status == 400
    st, _ = api.action("h1", "resume", wait=30)
    assert st == 200
    nic_call(api, "DELETE", "/api/v1/vms/h1/nics/1")
    netlib.wait_for(lambda: tap2 not in netns.links(), 10, "tap removed")
    assert len(api.vm("h1")["nics"]) == 1

    # plugged again (same port), then the next start has it as a normal NIC
    r = nic_call(api, "POST", "/api/v1/vms/h1/nics", {"network": "hp", "link": "down"})
    assert r.json["result"]["port"] == "hp4"
    c.close()
    st, _ = api.action("h1", "kill", wait=30)
    assert st == 200
    before = api.console_log("h1").count("KVMHOST-NET: ")
    st, _ = api.action("h1", "start", wait=0)
    assert st in (200, 202)
    api.wait_console("h1", "KVMHOST-NET: ", timeout=150, count=before + 1)
    argv = " ".join(khlib.proc_cmdline(api.vm("h1")["pid"]))
    assert [x["hotplugged"] for x in api.vm("h1")["nics"]] == [False, False]
    assert '"id":"net1-dev"' in argv and '"addr":"0x15"' in argv, argv
    c = consoles(d, "h1")
    c.run("ip link set eth1 up && usleep 300000 && [ $(cat /sys/class/net/eth1/carrier) = 0 ] "
          "&& echo kh-$((%d+1))", timeout=30)


@pytest.mark.slow
def test_nic_bandwidth_limit_guest(nsdaemons, netns, guest, consoles, tmp_path):
    import subprocess
    d = nsdaemons()
    api = d.api
    create_net(api, {"name": "bw", "type": "nat", "subnet": "10.86.0.0/24"})
    ips = boot_net_vms(api, guest, [net_vm_spec(guest, "b1", [{"network": "bw"}])])
    ip = ips["b1"]
    tap = "kh" + api.vm("b1")["nics"][0]["mac"].replace(":", "")
    size = 2 * 1024 * 1024
    (tmp_path / "big").write_bytes(b"\0" * size)
    srv = subprocess.Popen(["ip", "netns", "exec", netns.name, "python3", "-m", "http.server",
                            "--bind", "10.86.0.1", "18000", "--directory", str(tmp_path)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    up = "import socket; socket.create_connection(('10.86.0.1', 18000), 1)"
    netlib.wait_for(lambda: srv.poll() is not None or
                    netns.exec(["python3", "-c", up], check=False).returncode == 0, 10, "server")
    assert srv.poll() is None, srv.stderr.read()
    c = consoles(d, "b1")
    try:
        def inbound():  # host -> guest
            t0 = time.time()
            c.run("wget -q -O /dev/null http://10.86.0.1:18000/big && echo kh-$((%d+1))",
                  timeout=90, retries=1)
            return size / (time.time() - t0)

        def outbound():  # guest -> host
            t0 = time.time()
            out = netns.exec(["python3", "-c", "import sys, urllib.request; sys.stdout.write("
                              "str(len(urllib.request.urlopen(sys.argv[1], timeout=60).read())))",
                              "http://%s/big" % ip], timeout=90)
            assert out.stdout == str(size), out
            return size / (time.time() - t0)

        qdisc = lambda: netns.exec(["tc", "qdisc", "show", "dev", tap]).stdout  # noqa: E731
        c.run("mkdir -p /www && dd if=/dev/zero of=/www/big bs=1024 count=2048 2>/dev/null && "
              "httpd -p 80 -h /www && echo kh-$((%d+1))", timeout=30)
        free_in, free_out = inbound(), outbound()
        limit = 250000
        r = api.patch("/api/v1/vms/b1", {"limits": {"nic": [{"index": 0, "inbound_bps": limit}]}})
        assert r.status == 200, r
        assert "tbf" in qdisc() and "rate 2Mbit" in qdisc(), qdisc()
        lim_in = inbound()
        r = api.patch("/api/v1/vms/b1", {"limits": {"nic": [{"index": 0, "outbound_bps": limit}]}})
        assert r.status == 200, r
        assert "tbf" not in qdisc(), qdisc()  # the inbound limit went: its qdisc too
        assert "limit rate over %d bytes/second" % limit in \
            netns.exec(["nft", "list", "table", "bridge", "kvmhost"]).stdout
        lim_out = outbound()
        print("throughput B/s: inbound free %.0f limited %.0f; outbound free %.0f limited %.0f"
              % (free_in, lim_in, free_out, lim_out))
        assert 0.3 * limit < lim_in < 1.3 * limit, lim_in
        assert 0.2 * limit < lim_out < 1.3 * limit, lim_out
        assert free_in > 2 * lim_in and free_out > 2 * lim_out, (free_in, free_out)
        # bad limits: 400, nothing changes
        for bad in ({"nic": [{"index": 1, "inbound_bps": limit}]},
                    {"nic": [{"index": 0, "inbound_bps": 10}]},
                    {"nic": [{"index": 0, "outbound_burst": 100000}]}):
            r = api.patch("/api/v1/vms/b1", {"limits": bad})
            assert r.status == 400, (bad, r)
        assert api.vm("b1")["limits"]["nic"] == [{"index": 0, "outbound_bps": limit}]
        r = api.patch("/api/v1/vms/b1", {"limits": {"nic": None}})
        assert r.status == 200, r
        assert "limit rate" not in netns.exec(["nft", "list", "table", "bridge", "kvmhost"]).stdout
        assert "nic" not in api.vm("b1").get("limits", {})
    finally:
        srv.kill()
        srv.wait()


@pytest.mark.slow
def test_ipv6_nat_network_slaac_guest(nsdaemons, netns, guest, consoles):
    d = nsdaemons()
    api = d.api
    for body, code in (({"name": "x", "ipv6": "fd00:86::/48"}, 400),
                       ({"name": "x", "ipv6": "fd00:86::1/64"}, 400),
                       ({"name": "x", "ipv6": "fe80::/64"}, 400),
                       ({"name": "x", "ipv6": "ff02::/64"}, 400),
                       ({"name": "x", "ipv6": "nonsense/64"}, 400),
                       ({"name": "x", "ipv6": 64}, 400),
                       ({"name": "x", "type": "bridged", "bridge": "lo", "ipv6": "fd00:1::/64"},
                        400)):
        r = api.post("/api/v1/networks", body)
        assert r.status == code, (body, r)
    n = create_net(api, {"name": "v6", "type": "nat", "subnet": "10.85.0.0/24",
                         "ipv6": "fd00:86::/64"})
    assert n["ipv6"] == "fd00:86::/64" and n["gateway6"] == "fd00:86::1", n
    assert api.post("/api/v1/networks", {"name": "y", "ipv6": "fd00:86::/64"}).status == 409
    assert api.get("/api/v1/networks").json["networks"][0]["ipv6"] == "fd00:86::/64"
    addrs = netns.exec(["ip", "-6", "addr", "show", n["bridge"]]).stdout
    assert "fd00:86::1/64" in addrs, addrs
    rules = str(netns.nft_table())
    assert "fd00:86::" in rules and "masquerade" in rules
    boot_net_vms(api, guest, [net_vm_spec(guest, "s1", [{"network": "v6"}])])
    c = consoles(d, "s1")
    # SLAAC from dnsmasq's router advertisements
    c.run("i=0; while ! ip -6 addr show dev eth0 | grep -q 'inet6 fd00:86:'; do "
          "[ $i -gt 100 ] && break; usleep 200000; i=$((i+1)); done; "
          "ip -6 addr show dev eth0 | grep -q 'inet6 fd00:86:' && echo kh-$((%d+1))",
          timeout=45, retries=1)
    c.run("ping -6 -c 1 -W 3 fd00:86::1 >/dev/null 2>&1 || ping6 -c 1 -W 3 fd00:86::1 "
          ">/dev/null && echo kh-$((%d+1))", timeout=30)
    # a source address outside the prefix is dropped at the tap
    bridge_table = netns.exec(["nft", "list", "table", "bridge", "kvmhost"]).stdout
    assert "ip6 saddr != { ::, fd00:86::/64, fe80::/10 } drop" in bridge_table, bridge_table
    c.run("ip -6 addr add fd00:99::5/64 dev eth0 nodad; ip -6 route add fd00:86::1 dev eth0 "
          "src fd00:99::5 2>/dev/null; ping -6 -c 2 -W 2 -I fd00:99::5 fd00:86::1 >/dev/null "
          "2>&1 || echo kh-$((%d+1))", timeout=40, retries=1)
    # kept across a restart
    d.stop()
    d.restart()
    assert "fd00:86::1/64" in netns.exec(["ip", "-6", "addr", "show", n["bridge"]]).stdout
    assert api.get("/api/v1/networks/v6").json["gateway6"] == "fd00:86::1"


PING6 = ("import socket, sys, time\n"
         "s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)\n"
         "s.settimeout(1)\n"
         "for _ in range(3):\n"
         "    s.sendto(bytes([128, 0, 0, 0, 0x6b, 0x68, 0, 1]) + b'kvmhost', (sys.argv[1], 0))\n"
         "    end = time.time() + 1\n"
         "    while time.time() < end:\n"
         "        try:\n"
         "            d, a = s.recvfrom(2000)\n"
         "        except socket.timeout:\n"
         "            break\n"
         "        if d[0] == 129 and a[0] == sys.argv[1]:\n"
         "            print('pong')\n"
         "            sys.exit(0)\n")


def ping6_from_host(netns, addr):
    """An ICMPv6 echo from inside the namespace (there is no ping binary)."""
    return "pong" in netns.exec(["python3", "-c", PING6, addr], check=False).stdout


@pytest.mark.slow
def test_secgroup_filters_ipv6_guest(nsdaemons, netns, guest, consoles):
    """A security group means the same for IPv4 and IPv6: a group without a
    rule for tcp 8080 blocks it on both families, ND/RA keep working (SLAAC,
    the guest pings its gateway), a rule with an IPv6 cidr opens IPv6 only,
    one without a cidr opens both."""
    d = nsdaemons()
    api = d.api
    for cidr in ("2001:db8::1/32", "2001:db8::/129", "2001:db8::", "fd00::/01", "zz::/8"):
        r = api.request("PUT", "/api/v1/security-groups/bad", {"rules": [{"cidr": cidr}]})
        assert r.status == 400, (cidr, r)
    r = api.request("PUT", "/api/v1/security-groups/web", {"rules": [{"proto": "tcp",
                                                                      "ports": "22"}]})
    assert r.status == 201, r
    create_net(api, {"name": "v6", "type": "nat", "subnet": "10.87.0.0/24",
                     "ipv6": "fd00:87::/64"})
    ips = boot_net_vms(api, guest, [net_vm_spec(guest, "s1", [
        {"network": "v6", "ip": "10.87.0.50", "security_groups": ["web"]}])])
    assert ips["s1"] == "10.87.0.50", ips
    c = consoles(d, "s1")
    # SLAAC through the group: router advertisements pass
    c.run("i=0; while ! ip -6 addr show dev eth0 | grep -q 'inet6 fd00:87:'; do "
          "[ $i -gt 100 ] && break; usleep 200000; i=$((i+1)); done; "
          "ip -6 addr show dev eth0 | grep -q 'inet6 fd00:87:' && echo kh-$((%d+1))",
          timeout=45, retries=1)
    start = len(c.text())
    c.run("echo ADDR6=$(ip -6 addr show dev eth0 | grep -o 'fd00:87:[0-9a-f:]*' | head -n 1)= "
          "kh-$((%d+1))", timeout=20)
    m = re.search(r"ADDR6=(fd00:87:[0-9a-f:]+)=", c.text()[start:])
    assert m, c.text()[-500:]
    v6 = m.group(1)
    # neighbour discovery and echo replies pass: the guest pings its gateway
    c.run("ping -6 -c 1 -W 3 fd00:87::1 >/dev/null 2>&1 || ping6 -c 1 -W 3 fd00:87::1 "
          ">/dev/null && echo kh-$((%d+1))", timeout=30)
    c.run("mkdir -p /www && echo kvmhost-sg6-ok > /www/index.html && httpd -p 8080 -h /www "
          "&& echo kh-$((%d+1))", timeout=30)
    url4, url6 = "http://10.87.0.50:8080/", "http://[%s]:8080/" % v6
    table = netns.exec(["nft", "list", "table", "bridge", "kvmhost"]).stdout
    assert "ip6 saddr ::/0 tcp dport 22 accept" in table, table
    # tcp 8080 and ICMPv6 echo requests are not allowed, on either family
    assert "kvmhost-sg6-ok" not in http_get(netns, url6).stdout
    assert "kvmhost-sg6-ok" not in http_get(netns, url4).stdout
    assert not ping6_from_host(netns, v6)
    # an IPv6 cidr opens IPv6 only
    r = api.request("PUT", "/api/v1/security-groups/web",
                    {"rules": [{"proto": "icmp"},
                               {"proto": "tcp", "ports": "8080", "cidr": "fd00:87::/64"}]})
    assert r.status == 200, r
    assert r.json["rules"][0].get("cidr") is None and \
        r.json["rules"][1]["cidr"] == "fd00:87::/64", r.json
    assert ping6_from_host(netns, v6)
    assert "kvmhost-sg6-ok" in http_get(netns, url6).stdout
    assert "kvmhost-sg6-ok" not in http_get(netns, url4).stdout
    # no cidr: both families
    r = api.request("PUT", "/api/v1/security-groups/web",
                    {"rules": [{"proto": "icmp"}, {"proto": "tcp", "ports": "8080"}]})
    assert r.status == 200, r
    assert "kvmhost-sg6-ok" in http_get(netns, url6).stdout
    assert "kvmhost-sg6-ok" in http_get(netns, url4).stdout
    # an IPv4 cidr opens IPv4 only
    r = api.request("PUT", "/api/v1/security-groups/web",
                    {"rules": [{"proto": "icmp"},
                               {"proto": "tcp", "ports": "8080", "cidr": "10.87.0.0/24"}]})
    assert r.status == 200, r
    assert "kvmhost-sg6-ok" not in http_get(netns, url6).stdout
    assert "kvmhost-sg6-ok" in http_get(netns, url4).stdout
    c.run("ping -6 -c 1 -W 3 fd00:87::1 >/dev/null 2>&1 || ping6 -c 1 -W 3 fd00:87::1 "
          ">/dev/null && echo kh-$((%d+1))", timeout=30)


def test_two_instances_share_a_kernel(nsdaemons, netns, fake_boot):
    """Two daemons with different --instance names in one network namespace
    (as on one kernel): each has its own nftables tables (kvmhost-NAME), a
    network of the same name and a port forward each, and deleting one's
    network removes only its tables."""
    a = nsdaemons(extra_args=["--instance", "a"])
    b = nsdaemons(extra_args=["--instance", "b"])
    for d, sub, port in ((a, "10.93.0", 18090), (b, "10.94.0", 18091)):
        n = create_net(d.api, {"name": "lan", "type": "nat", "subnet": sub + ".0/24"})
        d.bridge = n["bridge"]
        spec = {"name": "g", "vcpus": 1, "memory_mib": 64, "boot": fake_boot,
                "nics": [{"network": "lan", "ip": sub + ".50"}]}
        assert d.api.post("/api/v1/vms", spec).status == 201
        r = d.api.post("/api/v1/networks/lan/forwards",
                       {"proto": "tcp", "host_port": port, "vm": "g", "vm_port": 80})
        assert r.status == 201, r
        assert r.json["forwards"][0]["ip"] == sub + ".50"
    assert a.bridge != b.bridge
    tables = netns.nft_tables()
    for t in (("inet", "kvmhost-a"), ("inet", "kvmhost-b"), ("bridge", "kvmhost-a"),
              ("bridge", "kvmhost-b")):
        assert t in tables, tables
    assert ("inet", "kvmhost") not in tables

    def rules(name):
        r = netns.exec(["nft", "list", "table", "inet", name], check=False)
        return r.stdout if r.returncode == 0 else None

    assert "10.93.0.50:80" in rules("kvmhost-a") and "10.94.0.50:80" in rules("kvmhost-b")
    assert "10.94.0" not in rules("kvmhost-a")
    # both keep working: each lists its own network, with its dnsmasq up
    for d in (a, b):
        assert d.api.get("/api/v1/networks/lan").status == 200
        assert netlib.dnsmasq_pids(d.state_dir)
    # deleting a's network removes a's tables and bridge only
    assert a.api.delete("/api/v1/vms/g").status == 204
    assert a.api.delete("/api/v1/networks/lan").status == 204
    tables = netns.nft_tables()
    assert ("inet", "kvmhost-a") not in tables and ("bridge", "kvmhost-a") not in tables
    assert ("inet", "kvmhost-b") in tables and "10.94.0.50:80" in rules("kvmhost-b")
    links = netns.links()
    assert a.bridge not in links and b.bridge in links
    assert b.api.get("/api/v1/networks/lan").status == 200
