"""Confinement of QEMU (issue 12, defect 10 and item 9; security case 25):
each VM's QEMU runs as a uid and gid of its own from the configured range,
with no capabilities, seccomp and no_new_privs, in a mount namespace of its
own whose /dev holds only the plain character devices, with the daemon's
state and run dirs hidden but for its own run dir; its writable disks
belong to its uid (another VM's uid cannot open them); its cgroup denies
other devices; and a run dir QEMU's uid cannot reach is refused when the
daemon starts, with the reason.

Read back from /proc/<qemu pid> of running VMs. The VMs boot no OS (a blank
disk: SeaBIOS, then nothing), so the module takes seconds, not minutes."""

import glob
import os
import stat
import subprocess
import time

import pytest

import khlib

# /dev inside QEMU's namespace: these, plus kvm when the accelerator is KVM
ALLOWED_DEV = {"null", "zero", "full", "random", "urandom", "fd"}


def blank_vm(api, workdir, name):
    path = os.path.join(workdir, name + ".raw")
    with open(path, "wb") as f:
        f.truncate(8 * khlib.MIB)
    os.chmod(path, 0o644)
    api.create({"name": name, "vcpus": 1, "memory_mib": 64, "serial": True,
                "graphics": "none", "disks": [{"path": path, "format": "raw"}]})
    vm = api.act_ok(name, "start")
    assert vm["state"] == "running", vm
    return vm, path


def ids(pid):
    st = khlib.proc_status(pid)
    uids = set(st["Uid"].split())
    gids = set(st["Gid"].split())
    assert len(uids) == 1 and len(gids) == 1, (st["Uid"], st["Gid"])
    return int(uids.pop()), int(gids.pop()), st


def try_open_as(uid, gid, path):
    """Open path read-only in a child running as uid/gid (no groups):
    0 when it opened, else the errno."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.close(os.open(path, os.O_RDONLY))
        except OSError as e:
            code = e.errno or 99
        except BaseException:
            code = 98
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def open_in_cgroup(tasks_file, path):
    """Open path read-only in a child that first moved itself into the
    cgroup whose tasks file is given: 0 when it opened, else the errno."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            with open(tasks_file, "w") as f:
                f.write(str(os.getpid()))
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        except OSError as e:
            code = e.errno or 99
        except BaseException:
            code = 98
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture
def two(daemon, workdir):
    api = daemon.api
    a, a_disk = blank_vm(api, workdir, "ca")
    b, b_disk = blank_vm(api, workdir, "cb")
    return {"api": api, "a": a, "b": b, "a_disk": a_disk, "b_disk": b_disk}


def test_qemu_uid_per_vm_namespace_and_dev(daemon, two, workdir):
    api, a, b = two["api"], two["a"], two["b"]
    ua, ga, sa = ids(a["pid"])
    ub, gb, sb = ids(b["pid"])
    # a uid of its own from the default range, never root, gid the same number
    assert ua != 0 and ub != 0 and ua != ub, (ua, ub)
    assert ga == ua and gb == ub, (ua, ga, ub, gb)
    assert 700000000 <= ua < 700065536 and 700000000 <= ub < 700065536, (ua, ub)
    for st in (sa, sb):
        assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, st["CapEff"]
        assert st["NoNewPrivs"] == "1", st["NoNewPrivs"]
        if api.get("/api/v1/host").json["qemu"]["sandbox"]:
            assert st["Seccomp"] == "2", st["Seccomp"]

    # its own mount namespace, with a minimal /dev
    own = os.readlink("/proc/%d/ns/mnt" % daemon.pid)
    ns_a = os.readlink("/proc/%d/ns/mnt" % a["pid"])
    ns_b = os.readlink("/proc/%d/ns/mnt" % b["pid"])
    assert ns_a != own and ns_b != own and ns_a != ns_b, (own, ns_a, ns_b)
    accel = api.get("/api/v1/host").json["accelerator"]
    allowed = ALLOWED_DEV | ({"kvm"} if accel == "kvm" else set())
    dev = set(os.listdir("/proc/%d/root/dev" % a["pid"]))
    assert dev == allowed, sorted(dev)
    assert len(os.listdir("/dev")) > len(dev)  # the host's /dev has more
    st = os.stat("/proc/%d/root/dev/null" % a["pid"])
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    mounts = open("/proc/%d/mountinfo" % a["pid"]).read()
    assert any(ln.split()[4] == "/dev" and "tmpfs" in ln for ln in mounts.splitlines()), mounts

    # the state dir is hidden (no database, no other VM's dirs); its own run
    # dir is there with the pid file QEMU wrote
    root = "/proc/%d/root" % a["pid"]
    assert os.path.exists(daemon.state_dir + "/kvmhost.db")
    assert not os.path.exists(root + daemon.state_dir + "/kvmhost.db")
    run_a = os.path.join(daemon.state_dir, "run", "vms", a["id"])
    run_b = os.path.join(daemon.state_dir, "run", "vms", b["id"])
    assert os.path.exists(run_b + "/qemu/qemu.pid")
    assert os.listdir(root + os.path.dirname(run_a)) == [a["id"]]
    assert os.listdir(root + run_a) == ["qemu"]  # not the daemon's sockets and records
    assert "qemu.pid" in os.listdir(root + run_a + "/qemu")
    assert not os.path.exists(root + run_b)
    assert not os.path.exists(root + workdir)  # /tmp is its own too
    # the run dir is root's; QEMU's own subdir (pid file, VNC socket) is its uid's
    st = os.stat(run_a)
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o711, (st.st_uid, oct(st.st_mode))
    st = os.stat(run_a + "/qemu")
    assert st.st_uid == ua and stat.S_IMODE(st.st_mode) == 0o700, (st.st_uid, oct(st.st_mode))
    assert try_open_as(ub, gb, run_a + "/qemu/qemu.pid") == 13

    # the writable disks are the VM's own: another VM's uid cannot open them
    for disk, uid in ((two["a_disk"], ua), (two["b_disk"], ub)):
        st = os.stat(disk)
        assert st.st_uid == uid and st.st_gid == uid and stat.S_IMODE(st.st_mode) == 0o600, \
            (disk, st.st_uid, oct(st.st_mode))
    assert try_open_as(ua, ga, two["a_disk"]) == 0  # its own: yes
    assert try_open_as(ua, ga, two["b_disk"]) == 13  # EACCES
    assert try_open_as(ub, gb, two["a_disk"]) == 13
    qlog = os.path.join(daemon.state_dir, "vms", a["id"], "qemu.log")
    assert os.stat(qlog).st_uid == ua

    # the uid is recorded: a daemon restart reattaches, and a new start of
    # the VM gets the same uid; a deleted VM's disk goes back to root
    daemon.restart()
    assert api.vm("ca")["pid"] == a["pid"]
    api.act_ok("ca", "kill")
    a2 = api.act_ok("ca", "start")
    assert a2["pid"] != a["pid"] and ids(a2["pid"])[0] == ua
    api.act_ok("cb", "kill")
    r = api.delete("/api/v1/vms/cb")
    assert r.status in (200, 204), r
    assert os.stat(two["b_disk"]).st_uid == 0
    # and its uid is free for the next VM
    c, _ = blank_vm(api, workdir, "cc")
    assert ids(c["pid"])[0] == ub


def test_cgroup_denies_other_devices(two):
    a = two["a"]
    dirs = [d for d in khlib.cgroup_dirs(a["id"]) if "/devices/" in d]
    if not dirs:
        pytest.skip("no cgroup v1 devices controller on this host")
    tasks = os.path.join(dirs[0], "tasks")
    allowed = open(os.path.join(dirs[0], "devices.list")).read().split("\n")
    assert "a *:* rwm" not in allowed, allowed
    # a block device of this host: refused inside the VM's cgroup, while
    # /dev/null opens (the test can tell the two apart)
    blocks = sorted(glob.glob("/sys/dev/block/*"))
    assert blocks, "no block device on this host"
    major, minor = (int(x) for x in os.path.basename(blocks[0]).split(":"))
    node = os.path.join(os.path.dirname(two["a_disk"]), "blockdev")
    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
    assert open_in_cgroup(tasks, "/dev/null") == 0
    assert open_in_cgroup(tasks, node) == 1  # EPERM
    # and one the host has but QEMU does not need (a tty, the tun device)
    if os.path.exists("/dev/net/tun"):
        assert open_in_cgroup(tasks, "/dev/net/tun") == 1


def test_volumes_owned_while_the_vm_has_them(daemon):
    """A volume disk (at start and hot-plugged) is the VM uid's; a detached
    one is root's again, and so are the volumes of a VM that becomes a
    template (now shared bases)."""
    api = daemon.api
    paths = {}
    for name in ("root", "data"):
        r = api.post("/api/v1/pools/default/volumes", {"name": name, "size": "8M"})
        assert r.status == 201, r
        paths[name] = os.path.join(daemon.state_dir, "pools", "default", r.json["id"])
        assert os.stat(paths[name]).st_uid == 0
    api.create({"name": "cv", "vcpus": 1, "memory_mib": 64, "serial": True,
                "graphics": "none", "disks": [{"volume": "default/root"}]})
    vm = api.act_ok("cv", "start")
    uid = ids(vm["pid"])[0]
    assert os.stat(paths["root"]).st_uid == uid
    r = api.post("/api/v1/vms/cv/disks", {"volume": "default/data"})
    assert r.status == 200, r
    st = os.stat(paths["data"])
    assert st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o600, (st.st_uid, oct(st.st_mode))
    assert try_open_as(uid + 1, uid + 1, paths["data"]) == 13
    api.act_ok("cv", "kill")
    assert os.stat(paths["root"]).st_uid == uid  # stopped: still its own
    assert os.stat(paths["data"]).st_uid == uid
    r = api.delete("/api/v1/vms/cv/disks/1")  # detached: no longer its own
    assert r.status == 200, r
    assert os.stat(paths["data"]).st_uid == 0
    r = api.post("/api/v1/vms/cv/template", {})
    assert r.status == 200, r
    for p in paths.values():
        assert os.stat(p).st_uid == 0, p


def test_run_dir_unreachable_is_a_start_error(daemons):
    d = daemons(start=False)
    private = os.path.join(d.base, "private")
    os.mkdir(private, 0o700)
    run = os.path.join(private, "run")
    d.extra_args = ["--run-dir", run]
    with pytest.raises(khlib.KhError) as e:
        d.start()
    msg = str(e.value)
    assert "kvmhostd: error: run dir %s: not reachable by QEMU uid 700000000: parent %s is 0700" \
        % (run, private) in msg, msg


def test_qemu_user_compat_shares_one_uid(daemons, workdir):
    """--qemu-user keeps working (every QEMU as that user) and warns."""
    try:
        import pwd
        pw = pwd.getpwnam("kvmhost-qemu")
    except KeyError:
        pytest.skip("no kvmhost-qemu user")
    d = daemons(extra_args=["--qemu-user", "kvmhost-qemu"])
    vm, disk = blank_vm(d.api, workdir, "cu")
    uid, _, _ = ids(vm["pid"])
    assert uid == pw.pw_uid
    assert "every QEMU runs as this one uid" in d.log()
    assert os.stat(disk).st_uid == 0  # the shared uid takes no disk
    d.api.act_ok("cu", "kill")


def test_cgroup2_device_program(daemons, workdir):
    """On cgroup v2 (here a cgroup2 hierarchy the test mounts and names with
    --cgroup-mount) the VM's cgroup gets a device program: QEMU runs in it,
    and a process put there opens /dev/null but not a block device of the
    host, which opens outside (EPERM from the program, not the file)."""
    mnt = os.path.join("/run", "kh-cg2-%d-%s" % (os.getpid(), os.path.basename(workdir)))
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "cgroup2", "none", mnt], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    try:
        d = daemons(extra_args=["--cgroup-mount", mnt])
        api = d.api
        assert api.get("/api/v1/host").json["cgroup"] == "v2"
        vm, disk = blank_vm(api, workdir, "c2")
        dirs = glob.glob(os.path.join(mnt, "*", "vm-" + vm["id"]))
        assert len(dirs) == 1, dirs
        procs = os.path.join(dirs[0], "cgroup.procs")
        assert str(vm["pid"]) in open(procs).read().split()
        blocks = sorted(glob.glob("/sys/dev/block/*"))
        major, minor = (int(x) for x in os.path.basename(blocks[0]).split(":"))
        node = os.path.join(workdir, "blockdev")
        os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
        os.close(os.open(node, os.O_RDONLY | os.O_NONBLOCK))  # opens outside
        assert open_in_cgroup(procs, "/dev/null") == 0
        assert open_in_cgroup(procs, node) == 1  # EPERM
        api.act_ok("c2", "kill")
    finally:
        # this test's QEMU (the only process in its VM's cgroup), then the
        # cgroups: the hierarchy is the host's unified one
        for p in glob.glob(os.path.join(mnt, "*", "vm-*")):
            for pid in open(os.path.join(p, "cgroup.procs")).read().split():
                khlib.kill_pid(int(pid))
            for _ in range(50):
                try:
                    os.rmdir(p)
                    break
                except OSError:
                    time.sleep(0.1)
        for p in glob.glob(os.path.join(mnt, "*/")):
            try:
                os.rmdir(p)
            except OSError:
                pass
        subprocess.run(["umount", "-l", mnt])
        os.rmdir(mnt)
