"""Stopping background tasks for certain.

A task is cancelled by raising CancelledError at the await it is parked on. A client library can
turn that cancellation into an error of its own (a timeout inside a Redis read racing the cancel,
say) that the task's retry loop then handles like any other outage: the task goes on, and whoever
awaited its end waits for ever. `cancel_and_wait` cancels again at every await until the task has
ended, so a stand-down or a shutdown always finishes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

CANCEL_AGAIN_SECONDS = 0.5  # how long a cancelled task may run before it is cancelled again


async def cancel_and_wait(task: asyncio.Task[Any], again: float = CANCEL_AGAIN_SECONDS) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again while it goes on. An error it
    ended with is raised here, as awaiting it would; its cancellation is not."""
    attempts = 0
    while not task.done():
        task.cancel()
        attempts += 1
        await asyncio.wait({task}, timeout=again)
    if attempts > 1:
        log.warning(
            "task %s ignored a cancellation and was cancelled %d times", task.get_name(), attempts
        )
    if not task.cancelled():
        task.result()
