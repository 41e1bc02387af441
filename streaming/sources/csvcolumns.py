"""Plain CSV split into numpy columns without a Python object per field: the bulk path of the
replay reader (millions of trades in a second or two). Every function answers None for anything
it does not vouch for (quotes, a missing or empty field, an exponent, an odd time layout); the
caller then reads the file row by row, whose validation names the bad row and field."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Bytes = npt.NDArray[np.uint8]

NEWLINE, CARRIAGE_RETURN, COMMA = ord("\n"), ord("\r"), ord(",")
ZERO, DOT = ord("0"), ord(".")
MAX_DIGITS = 15  # a decimal with more digits may not be exact as mantissa / 10**k
# Layouts of ISO 8601 times: YYYY-MM-DD(T| )HH:MM:SS, then nothing, .fff or .ffffff, then
# nothing or Z (UTC, as a naive time is): lengths without the Z.
PLAIN, MILLIS, MICROS = 19, 23, 26
SEPARATORS = {4: b"-", 7: b"-", 13: b":", 16: b":"}


class Fields:
    """Where each field of each row lies in the buffer: field k of row r is
    buf[low(k)[r] : high(k)[r]]."""

    def __init__(self, buf: Bytes, bounds: IntArray) -> None:
        self.buf = buf
        self.bounds = bounds
        self.rows = len(bounds)
        self.padded: Bytes = buf  # buf with zeros after it, grown on demand
        columns = bounds.shape[1] - 1
        self._lows = [np.ascontiguousarray(bounds[:, k] + 1) for k in range(columns)]
        self._highs = [np.ascontiguousarray(bounds[:, k + 1]) for k in range(columns)]

    def low(self, k: int) -> IntArray:
        return self._lows[k]

    def high(self, k: int) -> IntArray:
        return self._highs[k]

    def block(self, k: int, width: int | None = None) -> Bytes:
        """Field k of every row as a (rows, width) byte matrix, zero past each field's end
        (width: the widest field by default): one contiguous copy per row out of a sliding
        window over the buffer, not one gather per byte."""
        low, high = self.low(k), self.high(k)
        size = high - low
        if width is None:
            width = int(size.max()) if self.rows else 1
        if len(self.padded) < len(self.buf) + width:
            self.padded = np.concatenate([self.buf, np.zeros(max(width, 64), dtype=np.uint8)])
        out: Bytes = sliding_window_view(self.padded, width)[low]
        out *= np.arange(width, dtype=np.int32) < size[:, None]
        return out

    def text(self, k: int) -> npt.NDArray[np.bytes_]:
        """Field k of every row as fixed-width bytes (for short fields: names)."""
        column = self.block(k)
        return column.view(f"S{column.shape[1]}").reshape(-1)


def split(body: bytes, columns: int) -> Fields | None:
    """The rows of a CSV body (no header), each of exactly `columns` non-empty fields."""
    if b'"' in body:
        return None
    buf = np.frombuffer(body, dtype=np.uint8)
    if len(buf) and buf[-1] != NEWLINE:
        buf = np.append(buf, np.uint8(NEWLINE))
    ends = np.flatnonzero(buf == NEWLINE)
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    stops = ends - (buf[np.maximum(ends - 1, 0)] == CARRIAGE_RETURN)  # CRLF rows
    found = np.flatnonzero(buf == COMMA)
    if len(found) != (columns - 1) * len(ends):
        return None
    commas = found.reshape(len(ends), columns - 1)
    # Rows do not overlap, so this holds only when every row has exactly its commas.
    if not ((commas > starts[:, None]).all() and (commas < stops[:, None]).all()):
        return None
    bounds = np.column_stack([starts - 1, commas, stops]).astype(np.int64)
    if len(bounds) and (np.diff(bounds, axis=1) < 2).any():
        return None  # an empty field
    return Fields(buf, bounds)


def decimals(fields: Fields, k: int) -> FloatArray | None:
    """Field k as numbers, read as float() reads them (numpy's C parser)."""
    block = fields.block(k)
    try:
        values: FloatArray = block.view(f"S{block.shape[1]}").reshape(-1).astype(np.float64)
    except ValueError:
        return None
    return values


def iso_epochs(fields: Fields, k: int) -> FloatArray | None:
    """Field k as UTC epoch seconds from ISO 8601 times in the layouts PLAIN/MILLIS/MICROS,
    with or without a Z (a naive time is UTC, as for the row reader)."""
    high = fields.high(k)
    size = high - fields.low(k)
    zulu = fields.buf[np.maximum(high - 1, 0)] == ord("Z")
    length = size - zulu
    if not np.isin(length, [PLAIN, MILLIS, MICROS]).all():
        return None
    block = fields.block(k, MICROS + 1)
    rows = np.arange(fields.rows)
    block[rows[zulu], length[zulu]] = 0
    for offset, separator in SEPARATORS.items():
        if (block[:, offset] != separator[0]).any():
            return None
    if not np.isin(block[:, 10], [ord("T"), ord(" ")]).all():
        return None
    if (block[length > PLAIN, PLAIN] != DOT).any():
        return None
    try:  # numpy's parser refuses anything but digits where digits belong
        stamps = block.view(f"S{MICROS + 1}").reshape(-1).astype("datetime64[us]")
    except ValueError:
        return None  # out of range: month 13, 30 February, hour 24
    epochs: FloatArray = stamps.astype(np.int64) / 1e6
    return epochs


def codes(
    secids: npt.NDArray[np.bytes_],
) -> tuple[npt.NDArray[np.bytes_], npt.NDArray[np.intp]]:
    """np.unique(secids, return_inverse=True), fast for millions of rows of a few names: the
    fixed-width names are hashed to integers, unique over those, and checked name by name (a
    hash collision falls back to sorting the names themselves)."""
    width = secids.dtype.itemsize
    padded = np.zeros((len(secids), -(-width // 8) * 8), dtype=np.uint8)
    padded[:, :width] = secids.view(np.uint8).reshape(len(secids), width)
    words = padded.view("<u8")
    key = words[:, 0].copy()
    for column in range(1, words.shape[1]):
        key = key * np.uint64(0x9E3779B97F4A7C15) ^ words[:, column]
    # Few names, many rows: sort the distinct keys only and binary-search every row's.
    distinct = np.unique(key)
    inverse = np.searchsorted(distinct, key)
    first = np.empty(len(distinct), dtype=np.intp)
    first[inverse[::-1]] = np.arange(len(key) - 1, -1, -1)  # the earliest row wins
    names = secids[first]
    if (names[inverse] == secids).all():
        order = np.argsort(names)  # the same order np.unique gives
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return names[order], rank[inverse.reshape(-1)]
    names, inverse = np.unique(secids, return_inverse=True)
    return names, inverse.reshape(-1)
