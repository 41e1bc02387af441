"""Settings wired into a service: each setting picks exactly one part."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.errors import ConfigError
from streaming.methodology.timetable import AroundTheClock, ExchangeTimetable
from streaming.serve import assemble
from streaming.settings import Settings
from streaming.sources.replay import ReplaySource
from streaming.sources.simulator import SimulatorSource
from streaming.store.memory import MemoryStore
from streaming.store.redis import RedisStore


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INDEX_TICKER_INGEST_TOKEN", "a-test-token-0123456789")


def test_embedded_default() -> None:
    parts = assemble(Settings())
    engine = parts.engine
    assert isinstance(engine.store, MemoryStore)
    assert [type(s) for s in engine.sources] == [SimulatorSource]
    assert isinstance(engine.timetable, AroundTheClock)
    assert engine.cadence == 15
    assert parts.family.codes[:2] == ("IMOEX", "RTSI")
    assert {"MOEXBC", "MOEX10", "MOEXOG"} <= set(parts.family.codes)
    assert (parts.token, parts.token_generated) == ("a-test-token-0123456789", False)


def test_each_setting_picks_its_part(tmp_path: Path) -> None:
    ticks = tmp_path / "day.csv"
    ticks.write_text("secid,price\nSBER,250\n")
    parts = assemble(
        Settings(
            redis_url="redis://127.0.0.1:1/0",
            feed=f"replay:{ticks}",
            session="moex",
            cadence=5,
            fx_rate=95.5,
        )
    )
    engine = parts.engine
    assert isinstance(engine.store, RedisStore)  # not opened: nothing listens on port 1
    assert [type(s) for s in engine.sources] == [ReplaySource]
    assert isinstance(engine.timetable, ExchangeTimetable)
    assert engine.cadence == 5
    assert engine.fx_rate == 95.5
    assert assemble(Settings(feed="none")).engine.sources == ()


def test_a_missing_replay_file_is_named() -> None:
    with pytest.raises(ConfigError, match="no-such-file"):
        assemble(Settings(feed="replay:/no-such-file.csv"))
