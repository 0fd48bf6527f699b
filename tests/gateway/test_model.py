"""Model values: ids, Resource, Op, Txn and the frozen containers that keep specs immutable."""

from __future__ import annotations

import copy
import json
import pickle
from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from gateway import KINDS, CodecError, Op, Resource, Txn, ValidationError, check_id, freeze, is_valid_id, thaw
from gateway.frozen import FrozenDict, FrozenList, is_frozen
from gateway.model import resource_from_dict
from gateway.packing import pack, unpack


def test_kinds() -> None:
    assert KINDS == ("upstreams", "routes", "consumers", "plugins")


@pytest.mark.parametrize("good", ["a", "A1", "0", "r.1_x-y", "x" * 64])
def test_valid_ids(good: str) -> None:
    assert is_valid_id(good) and check_id(good) == good


@pytest.mark.parametrize("bad", ["", "_a", "-a", ".a", "a b", "a/b", "a\n", "x" * 65, "ü", None, 1])
def test_invalid_ids(bad: Any) -> None:
    assert not is_valid_id(bad)
    with pytest.raises(ValidationError) as info:
        check_id(bad, "routes")
    assert info.value.path is not None and info.value.path.startswith("routes")


def test_freeze_is_deep_read_only_and_equal() -> None:
    source: dict[str, Any] = {"a": [1, {"b": 2}], "c": {"d": [3]}}
    frozen = freeze(source)
    assert frozen == source and isinstance(frozen, dict) and isinstance(frozen["a"], list)
    source["a"].append(9)
    assert frozen["a"] == [1, {"b": 2}]  # copied on the way in
    for mutate in (
        lambda: frozen.__setitem__("x", 1),
        lambda: frozen.pop("a"),
        lambda: frozen.update({}),
        lambda: frozen.setdefault("x", 1),
        lambda: frozen.clear(),
        lambda: frozen["a"].append(1),
        lambda: frozen["a"].sort(),
        lambda: frozen["a"][1].__setitem__("b", 5),
        lambda: frozen["c"]["d"].extend([1]),
    ):
        with pytest.raises(TypeError, match="read-only"):
            mutate()
    with pytest.raises(TypeError):
        frozen |= {"x": 1}
    assert is_frozen(frozen) and is_frozen(frozen["a"][1]) and not is_frozen({"a": 1})
    assert freeze(frozen) is frozen


def test_frozen_values_copy_to_plain_and_serialize() -> None:
    frozen = freeze({"a": [1, {"b": (2, 3)}]})
    for plain in (thaw(frozen), copy.deepcopy(frozen)):
        assert type(plain) is dict and type(plain["a"]) is list and plain == {"a": [1, {"b": [2, 3]}]}
        plain["a"].append(4)
    shallow = copy.copy(frozen)
    assert type(shallow) is dict
    assert type(copy.copy(frozen["a"])) is list
    assert json.loads(json.dumps(frozen)) == {"a": [1, {"b": [2, 3]}]}
    assert unpack(pack(frozen)) == {"a": [1, {"b": [2, 3]}]}
    assert pickle.loads(pickle.dumps(frozen)) == frozen  # used by nothing, but must not break
    assert isinstance(pickle.loads(pickle.dumps(frozen)), FrozenDict)
    assert isinstance(pickle.loads(pickle.dumps(frozen["a"])), FrozenList)
    assert repr(frozen) == "{'a': [1, {'b': [2, 3]}]}"


def test_resource_freezes_spec_and_to_json_is_plain() -> None:
    spec: dict[str, Any] = {"paths": ["/a"], "upstream": "u1"}
    res = Resource("routes", "r1", spec, 1, 2)
    spec["paths"].append("/b")
    assert res.spec == {"paths": ["/a"], "upstream": "u1"}
    with pytest.raises(TypeError):
        res.spec["paths"].append("/c")
    with pytest.raises(FrozenInstanceError):
        res.id = "r2"  # type: ignore[misc]
    out = res.to_json()
    assert out == {"paths": ["/a"], "upstream": "u1", "id": "r1", "created_revision": 1, "mod_revision": 2}
    out["paths"].append("/x")
    assert res.spec["paths"] == ["/a"]
    assert res.to_dict() == {"spec": res.spec, "created_revision": 1, "mod_revision": 2}
    assert res == Resource("routes", "r1", {"paths": ["/a"], "upstream": "u1"}, 1, 2)


def test_op_and_txn_freeze_their_inputs() -> None:
    body = {"paths": ["/a"]}
    op = Op("put", "routes", "r1", body)
    body["paths"].append("/b")
    assert op.body == {"paths": ["/a"]}
    txn = Txn("req", [op])  # type: ignore[arg-type]
    assert isinstance(txn.ops, tuple) and txn.ops == (op,)
    assert Op("delete", "routes", "r1").body is None


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (None, "routes[r1]"),
        ({"created_revision": 1, "mod_revision": 1}, "routes[r1].spec"),
        ({"spec": {1: 2}, "created_revision": 1, "mod_revision": 1}, "routes[r1].spec"),
        ({"spec": {}, "created_revision": 0, "mod_revision": 1}, "routes[r1].created_revision"),
        ({"spec": {}, "created_revision": 1, "mod_revision": True}, "routes[r1].mod_revision"),
        ({"spec": {}, "created_revision": 3, "mod_revision": 2}, "routes[r1]"),
    ],
)
def test_resource_from_dict_errors(data: Any, path: str) -> None:
    with pytest.raises(CodecError) as info:
        resource_from_dict("routes", "r1", data)
    assert info.value.path == path


def test_resource_from_dict_kind_and_id() -> None:
    with pytest.raises(CodecError):
        resource_from_dict("services", "r1", {"spec": {}, "created_revision": 1, "mod_revision": 1})
    with pytest.raises(CodecError):
        resource_from_dict("routes", "bad id", {"spec": {}, "created_revision": 1, "mod_revision": 1})
    res = resource_from_dict("routes", "r1", {"spec": {"a": [1]}, "created_revision": 1, "mod_revision": 1})
    assert res.spec == {"a": [1]} and is_frozen(res.spec)


def test_resource_from_dict_rejects_deep_nesting() -> None:
    deep: Any = "leaf"
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(CodecError, match="nested"):
        resource_from_dict("routes", "r1", {"spec": {"x": deep}, "created_revision": 1, "mod_revision": 1})
    ok: Any = "leaf"
    for _ in range(20):
        ok = {"k": ok}
    assert resource_from_dict("routes", "r1", {"spec": ok, "created_revision": 1, "mod_revision": 1}).spec == ok
