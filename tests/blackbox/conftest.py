"""Fixtures of the kvmhost black-box tests.

Run from the repo root:  /usr/bin/python3 -m pytest -q tests/blackbox
Quick subset (no guest boots): add  -m "not slow"
Environment: KH_BUILD_DIR (default <repo>/build), KH_GUEST_KERNEL/INITRD/DISK
(default: tests/guest/build.sh --print-env, building the guest if needed).
With the ASan+UBSan build (KH_BUILD_DIR=build-asan) a sanitizer report in a
daemon's log or the CLI's stderr, or a daemon that does not exit 0 after
SIGTERM, fails the test (khlib.finish_daemons); KH_TEST_LEAKS=0 turns
LeakSanitizer off.
"""

import atexit
import os
import shutil
import signal
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import khlib  # noqa: E402


def _sigterm(signum, frame):
    # `timeout` and CI send SIGTERM: unwind like Ctrl-C so teardowns run
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: boots guests (minutes under TCG)")
    signal.signal(signal.SIGTERM, _sigterm)
    atexit.register(khlib.cleanup_all_daemons)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    for when in ("setup", "call"):
        rep = getattr(request.node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


def _need_daemon():
    if not os.access(khlib.DAEMON_BIN, os.X_OK):
        pytest.fail("kvmhostd not built at %s (set KH_BUILD_DIR or build it)" % khlib.DAEMON_BIN)


class DaemonFactory:
    """Makes daemons for one test; every one is stopped, its QEMUs killed and
    its temp dir removed at teardown."""

    def __init__(self):
        self.daemons = []

    def __call__(self, start=True, **kw):
        _need_daemon()
        d = khlib.Daemon(**kw)
        self.daemons.append(d)
        if start:
            d.start()
        return d

    def finish(self, failed):
        # raises (the test fails at teardown) on a sanitizer report or a
        # daemon that did not exit 0 after SIGTERM
        khlib.finish_daemons(self.daemons, failed)


@pytest.fixture
def daemons(request):
    f = DaemonFactory()
    yield f
    f.finish(_failed(request))


@pytest.fixture
def daemon(daemons):
    """A fresh kvmhostd in its own temp state dir and socket."""
    return daemons()


@pytest.fixture
def api(daemon):
    return daemon.api


@pytest.fixture(scope="module")
def mdaemon(request):
    """One daemon shared by the quick tests of a module (they use distinct
    VM names)."""
    f = DaemonFactory()
    d = f()
    yield d
    failed = any(getattr(i, "rep_call", None) is not None and i.rep_call.failed
                 for i in request.session.items if i.module is request.module)
    f.finish(failed)


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="khbb-w-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fake_boot(workdir):
    """Boot files that exist (for specs that are created but not booted)."""
    k = os.path.join(workdir, "vmlinuz")
    i = os.path.join(workdir, "initrd.img")
    for p in (k, i):
        with open(p, "wb") as f:
            f.write(b"\0" * 4096)
        os.chmod(p, 0o644)
    return {"kernel": k, "initrd": i, "cmdline": "console=ttyS0"}


@pytest.fixture(scope="session")
def guest():
    paths = khlib.guest_paths()
    if paths is None:
        pytest.skip("no test guest: tests/guest/build.sh missing and KH_GUEST_* unset")
    return khlib.Guest(*paths)


@pytest.fixture
def consoles():
    """Open WebSocket consoles; all closed at teardown."""
    opened = []

    def open_(daemon, name, **kw):
        c = khlib.Console(daemon.socket, name, **kw)
        opened.append(c)
        return c

    yield open_
    for c in opened:
        c.close()


def boot_vms(api, guest, workdir, names, marker=khlib.GUEST_READY, timeout=150, **spec_kw):
    """Create and start VMs in parallel (start with wait=0) and wait for the
    marker on each one's console log. Returns {name: vm}."""
    for n in names:
        api.create(guest.spec(n, workdir, **spec_kw))
    for n in names:
        st, j = api.action(n, "start", wait=0)
        assert st in (200, 202), "start %s -> %s %r" % (n, st, j)
    api.wait_consoles(names, marker, timeout=timeout)
    out = {}
    for n in names:
        vm = api.wait_state(n, "running", timeout=30)
        out[n] = vm
    return out


@pytest.fixture
def boot(api, guest, workdir):
    def b(names, **kw):
        return boot_vms(api, guest, workdir, names, **kw)
    return b
