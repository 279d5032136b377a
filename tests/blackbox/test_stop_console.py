"""Defects found by real use (issue 15, items 7, 12, 15): a stop that ends
in a kill says so (CLI exit 9) and the ACPI request is sent again; the
firmware's output reaches the serial console of a VM that boots from its
disk; a daemon restart leaves a line in the console log for what it did not
capture; a clean guest power-off is not a warning.

The quick tests boot no OS: a blank disk leaves SeaBIOS saying "No bootable
device", and nothing there answers the ACPI power button."""

import os
import re
import time

import pytest

import khlib
from conftest import boot_vms


def blank_disk_vm(api, workdir, name):
    """A VM whose only boot device is a blank disk: SeaBIOS, then nothing."""
    path = os.path.join(workdir, name + ".raw")
    with open(path, "wb") as f:
        f.truncate(8 * khlib.MIB)
    os.chmod(path, 0o666)
    api.create({"name": name, "vcpus": 1, "memory_mib": 64, "serial": True,
                "graphics": "none", "disks": [{"path": path, "format": "raw"}]})
    vm = api.act_ok(name, "start")
    assert vm["state"] == "running", vm
    return vm


def test_firmware_output_reaches_serial_console(daemon, workdir):
    api = daemon.api
    blank_disk_vm(api, workdir, "fw1")
    log = api.wait_console("fw1", "SeaBIOS", timeout=60)
    log = api.wait_console("fw1", "Booting from Hard Disk", timeout=60)
    assert "SeaBIOS" in log and "Booting from Hard Disk" in log, log[-2000:]
    api.act_ok("fw1", "kill")


def test_stop_timeout_kill_is_reported_and_acpi_resent(daemon, workdir):
    api = daemon.api
    vm = blank_disk_vm(api, workdir, "st1")
    t0 = time.time()
    p = khlib.cli(daemon, "vm", "stop", "st1", "--timeout", "8", timeout=90)
    took = time.time() - t0
    assert p.returncode == 9, (p.returncode, p.stdout, p.stderr)
    assert "vm st1 did not power off within 8 s and was killed" in p.stderr, p.stderr
    assert "is stopped" not in p.stdout, p.stdout
    assert 7 < took < 40, took
    assert api.vm("st1")["state"] == "stopped"
    assert khlib.wait_pid_gone(vm["pid"], 10)
    tasks = [t for t in api.get("/api/v1/tasks").json["tasks"]
             if t["kind"] == "vm.stop" and t["vm"] == "st1"]
    assert tasks and tasks[0]["state"] == "succeeded", tasks
    assert tasks[0]["message"].startswith("forced: did not power off within 8 s"), tasks[0]
    # the power button was pressed more than once (QEMU's POWERDOWN event
    # per system_powerdown, in the debug log)
    presses = re.findall(r"event=vm\.qmp_event vm=st1 event=POWERDOWN", daemon.log())
    assert len(presses) >= 2, "ACPI power-down sent %d time(s)" % len(presses)
    # timeout 0 is a kill the user asked for: exit 0
    blank_disk_vm(api, workdir, "st2")
    p = khlib.cli(daemon, "vm", "stop", "st2", "--timeout", "0")
    assert p.returncode == 0 and "vm st2 is stopped" in p.stdout, (p.stdout, p.stderr)


def test_console_log_marks_what_a_daemon_restart_missed(daemon, workdir):
    api = daemon.api
    vm = blank_disk_vm(api, workdir, "gap1")
    api.wait_console("gap1", "SeaBIOS", timeout=60)
    daemon.kill9()
    time.sleep(1.5)
    daemon.restart()
    assert api.vm("gap1")["pid"] == vm["pid"]
    log = api.console_log("gap1")
    m = re.search(r"\[kvmhost: console output from (\d\d:\d\d:\d\d) to (\d\d:\d\d:\d\d) UTC "
                  r"was not captured: the daemon was not running\]", log)
    assert m, log[-1000:]
    assert m.group(1) <= m.group(2) or m.group(2) < "00:01", m.groups()
    api.act_ok("gap1", "kill")


@pytest.mark.slow
def test_clean_poweroff_is_not_a_warning(daemon, guest, workdir, consoles):
    api = daemon.api
    boot_vms(api, guest, workdir, ["po1"], marker=khlib.GUEST_READY, timeout=180)
    c = consoles(daemon, "po1")
    time.sleep(0.3)
    c.run("echo kh-$((%d+1))")
    c.send("poweroff -f\n")
    vm = api.wait_state("po1", "stopped", timeout=60)
    assert re.search(r"shut|power|guest", vm["state_reason"].lower()), vm["state_reason"]
    time.sleep(0.5)
    warns = [ln for ln in daemon.log().splitlines()
             if "level=warn" in ln and "vm=po1" in ln]
    assert warns == [], warns
