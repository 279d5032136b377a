"""Templates, clones and delete as users expect them (issue 15 items 4, 10,
11): a clone has the template's whole spec (NICs with new MACs, limits),
overridable like `qm clone` + `qm set`; `vm delete --with-volumes` takes the
clone's volumes along, all or none; `vm template --reset-identity` empties
machine-id and removes the SSH host keys in the template's image.
"""

import os
import subprocess
import time

import pytest

import khlib
import netlib


@pytest.fixture
def netns():
    ns = netlib.NetNS()
    yield ns
    ns.delete()


@pytest.fixture
def nsd(request, netns):
    d = netlib.NsDaemon(netns)
    d.start()
    yield d
    failed = any(getattr(request.node, "rep_" + w, None) is not None and
                 getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
    khlib.finish_daemons([d], failed)


def vols(api):
    return sorted(v["name"] for v in api.get("/api/v1/pools/default/volumes").json["volumes"])


# ---------------------------------------------------------------- item 4

def test_clone_has_nics_limits_and_overrides(nsd, netns, fake_boot):
    api = nsd.api
    assert api.post("/api/v1/networks", {"name": "lan", "type": "nat",
                                         "subnet": "10.87.0.0/24"}).status == 201
    assert api.request("PUT", "/api/v1/security-groups/web",
                       {"rules": [{"proto": "tcp", "ports": "80"}]}).status == 201
    assert api.post("/api/v1/pools/default/volumes", {"name": "root", "size": "64M"}).status == 201
    api.create({"name": "tpl", "vcpus": 2, "max_vcpus": 4, "memory_mib": 128, "boot": fake_boot,
                "disks": [{"volume": "default/root"}],
                "nics": [{"network": "lan", "security_groups": ["web"], "link": "down",
                          "ip": "10.87.0.9"},
                         {"network": "lan"}],
                "limits": {"cpu_weight": 300,
                           "nic": [{"index": 1, "inbound_bps": 1000000}]}})
    assert api.post("/api/v1/vms/tpl/template", {}).status == 200
    tnics = api.vm("tpl")["nics"]

    r = api.post("/api/v1/vms", {"name": "c1", "from_template": "tpl"})
    assert r.status == 201, r
    c1 = r.json
    assert len(c1["nics"]) == 2, c1
    n0, n1 = c1["nics"]
    assert n0["network"] == "lan" and n0["security_groups"] == ["web"] and n0["link"] == "down"
    assert "ip" not in n0, n0  # the template's reservation stays the template's
    assert n0["mac"] not in (tnics[0]["mac"], tnics[1]["mac"])
    assert n1["mac"] not in (tnics[0]["mac"], tnics[1]["mac"]) and n1["mac"] != n0["mac"]
    assert c1["limits"]["cpu_weight"] == 300
    assert c1["limits"]["nic"] == [{"index": 1, "inbound_bps": 1000000}]
    assert c1["vcpus"] == 2 and c1["max_vcpus"] == 4 and c1["memory_mib"] == 128
    assert c1["boot"] == api.vm("tpl")["boot"]
    # a second clone: MACs unique again
    c2 = api.post("/api/v1/vms", {"name": "c2", "from_template": "tpl"}).json
    macs = [n["mac"] for vm in (c1, c2) for n in vm["nics"]] + [n["mac"] for n in tnics]
    assert len(set(macs)) == len(macs), macs

    # overrides, as `qm clone` + `qm set`: from the CLI
    p = khlib.cli(nsd, "vm", "create", "c3", "--from-template", "tpl", "--nic",
                  "lan,security_groups=web", "--vcpus", "6", "--memory", "256",
                  "--description", "web three")
    assert p.returncode == 0, p
    c3 = api.vm("c3")
    assert [(n["network"], n["security_groups"]) for n in c3["nics"]] == [("lan", ["web"])]
    assert c3["nics"][0].get("link", "up") == "up"
    assert c3["vcpus"] == 6 and c3.get("max_vcpus") in (None, 6), c3
    assert c3["memory_mib"] == 256 and c3["description"] == "web three"
    # the template's limit of NIC 1 has no NIC 1 left to apply to
    assert "nic" not in (c3.get("limits") or {}), c3
    assert c3["disks"][0]["volume"] == "default/c3-disk0"
    # API: limits and an empty NIC list replace the template's
    r = api.post("/api/v1/vms", {"name": "c4", "from_template": "tpl", "nics": [],
                                 "limits": {"cpu_weight": 50}})
    assert r.status == 201, r
    assert r.json.get("nics", []) == [] and r.json["limits"]["cpu_weight"] == 50
    # what a clone cannot take is still refused, and nothing is made
    for body, status in (
            ({"name": "x", "from_template": "tpl", "disks": []}, 400),
            ({"name": "x", "from_template": "tpl", "boot": fake_boot}, 400),
            ({"name": "x", "from_template": "tpl", "nics": [{"network": "nosuch"}]}, 400),
            ({"name": "x", "from_template": "tpl",
              "nics": [{"network": "lan", "mac": c1["nics"][0]["mac"]}]}, 409)):
        r = api.post("/api/v1/vms", body)
        assert r.status == status, (body, r)
    assert api.get("/api/v1/vms/x").status == 404
    assert "x-disk0" not in vols(api)


# ---------------------------------------------------------------- item 10

def test_delete_with_volumes(daemon, fake_boot, tmp_path):
    api = daemon.api
    for name in ("root", "data", "shared"):
        assert api.post("/api/v1/pools/default/volumes", {"name": name, "size": "8M"}).status == 201
    api.create({"name": "tpl", "vcpus": 1, "memory_mib": 128, "boot": fake_boot,
                "disks": [{"volume": "default/root"}]})
    assert api.post("/api/v1/vms/tpl/template", {}).status == 200
    assert api.post("/api/v1/vms", {"name": "c1", "from_template": "tpl"}).status == 201
    assert api.post("/api/v1/vms", {"name": "c2", "from_template": "tpl"}).status == 201
    assert "c1-disk0" in vols(api)

    # bad query: 400, nothing changes
    assert api.delete("/api/v1/vms/c1?volumes=maybe").status == 400
    # the template's base has clones: 409 naming one, nothing deleted
    r = api.delete("/api/v1/vms/tpl?volumes=true")
    assert r.status == 409, r
    assert "default/root" in r.error["message"] and "vm c1" in r.error["message"], r
    assert api.get("/api/v1/vms/tpl").status == 200 and "root" in vols(api)

    # a clone with its volumes: the VM and the overlay go, the base stays
    r = api.delete("/api/v1/vms/c1?volumes=true")
    assert r.status == 204, r
    assert api.get("/api/v1/vms/c1").status == 404
    assert "c1-disk0" not in vols(api) and "root" in vols(api)
    assert api.get("/api/v1/pools/default/volumes/root").json["dependents"] == 1
    # from the CLI
    p = khlib.cli(daemon, "vm", "delete", "c2", "--with-volumes")
    assert p.returncode == 0, p
    assert "volume default/c2-disk0 deleted" in p.stdout, p
    assert "c2-disk0" not in vols(api)
    # the template, once no clone is left: its base goes too
    assert api.delete("/api/v1/vms/tpl?volumes=true").status == 204
    assert "root" not in vols(api)

    # a volume another VM uses: 409 naming it; nothing deleted (not even "data")
    img = tmp_path / "host.raw"
    img.write_bytes(b"\0" * (1 << 20))
    api.create({"name": "a", "boot": fake_boot,
                "disks": [{"volume": "default/data"}, {"path": str(img), "format": "raw"},
                          {"volume": "default/shared", "readonly": True}]})
    api.create({"name": "b", "boot": fake_boot,
                "disks": [{"volume": "default/shared", "readonly": True}]})
    r = api.delete("/api/v1/vms/a?volumes=true")
    assert r.status == 409 and "default/shared" in r.error["message"] and \
        "vm b" in r.error["message"], r
    assert api.get("/api/v1/vms/a").status == 200 and "data" in vols(api)
    p = khlib.cli(daemon, "vm", "delete", "a", "--with-volumes")
    assert p.returncode == 5 and "vm b" in p.stderr, p
    # once b is gone: a's volumes go, its host file (a path) never does
    assert api.delete("/api/v1/vms/b").status == 204
    assert api.delete("/api/v1/vms/a?volumes=true").status == 204
    assert vols(api) == [] and img.exists()
    # without ?volumes the volumes stay, as before
    assert api.post("/api/v1/pools/default/volumes", {"name": "keep", "size": "1M"}).status == 201
    api.create({"name": "k", "boot": fake_boot, "disks": [{"volume": "default/keep"}]})
    assert api.delete("/api/v1/vms/k").status == 204
    assert vols(api) == ["keep"]


# ---------------------------------------------------------------- item 11

QIMG = "/usr/bin/qemu-img"
DEBUGFS = "/sbin/debugfs" if os.path.exists("/sbin/debugfs") else "/usr/sbin/debugfs"
MACHINE_ID = "0123456789abcdef0123456789abcdef\n"


def guest_root(tmp_path, name):
    """An ext4 image (raw) holding a guest's identity files."""
    root = tmp_path / (name + "-root")
    (root / "etc" / "ssh").mkdir(parents=True)
    (root / "var" / "lib" / "dbus").mkdir(parents=True)
    (root / "etc" / "machine-id").write_text(MACHINE_ID)
    (root / "var" / "lib" / "dbus" / "machine-id").write_text(MACHINE_ID)
    (root / "etc" / "os-release").write_text("ID=test\n")
    (root / "etc" / "ssh" / "sshd_config").write_text("Port 22\n")
    for kind in ("rsa", "ecdsa", "ed25519"):
        (root / "etc" / "ssh" / ("ssh_host_%s_key" % kind)).write_text("PRIVATE " + kind)
        (root / "etc" / "ssh" / ("ssh_host_%s_key.pub" % kind)).write_text("PUBLIC " + kind)
    img = tmp_path / (name + ".ext4")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(img), "16M"], check=True)
    return img


def ls(img, path):
    """{name: size} of a directory in an ext4 image (debugfs ls -p)."""
    p = subprocess.run([DEBUGFS, "-R", "ls -p " + path, str(img)], capture_output=True,
                       text=True, check=True)
    out = {}
    for line in p.stdout.splitlines():
        f = line.split("/")
        if len(f) >= 7 and f[5] not in (".", ".."):
            out[f[5]] = f[6]
    return out


def volume_file(daemon, name):
    pool = daemon.api.get("/api/v1/pools/default").json["path"]
    vid = daemon.api.get("/api/v1/pools/default/volumes/" + name).json["id"]
    return os.path.join(pool, vid)


def test_template_reset_identity(daemon, fake_boot, tmp_path):
    api = daemon.api
    # a qcow2 volume whose whole disk is the filesystem
    raw = guest_root(tmp_path, "a")
    q = tmp_path / "a.qcow2"
    subprocess.run([QIMG, "convert", "-f", "raw", "-O", "qcow2", str(raw), str(q)], check=True)
    assert api.post("/api/v1/pools/default/volumes",
                    {"name": "osa", "format": "qcow2", "import": str(q)}).status == 201
    # a raw volume with an MBR partition table, the filesystem in partition 1
    fs = guest_root(tmp_path, "b").read_bytes()
    mbr = bytearray(512)
    mbr[446:462] = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + \
        (len(fs) // 512).to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    part = tmp_path / "b.raw"
    part.write_bytes(bytes(mbr) + b"\0" * (2048 * 512 - 512) + fs)
    assert api.post("/api/v1/pools/default/volumes",
                    {"name": "osb", "format": "raw", "import": str(part)}).status == 201
    assert api.post("/api/v1/pools/default/volumes", {"name": "blank", "size": "8M"}).status == 201

    # nothing to reset (a blank disk): 400, the VM stays an ordinary VM
    api.create({"name": "empty", "boot": fake_boot, "disks": [{"volume": "default/blank"}]})
    r = api.post("/api/v1/vms/empty/template", {"reset_identity": True})
    assert r.status == 400 and "ext2/3/4" in r.error["message"], r
    assert api.vm("empty")["template"] is False
    assert api.get("/api/v1/pools/default/volumes/blank").json["readonly"] is False
    assert api.post("/api/v1/vms/empty/template", {"reset_identity": "yes"}).status == 400

    # whole-disk qcow2 through the API (and the blank data disk is skipped)
    api.create({"name": "ta", "boot": fake_boot,
                "disks": [{"volume": "default/osa"}, {"volume": "default/blank"}]})
    api.delete("/api/v1/vms/empty")
    t0 = time.monotonic()
    r = api.post("/api/v1/vms/ta/template", {"reset_identity": True})
    took = time.monotonic() - t0
    assert r.status == 200 and r.json["template"] is True, r
    print("identity reset (qcow2, whole disk): %.2f s" % took)
    flat = tmp_path / "a-after.raw"
    subprocess.run([QIMG, "convert", "-O", "raw", volume_file(daemon, "osa"), str(flat)],
                   check=True)
    etc = ls(flat, "/etc")
    assert etc["machine-id"] == "0", etc
    assert "machine-id" not in ls(flat, "/var/lib/dbus")
    assert sorted(ls(flat, "/etc/ssh")) == ["sshd_config"]
    assert etc["os-release"] == "8"  # the rest is untouched
    p = subprocess.run(["e2fsck", "-fn", str(flat)], capture_output=True, text=True)
    assert p.returncode == 0, p
    # a clone starts from the reset image
    assert api.post("/api/v1/vms", {"name": "ca", "from_template": "ta"}).status == 201

    # a partitioned raw volume, from the CLI
    api.create({"name": "tb", "boot": fake_boot, "disks": [{"volume": "default/osb"}]})
    p = khlib.cli(daemon, "template", "create", "tb", "--reset-identity")
    assert p.returncode == 0, p
    with open(volume_file(daemon, "osb"), "rb") as f:
        f.seek(2048 * 512)
        (tmp_path / "b-after.ext4").write_bytes(f.read())
    flat = tmp_path / "b-after.ext4"
    assert ls(flat, "/etc")["machine-id"] == "0"
    assert sorted(ls(flat, "/etc/ssh")) == ["sshd_config"]

    # without the option the image is left as it is
    assert api.post("/api/v1/pools/default/volumes",
                    {"name": "osc", "format": "raw", "import": str(raw)}).status == 201
    api.create({"name": "tc", "boot": fake_boot, "disks": [{"volume": "default/osc"}]})
    assert api.post("/api/v1/vms/tc/template", {}).status == 200
    assert ls(volume_file(daemon, "osc"), "/etc")["machine-id"] == str(len(MACHINE_ID))
