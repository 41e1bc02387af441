"""The project's own index definition file (TOML): the indices of one family over one base,
their divisors, the FX rate, the cadence and the session hours."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from streaming.errors import ConfigError, IndexTickerError
from streaming.methodology.base import Constituent, IndexBase, load_base_csv
from streaming.methodology.calculator import IndexSpec
from streaming.methodology.calendar import DEFAULT_CALENDAR, ExchangeCalendar, load_calendar
from streaming.methodology.fx import FxSettings, parse_fx_settings
from streaming.methodology.guard import PriceGuard
from streaming.methodology.phases import AuctionPolicy, SessionSpec, parse_auction_policy
from streaming.methodology.schedule import validate_cadence
from streaming.methodology.timetable import AroundTheClock, ExchangeTimetable, Timetable
from streaming.methodology.weighting import select_lines, weighted_base

DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT_DEFINITION = DATA / "imoex.toml"  # IMOEX and RTSI
DEFAULT_FAMILY = DATA / "family.toml"  # IMOEX, RTSI and the rest of the shipped family

_TOP_KEYS = {
    "name",
    "base",
    "effective_date",
    "fx_rate",
    "cadence_seconds",
    "session",
    "index",
    "profile",
    "capping",
    "fx",
    "calendar",
    "auction_policy",
    "guard",
    "lines",
    "weighting",
}
_FAMILY_KEYS = {"name", "definitions", "fx_rate", "cadence_seconds", "fx", "guard"}
_CAPPING_KEYS = {"issuer_cap", "top_cap", "top_n"}
PROFILES = ("main", "extended")
_INDEX_KEYS = {"code", "currency", "divisor", "base_value"}


@dataclass(frozen=True, slots=True)
class IndexDefinition:
    """Everything needed to calculate one family of indices sharing a capitalization."""

    name: str
    base: IndexBase
    indices: tuple[IndexSpec, ...]
    fx_rate: float | None
    cadence_seconds: int
    session: SessionSpec
    effective_date: date | None = None
    source: str = "<memory>"
    profile: str = "main"  # which trades move it: main session only, or every session
    capping: dict[str, float] = field(default_factory=dict)  # issuer_cap, top_cap, top_n
    fx: FxSettings | None = None  # the [fx] table: which rule turns FX input into steps
    calendar: ExchangeCalendar = field(default_factory=ExchangeCalendar)
    auction_policy: AuctionPolicy = AuctionPolicy.PAUSE  # closing auction: pause or indicative
    guard: dict[str, Any] = field(default_factory=dict)  # the [guard] table; empty: no guard
    weighting: str = "given"  # given | capped | equal: how index shares are (re)computed
    codes: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", tuple(spec.code for spec in self.indices))
        if self.profile not in PROFILES:
            raise ConfigError("profile", f"must be one of {PROFILES}", self.source)
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

    session = SessionSpec.from_mapping(
        _expect(data.get("session", {}), dict, "session", source), source
    )
    calendar_path = data.get("calendar")
    if calendar_path is None:
        calendar = load_calendar(DEFAULT_CALENDAR)
    else:
        relative = Path(_expect(calendar_path, str, "calendar", source))
        calendar = load_calendar(relative if relative.is_absolute() else directory / relative)
    auction_policy = parse_auction_policy(data.get("auction_policy", "pause"), source=source)

    raw_indices = _expect(data.get("index", []), list, "index", source)
    if not raw_indices:
        raise ConfigError("index", "at least one [[index]] table is needed", source)
    specs = []
    base_values: dict[str, float] = {}
    for n, raw in enumerate(raw_indices):
        prefix = f"index[{n}]."
        _expect(raw, dict, f"index[{n}]", source)
        _unknown(set(raw), _INDEX_KEYS, prefix, source)
        if "code" not in raw:
            raise ConfigError(prefix + "code", "missing", source)
        if ("divisor" in raw) == ("base_value" in raw):
            raise ConfigError(
                prefix + "divisor", "give divisor or base_value (one of them)", source
            )
        code = _expect(raw["code"], str, prefix + "code", source).strip()
        if not code:
            raise ConfigError(prefix + "code", "empty", source)
        try:
            specs.append(
                IndexSpec(
                    code=code,
                    currency=_expect(raw.get("currency", "RUB"), str, prefix + "currency", source),
                    # With base_value the real divisor is set once the base is weighted.
                    divisor=float(
                        _expect(raw.get("divisor", 1.0), (int, float), prefix + "divisor", source)
                    ),
                )
            )
        except ConfigError as error:
            raise ConfigError(prefix + error.key.split(".")[-1], error.reason, source) from None
        if "base_value" in raw:
            value = float(_expect(raw["base_value"], (int, float), prefix + "base_value", source))
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(prefix + "base_value", f"must be positive, got {value!r}", source)
            base_values[code] = value

    effective = data.get("effective_date")
    if effective is not None and not isinstance(effective, date):
        try:
            effective = date.fromisoformat(_expect(effective, str, "effective_date", source))
        except ValueError:
            raise ConfigError(
                "effective_date", f"must be YYYY-MM-DD, got {effective!r}", source
            ) from None

    profile = _expect(data.get("profile", "main"), str, "profile", source)
    capping_data = _expect(data.get("capping", {}), dict, "capping", source)
    _unknown(set(capping_data), _CAPPING_KEYS, "capping.", source)
    capping: dict[str, float] = {}
    for key, value in capping_data.items():
        number = float(_expect(value, (int, float), f"capping.{key}", source))
        if not (math.isfinite(number) and number > 0):
            raise ConfigError(f"capping.{key}", f"must be positive, got {value!r}", source)
        capping[key] = number
    if "lines" in data:
        names = _expect(data["lines"], list, "lines", source)
        base = select_lines(base, [str(_expect(n, str, "lines", source)) for n in names], source)
    weighting = _expect(data.get("weighting", "given"), str, "weighting", source)
    try:
        base = weighted_base(base, weighting, capping)
    except ConfigError as error:
        raise ConfigError(error.key, error.reason, source) from None
    except IndexTickerError as error:
        raise ConfigError("capping", str(error), source) from None
    specs = [
        _with_base_value(spec, base_values.get(spec.code), base, fx_rate, source) for spec in specs
    ]

    fx_table = _expect(data.get("fx", {}), dict, "fx", source)
    return IndexDefinition(
        name=str(data.get("name", specs[0].code)),
        fx=parse_fx_settings(fx_table, source) if fx_table else None,
        calendar=calendar,
        auction_policy=auction_policy,
        guard=_guard_table(data, source),
        weighting=weighting,
        profile=profile,
        capping=capping,
        base=base,
        indices=tuple(specs),
        fx_rate=fx_rate,
        cadence_seconds=cadence,
        session=session,
        effective_date=effective,
        source=source,
    )


def _with_base_value(
    spec: IndexSpec, base_value: float | None, base: IndexBase, fx_rate: float | None, source: str
) -> IndexSpec:
    """The index with the divisor that makes it worth base_value at the reference prices."""
    if base_value is None:
        return spec
    missing = [c.secid for c in base.constituents if c.reference_price is None]
    if missing:
        raise ConfigError("base_value", f"needs reference prices; none for {missing[0]}", source)
    capitalization = math.fsum(
        c.index_shares * (c.reference_price or 0.0) for c in base.constituents
    )
    if spec.currency == "USD":
        if fx_rate is None:
            raise ConfigError(
                "fx_rate", f"{spec.code} has a base_value in USD: set fx_rate", source
            )
        capitalization /= fx_rate
    return IndexSpec(spec.code, spec.currency, capitalization / base_value)


def _guard_table(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The [guard] table, validated now so a bad one fails at load time."""
    table = _expect(data.get("guard", {}), dict, "guard", source)
    if table:
        PriceGuard.from_mapping(table, source)
    return dict(table)


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


@dataclass(frozen=True, slots=True)
class Family:
    """The indices one engine calculates over one tick stream: one or more definitions."""

    name: str
    definitions: tuple[IndexDefinition, ...]
    cadence_seconds: int
    fx_rate: float | None
    source: str = "<memory>"
    fx: FxSettings | None = None
    guard: dict[str, Any] = field(default_factory=dict)  # the price guard's settings
    indices: tuple[IndexSpec, ...] = field(init=False)
    codes: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.definitions:
            raise ConfigError("definitions", "at least one definition is needed", self.source)
        names = [d.name for d in self.definitions]
        if len(set(names)) != len(names):
            raise ConfigError(
                "definitions", f"definition names must be unique: {names}", self.source
            )
        indices = tuple(spec for d in self.definitions for spec in d.indices)
        codes = tuple(spec.code for spec in indices)
        duplicated = sorted({c for c in codes if codes.count(c) > 1})
        if duplicated:
            raise ConfigError(
                "index.code", f"codes used twice: {', '.join(duplicated)}", self.source
            )
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "codes", codes)

    @classmethod
    def of(cls, definition: IndexDefinition) -> Family:
        """A family of one definition."""
        return cls(
            definition.name,
            (definition,),
            definition.cadence_seconds,
            definition.fx_rate,
            definition.source,
            definition.fx,
            definition.guard,
        )

    @property
    def session(self) -> SessionSpec:
        """The exchange timetable (from the first definition)."""
        return self.definitions[0].session

    def timetable(self) -> ExchangeTimetable:
        """Sessions, auctions and trading days as the first definition configures them."""
        first = self.definitions[0]
        return ExchangeTimetable(first.session, first.calendar, first.auction_policy)

    def timetable_for(self, session: str) -> Timetable:
        """The exchange timetable (`moex`) or publication around the clock (any other: the
        demo's `always`) in the first definition's time zone."""
        if session == "moex":
            return self.timetable()
        return AroundTheClock(self.session.utc_offset)

    def universe(self) -> IndexBase:
        """Every line of every definition once (the first definition's entry wins)."""
        seen: dict[str, Constituent] = {}
        for definition in self.definitions:
            for line in definition.base.constituents:
                seen.setdefault(line.secid, line)
        return IndexBase(tuple(seen.values()), source=self.source)

    def spec(self, code: str) -> IndexSpec:
        """The index of this code; KeyError when unknown."""
        return self.definition_of(code).spec(code)

    def definition_of(self, code: str) -> IndexDefinition:
        """The definition (base) an index code is calculated from; KeyError when unknown."""
        for definition in self.definitions:
            if code in definition.codes:
                return definition
        raise KeyError(code)


def load_family(path: str | Path = DEFAULT_FAMILY) -> Family:
    """Load a family file (a list of definition files) or a single definition file."""
    file = Path(path)
    data = read_toml(file, "definition")
    if "definitions" not in data:
        return Family.of(parse_definition(data, str(file), file.resolve().parent))
    source = str(file)
    _unknown(set(data), _FAMILY_KEYS, "", source)
    paths = _expect(data["definitions"], list, "definitions", source)
    definitions = []
    for n, entry in enumerate(paths):
        relative = Path(_expect(entry, str, f"definitions[{n}]", source))
        definitions.append(
            load_definition(
                relative if relative.is_absolute() else file.resolve().parent / relative
            )
        )
    if not definitions:
        raise ConfigError("definitions", "at least one definition file is needed", source)
    cadence = data.get("cadence_seconds", definitions[0].cadence_seconds)
    try:
        cadence = validate_cadence(_expect(cadence, (int, float), "cadence_seconds", source))
    except ConfigError as error:
        raise ConfigError("cadence_seconds", error.reason, source) from None
    fx_rate = data.get("fx_rate")
    if fx_rate is None:
        fx_rate = next((d.fx_rate for d in definitions if d.fx_rate is not None), None)
    else:
        fx_rate = float(_expect(fx_rate, (int, float), "fx_rate", source))
        if not (math.isfinite(fx_rate) and fx_rate > 0):
            raise ConfigError("fx_rate", f"must be positive, got {fx_rate!r}", source)
    fx_table = _expect(data.get("fx", {}), dict, "fx", source)
    fx = parse_fx_settings(fx_table, source) if fx_table else None
    return Family(
        name=str(_expect(data.get("name", definitions[0].name), str, "name", source)),
        definitions=tuple(definitions),
        cadence_seconds=cadence,
        fx_rate=fx_rate,
        source=source,
        fx=fx or next((d.fx for d in definitions if d.fx is not None), None),
        guard=_guard_table(data, source) or next((d.guard for d in definitions if d.guard), {}),
    )
