"""One exception hierarchy: every error carries the field (and where it applies the file,
row and column) it is about, and a human reason."""

from __future__ import annotations


class IndexTickerError(Exception):
    """Root of every error this service raises on purpose."""


class ConfigError(IndexTickerError):
    """A setting or definition file is wrong: names the key and the reason."""

    def __init__(self, key: str, reason: str, source: str | None = None) -> None:
        self.key = key
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {reason}")


class FileFormatError(IndexTickerError):
    """A data file is wrong: names the file, the row, the column and the reason."""

    row_word = "row"

    def __init__(self, path: str, row: int | None, column: str | None, reason: str) -> None:
        self.path = path
        self.row = row
        self.column = column
        self.reason = reason
        parts = [path]
        if row is not None:
            parts.append(f"{self.row_word} {row}")
        if column is not None:
            parts.append(f"column {column!r}")
        super().__init__(f"{', '.join(parts)}: {reason}")


class BaseLoadError(FileFormatError):
    """An index base (or MOEX daily data) file is wrong."""


class FieldError(IndexTickerError):
    """Something received is wrong in one field: names the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class TickRejected(FieldError):
    """A tick failed validation: names the field and the reason."""


class UnknownIndexError(IndexTickerError):
    """An index code that this service does not calculate."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(f"unknown index {code!r}")


class StoreUnavailable(IndexTickerError):
    """The state store (Redis) does not answer."""


class StreamGroupMissing(IndexTickerError):
    """The tick stream or its readers' group is gone (deleted by hand): join it again."""


class LeaseLost(IndexTickerError):
    """Another engine holds the leader lease: this one must not write."""
