"""A real 3-member etcd cluster across three network namespaces: writes and
reads from different hosts, a member killed, a host partitioned and healed."""

import time

import pytest

BUDGET_S = 60


class Clock:
    def __init__(self):
        self.t0 = self.last = time.monotonic()

    def lap(self, what):
        now = time.monotonic()
        print("  %-40s %5.1f s" % (what, now - self.last))
        self.last = now

    def total(self):
        return time.monotonic() - self.t0


def eventually(fn, timeout, step=0.2):
    end = time.monotonic() + timeout
    while True:
        if fn():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(step)


def test_three_members(cluster3):
    h = cluster3
    c = Clock()

    # one cluster: written on h1, read on h3
    assert h.put(1, "/kvmhost/test/a", "from-h1")
    assert h.get(3, "/kvmhost/test/a") == "from-h1"
    assert h.get(2, "/kvmhost/test/none") is None
    c.lap("write h1, read h3")

    # one member killed: the other two still make a quorum
    h.kill(2)
    # (if h2 led, the others elect a new leader first)
    assert eventually(lambda: h.put(1, "/kvmhost/test/b", "without-h2", timeout=2), 15), \
        h.last_error
    assert h.get(3, "/kvmhost/test/b") == "without-h2"
    c.lap("h2 killed, write h1, read h3")
    h.restart(2)
    assert h.get(2, "/kvmhost/test/b") == "without-h2"
    c.lap("h2 restarted, caught up")

    # h1 partitioned: its member cannot commit; h2 and h3 can
    h.partition(1)
    assert not h.put(1, "/kvmhost/test/c", "h1-isolated", timeout=2)
    assert eventually(lambda: h.put(2, "/kvmhost/test/c", "from-h2", timeout=2), 15)
    assert h.get(3, "/kvmhost/test/c") == "from-h2"
    assert not h.put(1, "/kvmhost/test/d", "h1-still-isolated", timeout=2)
    with pytest.raises(RuntimeError):
        h.get(1, "/kvmhost/test/c", timeout=2)  # no linearizable read alone either
    c.lap("h1 partitioned: h1 refused, h2/h3 wrote")

    # healed: h1 rejoins and sees what was written without it
    h.heal(1)
    h.wait_healthy([1], timeout=20)
    assert eventually(lambda: h.get(1, "/kvmhost/test/c") == "from-h2", 10)
    assert h.put(1, "/kvmhost/test/e", "healed")
    assert h.get(2, "/kvmhost/test/e") == "healed"
    c.lap("h1 healed, caught up, writes again")

    print("  total %.1f s" % c.total())
    assert c.total() < BUDGET_S
