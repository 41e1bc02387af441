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


async def cancel_and_wait(*tasks: asyncio.Task[Any], again: float = CANCEL_AGAIN_SECONDS) -> None:
    """Cancel every task at once and wait until all have ended, cancelling again those that go on.
    The first error a task ended with, in the order given, is raised here, as awaiting it would;
    a cancellation is not."""
    attempts = 0
    running = {task for task in tasks if not task.done()}
    while running:
        for task in running:
            task.cancel()
        attempts += 1
        _, running = await asyncio.wait(running, timeout=again)
    if attempts > 1:
        log.warning("a task ignored a cancellation and was cancelled %d times", attempts)
    errors = [task.exception() for task in tasks if not task.cancelled()]  # each one retrieved
    first = next((error for error in errors if error is not None), None)
    if first is not None:
        raise first
