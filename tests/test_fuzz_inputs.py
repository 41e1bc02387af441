"""Property-based tests of every parser that reads outside input: whatever it is given, each
either returns a valid value or raises its own error, which names what is wrong; nothing else
escapes. Tick batches and request bodies, base CSV files, index definition and settings TOML
files, FX updates and WebSocket client messages."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.admin import decode_request
from app.errors import ApiError
from app.ingest import decode_batch
from app.protocol import Limits, Ping, ProtocolError, Subscribe, Unsubscribe, parse
from streaming.errors import BaseLoadError, ConfigError, IndexTickerError, TickRejected
from streaming.methodology.base import Constituent, IndexBase, format_base_csv, parse_base_csv
from streaming.methodology.definition import Family, load_family
from streaming.methodology.fx import CbrRule, FxRejected, FxStep, parse_fx_update
from streaming.settings import Settings, load_settings_file
from streaming.ticks import parse_batch, parse_time

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
KNOWN = frozenset({"SBER", "GAZP", "LKOH"})

# Any JSON value (what a JSON body or message can hold).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)

# Times as clients write them, right and wrong: ISO 8601 at the edges of the calendar, with
# offsets, epoch seconds, junk.
iso_times = st.builds(
    lambda moment, offset: (
        moment.replace(tzinfo=offset).isoformat() if offset else moment.isoformat()
    ),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.none()
    | st.timedeltas(timedelta(hours=-23, minutes=-59), timedelta(hours=23, minutes=59)).map(
        timezone
    ),
)
times = st.one_of(iso_times, st.floats(), st.integers(), st.text(max_size=30), json_values)


# --- ticks and request bodies -----------------------------------------------------------------


@given(
    st.lists(
        json_values
        | st.fixed_dictionaries(
            {"secid": st.sampled_from(sorted(KNOWN)), "price": json_values, "time": times}
        ),
        max_size=20,
    )
)
@example([{"secid": "SBER", "price": 1, "time": "0001-01-01T00:00:00+14:00"}])
@example([{"secid": "SBER", "price": 1, "time": "9999-12-31T23:59:59-12:00"}])
def test_a_batch_is_split_into_ticks_and_rejections_by_position(raws: list[object]) -> None:
    ticks, rejections = parse_batch(raws, KNOWN, NOW)
    assert len(ticks) + len(rejections) == len(raws)
    positions = [rejection.index for rejection in rejections]
    assert positions == sorted(set(positions)) and all(0 <= p < len(raws) for p in positions)
    for tick in ticks:
        assert tick.secid in KNOWN and math.isfinite(tick.price) and tick.price > 0
        assert tick.time.utcoffset() == timedelta(0)
    for rejection in rejections:
        assert str(rejection.as_dict()["reason"]).startswith(f"{rejection.field}:")


@given(times)
def test_a_time_is_an_aware_utc_moment_or_a_rejection(value: object) -> None:
    try:
        moment = parse_time(value)
    except TickRejected as error:
        assert error.field == "time"
    else:
        assert moment.utcoffset() == timedelta(0)


@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
@example(b"[" * 100_000)
@example(b'"\xff\xfe"')
@example(b"[NaN, Infinity]")
def test_a_request_body_is_a_list_or_a_4xx(body: bytes) -> None:
    for decode in (lambda: decode_batch(body, 10), lambda: decode_request(body)):
        try:
            decode()
        except ApiError as error:
            assert error.status_code in (413, 422) and error.extra.get("field")


# --- the base loader --------------------------------------------------------------------------

HEADER_WORDS = [
    "secids",
    "ticker",
    "issuer",
    "issue_size_total",
    "ff_factor",
    "w_factor",
    "issue_size_index",
    "waprice",
    "shortnames",
]
CELLS = st.one_of(
    st.sampled_from(["", "1", "0", "-1", "0.5", "55", "101", "1e400", "nan", "inf", "1 000", "x"]),
    st.floats(allow_nan=True).map(repr),
    st.text(max_size=8),
)


@st.composite
def csv_like(draw: st.DrawFn) -> str:
    """Text shaped like a base file: comments, a header of known and unknown columns, rows of
    numbers and junk, either delimiter, quotes and BOMs."""
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    header = draw(
        st.lists(st.sampled_from(HEADER_WORDS) | st.text(max_size=6), min_size=1, max_size=8)
    )
    rows = draw(st.lists(st.lists(CELLS, max_size=len(header) + 2), max_size=6))
    lines = draw(st.lists(st.sampled_from(["# provenance", "", "#"]), max_size=2))
    lines.append(delimiter.join(header))
    lines += [delimiter.join(cells) for cells in rows]
    text = "\n".join(lines)
    return draw(st.sampled_from(["", "\ufeff"])) + text


@settings(max_examples=300)
@given(st.text(max_size=400) | csv_like())
@example('secids,issue_size_index\n"SBER\n,1')
@example("secids,issue_size_index\nSBER,1\x00\n")
@example("secids,issue_size_index\n" + "x" * 200_000 + ",1\n")
def test_any_text_is_a_base_or_a_base_load_error(text: str) -> None:
    try:
        base = parse_base_csv(text, "fuzz.csv")
    except BaseLoadError as error:
        assert error.path == "fuzz.csv" and error.reason
    else:
        assert len(base) > 0
        assert len(set(base.secids)) == len(base.secids)
        for line in base.constituents:
            assert line.secid and math.isfinite(line.index_shares) and line.index_shares > 0


positive = st.floats(min_value=1e-6, max_value=1e15, allow_nan=False, allow_infinity=False)
secids = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12)
# Issuer names as exported: any printable text, commas, quotes and Cyrillic included.
issuers = (
    st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
        min_size=1,
        max_size=30,
    )
    .map(str.strip)
    .filter(bool)
)


@st.composite
def bases(draw: st.DrawFn) -> IndexBase:
    codes = draw(st.lists(secids, min_size=1, max_size=30, unique=True))
    return IndexBase(
        tuple(
            Constituent(
                secid=code,
                issuer=draw(issuers),
                index_shares=draw(positive),
                reference_price=draw(st.none() | positive),
            )
            for code in codes
        )
    )


@settings(max_examples=200)
@given(
    bases(),
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40),
        max_size=3,
    ),
)
def test_a_base_round_trips_through_its_csv(base: IndexBase, comments: list[str]) -> None:
    parsed = parse_base_csv(format_base_csv(base, comments))
    assert [
        (c.secid, c.issuer, c.index_shares, c.reference_price) for c in parsed.constituents
    ] == [(c.secid, c.issuer, c.index_shares, c.reference_price) for c in base.constituents]


# --- TOML files: index definitions and settings ----------------------------------------------


def toml_value(value: object) -> str:
    """A TOML literal for a value tomllib can return."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    assert isinstance(value, dict), value
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in data.items())


toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["10:00", "18:40", "25:00", "cbr", "live", "pause", "RUB", "USD", "capped"]),
    st.dates(),
    st.times(),
    st.datetimes(timezones=st.just(UTC)),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)

BASE_CSV = (
    "secids,issuer,issue_size_index,waprice\n"
    "SBER,Sberbank,1000,250\nSBERP,Sberbank,200,240\nGAZP,Gazprom,3000,160\nLKOH,Lukoil,50,7000\n"
    "GMKN,Nornickel,400,150\nYDEX,Yandex,100,4000\n"
)
VALID_DEFINITION: dict[str, Any] = {
    "name": "FUZZ",
    "base": "base.csv",
    "effective_date": date(2024, 3, 15),
    "fx_rate": 90.0,
    "cadence_seconds": 15,
    "auction_policy": "pause",
    "profile": "main",
    "weighting": "capped",
    "capping": {"issuer_cap": 0.4, "top_cap": 0.9, "top_n": 3},
    "guard": {"threshold": 0.2, "confirmations": 1},
    "fx": {"rule": "cbr", "switch_time": "17:00", "utc_offset_hours": 3, "history": 32},
    "session": {
        "utc_offset_hours": 3,
        "continuous_start": "10:00",
        "continuous_end": "18:40",
        "auction_start": "18:40",
        "auction_end": "18:50",
    },
    "index": [
        {"code": "FUZZR", "currency": "RUB", "divisor": 100.0},
        {"code": "FUZZU", "currency": "USD", "base_value": 1000.0},
    ],
}
VALID_FAMILY: dict[str, Any] = {
    "name": "fuzz family",
    "definitions": ["definition.toml"],
    "cadence_seconds": 15,
    "fx_rate": 90.0,
    "fx": {"rule": "live", "instrument": "USD000UTSTOM"},
    "guard": {"threshold": 0.1},
}


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any]) -> dict[str, Any]:
    """A valid document with a few keys, at the top or one table down, removed, replaced by
    any TOML value, or added."""
    data: dict[str, Any] = json.loads(json.dumps(valid, default=str))  # a deep copy
    data.update({k: v for k, v in valid.items() if isinstance(v, date)})
    for _ in range(draw(st.integers(0, 4))):
        table = data
        nested = [k for k, v in data.items() if isinstance(v, dict)]
        one_down = draw(st.booleans())
        if nested and one_down:
            table = data[draw(st.sampled_from(sorted(nested)))]
        keys = sorted(table)
        action = draw(st.sampled_from(["remove", "replace", "add"]) if keys else st.just("add"))
        if action == "remove":
            del table[draw(st.sampled_from(keys))]
        elif action == "replace":
            table[draw(st.sampled_from(keys))] = draw(toml_values)
        else:
            table[draw(st.text(min_size=1, max_size=10))] = draw(toml_values)
    return data


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "base.csv").write_text(BASE_CSV)
    return directory


def only_our_errors(load: Callable[[], object]) -> object:
    """What `load` returns, or None when it raised one of the project's errors."""
    try:
        return load()
    except IndexTickerError as error:
        assert str(error)
        return None


def test_the_valid_documents_load(workdir: Path) -> None:
    (workdir / "definition.toml").write_text(toml_document(VALID_DEFINITION))
    (workdir / "family.toml").write_text(toml_document(VALID_FAMILY))
    family = load_family(workdir / "family.toml")
    assert family.codes == ("FUZZR", "FUZZU")
    assert load_family(workdir / "definition.toml").codes == family.codes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(VALID_DEFINITION), st.booleans())
@example({**VALID_DEFINITION, "fx": {"rule": "cbr", "utc_offset_hours": 1e300}}, False)
@example({**VALID_DEFINITION, "base": "nul\x00.csv"}, False)
@example({**VALID_DEFINITION, "base": "."}, False)
@example({**VALID_DEFINITION, "fx": {"rule": ["cbr"]}}, False)
@example({**VALID_DEFINITION, "calendar": "nul\x00.csv"}, False)
@example({**VALID_DEFINITION, "session": {"utc_offset_hours": 1e300}}, False)
@example({**VALID_DEFINITION, "guard": {"threshold": 0.2, "confirmations": 10**18}}, False)
@example({**VALID_DEFINITION, "cadence_seconds": 1e300}, False)
def test_a_definition_file_loads_or_names_what_is_wrong(
    workdir: Path, data: dict[str, Any], as_family: bool
) -> None:
    (workdir / "definition.toml").write_text(toml_document(data))
    (workdir / "family.toml").write_text(toml_document(VALID_FAMILY))
    family = only_our_errors(
        lambda: load_family(workdir / ("family.toml" if as_family else "definition.toml"))
    )
    if family is not None:
        assert isinstance(family, Family) and family.codes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(VALID_FAMILY))
def test_a_family_file_loads_or_names_what_is_wrong(workdir: Path, data: dict[str, Any]) -> None:
    (workdir / "definition.toml").write_text(toml_document(VALID_DEFINITION))
    (workdir / "family.toml").write_text(toml_document(data))
    family = only_our_errors(lambda: load_family(workdir / "family.toml"))
    if family is not None:
        assert isinstance(family, Family) and family.codes


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
@example("[index\n")
@example('base = "base.csv"\n[[index]]\ncode = 1\n')
def test_any_text_as_a_definition_file(workdir: Path, text: str) -> None:
    path = workdir / "text.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    only_our_errors(lambda: load_family(path))


SETTING_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "host": st.text(max_size=10),
    "port": st.integers(-10, 70_000),
    "redis_url": st.sampled_from(["redis://127.0.0.1:1/0", "unix:///tmp/r.sock", "localhost"]),
    "feed": st.sampled_from(["simulator", "none", "replay:", "replay:day.csv", "pigeon"]),
    "cadence": st.integers(-5, 4000),
    "session": st.sampled_from(["always", "moex", "never"]),
    "fx_rate": st.floats(),
    "cors_origins": st.lists(
        st.sampled_from(["*", "https://desk.example", "https://desk.example/", "desk", ""])
        | st.text(max_size=8),
        max_size=3,
    ),
}


@st.composite
def settings_documents(draw: st.DrawFn) -> dict[str, Any]:
    names = sorted(Settings.__dataclass_fields__)
    chosen = draw(st.lists(st.sampled_from(names), max_size=6, unique=True))
    data = {name: draw(SETTING_VALUES.get(name, toml_values) | toml_values) for name in chosen}
    if draw(st.booleans()):
        data[draw(st.text(min_size=1, max_size=10))] = draw(toml_values)
    return data


@settings(max_examples=300, deadline=None)
@given(settings_documents())
@example({"ingest_rate_per_second": float("inf")})
@example({"cors_origins": [1, 2]})
@example({"port": 2**63 - 1})
def test_a_settings_file_is_settings_or_a_config_error(workdir: Path, data: dict[str, Any]) -> None:
    path = workdir / "service.toml"
    path.write_text(toml_document(data))
    try:
        loaded = load_settings_file(path)
    except ConfigError as error:
        assert error.source == str(path) or error.key == "config"
    else:
        assert isinstance(loaded, Settings) and 0 < loaded.port < 65536
        assert all(isinstance(origin, str) for origin in loaded.cors_origins)


# --- FX updates -------------------------------------------------------------------------------

fx_fields = st.fixed_dictionaries(
    {},
    optional={
        "rate": st.one_of(st.floats(), st.integers(), st.text(max_size=10), json_values),
        "rate_date": st.one_of(st.dates().map(date.isoformat), st.text(max_size=12), json_values),
        "published_at": times,
        "time": times,
        "source": st.one_of(
            st.sampled_from(["desk", "bloomberg:USDRUB", "cbr:2026-11-21", ""]),
            st.text(max_size=12),
            json_values,
        ),
    },
)


@settings(max_examples=300)
@given(fx_fields | json_values)
@example({"rate": 90, "rate_date": "9999-12-31"})
@example({"rate": 90, "rate_date": "0001-01-01", "published_at": "0001-01-01T00:00:00Z"})
@example({"rate": 90, "time": "0001-01-01T00:00:00+14:00"})
@example({"rate": "1e400"})
def test_an_fx_update_is_a_step_or_a_rejection(raw: object) -> None:
    try:
        step = parse_fx_update(raw, now=NOW, rule=CbrRule())
    except FxRejected as error:
        assert error.reason  # the field is the key at fault, which may be any text
    else:
        assert isinstance(step, FxStep)
        assert math.isfinite(step.rate) and step.rate > 0
        assert step.effective_from.utcoffset() == timedelta(0)
        assert isinstance(raw, dict) and step.rate == float(raw["rate"])


@given(
    st.floats(min_value=1e-3, max_value=1e6, allow_nan=False),
    st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
)
def test_a_cbr_rate_takes_effect_no_earlier_than_its_publication(rate: float, day: date) -> None:
    published = datetime.combine(day, time(11, 30), UTC) - timedelta(days=1)
    try:
        step = parse_fx_update(
            {"rate": rate, "rate_date": day.isoformat(), "published_at": published.isoformat()},
            now=published + timedelta(hours=1),
            rule=CbrRule(),
        )
    except FxRejected as error:
        assert error.field == "rate_date"
    else:
        assert step.rate == rate and step.effective_from >= published
        assert step.source == f"cbr:{day.isoformat()}"


# --- WebSocket client messages ----------------------------------------------------------------

LIMITS = Limits(known=("IMOEX", "RTSI"), max_message_bytes=4096, max_codes=4, live_floor_ms=100)
message_fields = st.fixed_dictionaries(
    {"op": st.sampled_from(["subscribe", "unsubscribe", "ping", "pong", ""]) | json_values},
    optional={
        "indices": st.lists(st.sampled_from(["IMOEX", "RTSI", "NOPE"]) | json_values, max_size=6)
        | json_values,
        "channel": st.sampled_from(["index", "constituents", "live", "nope"]) | json_values,
        "contributions": json_values,
        "from_seq": st.dictionaries(st.sampled_from(["IMOEX", "RTSI", "X"]), json_values)
        | json_values,
        "min_interval_ms": st.integers(-10, 10**7) | json_values,
    },
)


@settings(max_examples=400)
@given(st.text(max_size=200) | json_values.map(json.dumps) | message_fields.map(json.dumps))
@example("[" * 3000 + "]" * 3000)
@example('{"op": "subscribe", "indices": ["IMOEX"], "min_interval_ms": 1e400}')
@example("ы" * 3000)
def test_a_client_message_is_a_command_or_a_named_error(text: str) -> None:
    try:
        command = parse(text, LIMITS)
    except ProtocolError as error:
        assert error.reason and str(error).startswith(f"{error.field}: ")
    else:
        assert len(text.encode("utf-8")) <= LIMITS.max_message_bytes
        if isinstance(command, Subscribe | Unsubscribe):
            assert command.codes and set(command.codes) <= set(LIMITS.known)
            assert len(command.codes) <= LIMITS.max_codes
        else:
            assert isinstance(command, Ping)
        if isinstance(command, Subscribe):
            assert all(isinstance(s, int) and s >= 0 for s in command.from_seq.values())
            interval = command.min_interval_ms
            assert interval is None or LIMITS.live_floor_ms <= interval <= 3_600_000
