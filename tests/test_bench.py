"""The benchmark suite stays runnable: its tables are well-formed and its runner writes them.
(No timing is asserted: the figures are measured by `python -m bench`, not by the tests.)"""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.__main__ as suite
from bench import calculator
from bench.harness import Table, fmt, ratio


def test_calculator_table_compares_every_method_with_the_naive_baseline() -> None:
    (table,) = calculator.tables(quick=True, ticks=3000, batch=500)
    assert table.columns == ["calculator", "method", "ticks/s", "vs naive re-sum per tick"]
    methods = [row[1] for row in table.rows]
    assert methods.count("naive re-sum per tick (baseline)") == 2
    assert all(row[3].endswith("x") for row in table.rows)
    for row in table.rows:
        assert float(row[2].replace(",", "")) > 0


def test_table_markdown_and_number_formats() -> None:
    table = Table("T", "python -m bench.x", "what it is", ["a", "b"])
    table.add("one", 1234567.8)
    table.add("two", 0.01234)
    table.notes.append("a note")
    text = table.markdown()
    assert text.splitlines()[:2] == ["## T", ""]
    assert "| one | 1,234,568 |" in text and "| two | 0.012 |" in text and "- a note" in text
    assert fmt(float("nan")) == "—" and ratio(3.0, 2.0) == "1.50x" and ratio(1.0, 0.0) == "—"


def test_runner_writes_the_document_with_machine_and_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        calculator, "tables", lambda quick: [Table("Calc", "cmd", "about", ["x"], [["1"]])]
    )
    out = tmp_path / "b.md"
    assert suite.main(["--quick", "--only", "calculator", "--output", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmarks") and "cores" in text and "## Calc" in text
    assert "Quick run" in text


def test_runner_refuses_an_unknown_benchmark() -> None:
    with pytest.raises(SystemExit):
        suite.main(["--only", "nope", "--output", "-"])
