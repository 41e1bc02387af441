"""Small index definitions whose values are easy to work out by hand."""

from __future__ import annotations

from datetime import timedelta

from streaming.methodology.base import Constituent, IndexBase
from streaming.methodology.calculator import IndexSpec
from streaming.methodology.definition import IndexDefinition
from streaming.methodology.phases import SessionSpec

# Q·FF·W: A 500, B 100, C 20; reference prices 10, 20, 100: MC = 9000 roubles.
SMALL_BASE = IndexBase(
    (
        Constituent("A", "Issuer A", 500.0, 1000, 0.5, 1.0, reference_price=10.0),
        Constituent("B", "Issuer B", 100.0, 200, 1.0, 0.5, reference_price=20.0),
        Constituent("C", "Issuer C", 20.0, 50, 0.4, 1.0, reference_price=100.0),
    ),
    source="small",
)
# IMOEX-like = MC / 3 (3000 at reference), RTSI-like = MC / (90 · 0.5) (200 at reference).
SMALL_DIVISOR = 3.0
SMALL_USD_DIVISOR = 0.5
SMALL_FX = 90.0


def small_definition(cadence: int = 1) -> IndexDefinition:
    """Two indices, RUB and USD, over the three-line base."""
    return IndexDefinition(
        name="small",
        base=SMALL_BASE,
        indices=(
            IndexSpec("IMOEX", "RUB", SMALL_DIVISOR),
            IndexSpec("RTSI", "USD", SMALL_USD_DIVISOR),
        ),
        fx_rate=SMALL_FX,
        cadence_seconds=cadence,
        session=SessionSpec(utc_offset=timedelta(hours=3)),
    )


def formula(prices: dict[str, float]) -> tuple[float, float]:
    """(IMOEX, RTSI) for the small base worked out directly from the formula."""
    shares = {"A": 500.0, "B": 100.0, "C": 20.0}
    reference = {"A": 10.0, "B": 20.0, "C": 100.0}
    mc = sum(shares[s] * prices.get(s, reference[s]) for s in shares)
    return mc / SMALL_DIVISOR, mc / (SMALL_FX * SMALL_USD_DIVISOR)
