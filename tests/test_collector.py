"""Garbage collected between fan-out rounds, not in the middle of one."""

from __future__ import annotations

import asyncio
import gc
import weakref

from app.collector import Collector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


async def test_automatic_collection_is_off_while_running_and_back_after() -> None:
    assert gc.isenabled()
    collector = Collector(cadence=15)
    collector.start()
    try:
        assert not gc.isenabled()
    finally:
        await collector.stop()
    assert gc.isenabled()


async def test_a_round_collects_cyclic_garbage_when_a_collection_is_due() -> None:
    collector = Collector(cadence=15, young_seconds=0.0, full_seconds=0.0)
    collector.start()
    try:
        dead = cycle()
        assert dead() is not None  # automatic collection is off: the cycle is still there
        collector.after_round()
        assert dead() is None
        assert collector.collections == 1 and collector.full_collections == 1
    finally:
        await collector.stop()


async def test_rounds_closer_than_young_seconds_do_not_collect() -> None:
    collector = Collector(cadence=15, young_seconds=3600.0)
    collector.start()
    try:
        collector.after_round()
        collector.after_round()
        assert collector.collections == 0
    finally:
        await collector.stop()


async def test_with_no_rounds_the_timer_collects_between_grid_instants() -> None:
    collector = Collector(cadence=1, full_seconds=0.0)
    collector.start()
    try:
        dead = cycle()
        async with asyncio.timeout(5):
            while collector.collections == 0:
                await asyncio.sleep(0.05)
        assert dead() is None
    finally:
        await collector.stop()
