from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from gateway.evolve import evolve


@dataclass(frozen=True)
class Point:
    x: int = 0
    y: int = 0
    tags: tuple[str, ...] = field(default_factory=tuple)


def test_evolve_is_replace() -> None:
    p = Point(1, 2, ("a",))
    assert evolve(p, y=5) == replace(p, y=5) == Point(1, 5, ("a",))
    assert p == Point(1, 2, ("a",))  # the original is untouched
    with pytest.raises(AttributeError):
        evolve(p, x=3).x = 4  # type: ignore[misc]  # still frozen


def test_evolve_refuses_unknown_fields_and_post_init_classes() -> None:
    with pytest.raises(TypeError, match="no field z"):
        evolve(Point(), z=1)

    @dataclass(frozen=True)
    class Checked:
        x: int = 0

        def __post_init__(self) -> None:
            if self.x < 0:
                raise ValueError("x")

    with pytest.raises(TypeError, match="__post_init__"):
        evolve(Checked(), x=-1)
