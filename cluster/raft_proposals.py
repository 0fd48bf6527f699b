"""Commands proposed in the same event-loop iteration share one Raft log entry (proposal batching).

Under concurrent writers most of a write's Raft cost is paid per log entry, not per command: the
hand-over to the tick thread (pickled call, queue, pipe wake-up), the deadline check, the journal
record, each follower's copy of the entry in AppendEntries, pysyncobj's apply dispatch on every
member, and one thread-to-loop wake-up per answer. etcd batches proposals the same way (its
``raft.Ready`` carries every proposal since the last one).

``ProposalBatcher.propose`` queues ``(payload, future)``; the first one of an iteration schedules a
flush for the next (``call_soon``). The flush hands the queued payloads to pysyncobj: one alone as
it is, several as one **batch entry** (at most ``max_commands`` and about ``max_bytes`` each).
``apply_batch`` wraps the member's ``apply_fn``: it applies a batch's commands one after the other
in their order, on every member alike, and returns their results as a list, which the answer
splits among the waiting futures with one loop wake-up. A sequential writer never waits for
company: its flush runs in the very next iteration.

**Deadlines (no zombie writes, cluster/raft_deadline.py).** The batch carries the earliest deadline
of its commands, so the leader appends the batch only while every command in it is still in time.
If the leader denies it, the command(s) with that earliest deadline are answered "denied" (not
applied, as before); every other command is answered ``BATCH_DENIED`` and its ``submit`` proposes
it again at once (nothing of it was appended, so that is safe) and the leader judges it by its own
deadline.

Framing: ``0xc1`` + the deadline (big-endian double, ``inf`` if none) + ``0xc1`` + a msgpack array
of the payloads. The first nine bytes are ``encode_command``'s deadline header, so the deadline
queue reads a batch's deadline like any command's; ``0xc1`` never starts a msgpack value, so no
command encoded by ``cluster.state_machine.encode_command`` looks like a batch.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Callable
from typing import Any

import msgpack
from pysyncobj import FAIL_REASON

from cluster.state_machine import command_deadline

__all__ = ["BATCH_DENIED", "ProposalBatcher", "apply_batch", "decode_batch", "encode_batch", "is_batch"]

BATCH_DENIED = -1  # answer of a command whose batch was denied for another command's deadline
_MARK = 0xC1
_DEADLINE = struct.Struct(">d")
_HEADER = 1 + _DEADLINE.size + 1

Answer = tuple[Any, int]  # (apply_fn's result, pysyncobj FAIL_REASON)
Propose = Callable[[bytes, Callable[[Any, int], None]], None]


def encode_batch(payloads: list[bytes]) -> bytes:
    deadlines = [d for d in map(command_deadline, payloads) if d is not None]
    deadline = min(deadlines) if deadlines else math.inf
    body: bytes = msgpack.packb(payloads, use_bin_type=True)
    return bytes((_MARK,)) + _DEADLINE.pack(deadline) + bytes((_MARK,)) + body


def is_batch(payload: bytes) -> bool:
    return len(payload) > _HEADER and payload[0] == _MARK and payload[_HEADER - 1] == _MARK


def decode_batch(payload: bytes) -> list[bytes]:
    items = msgpack.unpackb(payload[_HEADER:], raw=False)
    if not isinstance(items, list) or not all(isinstance(p, bytes) for p in items):
        raise ValueError("not a batch of payloads")
    return items


def apply_batch(apply_fn: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``apply_fn`` for log entries that may be batches: a batch's commands in order, results as a list."""

    def apply(payload: bytes) -> Any:
        if not is_batch(payload):
            return apply_fn(payload)
        try:
            items = decode_batch(payload)
        except Exception:  # not ours: hand it on as it is, the state machine rejects it on every member
            return apply_fn(payload)
        return [apply_fn(item) for item in items]

    return apply


class ProposalBatcher:
    """Collects one loop iteration's proposals and hands them to ``propose`` as few entries."""

    def __init__(self, propose: Propose, max_commands: int = 128, max_bytes: int = 64 * 1024) -> None:
        self._propose = propose
        self.max_commands = max_commands
        self.max_bytes = max_bytes
        self._queued: list[tuple[bytes, asyncio.Future[Answer]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.entries = 0  # log entries proposed
        self.batched = 0  # commands that went in a batch entry

    def propose(self, payload: bytes, fut: asyncio.Future[Answer]) -> None:
        """Queue ``payload``; ``fut`` gets ``(result, FAIL_REASON)`` (or ``BATCH_DENIED``)."""
        loop = fut.get_loop()
        if self._queued and loop is not self._loop:
            self._flush()  # another event loop (tests): never mix futures of two loops in one batch
        self._queued.append((payload, fut))
        if len(self._queued) == 1:
            self._loop = loop
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        group: list[tuple[bytes, asyncio.Future[Answer]]] = []
        size = 0
        for item in queued:
            if group and (len(group) >= self.max_commands or size + len(item[0]) > self.max_bytes):
                self._send(group)
                group, size = [], 0
            group.append(item)
            size += len(item[0])
        if group:
            self._send(group)

    def _send(self, group: list[tuple[bytes, asyncio.Future[Answer]]]) -> None:
        self.entries += 1
        if len(group) == 1:
            payload, fut = group[0]
            loop = fut.get_loop()

            def answer_one(result: Any, err: int) -> None:
                loop.call_soon_threadsafe(_resolve, fut, result, err)

            self._propose(payload, answer_one)
            return
        self.batched += len(group)
        batch = encode_batch([p for p, _ in group])
        deadline = command_deadline(batch)
        loop = group[0][1].get_loop()

        def answer_all(result: Any, err: int) -> None:
            loop.call_soon_threadsafe(_resolve_batch, group, deadline, result, err)

        self._propose(batch, answer_all)


def _resolve(fut: asyncio.Future[Answer], result: Any, err: int) -> None:
    if not fut.done():
        fut.set_result((result, err))


def _resolve_batch(group: list[tuple[bytes, asyncio.Future[Answer]]], deadline: float | None,
                   result: Any, err: int) -> None:
    if err == FAIL_REASON.SUCCESS:
        if isinstance(result, list) and len(result) == len(group):
            for (_, fut), one in zip(group, result, strict=True):
                _resolve(fut, one, err)
        else:  # cannot happen with apply_batch on every member; never guess whose result is whose
            for _, fut in group:
                _resolve(fut, None, FAIL_REASON.UNKNOWN_OUTCOME)
        return
    for payload, fut in group:
        if err == FAIL_REASON.REQUEST_DENIED and command_deadline(payload) != deadline:
            _resolve(fut, None, BATCH_DENIED)  # in time itself: propose it again
        else:
            _resolve(fut, None, err)
