"""The chaos run's history: one JSON object per line, written while the run happens, checked after.

Why a flat event log rather than a report assembled at the end: the checkers must see exactly what
the clients, the monitor and the nemesis observed and when, including operations whose outcome is
unknown (``info``) because a node died under them. Writing each event as it happens, flushed line by
line, means a run that crashes halfway still leaves a history up to the crash that can be read.

Record types (every record has ``type`` and ``time``, float seconds since run start, monotonic):

- admin operations, Jepsen style: ``invoke`` then exactly one of ``ok`` / ``fail`` / ``info`` per
  ``process``, with ``f`` (read / write / cas / add), ``key``, ``value``, ``node`` and optional
  ``revision`` and ``error``;
- ``nemesis`` (``phase`` start / heal, ``fault``, ``detail``; a start may carry ``injected_at``, the
  time the fault was injected: the record itself is written once a partition has been verified);
- ``node_status`` and ``proxy_status`` (periodic samples by a monitor);
- ``proxy_request`` (steady data-plane traffic);
- ``final`` (written once after the last heal, when the runner has waited for convergence).

:func:`ops` turns the admin records into :class:`Op` intervals -- the unit every checker reasons about.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeAlias

__all__ = [
    "History", "HistoryError", "HistoryWriter", "Op", "OP_TYPES", "REGISTER_FS", "Window", "end_time",
    "final_record", "nemesis_windows", "ops", "read_history", "records",
]  # fmt: skip

History: TypeAlias = Sequence[Mapping[str, Any]]
"""What the checkers take: the records in the order they were written."""

OP_TYPES = frozenset({"invoke", "ok", "fail", "info"})
REGISTER_FS = frozenset({"read", "write", "cas"})
_FS = REGISTER_FS | {"add"}

# Fields every record of a known type must carry, so that a broken harness is caught when the
# history is read (with the line number) instead of as a KeyError deep inside a checker.
_REQUIRED: dict[str, tuple[str, ...]] = {
    **{t: ("process", "f", "key") for t in OP_TYPES},
    "nemesis": ("phase", "fault"),
    "node_status": ("node", "reachable"),
    "proxy_status": ("proxy", "reachable"),
    "proxy_request": ("proxy", "ok"),
    "final": ("heal_time", "nodes", "committed_revision", "committed_hash"),
}


class HistoryError(ValueError):
    """The history is malformed: unreadable line, missing field, or op records that do not pair up."""


class HistoryWriter:
    """Appends records to a JSON-lines file, one flushed line per record, from any thread.

    ``clock`` returns seconds since run start; by default it is ``time.monotonic`` relative to the
    writer's creation. Several writers (or the harness itself) can share one clock by passing it.
    The clock is read under the lock, so lines in the file are in time order unless a caller passes
    an explicit ``time=`` (e.g. an invoke time taken before the request was sent).
    """

    def __init__(self, path: str | os.PathLike[str], clock: Callable[[], float] | None = None) -> None:
        if clock is None:
            start = time.monotonic()

            def clock() -> float:
                return time.monotonic() - start

        self._clock = clock
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")  # closed by close() / __exit__
        self.path = os.fspath(path)

    def now(self) -> float:
        """The writer's clock, for callers that need a timestamp consistent with the records."""
        return self._clock()

    def record(self, type: str, **fields: Any) -> dict[str, Any]:
        """Write one record and return it. ``time`` is stamped from the clock unless given."""
        with self._lock:
            rec: dict[str, Any] = {"type": type, **fields}
            if "time" not in fields:
                rec["time"] = self._clock()
            # Encode before writing: a value that is not JSON raises here and leaves the file intact.
            line = json.dumps(rec, allow_nan=False, separators=(",", ":")) + "\n"
            if self._file.closed:  # a run torn down by an error: its threads may report a moment longer
                return rec
            self._file.write(line)
            self._file.flush()
        return rec

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a history file; raise :class:`HistoryError` naming the file and line on malformed input."""
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{os.fspath(path)}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HistoryError(f"{where}: not valid JSON ({exc.msg}): {line.strip()[:120]!r}") from None
            _validate(rec, where)
            out.append(rec)
    return out


def _validate(rec: Any, where: str) -> None:
    if not isinstance(rec, dict):
        raise HistoryError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    rtype, t = rec.get("type"), rec.get("time")
    if not isinstance(rtype, str):
        raise HistoryError(f"{where}: record without a string 'type'")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise HistoryError(f"{where}: {rtype} record without a numeric 'time'")
    missing = [k for k in _REQUIRED.get(rtype, ()) if k not in rec]
    if missing:
        raise HistoryError(f"{where}: {rtype} record lacks {', '.join(missing)}")
    if rtype in OP_TYPES and rec["f"] not in _FS:
        raise HistoryError(f"{where}: unknown op f={rec['f']!r} (expected one of {sorted(_FS)})")


@dataclass(frozen=True, slots=True)
class Op:
    """One admin operation as an interval: what was asked (``value``) and what came back (``result``).

    ``complete_time`` is None for ``info`` ops: their outcome is unknown, so they may have taken
    effect at any point after ``invoke_time``, or never. ``node`` is the node that answered (or, for
    an op without completion, the node it was sent to).
    """

    process: int
    f: str
    key: str
    value: Any
    result: Any
    status: Literal["ok", "fail", "info"]
    invoke_time: float
    complete_time: float | None
    node: str | None
    revision: int | None = None
    error: str | None = None

    def describe(self) -> str:
        """One human-readable line, for checker problems."""
        end = f"{self.complete_time:.3f}" if self.complete_time is not None else "open"
        if self.f == "read":
            what = f"read {self.key}" + (f" -> {self.result!r}" if self.status == "ok" else "")
        else:
            what = f"{self.f} {self.key} {self.value!r}"
        via = f" via {self.node}" if self.node else ""
        why = f" ({self.error})" if self.error and self.status != "ok" else ""
        return f"p{self.process} {what} {self.status}{why} [{self.invoke_time:.3f}, {end}]{via}"


def ops(history: History) -> list[Op]:
    """Pair each invoke with its process's next completion, in history order.

    An invoke without completion (the run ended under it) becomes an ``info`` op. A completion
    without a pending invoke, a second invoke before the completion, or a completion whose f/key
    differ from the invoke is a harness bug and raises :class:`HistoryError`.
    """
    pending: dict[int, tuple[int, Mapping[str, Any]]] = {}
    out: list[tuple[int, Op]] = []  # (index of the invoke, op): equal-time invokes stay in history order
    for i, rec in enumerate(history):
        rtype = rec.get("type")
        if rtype not in OP_TYPES:
            continue
        proc = rec["process"]
        if rtype == "invoke":
            if proc in pending:
                prev = pending[proc][1]
                raise HistoryError(f"record {i}: process {proc} invoked {rec['f']} while its "
                                   f"{prev['f']} from t={prev['time']} is still open")  # fmt: skip
            pending[proc] = (i, rec)
            continue
        if proc not in pending:
            raise HistoryError(f"record {i}: {rtype} of process {proc} at t={rec['time']} without an invoke")
        at, inv = pending.pop(proc)
        if inv["f"] != rec["f"] or inv["key"] != rec["key"]:
            raise HistoryError(f"record {i}: process {proc} completed {rec['f']} {rec['key']} but invoked "
                               f"{inv['f']} {inv['key']}")  # fmt: skip
        out.append((at, _op(inv, rec)))
    out.extend((at, _op(inv, None)) for at, inv in pending.values())
    out.sort(key=lambda pair: (pair[1].invoke_time, pair[0]))
    return [op for _, op in out]


def _op(inv: Mapping[str, Any], done: Mapping[str, Any] | None) -> Op:
    if done is None:
        return Op(process=inv["process"], f=inv["f"], key=inv["key"], value=inv.get("value"), result=None,
                  status="info", invoke_time=float(inv["time"]), complete_time=None, node=inv.get("node"),
                  error="no completion recorded")  # fmt: skip
    status: Literal["ok", "fail", "info"] = done["type"]
    return Op(
        process=inv["process"], f=inv["f"], key=inv["key"], value=inv.get("value"),
        result=done.get("value") if status == "ok" else None, status=status,
        invoke_time=float(inv["time"]), complete_time=None if status == "info" else float(done["time"]),
        node=done.get("node") or inv.get("node"), revision=done.get("revision"), error=done.get("error"),
    )  # fmt: skip


def records(history: History, *types: str) -> list[Mapping[str, Any]]:
    """The records of the given types, in history order."""
    wanted = set(types)
    return [r for r in history if r.get("type") in wanted]


def final_record(history: History) -> Mapping[str, Any] | None:
    """The ``final`` record (the last one if, wrongly, there are several), or None."""
    finals = records(history, "final")
    return finals[-1] if finals else None


def end_time(history: History) -> float:
    """The latest time in the history (0.0 for an empty one)."""
    return max((float(r["time"]) for r in history), default=0.0)


@dataclass(frozen=True, slots=True)
class Window:
    """A nemesis fault from its start to its heal (``end`` is the history's end if never healed)."""

    fault: str
    start: float
    end: float
    detail: Mapping[str, Any]
    injected: float | None = None  # when the fault was injected (``injected_at``); ``start`` is after it

    def contains(self, t: float) -> bool:
        return self.start <= t <= self.end


def nemesis_windows(history: History) -> list[Window]:
    """Pair each nemesis start with the next heal of the same fault name, in time order."""
    open_: dict[str, list[Mapping[str, Any]]] = {}
    out: list[Window] = []
    for rec in sorted(records(history, "nemesis"), key=lambda r: float(r["time"])):
        fault = str(rec["fault"])
        if rec["phase"] == "start":
            open_.setdefault(fault, []).append(rec)
        elif open_.get(fault):
            start = open_[fault].pop(0)
            out.append(Window(fault, float(start["time"]), float(rec["time"]), start.get("detail") or {},
                              _injected(start)))
    last = end_time(history)
    out.extend(
        Window(f, float(s["time"]), last, s.get("detail") or {}, _injected(s)) for f, ss in open_.items() for s in ss
    )
    out.sort(key=lambda w: w.start)
    return out


def _injected(start: Mapping[str, Any]) -> float | None:
    value = start.get("injected_at")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
