"""The `index-ticker compute` command and help texts, run as a user runs them."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from streaming.cli import build_parser, main

BASE = """secids,issue_size_total,ff_factor,w_factor,waprice
A,1000,0.5,1,10
B,200,1,0.5,20
C,50,0.4,1,100
"""


@pytest.fixture
def base_file(tmp_path: Path) -> Path:
    path = tmp_path / "base.csv"
    path.write_text(BASE)
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streaming.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.system
def test_compute_with_base_prices(base_file: Path) -> None:
    done = run("compute", "--base", str(base_file), "--divisor", "3")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["capitalization"] == 9000.0 and result["value"] == 3000.0
    assert "usd_value" not in result


def test_compute_with_prices_file_and_fx(
    base_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text("secid,price\nB,25\n")
    code = main(
        [
            "compute",
            "--base",
            str(base_file),
            "--divisor",
            "3",
            "--prices",
            str(prices),
            "--fx",
            "90",
            "--usd-divisor",
            "0.5",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["capitalization"] == 9500.0  # 9000 + (25 - 20)·100
    assert result["value"] == pytest.approx(9500 / 3)
    assert result["usd_value"] == pytest.approx(9500 / 45)


def test_unknown_secids_in_prices_are_named(
    base_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text("A,11\nZZZ,1\nYYY,2\n")
    assert (
        main(["compute", "--base", str(base_file), "--divisor", "3", "--prices", str(prices)]) == 2
    )
    err = capsys.readouterr().err
    assert "YYY" in err and "ZZZ" in err


@pytest.mark.parametrize(
    ("content", "words"),
    [("A,abc\n", "row 1, column 'price'"), ("A,1\nA,2\n", "duplicate"), ("A,-3\n", "positive")],
)
def test_bad_prices_file(
    base_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, words: str
) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text(content)
    assert (
        main(["compute", "--base", str(base_file), "--divisor", "3", "--prices", str(prices)]) == 2
    )
    assert words in capsys.readouterr().err


def test_bad_base_and_fx_without_usd_divisor(
    tmp_path: Path, base_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("secids,issue_size_total,ff_factor,w_factor\nA,x,1,1\n")
    assert main(["compute", "--base", str(bad), "--divisor", "3"]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "row 2" in err and "issue_size_total" in err
    assert main(["compute", "--base", str(base_file), "--divisor", "3", "--fx", "90"]) == 2
    assert "usd-divisor" in capsys.readouterr().err


@pytest.mark.system
def test_negative_divisor_is_refused_by_the_parser(base_file: Path) -> None:
    done = run("compute", "--base", str(base_file), "--divisor", "-1")
    assert done.returncode == 2 and "positive" in done.stderr


@pytest.mark.system
@pytest.mark.parametrize(
    "command",
    [
        [],
        ["compute"],
        ["serve"],
        ["engine"],
        ["api"],
        ["settings"],
        ["fit-base"],
        ["weights"],
        ["admin"],
    ],
)
def test_help_runs(command: list[str]) -> None:
    done = run(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_every_option_has_help() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    checked = 0
    for name, sub in subparsers.choices.items():
        if name in ("fit-base", "weights", "admin"):
            continue  # parsers of their own, checked through test_help_runs
        for action in sub._actions:
            if action.option_strings and "--help" not in action.option_strings:
                assert action.help, f"{name} {action.option_strings} has no help"
                checked += 1
    assert checked >= 15
