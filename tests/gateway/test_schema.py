"""The declarative field helper shared by resource and plugin validation."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import ValidationError
from gateway.frozen import FrozenDict, freeze, thaw
from gateway.schema import FILL, Bool, Custom, Float, Int, List, Map, Obj, Str, item_path, join_path


def fails(field: Any, value: Any, path: str = "x") -> ValidationError:
    with pytest.raises(ValidationError) as info:
        field.check(value, path)
    return info.value


def test_paths() -> None:
    assert join_path("", "a") == "a"
    assert join_path("routes[r1]", "plugins") == "routes[r1].plugins"
    assert item_path("routes[r1].paths", 0) == "routes[r1].paths[0]"


def test_int_rejects_bool_and_float() -> None:
    field = Int(min=1, max=3)
    assert field.check(2, "x") == 2
    assert "integer" in fails(field, True).message
    assert "integer" in fails(field, 2.0).message
    assert ">= 1" in fails(field, 0).message
    assert "<= 3" in fails(field, 4).message


def test_int_default_range_fits_msgpack() -> None:
    assert "<=" in fails(Int(), 2**63).message
    assert ">=" in fails(Int(), -(2**63) - 1).message


def test_float_accepts_int_and_returns_float() -> None:
    field = Float(gt=0.0, max=10.0)
    value = field.check(3, "x")
    assert value == 3.0 and isinstance(value, float)
    assert "> 0" in fails(field, 0).message
    assert "<= 10" in fails(field, 10.5).message
    assert "number" in fails(field, False).message
    assert "finite" in fails(field, float("nan")).message


def test_str_options() -> None:
    assert Str(lower=True).check("AbC", "x") == "abc"
    assert Str(upper=True, choices=("GET",)).check("get", "x") == "GET"
    assert "one of: a, b" in fails(Str(choices=("a", "b")), "c").message
    assert "at least 3" in fails(Str(min_len=3), "ab").message
    assert "at most 2" in fails(Str(max_len=2), "abc").message
    assert fails(Str(pattern=r"\d+", pattern_hint="digits only"), "1a").message == "digits only"
    assert Str(min_len=0).check("", "x") == ""


def test_bool() -> None:
    assert Bool().check(False, "x") is False
    assert "true or false" in fails(Bool(), 0).message


def test_nullable_and_null() -> None:
    assert Str(nullable=True).check(None, "x") is None
    assert fails(Str(), None).message == "must not be null"


def test_list_dedupe_and_bounds() -> None:
    field = List(Str(lower=True), dedupe=True, min_items=1, max_items=3)
    assert field.check(["A", "a", "b"], "x") == ["a", "b"]
    assert field.check(("c",), "x") == ["c"]
    assert fails(field, [], "x").message == "must have at least 1 item"
    assert "at most 3" in fails(field, ["a", "b", "c", "d"]).message
    assert fails(field, ["a", 1], "p").path == "p[1]"
    assert List(Obj({"a": Int()}), dedupe=True).check([{"a": 1}, {"a": 1}], "x") == [{"a": 1}]


def test_map_keys_normalized_and_collisions() -> None:
    field = Map(Int(), key=Str(lower=True))
    assert field.check({"A": 1, "b": 2}, "m") == {"a": 1, "b": 2}
    error = fails(field, {"A": 1, "a": 2}, "m")
    assert error.path == "m.a" and "duplicate" in error.message
    assert fails(field, {"a": "1"}, "m").path == "m.a"
    assert fails(field, {1: 1}, "m").message == "keys must be strings"
    assert "at most 1" in fails(Map(Int(), max_items=1), {"a": 1, "b": 2}).message


def test_obj_defaults_required_unknown_and_post() -> None:
    inner = Obj({"n": Int(default=1)}, default=FILL)

    def post(out: dict[str, Any], path: str) -> None:
        if out["a"] == 13:
            raise ValidationError("unlucky", join_path(path, "a"))

    field = Obj({"a": Int(), "b": Str(default="d"), "inner": inner, "opt": Obj({}, default=None, nullable=True)}, post=post)
    assert field.check({"a": 1}, "o") == {"a": 1, "b": "d", "inner": {"n": 1}, "opt": None}
    assert field.check({"a": 1, "inner": {"n": 5}, "opt": {}}, "o") == {"a": 1, "b": "d", "inner": {"n": 5}, "opt": {}}
    assert fails(field, {}, "o").path == "o.a"
    error = fails(field, {"a": 1, "c": 2}, "o")
    assert error.path == "o.c" and "unknown field" in error.message and "a, b, inner, opt" in error.message
    assert fails(field, {"a": 13}, "o").path == "o.a"
    assert fails(field, [], "o").message == "must be an object"


def test_fill_default_is_built_once_and_shared_read_only() -> None:
    built: list[str] = []

    def post(out: dict[str, Any], path: str) -> None:
        built.append(path)

    inner = Obj({"n": Int(default=1), "tags": List(Str(), default=[])}, default=FILL, post=post)
    field = Obj({"inner": inner})
    first, second = field.check({}, "a"), field.check({}, "b")
    assert first == second == {"inner": {"n": 1, "tags": []}}
    assert built == ["a.inner"]  # the second use shared the first one's value
    assert first["inner"] is second["inner"] and type(first["inner"]) is FrozenDict
    with pytest.raises(TypeError, match="read-only"):
        first["inner"]["tags"].append("x")  # shared, so nobody can change it for the next use
    first["other"] = 1  # the object around it is the caller's own, plain and mutable
    assert freeze(first)["inner"] is first["inner"]  # kept as it is when the spec is stored
    mutable = thaw(first["inner"])
    mutable["tags"].append("x")
    assert field.check({}, "c") == {"inner": {"n": 1, "tags": []}}


def test_fill_default_that_cannot_be_built_fails_at_each_path() -> None:
    field = Obj({"inner": Obj({"n": Int()}, default=FILL)})
    assert fails(field, {}, "a").path == "a.inner.n"
    assert fails(field, {}, "b").path == "b.inner.n"


def test_obj_post_may_replace() -> None:
    field = Obj({"a": Int()}, post=lambda out, path: {"a": out["a"] * 2})
    assert field.check({"a": 2}, "o") == {"a": 4}


def test_custom_and_default_copies() -> None:
    field = Obj({"xs": List(Int(), default=[1])})
    first = field.check({}, "o")
    first["xs"].append(2)
    assert field.check({}, "o") == {"xs": [1]}
    custom = Custom(lambda value, path: value * 2)
    assert custom.check(4, "x") == 8
    assert custom.required
