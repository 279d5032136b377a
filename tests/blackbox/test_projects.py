"""Projects beyond VMs and plain volumes (issue 12, round 2): the volumes a
clone makes, uploads, OVA and libvirt imports and backups belong to the
caller's project and count in its quotas; backups are seen per project.
Also: a SIGTERM while qemu-img jobs run ends them cleanly (no leak, no
partial file). No guest boots; VMs are created, never started."""

import http.client
import json
import os
import subprocess
import threading
import time

import pytest

import khlib


def _tcp_daemon(daemons, **kw):
    kw.setdefault("tls", False)
    port = khlib.free_port()
    d = daemons(listen="127.0.0.1:%d" % port, **kw)
    return d, port


def _api(port, token):
    return khlib.Api(host="127.0.0.1", port=port, token=token)


def _ok(r, *codes):
    assert r.status in (codes or (200, 201, 204)), r
    return r


def _user(root, name, project, role):
    _ok(root.post("/api/v1/users", {"name": name, "project": project}), 201)
    _ok(root.request("PUT", "/api/v1/acl",
                     {"path": "/projects/" + project, "subject": name, "role": role}))


def _token(root, user, acl):
    body = {"name": "cli", "acl": [{"path": p, "role": r} for p, r in acl]}
    return _ok(root.post("/api/v1/users/%s/tokens" % user, body), 201).json["secret"]


def _children(ppid, comm):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        fields = st[st.rindex(")") + 2:].split()
        if name == comm and int(fields[1]) == ppid:
            out.append(int(d))
    return out


@pytest.fixture
def teams(daemons, workdir):
    """Projects x and y; alice (Administrator of /projects/x only) and bob
    (of /projects/y only), each with a token holding their user's rights."""
    d, port = _tcp_daemon(daemons)
    root = d.api
    for p in ("x", "y"):
        _ok(root.post("/api/v1/projects", {"name": p}), 201)
    _user(root, "alice", "x", "Administrator")
    _user(root, "bob", "y", "Administrator")
    a = _api(port, _token(root, "alice", [("/", "Administrator")]))
    b = _api(port, _token(root, "bob", [("/", "Administrator")]))
    return d, port, root, a, b


# ---- 5: a SIGTERM while qemu-img runs ----

def test_sigterm_during_qemu_img_leaves_nothing(daemons):
    """Three 3 GiB preallocated creates (two run, one waits in line on a
    2-CPU host), then SIGTERM: the daemon exits 0 without a sanitizer
    report (the operations were freed), its qemu-img children are gone,
    no .part file is left, and the next start lists no volume."""
    d = daemons()
    ncpu = os.cpu_count() or 1

    def create(i):
        try:
            khlib.Api(d.socket).post("/api/v1/pools/default/volumes",
                                     {"name": "big%d" % i, "size": "3G", "preallocate": True},
                                     timeout=30)
        except Exception:  # noqa: BLE001 - the daemon goes away meanwhile
            pass

    threads = [threading.Thread(target=create, args=(i,), daemon=True)
               for i in range(ncpu + 1)]
    for t in threads:
        t.start()
    pool = os.path.join(d.state_dir, "pools", "default")
    deadline = time.time() + 15
    kids = []
    while time.time() < deadline and (len(kids) < min(ncpu, 2) or
                                      not any(f.endswith(".part") for f in os.listdir(pool))):
        kids = _children(d.pid, "qemu-img")
        time.sleep(0.01)
    assert kids, "no qemu-img started"
    assert any(f.endswith(".part") for f in os.listdir(pool))
    assert d.stop() == 0
    for pid in kids:
        assert khlib.wait_pid_gone(pid, timeout=2), "qemu-img %d outlived the daemon" % pid
    assert khlib.sanitizer_report(d.log()) == ""
    assert os.listdir(pool) == [], os.listdir(pool)
    for t in threads:
        t.join(5)
    d.start()
    assert d.api.get("/api/v1/pools/default/volumes").json["volumes"] == []


# ---- 2: uploads count in the disk quota ----

def _put_chunked(port, token, path, chunks):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request("PUT", path, body=iter(chunks), encode_chunked=True,
                  headers={"Authorization": "Bearer " + token})
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        c.close()


def _pool_files(d, pool="default"):
    return sorted(os.listdir(os.path.join(d.state_dir, "pools", pool)))


def test_upload_counts_in_the_disk_quota(teams, tmp_path):
    d, port, root, a, b = teams
    _ok(root.request("PATCH", "/api/v1/projects/x", {"quota": {"disk_bytes": 3 << 20}}), 200)
    up = "/api/v1/pools/default/volumes/%s/data?format=%s"
    # announced over the quota: refused before a byte is written
    r = a.request("PUT", up % ("big", "raw"), raw=b"\0" * (4 << 20))
    assert r.status == 403 and "quota of project x" in r.error["message"], r
    assert "bytes of disk" in r.error["message"], r
    # within it: made, in alice's project (bob does not see it), and counted
    _ok(a.request("PUT", up % ("up1", "raw"), raw=b"\1" * (2 << 20)), 201)
    assert b.get("/api/v1/pools/default/volumes/up1").status == 404
    assert a.get("/api/v1/pools/default/volumes/up1").status == 200
    assert [v["name"] for v in b.get("/api/v1/pools/default/volumes").json["volumes"]] == []
    r = a.request("PUT", up % ("up2", "raw"), raw=b"\2" * (2 << 20))
    assert r.status == 403 and "(2097152 in use" in r.error["message"], r
    # streamed without a length: refused once the bytes pass the quota
    status, body = _put_chunked(port, a.token, up % ("up3", "raw"),
                                [b"\3" * (512 << 10) for _ in range(4)])
    assert status == 403 and "quota of project x" in body["error"]["message"], body
    # a small qcow2 whose virtual size is over the quota (security case 6)
    img = tmp_path / "claims.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "100M"], check=True)
    r = a.request("PUT", up % ("up4", "qcow2"), raw=img.read_bytes())
    assert r.status == 403 and "an image of 104857600 bytes" in r.error["message"], r
    # nothing half-made: one volume, its file, no .part
    vols = root.get("/api/v1/pools/default/volumes").json["volumes"]
    assert [v["name"] for v in vols] == ["up1"]
    assert _pool_files(d) == [vols[0]["id"]]
    # project y has no quota: the same upload is fine for bob
    _ok(b.request("PUT", up % ("upb", "raw"), raw=b"\4" * (4 << 20)), 201)


# ---- 1: the volumes a clone makes ----

def _wait_task(api, tid, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        t = api.get("/api/v1/tasks/" + tid)
        assert t.status == 200, t
        if t.json["state"] != "running":
            return t.json
        time.sleep(0.1)
    raise AssertionError("task %s did not finish" % tid)


def test_clone_volumes_belong_to_the_clone_project(teams, fake_boot):
    d, port, root, a, b = teams
    vols = "/api/v1/pools/default/volumes"
    _ok(a.post(vols, {"name": "tbase", "size": "1M"}), 201)
    _ok(a.post("/api/v1/vms", {"name": "tpl", "vcpus": 2, "memory_mib": 64, "boot": fake_boot,
                               "disks": [{"volume": "default/tbase"}]}), 201)
    _ok(a.post("/api/v1/vms/tpl/template", {}), 200)
    # a linked and a full clone: their new volumes are alice's (project x)
    r = _ok(a.post("/api/v1/vms", {"name": "c1", "from_template": "tpl"}), 201)
    assert r.json["disks"][0]["volume"] == "default/c1-disk0", r
    r = _ok(a.post("/api/v1/vms", {"name": "c2", "from_template": "tpl", "clone": "full"}), 202)
    assert _wait_task(root, r.json["id"])["state"] == "succeeded"
    for v in ("c1-disk0", "c2-disk0"):
        assert a.get(vols + "/" + v).status == 200, v
        assert b.get(vols + "/" + v).status == 404, v
    assert sorted(v["name"] for v in a.get(vols).json["volumes"]) == [
        "c1-disk0", "c2-disk0", "tbase"]
    assert b.get(vols).json["volumes"] == []
    # ... and count in its quota: 3 MiB in use (1 MiB each)
    before = _pool_files(d)
    _ok(root.request("PATCH", "/api/v1/projects/x", {"quota": {"disk_bytes": (7 << 20) // 2}}))
    for mode in ("linked", "full"):
        r = a.post("/api/v1/vms", {"name": "c3", "from_template": "tpl", "clone": mode})
        assert r.status == 403, r
        assert "bytes of disk (3145728 in use, 1048576 asked)" in r.error["message"], r
    # the template's size counts (2 vCPUs each; tpl, c1, c2 have 6), not a default
    _ok(root.request("PATCH", "/api/v1/projects/x", {"quota": {"disk_bytes": 0, "vcpus": 7}}))
    r = a.post("/api/v1/vms", {"name": "c3", "from_template": "tpl"})
    assert r.status == 403 and "at most 7 vCPUs (6 in use, 2 asked)" in r.error["message"], r
    # nothing half-made by the refusals
    assert a.get("/api/v1/vms/c3").status == 404 and root.get("/api/v1/vms/c3").status == 404
    assert _pool_files(d) == before
    assert "c3-disk0" not in [v["name"] for v in root.get(vols).json["volumes"]]
    # a clone the body makes smaller fits
    _ok(a.post("/api/v1/vms", {"name": "c3", "from_template": "tpl", "vcpus": 1}), 201)
    assert a.get(vols + "/c3-disk0").status == 200


# ---- 3: OVA and libvirt imports ----

def _ova(tmp_path, name, cap, vcpus=1, mem=64):
    import test_import as ti  # the OVA builders of the import tests
    disk = tmp_path / ("%s.vmdk" % name)
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o",
                    "subformat=streamOptimized", str(disk), str(cap)], check=True)
    ovf = ti.ovf_text(name=name, disks=(("disk1.vmdk", cap, None),), vcpus=vcpus, mem=mem)
    return ti.make_ova([("%s.ovf" % name, ovf), ("disk1.vmdk", disk.read_bytes())])


def _put_ova(api, data, name):
    return api.request("PUT", "/api/v1/vms/import?wait=60&name=" + name, raw=data,
                       headers={"Content-Type": "application/octet-stream"}, timeout=90)


LIBVIRT_XML = ("<domain type='kvm'><name>{name}</name><memory unit='MiB'>{mem}</memory>"
               "<vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os></domain>")


def test_imports_go_to_the_callers_project_within_its_quotas(teams, tmp_path):
    d, port, root, a, b = teams
    vols = "/api/v1/pools/default/volumes"
    # an OVA: the VM and its volume are alice's
    r = _put_ova(a, _ova(tmp_path, "o1", 4 << 20), "o1")
    assert r.status == 200 and r.json["state"] == "succeeded", r
    assert a.get("/api/v1/vms/o1").status == 200 and b.get("/api/v1/vms/o1").status == 404
    assert a.get(vols + "/o1-disk").status == 200 and b.get(vols + "/o1-disk").status == 404
    # its disks' capacities count: 4 MiB in use, 4 more asked, 6 allowed
    before = _pool_files(d)
    _ok(root.request("PATCH", "/api/v1/projects/x", {"quota": {"disk_bytes": 6 << 20}}))
    r = _put_ova(a, _ova(tmp_path, "o2", 4 << 20), "o2")
    assert r.status == 403, r
    assert "quota of project x: at most 6291456 bytes of disk (4194304 in use" in \
        r.error["message"], r
    # its vCPUs and memory from the OVF
    _ok(root.request("PATCH", "/api/v1/projects/x", {"quota": {"disk_bytes": 0, "vcpus": 2}}))
    r = _put_ova(a, _ova(tmp_path, "o3", 1 << 20, vcpus=2), "o3")
    assert r.status == 403 and "at most 2 vCPUs (1 in use, 2 asked)" in r.error["message"], r
    # no room for one more VM: refused before the archive is read
    _ok(root.request("PATCH", "/api/v1/projects/x", {"quota": {"vcpus": 0, "vms": 1}}))
    r = _put_ova(a, _ova(tmp_path, "o4", 1 << 20), "o4")
    assert r.status == 403 and "at most 1 VMs" in r.error["message"], r
    # nothing of the refused imports is left
    assert _pool_files(d) == before
    assert sorted(v["name"] for v in root.get("/api/v1/vms").json["vms"]) == ["o1"]
    # libvirt XML: in alice's project, within its memory quota
    _ok(root.request("PATCH", "/api/v1/projects/x", {"quota": {"vms": 0, "memory_mib": 128}}))
    xml = "/api/v1/vms/import-libvirt"
    hdr = {"Content-Type": "application/xml"}
    r = a.request("POST", xml, raw=LIBVIRT_XML.format(name="lv1", mem=128), headers=hdr)
    assert r.status == 403 and "MiB of memory (64 in use, 128 asked)" in r.error["message"], r
    r = a.request("POST", xml, raw=LIBVIRT_XML.format(name="lv1", mem=64), headers=hdr)
    assert r.status == 201, r
    assert a.get("/api/v1/vms/lv1").status == 200 and b.get("/api/v1/vms/lv1").status == 404
    # bob's project has no quota: his import is his
    r = _put_ova(b, _ova(tmp_path, "o5", 4 << 20, vcpus=2), "o5")
    assert r.status == 200 and r.json["state"] == "succeeded", r
    assert b.get(vols + "/o5-disk").status == 200 and a.get(vols + "/o5-disk").status == 404


# ---- 4: backups belong to their VM's project ----

def _task_done(root, r, timeout=120):
    if r.status >= 400 and "task" in (r.json or {}).get("error", {}):
        return root.get("/api/v1/tasks/" + r.json["error"]["task"]).json
    assert r.status in (200, 202), r
    return _wait_task(root, r.json["id"], timeout) if r.json["state"] == "running" else r.json


def test_backups_are_scoped_by_project(teams, fake_boot, tmp_path):
    d, port, root, a, b = teams
    store = str(tmp_path / "store")
    _ok(root.post("/api/v1/backup-stores", {"name": "s", "path": store}), 201)
    for api, vm in ((a, "va"), (b, "vb")):
        _ok(api.post("/api/v1/pools/default/volumes", {"name": vm + "-d0", "size": "8M"}), 201)
        _ok(api.post("/api/v1/vms", {"name": vm, "memory_mib": 64, "boot": fake_boot,
                                     "disks": [{"volume": "default/%s-d0" % vm}]}), 201)
    # each team backs up its own VM (Datastore.Backup on /vms/NAME), not the other's
    ba = _task_done(root, a.post("/api/v1/vms/va/backups", {"store": "s", "wait": 60}))
    bb = _task_done(root, b.post("/api/v1/vms/vb/backups", {"store": "s", "wait": 60}))
    assert ba["state"] == "succeeded" and bb["state"] == "succeeded", (ba, bb)
    ida, idb = ba["result"]["id"], bb["result"]["id"]
    assert a.post("/api/v1/vms/vb/backups", {"store": "s"}).status == 404
    # each sees only its own project's backups; root sees both
    assert [x["id"] for x in a.get("/api/v1/backups").json["backups"]] == [ida]
    assert [x["id"] for x in b.get("/api/v1/backups").json["backups"]] == [idb]
    assert [x["id"] for x in a.get("/api/v1/backups?vm=vb").json["backups"]] == []
    assert sorted(x["id"] for x in root.get("/api/v1/backups").json["backups"]) == \
        sorted([ida, idb])
    # the other project's backup does not exist for alice: 404, never 403
    for method, path, body in [
        ("GET", "/api/v1/backups/" + idb, None),
        ("POST", "/api/v1/backups/%s/verify" % idb, {}),
        ("POST", "/api/v1/backups/%s/restore" % idb, {"as": "stolen"}),
        ("DELETE", "/api/v1/backups/" + idb, None),
    ]:
        r = a.request(method, path, body)
        assert r.status == 404, (method, path, r)
    assert root.get("/api/v1/vms/stolen").status == 404
    # alice verifies and restores her own; the new VM and its volume are hers
    assert a.get("/api/v1/backups/" + ida).status == 200
    t = _task_done(root, a.post("/api/v1/backups/%s/verify" % ida, {"wait": 60}))
    assert t["state"] == "succeeded", t
    t = _task_done(root, a.post("/api/v1/backups/%s/restore" % ida, {"as": "va2", "wait": 60}))
    assert t["state"] == "succeeded", t
    assert a.get("/api/v1/vms/va2").status == 200 and b.get("/api/v1/vms/va2").status == 404
    vol = "/api/v1/pools/default/volumes/va2-disk0"
    assert a.get(vol).status == 200 and b.get(vol).status == 404
    # a restore to a new VM counts in the caller's quotas; nothing made when refused
    _ok(root.request("PATCH", "/api/v1/projects/x", {"quota": {"memory_mib": 150}}))
    r = a.post("/api/v1/backups/%s/restore" % ida, {"as": "va3", "wait": 60})
    assert r.status == 403 and "MiB of memory (128 in use, 64 asked)" in r.error["message"], r
    _ok(root.request("PATCH", "/api/v1/projects/x", {"quota": {"memory_mib": 0,
                                                               "disk_bytes": 20 << 20}}))
    r = a.post("/api/v1/backups/%s/restore" % ida, {"as": "va3", "wait": 60})
    assert r.status == 403 and "bytes of disk (16777216 in use, 8388608 asked)" in \
        r.error["message"], r
    assert root.get("/api/v1/vms/va3").status == 404
    assert root.get("/api/v1/pools/default/volumes/va3-disk0").status == 404
    # restoring over bob's VM from alice's backup: bob's VM does not exist for her
    r = a.post("/api/v1/backups/%s/restore" % ida, {"vm": "vb"})
    assert r.status == 404, r
    # an Auditor of x reads x's backups and changes nothing
    _ok(root.post("/api/v1/users", {"name": "carol", "project": "x"}), 201)
    _ok(root.request("PUT", "/api/v1/acl", {"path": "/projects/x", "subject": "carol",
                                            "role": "Auditor"}))
    c = _api(port, _token(root, "carol", [("/", "Administrator")]))
    assert [x["id"] for x in c.get("/api/v1/backups").json["backups"]] == [ida]
    r = c.post("/api/v1/backups/%s/verify" % ida, {})
    assert r.status == 403 and "Datastore.Backup on /backups/" + ida in r.error["message"], r
    assert c.delete("/api/v1/backups/" + ida).status == 403
    # stores: every caller sees their names; their paths need Datastore.Audit there
    assert [s.get("path") for s in a.get("/api/v1/backup-stores").json["stores"]] == [None]
    assert root.get("/api/v1/backup-stores/s").json["path"] == store
    r = a.delete("/api/v1/backup-stores/s")
    assert r.status == 403 and "Datastore.Allocate on /backup-stores/s" in r.error["message"], r
    r = a.post("/api/v1/backups/prune", {"store": "s", "keep_last": 0})
    assert r.status == 403, r
    # deleting her backup forgets its record: project x can go once empty
    _ok(a.delete("/api/v1/backups/" + ida), 204)
    assert a.get("/api/v1/backups").json["backups"] == []
