"""Argument types shared by the command-line tools."""

from __future__ import annotations

import argparse
import math
from datetime import date


def positive_number(text: str) -> float:
    """A finite number above zero, or an argparse error saying what is wrong."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return number


def iso_date(text: str) -> date:
    """A date YYYY-MM-DD, or an argparse error saying what is wrong."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def code_and_number(text: str) -> tuple[str, float]:
    """CODE=VALUE with a positive VALUE (e.g. IMOEX=3416313660.2936)."""
    code, separator, value = text.partition("=")
    if not separator or not code.strip():
        raise argparse.ArgumentTypeError(f"expected CODE=VALUE, got {text!r}")
    try:
        return code.strip(), positive_number(value)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{code.strip()}: {error}") from None
