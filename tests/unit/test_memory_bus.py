from __future__ import annotations

import threading
import time

from pipeline.bus.memory import MemoryBus


def test_consumer_group_resumes_from_its_commit() -> None:
    bus = MemoryBus()
    for i in range(10):
        bus.publish("a", str(i).encode())
    c1 = bus.consumer(["a"], "g")
    assert c1.take_new_assignments() == {("a", 0)}
    assert c1.take_new_assignments() == set()
    got = c1.poll(0, 4)
    assert [m.value for m in got] == [b"0", b"1", b"2", b"3"]
    c1.commit({("a", 0): 2})  # processed only 0 and 1
    c2 = bus.consumer(["a"], "g")
    assert [m.offset for m in c2.poll(0, 100)] == list(range(2, 10))
    other_group = bus.consumer(["a"], "h")
    assert len(other_group.poll(0, 100)) == 10
    assert c2.lag() == {("a", 0): 0}


def test_poll_waits_for_a_publisher() -> None:
    bus = MemoryBus()
    consumer = bus.consumer(["a"], "g")
    threading.Timer(0.05, lambda: bus.publish("a", b"x", headers=[("h", b"1")])).start()
    started = time.monotonic()
    got = consumer.poll(2.0, 10)
    assert [m.value for m in got] == [b"x"] and got[0].header("h") == b"1"
    assert time.monotonic() - started < 1.5
