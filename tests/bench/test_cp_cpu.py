"""bench.cp_cpu's per-thread split: the main thread is the loop, the busiest other is the tick."""

from __future__ import annotations

import os
import threading

from bench.cp_cpu import thread_cpu, thread_split


def test_split_names_main_thread_loop_and_busiest_other_tick() -> None:
    before = {100: 1.0, 101: 2.0, 102: 0.5}
    after = {100: 1.5, 101: 2.1, 102: 1.5, 103: 0.2}  # 103 started meanwhile
    split = thread_split(100, before, after)
    assert split["loop"] == 0.5
    assert abs(split["tick"] - 1.0) < 1e-9  # thread 102 used the most, not 101 (the most in total)
    assert abs(split["other"] - 0.3) < 1e-9


def test_thread_cpu_reads_every_thread_of_this_process() -> None:
    ready, stop = threading.Event(), threading.Event()

    def idle() -> None:
        ready.set()
        stop.wait(10)

    t = threading.Thread(target=idle)
    t.start()
    try:
        assert ready.wait(10)
        times = thread_cpu(os.getpid())
        assert os.getpid() in times and t.native_id in times
        assert all(v >= 0 for v in times.values())
    finally:
        stop.set()
        t.join(10)
