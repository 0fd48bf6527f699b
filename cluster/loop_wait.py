"""Waiting on the event loop for an answer the Raft tick thread gives (``call_soon_threadsafe``)."""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")


async def within(fut: asyncio.Future[T], timeout: float) -> T:
    """``fut``'s result, or TimeoutError after ``timeout`` seconds (``fut`` then fails with it).

    Unlike ``wait_for(shield(fut))`` the waiting task resumes in the loop iteration after the tick
    thread's answer, not three iterations later (each one an epoll round on the request's critical
    path). Only for futures nobody else awaits: on timeout ``fut`` itself is failed."""
    timer = asyncio.get_running_loop().call_later(timeout, _expire, fut)
    try:
        return await fut
    finally:
        timer.cancel()


def _expire(fut: asyncio.Future[T]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())
