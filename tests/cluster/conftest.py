"""Fixtures of the cluster tests: several hosts in network namespaces with
one etcd member each (hosts.py). Needs root.

Run from the repo root:  python3 -m pytest -q -p no:cacheprovider tests/cluster
"""

import os
import signal
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import hosts as hostslib  # noqa: E402


def _sigterm(signum, frame):
    # `timeout` and CI send SIGTERM: unwind like Ctrl-C so teardowns run
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config):
    signal.signal(signal.SIGTERM, _sigterm)
    # (test_etcd_stall.py borrows the OVA builder of blackbox/test_import.py)
    config.addinivalue_line("markers", "slow: boots guests (minutes under TCG)")


@pytest.fixture
def cluster3():
    """Three hosts with a healthy 3-member etcd cluster; torn down even on failure."""
    if not os.access(hostslib.ETCD, os.X_OK):
        pytest.skip("etcd is not installed (apt-get install etcd-server etcd-client)")
    t0 = time.monotonic()
    h = hostslib.Hosts(3)
    try:
        h.start_etcd(timeout=30)
        print("cluster of 3 healthy in %.1f s (%s, %s)" % (time.monotonic() - t0, h.net, h.tag))
        yield h
    finally:
        h.close()
