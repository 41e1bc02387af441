"""The project's own index definition file (TOML): the indices of one family over one base,
their divisors, the FX rate, the cadence and the session hours."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from streaming.errors import ConfigError
from streaming.methodology.base import IndexBase, load_base_csv
from streaming.methodology.calculator import IndexSpec
from streaming.methodology.schedule import SessionHours, parse_clock, validate_cadence

DEFAULT_DEFINITION = Path(__file__).resolve().parent.parent / "data" / "imoex.toml"

_TOP_KEYS = {"name", "base", "effective_date", "fx_rate", "cadence_seconds", "session", "index"}
_SESSION_KEYS = {"open", "close", "utc_offset_hours", "weekdays_only"}
_INDEX_KEYS = {"code", "currency", "divisor"}


@dataclass(frozen=True, slots=True)
class IndexDefinition:
    """Everything needed to calculate one family of indices sharing a capitalization."""

    name: str
    base: IndexBase
    indices: tuple[IndexSpec, ...]
    fx_rate: float | None
    cadence_seconds: int
    session: SessionHours
    effective_date: date | None = None
    source: str = "<memory>"
    codes: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", tuple(spec.code for spec in self.indices))
        if len(set(self.codes)) != len(self.codes):
            raise ConfigError("index.code", "index codes must be unique", self.source)
        if any(spec.currency == "USD" for spec in self.indices) and self.fx_rate is None:
            raise ConfigError("fx_rate", "a USD index needs fx_rate (RUB per USD)", self.source)

    def spec(self, code: str) -> IndexSpec:
        for spec in self.indices:
            if spec.code == code:
                return spec
        raise KeyError(code)


def _expect(value: Any, kind: type | tuple[type, ...], key: str, source: str) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(key, "must not be a boolean", source)
    if not isinstance(value, kind):
        raise ConfigError(key, f"has the wrong type {type(value).__name__}", source)
    return value


def _unknown(keys: set[str], allowed: set[str], prefix: str, source: str) -> None:
    extra = sorted(keys - allowed)
    if extra:
        raise ConfigError(f"{prefix}{extra[0]}", "unknown key", source)


def parse_definition(data: dict[str, Any], source: str, directory: Path) -> IndexDefinition:
    """Build a definition from parsed TOML; relative base paths are resolved against directory."""
    try:
        return _parse_definition(data, source, directory)
    except ConfigError as error:
        if error.source is not None:
            raise
        key = "cadence_seconds" if error.key == "cadence" else error.key
        raise ConfigError(key, error.reason, source) from None


def _parse_definition(data: dict[str, Any], source: str, directory: Path) -> IndexDefinition:
    _unknown(set(data), _TOP_KEYS, "", source)
    if "base" not in data:
        raise ConfigError("base", "missing", source)
    base_path = Path(_expect(data["base"], str, "base", source))
    if not base_path.is_absolute():
        base_path = directory / base_path
    base = load_base_csv(base_path)

    fx_rate = data.get("fx_rate")
    if fx_rate is not None:
        fx_rate = float(_expect(fx_rate, (int, float), "fx_rate", source))
        if not (math.isfinite(fx_rate) and fx_rate > 0):
            raise ConfigError("fx_rate", f"must be positive, got {fx_rate!r}", source)

    cadence = validate_cadence(
        _expect(data.get("cadence_seconds", 15), (int, float), "cadence_seconds", source)
    )

    session_data = _expect(data.get("session", {}), dict, "session", source)
    _unknown(set(session_data), _SESSION_KEYS, "session.", source)
    offset = _expect(
        session_data.get("utc_offset_hours", 3), (int, float), "session.utc_offset_hours", source
    )
    session = SessionHours(
        open=parse_clock(
            _expect(session_data.get("open", "10:00"), str, "session.open", source), "session.open"
        ),
        close=parse_clock(
            _expect(session_data.get("close", "18:50"), str, "session.close", source),
            "session.close",
        ),
        utc_offset=timedelta(hours=offset),
        weekdays_only=_expect(
            session_data.get("weekdays_only", True), bool, "session.weekdays_only", source
        ),
    )

    raw_indices = _expect(data.get("index", []), list, "index", source)
    if not raw_indices:
        raise ConfigError("index", "at least one [[index]] table is needed", source)
    specs = []
    for n, raw in enumerate(raw_indices):
        prefix = f"index[{n}]."
        _expect(raw, dict, f"index[{n}]", source)
        _unknown(set(raw), _INDEX_KEYS, prefix, source)
        for key in ("code", "divisor"):
            if key not in raw:
                raise ConfigError(prefix + key, "missing", source)
        code = _expect(raw["code"], str, prefix + "code", source).strip()
        if not code:
            raise ConfigError(prefix + "code", "empty", source)
        try:
            specs.append(
                IndexSpec(
                    code=code,
                    currency=_expect(raw.get("currency", "RUB"), str, prefix + "currency", source),
                    divisor=float(
                        _expect(raw["divisor"], (int, float), prefix + "divisor", source)
                    ),
                )
            )
        except ConfigError as error:
            raise ConfigError(prefix + error.key.split(".")[-1], error.reason, source) from None

    effective = data.get("effective_date")
    if effective is not None and not isinstance(effective, date):
        try:
            effective = date.fromisoformat(_expect(effective, str, "effective_date", source))
        except ValueError:
            raise ConfigError(
                "effective_date", f"must be YYYY-MM-DD, got {effective!r}", source
            ) from None

    return IndexDefinition(
        name=str(data.get("name", specs[0].code)),
        base=base,
        indices=tuple(specs),
        fx_rate=fx_rate,
        cadence_seconds=cadence,
        session=session,
        effective_date=effective,
        source=source,
    )


def read_toml(file: Path, what: str) -> dict[str, Any]:
    """Parse a TOML file; a ConfigError keyed `what` names the file when it cannot."""
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(what, f"cannot read: {error.strerror}", str(file)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(what, f"invalid TOML: {error}", str(file)) from None


def load_definition(path: str | Path = DEFAULT_DEFINITION) -> IndexDefinition:
    """Load an index definition TOML file; errors name the file and the key."""
    file = Path(path)
    return parse_definition(read_toml(file, "definition"), str(file), file.resolve().parent)
