"""Import and export of VMs: an OVA made here (or exported by kvmhost)
imports and boots; hostile OVAs are refused with 400 and leave no file in
the pool; a libvirt domain XML imports."""

import hashlib
import io
import json
import os
import random
import re
import shutil
import socket
import subprocess
import tarfile
import time

import pytest

import khlib
from storagelib import QIMG


def ovf_text(name="ovaguest", disks=(("disk1.vmdk", 16 << 20, None),), vcpus=1, mem=256,
             efi=False, mac=None, extra=""):
    refs = "".join('<File ovf:href="%s" ovf:id="file%d"%s/>' % (
        href, i, (' ovf:size="%d"' % size) if size is not None else "")
        for i, (href, cap, size) in enumerate(disks))
    dsec = "".join('<Disk ovf:capacity="%d" ovf:capacityAllocationUnits="byte" '
                   'ovf:diskId="vmdisk%d" ovf:fileRef="file%d"/>' % (cap, i, i)
                   for i, (href, cap, size) in enumerate(disks))
    items = "".join('<Item><rasd:ElementName>disk</rasd:ElementName><rasd:HostResource>'
                    'ovf:/disk/vmdisk%d</rasd:HostResource><rasd:InstanceID>%d</rasd:InstanceID>'
                    '<rasd:ResourceType>17</rasd:ResourceType></Item>' % (i, 10 + i)
                    for i in range(len(disks)))
    nic = ('<Item><rasd:Address>%s</rasd:Address><rasd:ElementName>eth0</rasd:ElementName>'
           '<rasd:InstanceID>30</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType>'
           '</Item>' % mac) if mac else ""
    fw = ('<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>'
          if efi else "")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" '
            'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" '
            'xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/'
            'CIM_ResourceAllocationSettingData" '
            'xmlns:vmw="http://www.vmware.com/schema/ovf">'
            '<References>%s</References><DiskSection><Info>d</Info>%s</DiskSection>'
            '<VirtualSystem ovf:id="%s"><Info>v</Info><Name>%s</Name>'
            '<VirtualHardwareSection><Info>h</Info>'
            '<Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>'
            '<rasd:ElementName>cpu</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID>'
            '<rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>%d'
            '</rasd:VirtualQuantity></Item>'
            '<Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>'
            '<rasd:ElementName>mem</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID>'
            '<rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>%d'
            '</rasd:VirtualQuantity></Item>'
            '<Item><rasd:ElementName>sound</rasd:ElementName><rasd:InstanceID>3'
            '</rasd:InstanceID><rasd:ResourceType>35</rasd:ResourceType></Item>'
            '%s%s%s%s</VirtualHardwareSection></VirtualSystem></Envelope>\n'
            % (refs, dsec, name, name, vcpus, mem, items, nic, fw, extra)).encode()


def add(tar, name, data, **kw):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    for k, v in kw.items():
        setattr(ti, k, v)
    tar.addfile(ti, io.BytesIO(data))


def make_ova(entries, manifest=True, bad_digest=None):
    """entries: [(name, bytes)]; the first is the .ovf. A SHA256 .mf second."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        add(t, entries[0][0], entries[0][1])
        if manifest:
            mf = "".join("SHA256(%s)= %s\n" % (n, hashlib.sha256(d).hexdigest()
                                               if n != bad_digest else "0" * 64)
                         for n, d in entries)
            add(t, entries[0][0][:-4] + ".mf", mf.encode())
        for n, d in entries[1:]:
            add(t, n, d)
    return buf.getvalue()


@pytest.fixture(scope="module")
def vmdk(tmp_path_factory):
    """The test guest's disk as a streamOptimized VMDK."""
    guest = khlib.Guest(*khlib.guest_paths())
    out = tmp_path_factory.mktemp("ova") / "disk1.vmdk"
    subprocess.run([QIMG, "convert", "-q", "-f", "raw", "-O", "vmdk", "-o",
                    "subformat=streamOptimized", guest.disk, str(out)], check=True)
    return out.read_bytes()


def pool_files(daemon):
    return sorted(os.listdir(os.path.join(daemon.state_dir, "pools", "default")))


def put_ova(api, data, query="name=imp"):
    return api.request("PUT", "/api/v1/vms/import?wait=120&" + query, raw=data,
                       headers={"Content-Type": "application/octet-stream"}, timeout=180)


def test_hostile_ovas_refused(mdaemon, vmdk, tmp_path):
    """Each hostile archive is 400 with a clear message; nothing is left in
    the pool and no VM is made."""
    api = mdaemon.api
    before = pool_files(mdaemon)
    ovf = ovf_text()
    cases = {}
    # a symlink entry
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        add(t, "x.ovf", ovf)
        add(t, "disk1.vmdk", b"", type=tarfile.SYMTYPE, linkname="/etc/shadow")
    cases["link"] = buf.getvalue()
    # a hard link
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        add(t, "x.ovf", ovf)
        add(t, "disk1.vmdk", b"", type=tarfile.LNKTYPE, linkname="x.ovf")
    cases["link "] = buf.getvalue()
    cases["plain file names"] = make_ova([("x.ovf", ovf), ("../disk1.vmdk", vmdk)])
    cases["plain file names "] = make_ova([("x.ovf", ovf), ("/tmp/disk1.vmdk", vmdk)])
    cases["does not match"] = make_ova([("x.ovf", ovf), ("disk1.vmdk", vmdk)],
                                       bad_digest="disk1.vmdk")
    cases["not in the OVF"] = make_ova([("x.ovf", ovf), ("disk1.vmdk", vmdk),
                                        ("extra.bin", b"x")])
    cases["appears twice"] = make_ova([("x.ovf", ovf), ("disk1.vmdk", vmdk),
                                       ("disk1.vmdk", vmdk)], manifest=False)
    small = ovf_text(disks=(("disk1.vmdk", 16 << 20, 1024),))
    cases["declares"] = make_ova([("x.ovf", small), ("disk1.vmdk", vmdk)])
    cases["not an OVA"] = b"this is not a tar archive at all\n" * 64
    cases["first entry"] = make_ova([("disk1.vmdk", vmdk)], manifest=False)
    # a VMDK with a backing file
    subprocess.run([QIMG, "create", "-q", "-f", "vmdk", str(tmp_path / "base.vmdk"), "16M"],
                   check=True)
    subprocess.run([QIMG, "create", "-q", "-f", "vmdk", "-b", str(tmp_path / "base.vmdk"),
                    "-F", "vmdk", str(tmp_path / "child.vmdk")], check=True)
    cases["backing file"] = make_ova([("x.ovf", ovf),
                                      ("disk1.vmdk", (tmp_path / "child.vmdk").read_bytes())])
    # a flat VMDK descriptor whose extent is a host file
    desc = ('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
            'createType="monolithicFlat"\nRW 8 FLAT "/etc/passwd" 0\n').encode()
    # read in place (whole sectors) and copied out (not): refused either way
    cases["data is not inside"] = make_ova([("x.ovf", ovf),
                                            ("disk1.vmdk", desc.ljust(512, b"\n"))])
    cases["data is not inside "] = make_ova([("x.ovf", ovf), ("disk1.vmdk", desc)])
    # device nodes and folders, named like the disk
    for i, kind in enumerate((tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE,
                              tarfile.DIRTYPE)):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
            add(t, "x.ovf", ovf)
            add(t, "disk1.vmdk", b"", type=kind, devmajor=1, devminor=3)
        cases["not a regular file" + " " * i] = buf.getvalue()
    # a pax header that renames the entry out of the folder
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        add(t, "x.ovf", ovf)
        add(t, "disk1.vmdk", vmdk, pax_headers={"path": "../../disk1.vmdk"})
    cases["plain file names  "] = buf.getvalue()
    # a huge declared size (the data is not there): refused before a byte
    head = tarfile.TarInfo("x.ovf")
    head.size = len(ovf)
    huge = tarfile.TarInfo("disk1.vmdk")
    huge.size = 1 << 50
    padded = ovf + b"\0" * (-len(ovf) % 512)
    cases["larger than pool"] = (head.tobuf(tarfile.GNU_FORMAT) + padded +
                                 huge.tobuf(tarfile.GNU_FORMAT) + vmdk[:4096])
    # a sparse entry (PAX 0.1: a small map, a large file): refused, any size
    for size, want in ((16 << 20, "sparse"), (1 << 50, "sparse ")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            add(t, "x.ovf", ovf)
            add(t, "disk1.vmdk", b"\0" * 512, pax_headers={
                "GNU.sparse.numblocks": "1", "GNU.sparse.size": str(size),
                "GNU.sparse.map": "0,512"})
        cases[want] = buf.getvalue()
    # the OVF: a disk referenced twice, files outside the archive
    twice = ovf.replace(b'<Disk ovf:capacity="16777216" ovf:capacityAllocationUnits="byte" '
                        b'ovf:diskId="vmdisk0" ovf:fileRef="file0"/>',
                        b'<Disk ovf:capacity="16777216" ovf:diskId="vmdisk0" '
                        b'ovf:fileRef="file0"/><Disk ovf:capacity="16777216" '
                        b'ovf:diskId="vmdisk1" ovf:fileRef="file0"/>')
    assert twice != ovf
    cases["another disk's"] = make_ova([("x.ovf", twice), ("disk1.vmdk", vmdk)])
    for i, href in enumerate(("../disk1.vmdk", "/etc/passwd", "http://example.org/d.vmdk",
                              "file:///etc/shadow", ".hidden")):
        outside = ovf_text(disks=((href, 16 << 20, None),))
        cases["only plain names" + " " * i] = make_ova([("x.ovf", outside), ("disk1.vmdk", vmdk)],
                                                       manifest=False)
    cases["listed twice"] = make_ova([("x.ovf", ovf_text(disks=(("disk1.vmdk", 16 << 20, None),
                                                                ("disk1.vmdk", 16 << 20, None)))),
                                      ("disk1.vmdk", vmdk)], manifest=False)
    cases["missing from the archive"] = make_ova([("x.ovf", ovf)])
    # a manifest that names a file the archive lacks, or misses one
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        add(t, "x.ovf", ovf)
        add(t, "x.mf", ("SHA256(x.ovf)= %s\nSHA256(disk1.vmdk)= %s\nSHA256(y.vmdk)= %s\n" % (
            hashlib.sha256(ovf).hexdigest(), hashlib.sha256(vmdk).hexdigest(),
            "0" * 64)).encode())
        add(t, "disk1.vmdk", vmdk)
    cases["not in the archive"] = buf.getvalue()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        add(t, "x.ovf", ovf)
        add(t, "x.mf", ("SHA256(x.ovf)= %s\n" % hashlib.sha256(ovf).hexdigest()).encode())
        add(t, "disk1.vmdk", vmdk)
    cases["does not list every file"] = buf.getvalue()
    # a digest that differs, the disk read in place (whole sectors) or copied
    # out (not): the volume converted is removed either way
    cases["does not match "] = make_ova([("x.ovf", ovf), ("disk1.vmdk", vmdk + b"\0" * 100)],
                                        bad_digest="disk1.vmdk")
    for want, data in cases.items():
        r = put_ova(api, data)
        assert r.status == (413 if want.startswith("larger") else 400), (want, r)
        assert want.strip() in r.error["message"], (want, r.error)
        assert pool_files(mdaemon) == before, want
    assert "imp" not in api.vm_names()
    # the CLI says why, with exit status 2 (bad input)
    bad = tmp_path / "bad.ova"
    bad.write_bytes(cases["link"])
    p = khlib.cli(mdaemon, "vm", "import", str(bad), "--name", "imp")
    assert p.returncode == 2 and "links are refused" in p.stderr, (p.returncode, p.stderr)
    assert pool_files(mdaemon) == before


def test_ova_vmdk_bomb_refused(mdaemon, tmp_path):
    """A small VMDK that expands to more than its pool has free (compressed
    grains of one repeated byte) is refused with 413 before the copy, on
    both import paths; the pool (a 24 MiB tmpfs) is left as it was."""
    api = mdaemon.api
    raw = tmp_path / "ones.raw"
    with open(raw, "wb") as f:
        for _ in range(64):
            f.write(b"\x01" * (1 << 20))
    bomb = tmp_path / "bomb.vmdk"
    subprocess.run([QIMG, "convert", "-q", "-f", "raw", "-O", "vmdk", "-o",
                    "subformat=streamOptimized", str(raw), str(bomb)], check=True)
    data = bomb.read_bytes()
    assert len(data) < 4 << 20, len(data)
    ovf = ovf_text(name="bomb", disks=(("disk1.vmdk", 64 << 20, None),))
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24M", "tmpfs", str(small)], check=True)
    try:
        assert api.post("/api/v1/pools", {"name": "small", "path": str(small)}).status == 201
        before = sorted(os.listdir(small))
        for plain in (True, False):  # read in place; copied out (not whole sectors)
            disk = data if plain else data + b"\0" * 7
            r = put_ova(api, make_ova([("b.ovf", ovf), ("disk1.vmdk", disk)]),
                        query="name=bomb&pool=small")
            assert r.status == 413 and "bytes of data" in r.error["message"], r
            assert sorted(os.listdir(small)) == before
        assert "bomb" not in api.vm_names()
        assert api.delete("/api/v1/pools/small").status == 204
    finally:
        subprocess.run(["umount", str(small)])


def test_ova_disk_in_place_or_copied(mdaemon, vmdk, tmp_path):
    """A disk stored as plain ustar data is converted where it lies in the
    archive (hashed beside the conversion); one behind a pax header is
    copied out first. Both give the VMDK's exact contents, leave no .part,
    and a digest that differs removes the converted volume."""
    api = mdaemon.api
    before = pool_files(mdaemon)
    ovf = ovf_text(name="placed")
    plain = make_ova([("p.ovf", ovf), ("disk1.vmdk", vmdk)])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        add(t, "p.ovf", ovf)
        add(t, "p.mf", ("SHA1(p.ovf)= %s\nSHA1(disk1.vmdk)= %s\n" % (
            hashlib.sha1(ovf).hexdigest(), hashlib.sha1(vmdk).hexdigest())).encode())
        add(t, "disk1.vmdk", vmdk, pax_headers={"comment": "a pax header first"})
    pax = buf.getvalue()
    raw = tmp_path / "want.raw"
    (tmp_path / "d.vmdk").write_bytes(vmdk)
    subprocess.run([QIMG, "convert", "-q", "-f", "vmdk", "-O", "raw", str(tmp_path / "d.vmdk"),
                    str(raw)], check=True)
    for name, data in (("placed-plain", plain), ("placed-pax", pax)):
        path = tmp_path / (name + ".ova")
        path.write_bytes(data)
        r = api.post("/api/v1/vms/import", {"path": str(path), "name": name, "wait": 120},
                     timeout=180)
        assert r.status == 200 and r.json["state"] == "succeeded", (name, r)
        vol = api.get("/api/v1/pools/default/volumes/%s-disk" % name).json
        f = os.path.join(mdaemon.state_dir, "pools", "default", vol["id"])
        p = subprocess.run([QIMG, "compare", "-q", "-f", "qcow2", "-F", "raw", f, str(raw)])
        assert p.returncode == 0, name
        assert not [x for x in pool_files(mdaemon) if x.endswith(".part")], name
    log = mdaemon.log()
    assert "vm=placed-plain disk=0 source=archive" in log, log[-2000:]
    assert "vm=placed-pax disk=0 source=copy" in log, log[-2000:]
    # SHA-1 digests, the disk in place, one that differs: no VM, no volume
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        add(t, "p.ovf", ovf)
        add(t, "p.mf", ("SHA1(p.ovf)= %s\nSHA1(disk1.vmdk)= %s\n" % (
            hashlib.sha1(ovf).hexdigest(), "0" * 40)).encode())
        add(t, "disk1.vmdk", vmdk)
    path = tmp_path / "bad.ova"
    path.write_bytes(buf.getvalue())
    r = api.post("/api/v1/vms/import", {"path": str(path), "name": "placed-bad", "wait": 120},
                 timeout=180)
    assert r.status == 400 and "does not match its SHA1" in r.error["message"], r
    assert "placed-bad" not in api.vm_names()
    assert api.get("/api/v1/pools/default/volumes/placed-bad-disk").status == 404
    for name in ("placed-plain", "placed-pax"):
        assert api.delete("/api/v1/vms/%s?volumes=true" % name).status == 204
    assert pool_files(mdaemon) == before


def test_firmware_and_tpm_round_trip(mdaemon, vmdk, tmp_path):
    """UEFI, Secure Boot and a TPM come in from an OVA (VMware's way of
    saying them), go out in an export the same way and come back; a libvirt
    domain with <os firmware='efi'>, the secure-boot feature, <tpm> and
    <nvram> gives the same VM (an <nvram> file that does not exist yet is
    a fresh store, as libvirt makes one: a warning)."""
    api = mdaemon.api
    vtpm = ('<Item ovf:required="false"><rasd:ElementName>Virtual TPM</rasd:ElementName>'
            '<rasd:InstanceID>40</rasd:InstanceID><rasd:ResourceSubType>vmware.vtpm'
            '</rasd:ResourceSubType><rasd:ResourceType>1</rasd:ResourceType></Item>'
            '<vmw:Config ovf:required="false" vmw:key="bootOptions.efiSecureBootEnabled" '
            'vmw:value="true"/>')
    # a label cut inside a UTF-8 character still gives its warning
    odd = ('<Item><rasd:ElementName>%s</rasd:ElementName><rasd:InstanceID>41'
           '</rasd:InstanceID><rasd:ResourceType>35</rasd:ResourceType></Item>' % ("é" * 150))
    ovf = ovf_text(name="fw", efi=True, extra=vtpm + odd)
    r = put_ova(api, make_ova([("fw.ovf", ovf), ("disk1.vmdk", vmdk)]), query="")
    assert r.status == 200 and r.json["state"] == "succeeded", r
    vm = r.json["result"]["vm"]
    assert vm["firmware"] == "uefi" and vm["secure_boot"] is True and vm["tpm"] is True, vm
    assert not any("TPM" in w for w in r.json["result"]["warnings"]), r.json
    assert any(w.startswith("hardware éé") for w in r.json["result"]["warnings"]), r.json
    r = api.get("/api/v1/vms/fw/export", timeout=180)
    assert r.status == 200, r
    with tarfile.open(fileobj=io.BytesIO(r.data)) as t:
        out = t.extractfile("fw.ovf").read().decode()
    for want in ('vmw:key="firmware" vmw:value="efi"',
                 'vmw:key="bootOptions.efiSecureBootEnabled" vmw:value="true"',
                 "<rasd:ResourceSubType>vmware.vtpm</rasd:ResourceSubType>"):
        assert want in out, (want, out)
    r = put_ova(api, r.data, query="name=fw-back")
    assert r.status == 200 and r.json["state"] == "succeeded", r
    back = r.json["result"]["vm"]
    assert back["firmware"] == "uefi" and back["secure_boot"] is True and back["tpm"] is True
    # BIOS, no TPM: none of it is written, none comes back
    assert api.patch("/api/v1/vms/fw-back", {"firmware": "bios", "secure_boot": False,
                                             "tpm": False}).status == 200
    r = api.get("/api/v1/vms/fw-back/export", timeout=180)
    with tarfile.open(fileobj=io.BytesIO(r.data)) as t:
        out = t.extractfile("fw-back.ovf").read().decode()
    assert "efi" not in out and "vtpm" not in out, out
    disk = tmp_path / "fw.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    xml = ("<domain type='kvm'><name>lvfw</name><memory unit='MiB'>256</memory>"
           "<vcpu>1</vcpu><os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type>"
           "<firmware><feature enabled='yes' name='secure-boot'/>"
           "<feature enabled='yes' name='enrolled-keys'/></firmware>"
           "<nvram template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>%s</nvram></os>"
           "<devices><disk type='file' device='disk'>"
           "<driver name='qemu' type='raw'/><source file='%s'/><target dev='vda'/></disk>"
           "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>"
           "</devices></domain>" % (tmp_path / "lvfw_VARS.fd", disk))
    r = api.request("POST", "/api/v1/vms/import-libvirt", raw=xml.encode(),
                    headers={"Content-Type": "application/xml"})
    assert r.status == 201, r
    vm = r.json["vm"]
    assert vm["firmware"] == "uefi" and vm["secure_boot"] is True and vm["tpm"] is True, vm
    assert any("lvfw_VARS.fd does not exist: the VM gets a fresh UEFI variable store" in w
               for w in r.json["warnings"]), r.json["warnings"]
    assert not os.path.exists(os.path.join(mdaemon.state_dir, "vms", vm["id"],
                                           "uefi-vars-sb.fd"))
    for name in ("fw", "fw-back"):
        assert api.delete("/api/v1/vms/%s?volumes=true" % name).status == 204
    assert api.delete("/api/v1/vms/lvfw").status == 204


def test_libvirt_cpu_imported(mdaemon, tmp_path):
    """<cpu>: a custom model and its required/disabled features become
    cpu_model; maximum is max; host-passthrough/host-model keep kvmhost's
    default; topology, optional features and odd names are warned about."""
    api = mdaemon.api
    disk = tmp_path / "cpu.raw"
    disk.write_bytes(b"\0" * (1 << 20))

    def imp(name, cpu):
        xml = ("<domain type='kvm'><name>%s</name><memory unit='MiB'>128</memory>"
               "<vcpu>2</vcpu>%s<os><type arch='x86_64' machine='q35'>hvm</type></os>"
               "<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>"
               "<source file='%s'/><target dev='vda'/></disk></devices></domain>"
               % (name, cpu, disk))
        r = api.request("POST", "/api/v1/vms/import-libvirt", raw=xml.encode(),
                        headers={"Content-Type": "application/xml"})
        assert r.status == 201, r
        return r.json["vm"], r.json["warnings"]

    vm, w = imp("cpu-custom", "<cpu mode='custom' match='exact' check='partial'>"
                "<model fallback='forbid'>Skylake-Client-IBRS</model><vendor>Intel</vendor>"
                "<topology sockets='1' dies='1' cores='2' threads='1'/>"
                "<feature policy='require' name='ssbd'/><feature policy='disable' name='hle'/>"
                "<feature policy='optional' name='pcid'/></cpu>")
    assert vm["cpu_model"] == "Skylake-Client-IBRS,+ssbd,-hle", vm
    assert any("cpu/topology" in x for x in w) and any("pcid" in x for x in w), w
    vm, w = imp("cpu-max", "<cpu mode='maximum' check='none'/>")
    assert vm["cpu_model"] == "max", vm
    vm, w = imp("cpu-host", "<cpu mode='host-passthrough' check='none' migratable='on'/>")
    assert "cpu_model" not in vm and any("host-passthrough" in x for x in w), (vm, w)
    vm, w = imp("cpu-odd", "<cpu mode='custom'><model>bad model -m 1</model></cpu>")
    assert "cpu_model" not in vm and any("is not imported" in x and "bad model" in x
                                         for x in w), (vm, w)
    for n in ("cpu-custom", "cpu-max", "cpu-host", "cpu-odd"):
        assert api.delete("/api/v1/vms/" + n).status == 204


def nvram_domain(name, disk, nvram, secure=True, new_form=False):
    fw = ("<firmware><feature enabled='yes' name='secure-boot'/>"
          "<feature enabled='yes' name='enrolled-keys'/></firmware>") if secure else ""
    nv = ("<nvram type='file' template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>"
          "<source file='%s'/></nvram>" % nvram) if new_form else \
        "<nvram template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>%s</nvram>" % nvram
    return ("<domain type='kvm'><name>%s</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>"
            "<os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type>%s%s</os>"
            "<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            "<source file='%s'/><target dev='vda'/></disk></devices></domain>"
            % (name, fw, nv, disk)).encode()


def test_libvirt_nvram_imported(mdaemon, tmp_path):
    """<os><nvram>: the file's bytes become the new VM's UEFI variable store
    (its VARS file, what QEMU gets as pflash1), in both of libvirt's forms;
    a store that does not fit the firmware (size, not a firmware volume) or
    is not a regular file (symlink, FIFO, directory) is refused with 400, a
    path outside the allowed host paths with 403, and nothing is made."""
    api = mdaemon.api
    disk = tmp_path / "nv.raw"
    disk.write_bytes(b"\0" * (1 << 20))

    def post(xml, query=""):
        return api.request("POST", "/api/v1/vms/import-libvirt" + query, raw=xml,
                           headers={"Content-Type": "application/xml"})

    def vars_of(vm, sb):
        path = os.path.join(mdaemon.state_dir, "vms", vm["id"],
                            "uefi-vars-sb.fd" if sb else "uefi-vars.fd")
        with open(path, "rb") as f:
            return f.read()

    # Secure Boot's template (Microsoft's keys enrolled) with a changed
    # region in the fault-tolerant-write spare area: still a valid store
    with open("/usr/share/OVMF/OVMF_VARS_4M.ms.fd", "rb") as f:
        ms = f.read()
    data = bytearray(ms)
    data[0x60000:0x60020] = b"kvmhost-nvram-import-test-bytes!"
    nv = tmp_path / "nv_VARS.fd"
    nv.write_bytes(bytes(data))
    r = post(nvram_domain("nv1", disk, nv))
    assert r.status == 201, r
    vm = r.json["vm"]
    assert vm["firmware"] == "uefi" and vm["secure_boot"] is True, vm
    assert not any("nvram" in w for w in r.json["warnings"]), r.json["warnings"]
    got = vars_of(vm, True)
    assert got == bytes(data) and got != ms
    # the newer form (<source file=.../>); a Secure Boot store given to a
    # VM without Secure Boot is a store of the same size and kind
    r = post(nvram_domain("nv2", disk, tmp_path / "nv_VARS.fd", secure=False, new_form=True))
    assert r.status == 201, r
    assert vars_of(r.json["vm"], False) == bytes(data)

    before = api.vm_names()
    small = tmp_path / "small_VARS.fd"  # OVMF's 2 MiB build: 128 KiB of variables
    shutil.copyfile("/usr/share/OVMF/OVMF_VARS.fd", small)
    junk = tmp_path / "junk_VARS.fd"
    junk.write_bytes(b"\x5a" * len(ms))
    link = tmp_path / "link_VARS.fd"
    os.symlink(nv, link)
    fifo = tmp_path / "fifo_VARS.fd"
    os.mkfifo(fifo)
    refused = [
        (small, 400, "is 131072 bytes; the VARS template of the firmware chosen"),
        (junk, 400, "is not a UEFI variable store"),
        (link, 400, "is a symbolic link, not a regular file"),
        (fifo, 400, "not a regular file"),
        (tmp_path, 400, "is a directory, not a regular file"),
        ("nv_VARS.fd", 400, "os/nvram must be an absolute path"),
        (str(tmp_path) + "/../x/nv_VARS.fd", 400, "must not contain '.' or '..'"),
        ("/etc/passwd", 403, "outside the directories allowed for host paths"),
        ("/var/lib/libvirt/qemu/nvram/x_VARS.fd", 403, "outside the directories allowed"),
    ]
    for path, status, msg in refused:
        r = post(nvram_domain("nvbad", disk, path))
        assert r.status == status and msg in r.error["message"], (path, r)
    assert api.vm_names() == before
    for name in ("nv1", "nv2"):
        assert api.delete("/api/v1/vms/%s" % name).status == 204


NV_INDEX = 0x01500016  # an NV index defined in the TPM state libvirt's swtpm leaves


def tpm_cmd(tag, cc, body):
    return tag.to_bytes(2, "big") + (10 + len(body)).to_bytes(4, "big") \
        + cc.to_bytes(4, "big") + body


def nv_read_public_cmd(index):
    """TPM2_NV_ReadPublic (TPM_ST_NO_SESSIONS) of index."""
    return tpm_cmd(0x8001, 0x169, index.to_bytes(4, "big"))


def libvirt_swtpm_state(d):
    """A TPM 2.0 state as libvirt's swtpm leaves it in its state dir d
    (plain tpm2-00.permall): swtpm started on it, an NV index defined with
    TPM2_NV_DefineSpace (owner auth, empty password session) through its
    server socket, then shut down through its control channel."""
    os.makedirs(d, exist_ok=True)
    srv, ctrl = os.path.join(d, "srv.sock"), os.path.join(d, "ctrl.sock")
    p = subprocess.Popen(["swtpm", "socket", "--tpm2", "--tpmstate", "dir=%s" % d,
                          "--server", "type=unixio,path=%s" % srv,
                          "--ctrl", "type=unixio,path=%s" % ctrl,
                          "--flags", "not-need-init,startup-clear"])
    try:
        deadline = time.time() + 10
        while not os.path.exists(srv) and time.time() < deadline:
            time.sleep(0.05)
        nv_public = (NV_INDEX.to_bytes(4, "big") + bytes.fromhex("000b")   # SHA-256 name
                     + (0x02020002).to_bytes(4, "big")  # OWNERWRITE | OWNERREAD | NO_DA
                     + b"\0\0" + (8).to_bytes(2, "big"))  # no policy, 8 bytes
        body = (bytes.fromhex("40000001") + (9).to_bytes(4, "big")   # TPM_RH_OWNER
                + bytes.fromhex("40000009") + b"\0" * 5             # TPM_RS_PW, empty
                + b"\0\0" + len(nv_public).to_bytes(2, "big") + nv_public)
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(10)
            c.connect(srv)
            c.sendall(tpm_cmd(0x8002, 0x12A, body))
            rsp = c.recv(4096)
        assert rsp[6:10] == b"\0\0\0\0", rsp.hex()  # TPM_RC_SUCCESS
        subprocess.run(["swtpm_ioctl", "--unix", ctrl, "-s"], check=True, timeout=10)
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    for sock in (srv, ctrl):
        if os.path.exists(sock):
            os.unlink(sock)
    return os.path.join(d, "tpm2-00.permall")


def tpm_domain(name, disk, backend):
    return ("<domain type='kvm'><name>%s</name><uuid>0b3b5a3e-6a1b-4a4c-9d55-6f1b0e6e2a10"
            "</uuid><memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type arch='x86_64' "
            "machine='q35'>hvm</type></os><devices><disk type='file' device='disk'>"
            "<driver name='qemu' type='raw'/><source file='%s'/><target dev='vda'/></disk>"
            "<tpm model='tpm-crb'>%s</tpm></devices></domain>" % (name, disk, backend)).encode()


def test_libvirt_tpm_state_imported(mdaemon, tmp_path):
    """libvirt's swtpm state (tpm2-00.permall in <backend><source type='dir'
    path=...>) becomes the VM's TPM state, in swtpm's format and encrypted
    with the VM's key (the slow boot test has the guest see its content);
    libvirt's default dir (/var/lib/libvirt/swtpm/UUID) outside the allowed
    host paths, an encrypted state and TPM 1.2 are warnings (a fresh TPM);
    a state that is no plain swtpm file or not a regular file is a 400."""
    api = mdaemon.api
    disk = tmp_path / "t.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    permall = libvirt_swtpm_state(str(tmp_path / "swtpm" / "tpm2"))
    with open(permall, "rb") as f:
        plain = f.read()
    assert plain[4:6] == b"\0\0", plain[:10].hex()  # swtpm's header: not encrypted

    def post(xml):
        return api.request("POST", "/api/v1/vms/import-libvirt", raw=xml,
                           headers={"Content-Type": "application/xml"})

    src = "<backend type='emulator' version='2.0'><source type='dir' path='%s'/></backend>"
    r = post(tpm_domain("tpm1", disk, src % (tmp_path / "swtpm" / "tpm2")))
    assert r.status == 201, r
    assert not any("tpm" in w for w in r.json["warnings"]), r.json["warnings"]
    got = os.path.join(mdaemon.state_dir, "vms", r.json["vm"]["id"], "tpm", "tpm2-00.permall")
    with open(got, "rb") as f:
        sealed = f.read()
    # swtpm's header: version 2, encrypted with a 256-bit key; none of the
    # plain state's bytes
    assert sealed[:6] == bytes.fromhex("0201000a0009") and plain[16:80] not in sealed

    before = api.vm_names()
    r = post(tpm_domain("tpm2", disk, "<backend type='emulator' version='2.0'/>"))
    assert r.status == 201, r
    assert any("/var/lib/libvirt/swtpm/0b3b5a3e-6a1b-4a4c-9d55-6f1b0e6e2a10/tpm2/"
               "tpm2-00.permall is outside the directories allowed" in w
               for w in r.json["warnings"]), r.json["warnings"]
    r = post(tpm_domain("tpm3", disk, "<backend type='emulator' version='2.0'><encryption "
                                      "secret='6dd3e4a5-1d76-44ce-961f-f119f5aad935'/>"
                                      "</backend>"))
    assert r.status == 201 and any("libvirt encrypted its state" in w
                                   for w in r.json["warnings"]), r
    r = post(tpm_domain("tpm4", disk, "<backend type='emulator' version='1.2'/>"))
    assert r.status == 201 and any("TPM 1.2 state is not imported" in w
                                   for w in r.json["warnings"]), r
    after = api.vm_names()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tpm2-00.permall").write_bytes(b"not a swtpm state file at all")
    enc = tmp_path / "enc"
    enc.mkdir()
    (enc / "tpm2-00.permall").write_bytes(plain[:4] + b"\0\x09" + plain[6:])
    link = tmp_path / "link"
    link.mkdir()
    os.symlink(permall, link / "tpm2-00.permall")
    dev = tmp_path / "dev"
    dev.mkdir()
    os.mkfifo(dev / "tpm2-00.permall")
    for d, msg in ((bad, "not a swtpm state file"), (enc, "the swtpm state is encrypted"),
                   (link, "is a symbolic link, not a regular file"),
                   (dev, "not a regular file")):
        r = post(tpm_domain("tpmbad", disk, src % d))
        assert r.status == 400 and msg in r.error["message"], (d, r)
    r = post(tpm_domain("tpmbad", disk, src % "/etc"))
    assert r.status == 403 and "outside the directories allowed" in r.error["message"], r
    assert api.vm_names() == after and set(after) - set(before) == {"tpm2", "tpm3", "tpm4"}
    for name in ("tpm1", "tpm2", "tpm3", "tpm4"):
        assert api.delete("/api/v1/vms/%s" % name).status == 204


@pytest.mark.slow
def test_ova_import_boots_and_exports(mdaemon, vmdk, guest, tmp_path):
    """An OVA (CPUs, memory, a disk, a NIC's MAC) imports into a qcow2 volume
    and a VM that boots; the same VM exported to an OVA imports back."""
    api = mdaemon.api
    ovf = ovf_text(name="ova guest", vcpus=2, mem=192)
    r = put_ova(api, make_ova([("g.ovf", ovf), ("disk1.vmdk", vmdk)]), query="")
    assert r.status == 200, r
    task = r.json
    assert task["state"] == "succeeded", task
    vm = task["result"]["vm"]
    assert vm["name"] == "ova-guest" and vm["vcpus"] == 2 and vm["memory_mib"] == 192, vm
    assert vm["disks"] == [{"volume": "default/ova-guest-disk", "readonly": False}] or \
        vm["disks"][0]["volume"] == "default/ova-guest-disk", vm
    warnings = task["result"]["warnings"]
    assert any("sound" in w for w in warnings), warnings
    vol = api.get("/api/v1/pools/default/volumes/ova-guest-disk").json
    assert vol["format"] == "qcow2" and vol["capacity"] == 16 << 20, vol
    assert not [f for f in pool_files(mdaemon) if f.endswith(".part")]
    # the test guest boots its kernel from the host; the disk is the OVA's
    boot = {"kernel": guest.kernel, "initrd": guest.initrd, "cmdline": khlib.GUEST_CMDLINE}
    assert api.patch("/api/v1/vms/ova-guest", {"boot": boot, "serial": True,
                                               "graphics": "none"}).status == 200
    api.act_ok("ova-guest", "start")
    api.wait_console("ova-guest", khlib.GUEST_DISK, timeout=150)
    assert api.get("/api/v1/vms/ova-guest/export").status == 409  # running
    api.act_ok("ova-guest", "kill")
    # export: the OVF first, then the manifest, then a streamOptimized VMDK
    r = api.get("/api/v1/vms/ova-guest/export", timeout=180)
    assert r.status == 200, r
    ova = tmp_path / "back.ova"
    ova.write_bytes(r.data)
    with tarfile.open(str(ova)) as t:
        names = t.getnames()
        assert names == ["ova-guest.ovf", "ova-guest.mf", "ova-guest-disk0.vmdk"], names
        t.extract("ova-guest-disk0.vmdk", str(tmp_path))
        mf = t.extractfile("ova-guest.mf").read().decode()
    assert "SHA256(ova-guest-disk0.vmdk)= " in mf, mf
    info = json.loads(subprocess.run([QIMG, "info", "--output=json", "-f", "vmdk",
                                      str(tmp_path / "ova-guest-disk0.vmdk")], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized", info
    assert info["virtual-size"] == 16 << 20, info
    assert not [f for f in pool_files(mdaemon) if f.endswith(".part")]
    # ... and imports back, from a host path this time, and boots
    r = api.post("/api/v1/vms/import", {"path": str(ova), "name": "ova-back", "wait": 120},
                 timeout=180)
    assert r.status == 200 and r.json["state"] == "succeeded", r
    back = r.json["result"]["vm"]
    assert back["vcpus"] == 2 and back["memory_mib"] == 192, back
    assert api.patch("/api/v1/vms/ova-back", {"boot": boot, "serial": True,
                                              "graphics": "none"}).status == 200
    api.act_ok("ova-back", "start")
    api.wait_console("ova-back", khlib.GUEST_DISK, timeout=150)
    api.act_ok("ova-back", "kill")
    # the CLI: export to a file (refused over an existing one), import it
    out = tmp_path / "cli.ova"
    p = khlib.cli(mdaemon, "vm", "export", "ova-back", str(out), timeout=180)
    assert p.returncode == 0 and tarfile.is_tarfile(str(out)), p.stderr
    p = khlib.cli(mdaemon, "vm", "export", "ova-back", str(out))
    assert p.returncode != 0 and "exists" in p.stderr, p.stderr
    p = khlib.cli(mdaemon, "vm", "import", str(out), "--name", "ova-cli", timeout=180)
    assert p.returncode == 0 and p.stdout.strip() == "ova-cli", (p.stdout, p.stderr)
    assert "default/ova-cli-disk" in json.dumps(api.vm("ova-cli")["disks"])
    # a name that is taken: 409, nothing made
    r = put_ova(api, make_ova([("g.ovf", ovf), ("disk1.vmdk", vmdk)]), query="")
    assert r.status == 409, r


DOMAIN_XML = """<domain type='kvm'>
  <name>lvguest</name>
  <uuid>0b4d9c3e-6f0a-4a57-9c1e-2f3a4b5c6d7e</uuid>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <vmport state='off'/>
  </features>
  <cpu mode='host-passthrough' check='none' migratable='on'/>
  <clock offset='utc'>
    <timer name='rtc' tickpolicy='catchup'/>
  </clock>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci' ports='15'/>
    <controller type='pci' index='0' model='pcie-root'/>
    {interface}
    <serial type='pty'>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <input type='mouse' bus='ps2'/>
    <memballoon model='virtio'/>
    <tpm model='tpm-crb'>
      <backend type='emulator' version='2.0'/>
    </tpm>
  </devices>
</domain>
"""


def virsh_dumpxml(xml, tmp_path):
    """The domain as libvirt itself writes it: defined in libvirt's test
    driver (in-process, no libvirtd) and read back with `virsh dumpxml`."""
    assert shutil.which("virsh"), "virsh is missing (scripts/install-deps.sh --test installs it)"
    src = tmp_path / "in.xml"
    src.write_text(xml)
    p = subprocess.run(["virsh", "-q", "-c", "test:///default",
                        "define %s; dumpxml lvguest" % src],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "<domain" in p.stdout, (p.stdout, p.stderr)
    return p.stdout[p.stdout.index("<domain"):]


@pytest.mark.slow
def test_libvirt_xml_imports_and_boots(mdaemon, guest, tmp_path):
    """A domain XML written by `virsh dumpxml`: memory, vCPUs, direct kernel
    boot, a raw file disk, serial, TPM (with the state libvirt's swtpm left:
    the guest finds the NV index defined in it) become the VM; what is not
    imported is listed in the warnings; a NIC on a network kvmhost lacks is
    a clear 400."""
    api = mdaemon.api
    disk = tmp_path / "lv.raw"
    khlib.copy_disk(guest.disk, str(disk))
    fields = dict(kernel=guest.kernel, initrd=guest.initrd, cmdline=khlib.GUEST_CMDLINE,
                  disk=str(disk))
    dumped = virsh_dumpxml(DOMAIN_XML.format(interface="", **fields), tmp_path)
    tpm_dir = tmp_path / "swtpm" / "tpm2"
    libvirt_swtpm_state(str(tpm_dir))
    # the state dir named in the XML (<source type='dir' path=...>, newer libvirt)
    dumped, n = re.subn(r"<backend type=.emulator. version=.2\.0.\s*/>",
                        "<backend type='emulator' version='2.0'><source type='dir' path='%s'/>"
                        "</backend>" % tpm_dir, dumped)
    assert n == 1, dumped
    nic = ("<interface type='network'><mac address='52:54:00:6b:3c:58'/>"
           "<source network='nosuchnet'/><model type='virtio'/></interface>")
    r = api.request("POST", "/api/v1/vms/import-libvirt",
                    raw=DOMAIN_XML.format(interface=nic, **fields).encode(),
                    headers={"Content-Type": "application/xml"})
    assert r.status == 400 and "nosuchnet is not a kvmhost network" in r.error["message"], r
    r = api.request("POST", "/api/v1/vms/import-libvirt", raw=b"<domain><name>x</name>",
                    headers={"Content-Type": "application/xml"})
    assert r.status == 400, r
    r = api.request("POST", "/api/v1/vms/import-libvirt?name=lv1", raw=dumped.encode(),
                    headers={"Content-Type": "application/xml"})
    assert r.status == 201, r
    vm, warnings = r.json["vm"], r.json["warnings"]
    assert vm["name"] == "lv1" and vm["vcpus"] == 2 and vm["memory_mib"] == 256, vm
    assert vm["tpm"] is True and vm["serial"] is True, vm
    assert vm["disks"][0]["path"] == str(disk) and vm["disks"][0]["format"] == "raw", vm
    assert vm["boot"]["kernel"] == guest.kernel, vm
    for w in ("vmport", "cpu mode host-passthrough", "<clock>", "memballoon", "controller", "input"):
        assert any(w in x for x in warnings), (w, warnings)
    xml = tmp_path / "lv.xml"
    xml.write_text(dumped)
    p = khlib.cli(mdaemon, "vm", "import-libvirt", str(xml), "--name", "lv2")
    assert p.returncode == 0 and p.stdout.strip() == "lv2", (p.stdout, p.stderr)
    assert "warning: " in p.stderr and "memballoon" in p.stderr, p.stderr
    api.act_ok("lv1", "start")
    api.wait_console("lv1", khlib.GUEST_DISK, timeout=150)
    # the TPM is the one libvirt's swtpm had: TPM2_NV_ReadPublic of the NV
    # index defined there answers TPM_RC_SUCCESS (a fresh TPM: TPM_RC_HANDLE)
    con = khlib.Console(mdaemon.socket, "lv1")
    try:
        con.run("echo kh-$((%d+1))", timeout=60)
        n = random.randint(10000, 999999)
        start = len(con.text())
        cmd = "".join("\\%03o" % b for b in nv_read_public_cmd(NV_INDEX))
        con.send("exec 3<>/dev/tpm0; printf '%s' >&3; echo rsp=$(dd bs=64 count=1 <&3 "
                 "2>/dev/null | od -An -tx1); exec 3>&-; echo kh-$((%d+1))\n" % (cmd, n))
        m = con.wait_for(r"kh-%d\b" % (n + 1), timeout=30, start=start)
        out = con.text()[start:m.start()]
        assert re.search(r"rsp=\s*80 01 00 00 00 [0-9a-f]{2} 00 00 00 00", out), out
    finally:
        con.close()
    api.act_ok("lv1", "kill")
