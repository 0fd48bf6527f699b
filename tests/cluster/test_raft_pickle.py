"""pysyncobj's pickle made data-only and protocol 5 (cluster/raft_pickle.py)."""

from __future__ import annotations

import codecs
import os
import pickle
import pickletools
from typing import Any

import pysyncobj.journal
import pysyncobj.pickle
import pysyncobj.syncobj
import pytest
from pysyncobj.node import TCPNode

from cluster import raft_pickle
from cluster.raft_compat import PysyncobjIncompatible
from cluster.raft_deadline import payload_deadline
from cluster.state_machine import encode_command

APPEND_ENTRIES = {
    "type": "append_entries", "term": 7, "commit_index": 41, "prevLogIdx": 41, "prevLogTerm": 7,
    "entries": [(b"\x00\xff" + bytes(range(256)), 42, 7), (b"\x01", 43, 7)], "acked": {1, 2},
}  # fmt: skip


class RunsCode:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("true",))


class OtherCodec:
    def __reduce__(self) -> tuple[Any, ...]:
        return (codecs.encode, ("payload", "rot13"))


@pytest.mark.parametrize("protocol", [2, 5])
def test_plain_data_and_nodes_load_at_old_and_new_protocols(protocol: int) -> None:
    node = TCPNode("127.0.0.1:7001", gw_id="n1", admin_url="https://127.0.0.1:8001")
    data = {**APPEND_ENTRIES, "frozen": frozenset({"a"}), "change": ["add", node.id, node]}
    loaded = raft_pickle.loads(pickle.dumps(data, protocol))
    assert loaded == data
    back = loaded["change"][2]
    assert isinstance(back, TCPNode) and back.address == "127.0.0.1:7001"
    assert (back.gw_id, back.admin_url) == ("n1", "https://127.0.0.1:8001")


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("hostile", [RunsCode(), OtherCodec(), eval, pickle.loads], ids=repr)
def test_any_other_global_is_refused_before_it_is_called(protocol: int, hostile: object) -> None:
    with pytest.raises(pickle.UnpicklingError, match="not allowed on the Raft wire"):
        raft_pickle.loads(pickle.dumps(hostile, protocol))


def test_writes_protocol_5_and_a_message_of_data_names_no_global() -> None:
    data = raft_pickle.dumps(APPEND_ENTRIES)
    opcodes = [op.name for op, _arg, _pos in pickletools.genops(data)]
    assert opcodes[0] == "PROTO" and pickletools.genops(data).__next__()[1] == 5
    assert not {"GLOBAL", "STACK_GLOBAL", "REDUCE"} & set(opcodes)
    assert len(data) < len(pickle.dumps(APPEND_ENTRIES, 2))  # bytes as bytes, not latin-1 text in UTF-8


def test_install_points_pysyncobj_at_the_data_unpickler() -> None:
    raft_pickle.install()
    raft_pickle.install()  # idempotent
    assert pysyncobj.pickle.loads is raft_pickle.loads and pysyncobj.pickle.dumps is raft_pickle.dumps
    assert pysyncobj.pickle.load is raft_pickle.load and pysyncobj.pickle.dump is raft_pickle.dump
    assert pysyncobj.journal.loads is raft_pickle.loads and pysyncobj.journal.dumps is raft_pickle.dumps
    with pytest.raises(pickle.UnpicklingError):
        pysyncobj.pickle.loads(pickle.dumps(RunsCode()))  # what tcp_connection and syncobj call


def test_install_refuses_a_pysyncobj_that_reaches_pickle_another_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pysyncobj.syncobj, "pickle", pickle)
    with pytest.raises(PysyncobjIncompatible, match="pysyncobj.syncobj"):
        raft_pickle.install()
    monkeypatch.undo()
    monkeypatch.delattr(pysyncobj.journal, "dumps")
    before = pysyncobj.pickle.loads
    with pytest.raises(PysyncobjIncompatible, match="pysyncobj.journal.dumps"):
        raft_pickle.install()
    assert pysyncobj.pickle.loads is before  # checked before anything is replaced


def test_a_replicated_call_written_at_protocol_2_still_reads() -> None:
    """Journals and log entries from before the switch: the deadline queue still finds the deadline."""
    payload = encode_command({"type": "barrier"}, deadline=1234.5)
    old_entry = bytes([0]) + pickle.dumps((3, (payload,), {}), 2)
    assert b"_codecs" in old_entry
    assert payload_deadline(old_entry) == 1234.5
    assert payload_deadline(bytes([0]) + raft_pickle.dumps((3, (payload,), {}))) == 1234.5


def test_a_refusal_is_logged_at_most_once_a_second(caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(raft_pickle.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(raft_pickle, "_last_refusal_log", float("-inf"))
    caplog.set_level("WARNING", logger="gwadm.raft")
    for _ in range(3):
        with pytest.raises(pickle.UnpicklingError):
            raft_pickle.loads(pickle.dumps(RunsCode()))
    clock[0] += 1.5
    with pytest.raises(pickle.UnpicklingError):
        raft_pickle.loads(pickle.dumps(eval))
    lines = [r.getMessage() for r in caplog.records if r.name == "gwadm.raft"]
    assert len(lines) == 2
    assert "'posix.system'" in lines[0] and "'builtins.eval'" in lines[1]
