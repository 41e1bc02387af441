"""Which lines moved an index, in index points: per line (P_now − P_then) · Q·FF·W / D (in
dollars / (FX · D)), the largest first; for a dollar index the rest of the move is the FX part."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
DEFAULT_TOP = 5


def line_points(
    shares: FloatArray, now: FloatArray, then: FloatArray, divisor: float, fx_rate: float | None
) -> FloatArray:
    """Index points each line moved from `then` to `now` prices (roubles), at today's FX."""
    scale = divisor if fx_rate is None else divisor * fx_rate
    points: FloatArray = (now - then) * shares / scale
    return points


def top_movers(
    secids: list[str], points: FloatArray, top: int = DEFAULT_TOP
) -> list[list[str | float]]:
    """The `top` lines with the largest moves by absolute points, as [secid, points] pairs."""
    order = np.argsort(-np.abs(points), kind="stable")[:top]
    return [[secids[i], float(points[i])] for i in order.tolist() if points[i] != 0.0]
