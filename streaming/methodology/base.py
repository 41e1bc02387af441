"""The index base: constituents with Q, FF, W and reference prices, loaded from the MOEX ISS
analytics CSV layout."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from streaming.errors import BaseLoadError

SECID_COLUMNS = ("secids", "ticker")
# Shares issued times FF times W may be exported rounded; accept that much disagreement.
INDEX_SHARES_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Constituent:
    """One share line of an index: Q shares issued, FF free float, W weight coefficient."""

    secid: str
    issuer: str
    index_shares: float  # Q·FF·W, the number of shares that count in the index
    issue_size: float | None = None  # Q
    free_float: float | None = None  # FF, a fraction (0.33, not 33)
    weight_factor: float | None = None  # W, 0 < W <= 1
    reference_price: float | None = None  # roubles: previous official close


@dataclass(frozen=True, slots=True)
class IndexBase:
    """The constituent list of an index family, in file order."""

    constituents: tuple[Constituent, ...]
    source: str = "<memory>"

    @property
    def secids(self) -> tuple[str, ...]:
        return tuple(c.secid for c in self.constituents)

    def __len__(self) -> int:
        return len(self.constituents)


def _cell(row: dict[str, str | None], column: str | None) -> str:
    if column is None:
        return ""
    return (row.get(column) or "").strip()


def _parse_number(text: str, path: str, row: int, column: str, *, positive: bool = True) -> float:
    try:
        number = float(text.replace(" ", ""))
    except ValueError:
        raise BaseLoadError(path, row, column, f"not a number: {text!r}") from None
    if not math.isfinite(number):
        raise BaseLoadError(path, row, column, f"not a finite number: {text!r}")
    if positive and number <= 0:
        raise BaseLoadError(path, row, column, f"must be positive, got {text!r}")
    return number


def _optional_number(
    row: dict[str, str | None], column: str | None, path: str, line: int
) -> float | None:
    text = _cell(row, column)
    if column is None or not text:
        return None
    return _parse_number(text, path, line, column)


def _find(header: Sequence[str], name: str) -> str | None:
    for column in header:
        if column.strip().lower() == name:
            return column
    return None


def _data_lines(text: str) -> tuple[list[str], int]:
    """Drop leading comment lines (provenance headers); return lines and how many were dropped."""
    lines = text.splitlines()
    skipped = 0
    while skipped < len(lines) and (lines[skipped].startswith("#") or not lines[skipped].strip()):
        skipped += 1
    return lines[skipped:], skipped


def parse_base_csv(text: str, path: str = "<memory>") -> IndexBase:
    """Parse a base in the ISS analytics layout; every error names file, row, column, reason."""
    try:
        return _parse_base_csv(text, path)
    except csv.Error as error:  # e.g. a cell beyond the csv module's field size limit
        raise BaseLoadError(path, None, None, f"not readable as CSV: {error}") from None


def _parse_base_csv(text: str, path: str) -> IndexBase:
    lines, skipped = _data_lines(text.lstrip("\ufeff"))
    if not lines:
        raise BaseLoadError(path, None, None, "no header line")
    delimiter = ";" if lines[0].count(";") > lines[0].count(",") else ","
    reader = csv.DictReader(io.StringIO("\n".join(lines)), delimiter=delimiter)
    header = list(reader.fieldnames or [])
    secid_column = next((c for n in SECID_COLUMNS if (c := _find(header, n))), None)
    if secid_column is None:
        raise BaseLoadError(path, skipped + 1, "secids", "missing column (or 'ticker')")
    q_col = _find(header, "issue_size_total")
    ff_col = _find(header, "ff_factor")
    w_col = _find(header, "w_factor")
    shares_col = _find(header, "issue_size_index")
    price_col = _find(header, "waprice")
    issuer_col = _find(header, "issuer")
    if shares_col is None:
        for name, column in (
            ("issue_size_total", q_col),
            ("ff_factor", ff_col),
            ("w_factor", w_col),
        ):
            if column is None:
                raise BaseLoadError(
                    path, skipped + 1, name, "missing column (needed without issue_size_index)"
                )

    constituents: list[Constituent] = []
    seen: dict[str, int] = {}
    for offset, row in enumerate(reader):
        line = skipped + 2 + offset  # 1-based file line: header is skipped + 1
        if None in row:
            raise BaseLoadError(path, line, None, "more cells than header columns")
        if not any((value or "").strip() for value in row.values()):
            continue
        secid = _cell(row, secid_column)
        if not secid:
            raise BaseLoadError(path, line, secid_column, "empty")
        if secid in seen:
            raise BaseLoadError(
                path, line, secid_column, f"duplicate secid {secid!r} (first on row {seen[secid]})"
            )
        seen[secid] = line
        issue_size = _optional_number(row, q_col, path, line)
        free_float = _optional_number(row, ff_col, path, line)
        weight = _optional_number(row, w_col, path, line)
        if free_float is not None and free_float > 1:
            if free_float > 100:
                raise BaseLoadError(
                    path, line, ff_col, f"must be at most 1 (or 100%), got {free_float}"
                )
            free_float /= 100  # exported in whole percent
        if weight is not None and weight > 1:
            raise BaseLoadError(path, line, w_col, f"must be at most 1, got {weight}")
        given_shares = _optional_number(row, shares_col, path, line)
        parts = (issue_size, free_float, weight)
        if all(p is not None for p in parts):
            assert issue_size is not None and free_float is not None and weight is not None
            index_shares = issue_size * free_float * weight
            if given_shares is not None and abs(given_shares - index_shares) > max(
                1.0, INDEX_SHARES_TOLERANCE * index_shares
            ):
                raise BaseLoadError(
                    path,
                    line,
                    shares_col,
                    f"{given_shares} disagrees with issue_size_total*ff_factor*w_factor"
                    f" = {index_shares}",
                )
        elif given_shares is not None:
            index_shares = given_shares
        else:
            missing = next(
                name
                for name, value in zip(
                    ("issue_size_total", "ff_factor", "w_factor"), parts, strict=True
                )
                if value is None
            )
            raise BaseLoadError(
                path, line, missing, "empty, and no issue_size_index to use instead"
            )
        constituents.append(
            Constituent(
                secid=secid,
                issuer=_cell(row, issuer_col) or secid,
                index_shares=index_shares,
                issue_size=issue_size,
                free_float=free_float,
                weight_factor=weight,
                reference_price=_optional_number(row, price_col, path, line),
            )
        )
    if not constituents:
        raise BaseLoadError(path, None, None, "no constituents")
    return IndexBase(tuple(constituents), source=path)


def load_base_csv(path: str | Path) -> IndexBase:
    """Load a base CSV file (ISS analytics layout, '#' comment lines allowed on top)."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise BaseLoadError(name, None, None, f"cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise BaseLoadError(name, None, None, "not UTF-8 text") from None
    except ValueError as error:  # a path no file can have (an embedded NUL)
        raise BaseLoadError(name, None, None, f"cannot read: {error}") from None
    return parse_base_csv(text, name)


def format_base_csv(base: IndexBase, comments: Iterable[str] = ()) -> str:
    """Write a base in the ISS layout (secids, issuer, issue_size_index, waprice)."""
    out = io.StringIO()
    for comment in comments:
        out.write(f"# {comment}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["secids", "issuer", "issue_size_index", "waprice"])
    for c in base.constituents:
        price = "" if c.reference_price is None else repr(c.reference_price)
        writer.writerow([c.secid, c.issuer, repr(c.index_shares), price])
    return out.getvalue()
