"""No zombie writes: a command whose deadline has passed never enters the Raft log.

The problem (issue 11, item 2): pysyncobj keeps commands queued while a node knows no leader
(``commandsWaitLeader``), and a command forwarded to a leader over a link that is cut sits in the
kernel's send buffer; either way it reached the leader long after our HTTP handler had answered
``503`` — and was applied over newer acknowledged writes.

The fix, deterministic on every replica because the decision is taken *before* the entry exists:

* every command carries its deadline (``cluster.state_machine.encode_command``: proposer's wall
  clock, Unix seconds), set ``max_clock_skew`` before the handler's own deadline;
* ``commandsWaitLeader=False``: a node without a leader fails the command at once (the adapter
  retries it within the deadline), nothing waits in the queue for a future leader;
* ``DeadlineQueue`` replaces pysyncobj's command queue. pysyncobj takes a command out of it
  exactly when it is about to append it to the log (leader) or forward it (follower); an expired
  command is answered ``REQUEST_DENIED`` instead (a definite "not applied"). A command that was
  forwarded before its deadline and arrives late at the leader goes through the leader's queue
  too, so the leader drops it.

Clock bound: with proposer and leader clocks at most ``max_clock_skew`` apart, the leader appends a
command no later than the moment its handler answers. What remains is Raft's own: an entry
appended in time whose leader then fails may still be committed by the next leader (in its first
term entry); that is the classic "outcome unknown" and is answered as such (503, retryable).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pysyncobj.fast_queue import FastQueue

from cluster.raft_pickle import loads as raft_loads
from cluster.state_machine import command_deadline

_REGULAR = 0  # pysyncobj _COMMAND_TYPE.REGULAR


def payload_deadline(command: bytes) -> float | None:
    """The deadline inside a pysyncobj-encoded ``@replicated _apply(payload)`` call, if any."""
    if not command or command[0] != _REGULAR:
        return None  # no-op, membership change, version switch: no deadline
    try:
        call = raft_loads(command[1:])
    except Exception:
        return None
    if isinstance(call, tuple) and len(call) >= 2 and call[1] and isinstance(call[1][0], bytes):
        return command_deadline(call[1][0])
    return None


class DeadlineQueue(FastQueue):  # type: ignore[misc]
    """pysyncobj's command queue, minus the commands whose deadline has passed.

    ``reject(err, callback)`` answers a dropped command (pysyncobj's ``__callErrCallback``: a local
    callback, or an ``apply_command_response`` to the follower that forwarded it).
    """

    def __init__(self, max_size: int, reject: Callable[[Any], None],
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(max_size)
        self._reject = reject
        self._clock = clock
        self.expired = 0
        self.forwarded = 0  # commands handed out that a follower forwarded (it waits to apply them)

    def get_nowait(self) -> Any:
        while True:
            item = super().get_nowait()  # raises queue.Empty when drained
            command, callback = item
            deadline = payload_deadline(command)
            if deadline is None or self._clock() <= deadline:
                if isinstance(callback, tuple):  # (follower node, request id): pysyncobj's forwarded form
                    self.forwarded += 1
                return item
            self.expired += 1
            self._reject(callback)


__all__ = ["DeadlineQueue", "payload_deadline"]
