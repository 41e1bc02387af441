"""The `weights` command on small base files: columns, the capitalization it caps, the options
that switch the group limit off, and the errors a user can make."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from streaming.weights import COLUMNS, build_parser, main

# Published W moves a weight by at most ~1e-6 relative (see tests/test_capping.py).
PUBLISHED = 1.1e-6

# A (ordinary + preferred) 30, B..E 12 each, eleven of 2: P·Q·FF per line, FF in percent for A.
# w_factor is given but not used: Q and FF are. Worked by hand: A → 15 % (W = 11/45), B..E
# share W = 11/27 and 10 % each, the others 45/11 % each.
FULL_BASE = "\n".join(
    [
        "# a comment line, as in provenance headers",
        "secids,issuer,waprice,issue_size_total,ff_factor,w_factor",
        "A,A,4,10,50,0.5",
        "B,B,1,12,1,1",
        "C,C,2,6,1,1",
        "AP,A,1,20,0.5,1",
        "D,D,3,4,1,1",
        "E,E,1,24,0.5,1",
        *(f"S{i:02d},S{i:02d},1,2,1,1" for i in range(11)),
    ]
)


def run(base: Path, *options: str) -> tuple[int, list[dict[str, str]], str]:
    out, err = io.StringIO(), io.StringIO()
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = main(["--base", str(base), *options])
    finally:
        sys.stdout, sys.stderr = stdout, stderr
    rows = list(csv.DictReader(io.StringIO(out.getvalue()))) if code == 0 else []
    return code, rows, err.getvalue()


def write(tmp_path: Path, text: str, name: str = "base.csv") -> Path:
    path = tmp_path / name
    path.write_text(text + "\n", encoding="utf-8")
    return path


def by_secid(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {row["secid"]: row for row in rows}


def test_full_layout_two_lines_of_one_issuer(tmp_path: Path) -> None:
    code, rows, err = run(write(tmp_path, FULL_BASE))
    assert code == 0, err
    assert tuple(rows[0]) == COLUMNS
    assert [row["secid"] for row in rows][:6] == ["A", "B", "C", "AP", "D", "E"]
    lines = by_secid(rows)
    assert lines["A"]["w_factor"] == lines["AP"]["w_factor"] == "0.2444444"
    assert lines["A"]["limit"] == lines["AP"]["limit"] == "issuer"
    assert float(lines["A"]["uncapped_weight"]) == pytest.approx(20.0, rel=1e-14)
    assert float(lines["A"]["weight"]) == pytest.approx(10.0, rel=PUBLISHED)
    assert float(lines["AP"]["weight"]) == pytest.approx(5.0, rel=PUBLISHED)
    assert float(lines["A"]["issuer_weight"]) == pytest.approx(15.0, rel=PUBLISHED)
    for secid in "BCDE":
        assert lines[secid]["w_factor"] == "0.4074074"
        assert lines[secid]["limit"] == "top"
        assert float(lines[secid]["weight"]) == pytest.approx(10.0, rel=PUBLISHED)
    for i in range(11):
        line = lines[f"S{i:02d}"]
        assert line["w_factor"] == "1" and line["limit"] == ""
        assert float(line["weight"]) == pytest.approx(45 / 11, rel=PUBLISHED)
    assert sum(float(row["weight"]) for row in rows) == pytest.approx(100.0, rel=1e-12)


def test_index_shares_divided_by_w_and_lines_without_issuer(tmp_path: Path) -> None:
    # issue_size_index = Q·FF·W: the uncapped capitalization is waprice · k / W; without an
    # issuer column every line is its own issuer. Caps 40/20/15/10/10/5 at a 20 % cap give
    # W = 5/16, 5/8, 5/6 (worked in tests/test_capping.py).
    base = write(
        tmp_path,
        "secids,issue_size_index,w_factor,waprice\n"
        "A,10,0.5,2\nB,5,0.25,1\nC,15,,1\nD,5,0.5,1\nE,1,1,10\nF,2.5,0.5,1",
    )
    code, rows, err = run(base, "--issuer-cap", "0.2", "--no-top-cap")
    assert code == 0, err
    lines = by_secid(rows)
    assert [lines[s]["issuer"] for s in "ABCDEF"] == list("ABCDEF")
    assert [float(lines[s]["uncapped_weight"]) for s in "ABCDEF"] == pytest.approx(
        [40, 20, 15, 10, 10, 5], rel=1e-14
    )
    assert [lines[s]["w_factor"] for s in "ABCDEF"] == [
        "0.3125",
        "0.625",
        "0.8333333",
        "1",
        "1",
        "1",
    ]
    assert [float(lines[s]["weight"]) for s in "ABCDEF"] == pytest.approx(
        [20, 20, 20, 16, 16, 8], rel=PUBLISHED
    )


@pytest.mark.parametrize("switch", [["--no-top-cap"], ["--top-cap", "0"], ["--top-n", "0"]])
def test_every_way_to_switch_the_group_limit_off(tmp_path: Path, switch: list[str]) -> None:
    # With the group limit off only A is cut (to 15 %); with it on B..E are cut too.
    base = write(tmp_path, FULL_BASE)
    code, rows, err = run(base, *switch)
    assert code == 0, err
    lines = by_secid(rows)
    assert lines["A"]["limit"] == "issuer"
    assert all(row["limit"] != "top" for row in rows)
    assert {lines[s]["w_factor"] for s in "BCDE"} == {"1"}
    _, default_rows, _ = run(base)
    assert by_secid(default_rows)["B"]["limit"] == "top"


def test_shipped_base(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parent.parent / "streaming" / "data" / "imoex_base.csv"
    code, rows, err = run(shipped)
    assert code == 0, err
    lines = by_secid(rows)
    assert lines["SBER"]["w_factor"] == lines["SBERP"]["w_factor"] == "0.8928517"
    assert lines["LKOH"]["w_factor"] == "0.952805"
    assert float(lines["SBER"]["issuer_weight"]) == pytest.approx(15.0, rel=PUBLISHED)
    assert {row["secid"] for row in rows if row["limit"]} == {"SBER", "SBERP", "LKOH"}


def test_line_without_price_is_named(tmp_path: Path) -> None:
    base = write(
        tmp_path,
        "secids,issue_size_index,waprice\nAAA,10,1\nBBB,10,\n"
        + "\n".join(f"C{i},1,1" for i in range(10)),
    )
    code, rows, err = run(base)
    assert code == 2 and rows == []
    assert "BBB" in err and "waprice" in err and str(base) in err


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["--issuer-cap", "0.2", "--no-top-cap"], ["--issuer-cap 0.2", "at least 5 issuers"]),
        (["--issuer-cap", "1", "--top-cap", "0.5"], ["--top-cap 0.5", "at least 10 issuers"]),
    ],
)
def test_infeasible_limits_name_the_option(
    tmp_path: Path, options: list[str], fragments: list[str]
) -> None:
    base = write(tmp_path, "secids,issue_size_index,waprice\nA,4,1\nB,3,1\nC,2,1\nD,1,1")
    code, _, err = run(base, *options)
    assert code == 2
    assert err.startswith("index-ticker weights: error: ")
    for fragment in fragments:
        assert fragment in err


def test_unreadable_or_malformed_base(tmp_path: Path) -> None:
    code, _, err = run(tmp_path / "missing.csv")
    assert code == 2 and "cannot read" in err
    code, _, err = run(write(tmp_path, "secids,issue_size_index,waprice\nA,abc,1"))
    assert code == 2 and "issue_size_index" in err and "row 2" in err


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--issuer-cap", "15"], "must be a fraction in (0, 1]"),
        (["--issuer-cap", "0"], "must be a fraction in (0, 1]"),
        (["--top-cap", "-0.1"], "must be a fraction in [0, 1]"),
        (["--top-n", "2.5"], "not a whole number"),
        (["--top-n", "-1"], "must be 0 or more"),
        (["--top-cap", "0.5", "--no-top-cap"], "not allowed with argument"),
    ],
)
def test_bad_options_are_refused_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], fragment: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--base", str(write(tmp_path, FULL_BASE)), *options])
    assert exited.value.code == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.system
def test_help_describes_every_option() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streaming.weights", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--base", "--issuer-cap", "--top-cap", "--no-top-cap", "--top-n"):
        assert option in done.stdout
    for action in build_parser()._actions:
        assert action.help, action.option_strings
    assert "waprice·issue_size_total·ff_factor" in done.stdout
