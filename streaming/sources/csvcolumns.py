"""Plain CSV split into numpy columns without a Python object per field: the bulk path of the
replay reader (millions of trades in a second or two). Every function answers None for anything
it does not vouch for (quotes, a missing or empty field, an exponent, an odd time layout); the
caller then reads the file row by row, whose validation names the bad row and field."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Bytes = npt.NDArray[np.uint8]

NEWLINE, CARRIAGE_RETURN, COMMA = ord("\n"), ord("\r"), ord(",")
ZERO, DOT, COLON, DASH = ord("0"), ord("."), ord(":"), ord("-")
MAX_DIGITS = 15  # a decimal with more digits may not be exact as mantissa / 10**k
# Layouts of ISO 8601 times: YYYY-MM-DD(T| )HH:MM:SS, then nothing, .fff or .ffffff, then
# nothing or Z (UTC, as a naive time is): lengths without the Z.
PLAIN, MILLIS, MICROS = 19, 23, 26
SEPARATORS = {4: b"-", 7: b"-", 13: b":", 16: b":"}
# Exchange clock times HH:MM:SS, then nothing, .fff or .ffffff: their lengths.
CLOCK, CLOCK_MILLIS, CLOCK_MICROS = 8, 12, 15
DATE = 10  # YYYY-MM-DD
MICROS_PER_DAY = 86_400_000_000
# Beyond 2**53 microseconds from 1970 (about 1685 to 2255) an int64 is rounded on its way to
# float64, and micros / 1e6 could miss the correctly rounded seconds datetime.timestamp() gives.
EXACT_MICROS = 2**53


class Fields:
    """Where each field of each row lies in the buffer: field k of row r is
    buf[low(k)[r] : high(k)[r]]. `separators` holds, per row, the comma after each field but
    the last, then the row's newline; `stops` where each row's last field ends (before a CR)."""

    def __init__(self, buf: Bytes, separators: IntArray, stops: IntArray) -> None:
        self.buf = buf
        self.separators = separators
        self.stops = stops
        self.rows = len(separators)
        self.padded: Bytes = buf  # buf with zeros after it, grown on demand
        # Per column on first use: a wide trades file is read for a few of its columns.
        self._lows: dict[int, IntArray] = {}
        self._highs: dict[int, IntArray] = {}

    def low(self, k: int) -> IntArray:
        if k not in self._lows:
            if k == 0:
                newlines = self.separators[:, -1]
                self._lows[k] = np.concatenate(([0], newlines[:-1] + 1)).astype(np.int64)
            else:
                self._lows[k] = self.separators[:, k - 1] + 1
        return self._lows[k]

    def high(self, k: int) -> IntArray:
        if k not in self._highs:
            last = k == self.separators.shape[1] - 1
            self._highs[k] = self.stops if last else np.ascontiguousarray(self.separators[:, k])
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


def split(body: bytes, columns: int, required: Iterable[int] | None = None) -> Fields | None:
    """The rows of a CSV body (no header), each of exactly `columns` fields, those numbered in
    `required` (default: all) not empty."""
    if b'"' in body or not body:
        return None
    buf = np.frombuffer(body, dtype=np.uint8)
    if buf[-1] != NEWLINE:
        buf = np.append(buf, np.uint8(NEWLINE))
    newline = buf == NEWLINE
    found = np.flatnonzero((buf == COMMA) | newline)
    if len(found) % columns:
        return None
    separators = found.reshape(-1, columns)
    ends = separators[:, -1]
    # Every newline closes a row and no other separator is one: each row has its commas.
    if np.count_nonzero(newline) != len(ends) or (buf[ends] != NEWLINE).any():
        return None
    crlf = buf[np.maximum(ends - 1, 0)] == CARRIAGE_RETURN
    # The csv module ends a row at a lone carriage return too: such a file is not split here.
    if np.count_nonzero(buf == CARRIAGE_RETURN) != np.count_nonzero(crlf):
        return None
    fields = Fields(buf, separators, ends - crlf)
    chosen = range(columns) if required is None else sorted(set(required))
    if any((fields.high(k) - fields.low(k) < 1).any() for k in chosen):
        return None  # an empty field
    return fields


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
    if ((block[:, :4] < ZERO) | (block[:, :4] > ZERO + 9)).any():
        return None  # a signed year (numpy reads -024 and +024; datetime does not)
    if (block[length > PLAIN, PLAIN] != DOT).any():
        return None
    try:  # numpy's parser refuses anything but digits where digits belong
        stamps = block.view(f"S{MICROS + 1}").reshape(-1).astype("datetime64[us]")
    except ValueError:
        return None  # out of range: month 13, 30 February, hour 24
    return epoch_seconds(stamps.astype(np.int64))


def epoch_seconds(micros: IntArray) -> FloatArray | None:
    """UTC epoch seconds from microseconds, exactly as datetime.timestamp() gives them, or None
    outside the range where that holds (EXACT_MICROS)."""
    if len(micros) and (np.abs(micros) >= EXACT_MICROS).any():
        return None
    seconds: FloatArray = micros / 1e6
    return seconds


def _digits(block: Bytes, size: IntArray, separators: Iterable[int]) -> Bytes | None:
    """The digits of fixed-layout fields as numbers 0-9 (0 at separators and past each
    field's end), or None when a byte that should be a digit is not one."""
    digits: Bytes = block - np.uint8(ZERO)  # wraps: any other byte ends up above 9
    digits *= np.arange(block.shape[1]) < size[:, None]
    digits[:, list(separators)] = 0
    return None if (digits > 9).any() else digits


def _number(digits: Bytes, first: int, count: int) -> IntArray:
    """The decimal number written in `count` digit columns from column `first`."""
    value = np.zeros(len(digits), dtype=np.int64)
    for column in range(first, first + count):
        value = value * 10 + digits[:, column]
    return value


def clock_micros(fields: Fields, k: int) -> IntArray | None:
    """Field k as microseconds since midnight from clock times HH:MM:SS, HH:MM:SS.fff or
    HH:MM:SS.ffffff (no offset: exchange local time, as TRADETIME is written)."""
    size = fields.high(k) - fields.low(k)
    if not np.isin(size, [CLOCK, CLOCK_MILLIS, CLOCK_MICROS]).all():
        return None
    block = fields.block(k, CLOCK_MICROS)
    if (block[:, 2] != COLON).any() or (block[:, 5] != COLON).any():
        return None
    if (block[size > CLOCK, CLOCK] != DOT).any():
        return None
    digits = _digits(block, size, [2, 5, CLOCK])
    if digits is None:
        return None
    hours, minutes, seconds = _number(digits, 0, 2), _number(digits, 3, 2), _number(digits, 6, 2)
    if (hours > 23).any() or (minutes > 59).any() or (seconds > 59).any():
        return None  # datetime.time refuses 24:00:00 and leap seconds
    fraction = _number(digits, CLOCK + 1, CLOCK_MICROS - CLOCK - 1)  # zeros past .fff
    micros: IntArray = ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + fraction
    return micros


def iso_days(fields: Fields, k: int) -> IntArray | None:
    """Field k as days since 1970-01-01 from dates YYYY-MM-DD (years 1 to 9999)."""
    size = fields.high(k) - fields.low(k)
    if not (size == DATE).all():
        return None
    block = fields.block(k, DATE)
    if (block[:, 4] != DASH).any() or (block[:, 7] != DASH).any():
        return None
    digits = _digits(block, size, [4, 7])
    if digits is None:
        return None
    year, month, day = _number(digits, 0, 4), _number(digits, 5, 2), _number(digits, 8, 2)
    if not ((year >= 1) & (month >= 1) & (month <= 12) & (day >= 1)).all():
        return None
    months = (year - 1970) * 12 + month - 1
    first = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    after = (months + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    if (day > after - first).any():
        return None  # 30 February, 29 February of a common year
    days: IntArray = first + day - 1
    return days


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
