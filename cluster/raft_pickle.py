"""pysyncobj's pickle, made data-only and fast: what a peer sends can no longer run code.

pysyncobj pickles every Raft message and every replicated call (``pysyncobj/pickle.py``), and
unpickles what arrives with plain ``pickle.loads``. Frames are sealed with a key derived from the
cluster secret (cluster/raft_seal.py), so only a holder of the secret gets that far; but any holder
of it (a leaked ``node.toml``, a backup) could make every member run code by sending one frame
whose pickle names ``os.system``. And pysyncobj writes at protocol 2, which has no opcode for
``bytes``: each one is pickled as ``_codecs.encode(<latin-1 text>, "latin1")``, a global call, and
every command travels as bytes (inside the replicated call, inside the entry, inside AppendEntries).
That text costs up to twice the size in UTF-8, and both pickling and unpickling it take ~5x as long
as protocol 5 for a 1.2 KB command.

So, installed before the member is built (``install``):

* **Writes at protocol 5** (``dumps``/``dump``): bytes, sets and nodes without a global call for
  the data. Any Python >= 3.8 reads it, so a member still running the old code reads our frames.
* **Reads with ``DataUnpickler``**: it resolves exactly two globals and refuses every other one
  (``UnpicklingError``; pysyncobj then drops the connection, before anything is applied):

  - ``pysyncobj.node.TCPNode``: membership entries carry the node object (cluster/membership.py);
    rebuilding it calls no constructor (NEWOBJ + BUILD set ``__dict__``).
  - ``_codecs.encode``, for latin-1 only, and ``set``/``frozenset``: how protocol 2 spells bytes
    and sets, in journals and log entries written before this, or by a member not yet upgraded.

pysyncobj reaches its pickle through module attributes (``pysyncobj.pickle.loads`` in
``tcp_connection.py`` and ``syncobj.py``, names imported into ``journal.py``), so ``install``
replaces those attributes; it checks first that they still exist and are what pysyncobj calls,
and otherwise refuses to start (``PysyncobjIncompatible``), like every other private override.
"""

from __future__ import annotations

import io
import logging
import pickle
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from pysyncobj.node import TCPNode

from cluster.raft_compat import PysyncobjIncompatible

PROTOCOL = 5
log = logging.getLogger("gwadm.raft")
_last_refusal_log = float("-inf")


def _latin1_bytes(text: str, encoding: str = "utf-8") -> bytes:
    """Protocol 2's ``_codecs.encode(text, "latin1")`` for bytes, and nothing else it could name."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed on the Raft wire")
    return text.encode("latin-1")


ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("pysyncobj.node", "TCPNode"): TCPNode,
    ("_codecs", "encode"): _latin1_bytes,
    # protocol 2 has no opcode for sets either (``__builtin__`` is how it names ``builtins``)
    **{(module, kind.__name__): kind for module in ("builtins", "__builtin__") for kind in (set, frozenset)},
}


class DataUnpickler(pickle.Unpickler):
    """An unpickler for plain data (dicts, lists, tuples, sets, str, bytes, numbers) and nodes."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            _log_refusal(f"{module}.{name}")
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed on the Raft wire") from None


def _log_refusal(what: str) -> None:
    """pysyncobj drops the connection without a word (its parser swallows every error): say it here,
    at most once a second. Only a holder of the cluster secret can send a frame that opens."""
    global _last_refusal_log
    now = time.monotonic()
    if now - _last_refusal_log >= 1.0:
        _last_refusal_log = now
        log.warning("refused a Raft frame that names %r (only data is accepted; the connection is dropped): "
                    "a peer holding the cluster secret sent it", what[:100])


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    if isinstance(data, str):  # pysyncobj's to_bytes accepts text (its Python 2 heritage)
        data = data.encode("latin-1")
    return DataUnpickler(io.BytesIO(data)).load()


def load(file: IO[bytes]) -> Any:
    return DataUnpickler(file).load()


def dumps(obj: Any, protocol: int | None = None) -> bytes:
    return pickle.dumps(obj, PROTOCOL)


def dump(obj: Any, file: IO[bytes], protocol: int | None = None) -> None:
    pickle.dump(obj, file, PROTOCOL)


# module -> the pickle names pysyncobj calls through it
_TARGETS: dict[str, tuple[str, ...]] = {
    "pysyncobj.pickle": ("loads", "load", "dumps", "dump"),
    "pysyncobj.journal": ("loads", "dumps"),
}
_CALLERS = ("pysyncobj.tcp_connection", "pysyncobj.syncobj", "pysyncobj.serializer")
_OURS = {"loads": loads, "load": load, "dumps": dumps, "dump": dump}


def install() -> None:
    """Point pysyncobj's pickle at ``DataUnpickler`` and protocol 5 (idempotent)."""
    import pysyncobj.journal
    import pysyncobj.pickle
    import pysyncobj.serializer
    import pysyncobj.syncobj
    import pysyncobj.tcp_connection  # noqa: F401 - imported so the checks below see them

    for caller in _CALLERS:
        if getattr(sys.modules[caller], "pickle", None) is not pysyncobj.pickle:
            raise PysyncobjIncompatible(
                f"{caller} no longer reaches its pickle as pysyncobj.pickle: the installed pysyncobj "
                "is not the version this node was written for (cluster/raft_pickle.py)"
            )
    for module_name, names in _TARGETS.items():
        for name in names:
            if not callable(getattr(sys.modules[module_name], name, None)):
                raise PysyncobjIncompatible(
                    f"pysyncobj has no {module_name}.{name}: the installed pysyncobj is not the version "
                    "this node was written for (cluster/raft_pickle.py)"
                )
    for module_name, names in _TARGETS.items():  # all checked first: never half installed
        for name in names:
            setattr(sys.modules[module_name], name, _OURS[name])
