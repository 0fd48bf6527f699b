"""bench/fleet.py runs the simulated fleet in several processes and merges their answers."""

from __future__ import annotations

from bench.fleet import merge_answers


def test_parts_merge_into_one_fleet_answer() -> None:
    wait = merge_answers([{"times": [1.0, 2.0], "missing": 0}, {"times": [3.0], "missing": 1}])
    assert wait == {"times": [1.0, 2.0, 3.0], "missing": 1}  # subscriber order: part 0 first
    storm = merge_answers([{"seconds": 1.5, "missing": 0}, {"seconds": 2.5, "missing": 2}])
    assert storm == {"seconds": 2.5, "missing": 2}  # the fleet is settled when its slowest part is
    counts = merge_answers([{"bytes": 10, "http_requests": 1}, {"bytes": 5, "http_requests": 2}])
    assert counts == {"bytes": 15, "http_requests": 3}
    ready = merge_answers([{"ready": True, "loop": "uvloop"}, {"ready": True, "loop": "uvloop"}])
    assert ready == {"ready": True, "loop": "uvloop"}
