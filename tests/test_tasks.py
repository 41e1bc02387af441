"""Stopping a background task for certain, even one that swallows a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from streaming.tasks import cancel_and_wait


async def retries_through_errors(swallowed: list[int], swallow: int) -> None:
    """A retry loop whose client turns the first `swallow` cancellations into an outage error."""
    while True:
        try:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if len(swallowed) < swallow:
                    current = asyncio.current_task()
                    assert current is not None
                    current.uncancel()
                    swallowed.append(1)
                    raise ConnectionError("timed out") from None
                raise
        except ConnectionError:
            continue  # the outage path: go round again


@pytest.mark.parametrize("swallow", [0, 1, 3])
async def test_a_task_that_swallows_cancellations_is_stopped_all_the_same(swallow: int) -> None:
    swallowed: list[int] = []
    task = asyncio.create_task(retries_through_errors(swallowed, swallow))
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, again=0.01), timeout=5)
    assert task.cancelled() and len(swallowed) == swallow


async def test_a_plain_cancel_and_await_would_wait_for_ever_on_such_a_task() -> None:
    swallowed: list[int] = []
    task = asyncio.create_task(retries_through_errors(swallowed, 1))
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.2)
    assert not done and swallowed == [1]  # still running: the cancellation was lost
    await cancel_and_wait(task, again=0.01)
    assert task.cancelled()


async def test_an_error_the_task_ended_with_is_raised() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken"):
        await cancel_and_wait(task)


async def test_a_finished_task_is_left_as_it_is() -> None:
    async def returns() -> int:
        return 7

    task = asyncio.create_task(returns())
    await task
    await cancel_and_wait(task)
    assert task.result() == 7


async def test_tasks_are_cancelled_together_and_the_first_error_in_order_is_raised() -> None:
    swallowed: list[int] = []
    stubborn = asyncio.create_task(retries_through_errors(swallowed, 2))

    async def fails(message: str) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise ValueError(message) from None

    first, second = asyncio.create_task(fails("first")), asyncio.create_task(fails("second"))
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="first"):
        await cancel_and_wait(stubborn, first, second, again=0.01)
    assert stubborn.cancelled() and first.done() and second.done() and swallowed == [1, 1]
