"""Counting event-loop iterations, to test how soon a waiting task resumes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


class LoopTicker:
    """Counts the running loop's iterations (one callback per iteration) while started."""

    def __init__(self) -> None:
        self.count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.Handle | None = None

    def _tick(self) -> None:
        self.count += 1
        assert self._loop is not None
        self._handle = self._loop.call_soon(self._tick)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def stamp_calls(self, monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
        """Replace ``module.name`` with a wrapper that notes this ticker's count at each call."""
        stamps: list[int] = []
        original = getattr(module, name)

        def stamped(*args: Any) -> Any:
            stamps.append(self.count)
            return original(*args)

        monkeypatch.setattr(module, name, stamped)
        return stamps
