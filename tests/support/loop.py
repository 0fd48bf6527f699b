"""Counting event-loop iterations, to test how soon a waiting task resumes."""

from __future__ import annotations

import asyncio


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
