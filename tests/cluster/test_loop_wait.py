"""``cluster.loop_wait.within``: a task waiting for the tick thread's answer resumes in the very
next loop iteration (``wait_for(shield(fut))`` took three), and gives up at its timeout."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cluster.loop_wait import within
from tests.support.loop import LoopTicker


async def iterations_to_resume(wait: object) -> int:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    ticker = LoopTicker()
    answered: list[int] = []

    def answer() -> None:  # what the tick thread's reply does, on the loop
        answered.append(ticker.count)
        fut.set_result(7)

    ticker.start()
    threading.Thread(target=loop.call_soon_threadsafe, args=(answer,)).start()
    assert await wait(fut) == 7  # type: ignore[operator]
    resumed = ticker.count
    ticker.stop()
    return resumed - answered[0]


async def test_within_resumes_in_the_iteration_after_the_answer() -> None:
    lag = await iterations_to_resume(lambda f: within(f, 5))
    old = await iterations_to_resume(lambda f: asyncio.wait_for(asyncio.shield(f), 5))
    print("iterations from answer to resumption: within", lag, "wait_for(shield)", old)
    assert lag <= 1
    assert old > lag  # the measure tells the two apart


async def test_within_times_out_and_fails_the_future() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await within(fut, 0.01)
    assert fut.done() and isinstance(fut.exception(), TimeoutError)
