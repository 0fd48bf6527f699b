"""ConfigStore is the only way the rest of a node reaches Raft (cluster/store.py).

Static: no module of the node outside the adapter (cluster/raft*.py, membership.py, store.py)
imports ``RaftNode`` or the pysyncobj member, and none reaches through a store to its Raft node
(``store.raft``, ``store._raft``, ``app[STORE_KEY].raft``). Live: a real ConfigStore has no public
Raft attribute at all, and everything the HTTP handlers need is a store method."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cluster.raft import RaftSettings
from cluster.store import ConfigStore
from tests.support.cluster import free_port
from tests.support.http import wait_for

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = {"raft.py", "raft_core.py", "raft_safety.py", "raft_read.py", "raft_prevote.py", "raft_transport.py",
           "raft_journal.py", "raft_deadline.py", "raft_compat.py", "raft_settings.py", "membership.py", "store.py"}
INTERNALS = {"RaftNode", "RaftCore", "SyncObj"}


def _node_modules() -> list[Path]:
    files = [p for d in ("cluster", "cli", "proxy") for p in sorted((ROOT / d).rglob("*.py"))]
    return [p for p in files if not (p.parent.name == "cluster" and p.name in ADAPTER)]


def _store_expr(node: ast.expr) -> bool:
    """``store``, ``self.store``, ``x._store``, ``app[STORE_KEY]``, ``request.app[STORE_KEY]``."""
    if isinstance(node, ast.Name):
        return "store" in node.id.lower()
    if isinstance(node, ast.Attribute):
        return "store" in node.attr.lower()
    if isinstance(node, ast.Subscript):
        return "STORE" in ast.unparse(node.slice)
    return False


def reaches_into_raft(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("raft", "_raft") and _store_expr(node.value):
            found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and node.module in ("cluster.raft", "cluster.raft_core", "pysyncobj"):
            found += [f"{name}:{node.lineno}: imports {a.name}" for a in node.names
                      if a.name in INTERNALS]
    return found


def test_no_module_of_the_node_reaches_raft_except_through_the_store() -> None:
    offenders = [hit for path in _node_modules() for hit in reaches_into_raft(path)]
    assert offenders == []


def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "handler.py"
    bad.write_text("from cluster.raft import RaftNode\n\ndef f(request):\n"
                   "    return request.app[STORE_KEY].raft.status(), self.store.raft\n")
    assert len(reaches_into_raft(bad)) == 3


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ConfigStore]:
    addr = f"127.0.0.1:{free_port()}"
    settings = RaftSettings(self_addr=addr, partners=[], password="pw", data_dir=str(tmp_path), fsync=False,
                            node_id="n1", admin_url="http://127.0.0.1:1")
    s = ConfigStore("n1", settings, {addr: "n1"})
    try:
        yield s
    finally:
        s.close()


async def test_a_store_exposes_no_raft_node(store: ConfigStore) -> None:
    assert not hasattr(store, "raft")
    assert not [n for n in dir(store) if not n.startswith("_") and "raft" in n and n != "raft_status"]
    wait_for(store.is_leader, 10, "single member leads")
    # what members.py / tokens_api.py / discovery need, all on the store
    assert [m.id for m in store.members()] == ["n1"]
    assert store.reachable_ids() == {"n1"}
    assert store.leader_member() is not None and store.has_leader_with_quorum()
    assert store.raft_status()["leader_id"] == "n1"
    await store.barrier(5.0)
    assert store.applied_index() >= 1


async def test_writes_applied_together_share_one_subscriber_wake_up(store: ConfigStore) -> None:
    """The tick thread applies a batch of writes back to back; subscribers (push hub, changes API)
    are woken once for the batch, with the newest revision, not once per write."""
    from gateway.model import Op, Txn

    wait_for(store.is_leader, 10, "single member leads")
    seen: list[int] = []
    store.subscribe(seen.append)
    start = store.state.revision
    txns = [Txn(f"r{i}", (Op("put", "upstreams", f"u{i}", {"targets": [{"host": "127.0.0.1", "port": 1000 + i}]}),))
            for i in range(100)]
    tasks = [asyncio.ensure_future(store.write(t, 5.0)) for t in txns]
    for _ in range(5):
        await asyncio.sleep(0)  # every write handed to Raft
    wait_for(lambda: store.state.revision >= start + 100, 10, "all applied")  # the loop stays blocked meanwhile
    results = await asyncio.gather(*tasks)
    assert all(r["ok"] for r in results)
    final = store.state.revision
    assert final == start + 100
    await asyncio.sleep(0)  # a wake-up queued by the last apply runs now
    for _ in range(50):
        if seen and seen[-1] == final:
            break
        await asyncio.sleep(0.01)
    print("wake-ups for 100 writes:", len(seen))
    assert seen and seen[-1] == final, seen  # the last change is always reported
    assert seen == sorted(seen) and len(seen) < 10, seen  # one per write without it


async def test_a_write_wakes_no_subscriber_that_declines_config_changes(store: ConfigStore) -> None:
    """With no session and no held poll (``wants_changes`` False) an applied write queues nothing
    on the loop; once one wants changes, every write is reported again."""
    from gateway.model import Op, Txn

    wait_for(store.is_leader, 10, "single member leads")
    seen: list[int] = []
    wanted = False
    store.subscribe(seen.append, lambda: wanted)
    start = store.state.revision  # Raft status changes (this node's election) are still reported

    async def put(i: int) -> int:
        txn = Txn(f"w{i}", (Op("put", "upstreams", f"u{i}", {"targets": [{"host": "127.0.0.1", "port": 1000 + i}]}),))
        result = await store.write(txn, 5.0)
        assert result["ok"], result
        return int(result["revision"])

    for i in range(5):
        await put(i)
    for _ in range(10):
        await asyncio.sleep(0.01)  # a wake-up queued by the applies would have run by now
    assert store.state.revision == start + 5
    assert [r for r in seen if r > start] == []
    wanted = True
    revision = await put(5)
    for _ in range(500):  # the loop must run for the queued wake-up: poll without blocking it
        if revision in seen:
            break
        await asyncio.sleep(0.01)
    assert [r for r in seen if r > start] == [revision]
