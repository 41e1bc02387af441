"""`index-ticker replay`: recorded trade files in every layout give the close computed from the
last prices; bad rows are counted by reason while the good ones apply; the summary as text and
JSON; a paced replay at a large N gives the same close."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from streaming import cli
from streaming.errors import ConfigError
from streaming.methodology.definition import load_definition
from streaming.methodology.family import FamilyCalculator, Group
from streaming.replay_cli import Progress, main

DATA = Path(__file__).parent / "data" / "replay"
DEFINITION = str(load_definition().source)  # IMOEX and RTSI
FAST = ["--definition", DEFINITION, "--cadence", "300"]


def reference_closes() -> dict[str, float]:
    """IMOEX and RTSI from the last price of each line in the recorded trades (not the engine)."""
    last: dict[str, float] = {}
    with (DATA / "ticks.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            last[row["secid"]] = float(row["price"])
    definition = load_definition()
    capitalization = float(
        FamilyCalculator([Group("IMOEX", definition.base)], last).capitalization[0]
    )
    fx = definition.fx_rate
    return {
        spec.code: spec.value(capitalization, fx if spec.currency == "USD" else None)
        for spec in definition.indices
    }


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main([*argv, "--json"]) == 0
    summary: dict[str, object] = json.loads(capsys.readouterr().out)
    return summary


def precise(summary: dict[str, object]) -> dict[str, float]:
    indices = summary["indices"]
    assert isinstance(indices, dict)
    return {code: float(close["precise_value"]) for code, close in indices.items()}


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("ticks.csv", []),
        ("ticks.jsonl", []),
        ("trades.csv", []),
        ("trades.jsonl", []),
        ("trades_nodate.csv", ["--date", "2026-11-20"]),
    ],
)
def test_every_layout_closes_at_the_reference(
    capsys: pytest.CaptureFixture[str], name: str, extra: list[str]
) -> None:
    summary = run_json(capsys, str(DATA / name), *FAST, *extra)
    assert summary["ticks"] == summary["applied"] == 12
    assert summary["rejected"] == 0
    assert precise(summary) == pytest.approx(reference_closes(), rel=1e-12)


def test_moex_trade_times_are_moscow_time(capsys: pytest.CaptureFixture[str]) -> None:
    # 10:00:05 Moscow is 07:00:05 UTC: the first grid instant is 07:05:00 at a 300 s cadence,
    # and with --session moex nothing is published before 10:00 Moscow.
    summary = run_json(capsys, str(DATA / "trades.csv"), *FAST, "--session", "moex")
    indices = summary["indices"]
    assert isinstance(indices, dict)
    assert indices["IMOEX"]["kind"] == "close"
    assert indices["IMOEX"]["time"] == "2026-11-20T15:50:00.000Z"  # 18:50 Moscow


def test_bad_rows_are_counted_by_reason_and_good_ones_apply(
    capsys: pytest.CaptureFixture[str],
) -> None:
    summary = run_json(capsys, str(DATA / "bad.csv"), *FAST)
    assert summary["ticks_read"] == 17
    assert summary["applied"] == 12
    assert summary["rejected"] == 5
    by_field = summary["rejected_by_field"]
    assert isinstance(by_field, dict)
    assert {name: entry["count"] for name, entry in by_field.items()} == {
        "secid": 2,
        "price": 2,
        "time": 1,
    }
    assert by_field["secid"]["first_line"] == 4
    assert "unknown secid 'XXXX'" in by_field["secid"]["first_reason"]
    assert by_field["price"]["first_line"] == 8
    assert "must be positive" in by_field["price"]["first_reason"]
    assert precise(summary) == pytest.approx(reference_closes(), rel=1e-12)


def test_bad_trade_times_and_dates_are_rejects(capsys: pytest.CaptureFixture[str]) -> None:
    summary = run_json(capsys, str(DATA / "bad_trades.csv"), *FAST)
    by_field = summary["rejected_by_field"]
    assert isinstance(by_field, dict)
    assert by_field["tradetime"]["first_line"] == 2
    assert "25:00:00" in by_field["tradetime"]["first_reason"]
    assert by_field["tradedate"]["first_line"] == 3
    assert "20.11.2026" in by_field["tradedate"]["first_reason"]
    assert summary["applied"] == 12
    assert precise(summary) == pytest.approx(reference_closes(), rel=1e-12)


def test_trades_without_a_date_are_refused_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    summary = run_json(capsys, str(DATA / "trades_nodate.csv"), *FAST)
    assert summary["ticks"] == 0 and summary["rejected"] == 12
    by_field = summary["rejected_by_field"]
    assert isinstance(by_field, dict)
    assert "give the trading date" in by_field["tradedate"]["first_reason"]
    assert summary["indices"] == {}


def test_text_summary_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(DATA / "bad.csv"), *FAST]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "as fast as possible" in out
    for label, number in [("ticks read", 17), ("applied", 12), ("rejected", 5)]:
        line = next(line for line in out.splitlines() if line.startswith(label))
        assert line.split()[-1] == str(number)
    assert "first at line 4: secid: unknown secid 'XXXX'" in out
    assert "held by guard" in out and "publications" in out and "seconds" in out
    closes = reference_closes()
    imoex = next(line for line in out.splitlines() if line.startswith("IMOEX"))
    assert f"{closes['IMOEX']:,.2f} RUB" in imoex
    assert f"{closes['RTSI']:,.2f} USD" in out
    # stderr is not a terminal here: plain progress lines, the last one complete.
    assert captured.err.splitlines()[-1].startswith("replay: 12/12 ticks (100%)")
    assert "\r" not in captured.err


def test_paced_replay_at_large_speed_gives_the_same_close(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fast = run_json(
        capsys, str(DATA / "trades.csv"), "--definition", DEFINITION, "--session", "moex"
    )
    paced = run_json(
        capsys,
        str(DATA / "trades.csv"),
        "--definition", DEFINITION, "--session", "moex", "--speed", "600",
    )  # fmt: skip
    assert paced["mode"] == "paced" and paced["speed"] == 600
    assert paced["applied"] == 12
    indices = paced["indices"]
    assert isinstance(indices, dict)
    assert indices["IMOEX"]["kind"] == "close"
    assert precise(paced) == pytest.approx(precise(fast), rel=1e-12)
    assert precise(paced) == pytest.approx(reference_closes(), rel=1e-12)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal() -> None:
    moments = iter([0.0, 1.0, 2.0, 4.0])
    stream = Terminal()
    progress = Progress(100, stream, every=0.5, clock=lambda: next(moments))
    progress.update(25)  # at 1 s: 25 ticks/s, 3 s left
    progress.update(50)  # at 2 s
    progress.finish()  # at 4 s
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "replay: 25/100 ticks (25%), 25 ticks/s, ETA 3 s" in text
    assert "replay: 50/100 ticks (50%), 12 ticks/s, ETA 4 s" in text


def test_progress_on_a_log_writes_a_line_now_and_then() -> None:
    moments = iter([0.0, 1.0, 6.0, 7.0, 8.0])
    stream = io.StringIO()
    progress = Progress(10, stream, clock=lambda: next(moments))
    progress.update(1)  # at 1 s: too soon for a log line
    progress.update(6)  # at 6 s
    progress.update(7)  # at 7 s: too soon
    progress.finish()
    assert stream.getvalue().splitlines() == [
        "replay: 6/10 ticks (60%), 1 ticks/s, ETA 4 s",
        "replay: 7/10 ticks (70%), 1 ticks/s, ETA 3 s",
    ]


def test_registered_as_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["replay", str(DATA / "ticks.jsonl"), *FAST, "--json"]) == 0
    assert precise(json.loads(capsys.readouterr().out)) == pytest.approx(
        reference_closes(), rel=1e-12
    )


def test_missing_file_and_bad_settings_are_clear_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main([str(tmp_path / "none.csv")]) == 2
    assert "file: not found" in capsys.readouterr().err
    assert main([str(DATA / "ticks.csv"), "--definition", DEFINITION, "--cadence", "7"]) == 2
    assert "cadence" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(DATA / "ticks.csv"), "--speed", "-2"])
    assert "--speed" in capsys.readouterr().err


def test_serve_takes_the_trading_day_of_a_trades_file_without_tradedate(tmp_path: Path) -> None:
    from streaming.methodology.definition import load_family
    from streaming.serve import make_clock, make_sources
    from streaming.settings import Settings

    trades = tmp_path / "trades.csv"
    trades.write_text("SECID,TRADETIME,PRICE,QUANTITY\nSBER,10:00:01,250.5,10\n", encoding="utf-8")
    family = load_family()
    settings = Settings(feed=f"replay:{trades}", replay_speed=0, replay_date="2026-11-20")
    (source,) = make_sources(settings, family)
    ticks = source.read()  # type: ignore[attr-defined]
    assert [(t.secid, t.time.isoformat()) for t in ticks] == [
        ("SBER", "2026-11-20T07:00:01+00:00")  # 10:00:01 Moscow time
    ]
    clock, _ = make_clock(settings.with_overrides(replay_speed=2.0), family)
    assert abs(clock() - ticks[0].time.timestamp()) < 5
    with pytest.raises(ConfigError, match="replay_date: must be a date YYYY-MM-DD"):
        Settings(replay_date="20.11.2026")


def test_a_line_that_is_not_utf8_is_refused_alone(tmp_path: Path) -> None:
    from streaming.sources.replay import ReplayReport, read_columns

    path = tmp_path / "mixed.csv"
    path.write_bytes(
        b"secid,price,time\n"
        b"SBER,250.5,2026-11-20T07:00:01Z\n"
        b"\xff\xfe,1,2026-11-20T07:00:02Z\n"
        b"GAZP,150,2026-11-20T07:00:03Z\n"
    )
    report = ReplayReport()
    ticks = read_columns(path, frozenset({"SBER", "GAZP"}), report)
    assert ticks.secids() == ["SBER", "GAZP"]
    assert [(line, reason.split(":")[0]) for line, reason in report.rejected] == [(3, "secid")]
