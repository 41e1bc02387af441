"""One typed settings object for the service: defaults, then a TOML file, then INDEX_TICKER_*
environment variables, then flags."""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

from streaming.errors import ConfigError
from streaming.methodology.definition import read_toml
from streaming.methodology.schedule import validate_cadence
from streaming.store.base import DEFAULT_HISTORY_LIMIT

TOKEN_ENV = "INDEX_TICKER_INGEST_TOKEN"
ADMIN_TOKEN_ENV = "INDEX_TICKER_ADMIN_TOKEN"
API_KEYS_ENV = "INDEX_TICKER_API_KEYS"
ISS_TOKEN_ENV = "INDEX_TICKER_ISS_TOKEN"
CONFIG_ENV = "INDEX_TICKER_CONFIG"  # the settings file, when --config is not given
ENV_PREFIX = "INDEX_TICKER_"
SECRET_ENVS = (TOKEN_ENV, ADMIN_TOKEN_ENV, API_KEYS_ENV, ISS_TOKEN_ENV)
# The INDEX_TICKER_* variables that are not settings keys; any other one is a mistake.
NON_SETTING_ENVS = frozenset({CONFIG_ENV, *SECRET_ENVS, *(f"{name}_FILE" for name in SECRET_ENVS)})
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
MIN_ISS_INTERVAL_SECONDS = 1.0  # ISS is a shared public service: no tighter polling
SESSIONS = ("always", "moex")
ORIGIN = re.compile(r"https?://[^/\s?#]+")


@dataclass(frozen=True, slots=True)
class Settings:
    """Service settings. Times in seconds, sizes in bytes."""

    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None  # None: in-memory state (the embedded default)
    namespace: str = "index-ticker"  # Redis key prefix
    feed: str = "simulator"  # simulator | none | iss | replay:PATH
    replay_speed: float = 1.0  # 1 = recorded pace, 0 = as fast as possible
    replay_date: str | None = None  # YYYY-MM-DD of a MOEX trades file without TRADEDATE
    seed: int = 1  # simulator seed
    cadence: int | None = None  # None: the definition's cadence_seconds
    session: str = "always"  # always | moex
    definition: str | None = None  # index definition TOML; None: the shipped IMOEX/RTSI
    fx_rate: float | None = None  # RUB per USD; None: the definition's
    history_limit: int = DEFAULT_HISTORY_LIMIT
    max_body_bytes: int = 4 * 1024 * 1024
    log_level: str = "info"  # debug | info | warning | error | critical
    log_format: str = "text"  # text | json (one object per line)
    # Peers whose X-Forwarded-For / X-Forwarded-Proto the API believes: the reverse proxy.
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")
    # The engine process's operations port (/healthz, /readyz): `index-ticker engine` only.
    ops_host: str = "127.0.0.1"
    ops_port: int = 9108
    # The WebSocket feed (docs/protocol.md).
    ws_ping_interval: float = 20.0  # protocol-level ping every this many seconds; 0: none
    ws_ping_timeout: float = 20.0  # no pong within this: the connection is dropped
    ws_per_message_deflate: bool = False  # permessage-deflate when the client offers it
    ws_heartbeat_seconds: float = 10.0  # a heartbeat message after this long with nothing sent
    ws_queue_size: int = 256  # messages queued per client before conflation
    ws_max_lag_seconds: float = 30.0  # a client this far behind is closed with 4008
    ws_max_dropped: int = 0  # a client that lost more updates to conflation is closed; 0: never
    ws_max_subscriptions: int = 64  # (channel, code) subscriptions per connection
    ws_live_min_interval_ms: int = 100  # the shortest live-channel interval a client may ask for
    ws_replay_limit: int = 10_000  # updates replayed per index on resume; more: a gap snapshot
    ws_max_connections_per_key: int = 64
    ws_max_connections_per_address: int = 256
    api_keys_redis: bool = False  # also accept the keys in the Redis set {namespace}:api_keys
    # Security limits (docs/reliability.md).
    ingest_rate_per_second: float = 200.0  # POST /v1/ticks and /v1/fx per token; 0: no limit
    ingest_burst: int = 400  # requests one token may send at once before the rate applies
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API; none: no CORS
    # Reliability (docs/reliability.md).
    ingest_stream: bool = False  # ticks go through the durable Redis stream {namespace}:ticks
    leader_lease: bool = False  # several engines on one Redis: the lease holder publishes
    lease_seconds: float | None = None  # None: half the cadence, at least 1 s
    # The MOEX ISS feed (docs/feeds.md); its token is a secret: INDEX_TICKER_ISS_TOKEN.
    iss_url: str = "https://iss.moex.com"
    iss_interval_seconds: float = 5.0  # between polls while ISS answers; errors back off
    # The Bank of Russia USD/RUB rate (docs/fx.md), polled while this engine leads.
    fx_feed: str = "none"  # none | cbr
    cbr_url: str = "https://www.cbr.ru"
    cbr_interval_seconds: float = 300.0  # between polls while it answers; errors back off

    def __post_init__(self) -> None:
        for name in ("port", "ops_port"):
            if not 0 < getattr(self, name) < 65536:
                raise ConfigError(name, f"must be 1..65535, got {getattr(self, name)}")
        if not self.namespace:
            raise ConfigError("namespace", "must not be empty: it prefixes every Redis key")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError("log_level", f"must be one of {LOG_LEVELS}, got {self.log_level!r}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                "log_format", f"must be one of {LOG_FORMATS}, got {self.log_format!r}"
            )
        if self.session not in SESSIONS:
            raise ConfigError("session", f"must be one of {SESSIONS}, got {self.session!r}")
        if self.feed not in ("simulator", "none", "iss") and not (
            self.feed.startswith("replay:") and len(self.feed) > len("replay:")
        ):
            raise ConfigError(
                "feed", f"must be simulator, none, iss or replay:PATH, got {self.feed!r}"
            )
        if self.cadence is not None:
            validate_cadence(self.cadence)
        if self.fx_rate is not None and not (math.isfinite(self.fx_rate) and self.fx_rate > 0):
            raise ConfigError("fx_rate", f"must be positive, got {self.fx_rate!r}")
        if self.replay_date is not None:
            try:
                date.fromisoformat(self.replay_date)
            except ValueError:
                raise ConfigError(
                    "replay_date", f"must be a date YYYY-MM-DD, got {self.replay_date!r}"
                ) from None
        if not math.isfinite(self.replay_speed) or self.replay_speed < 0:
            raise ConfigError("replay_speed", f"must be 0 or more, got {self.replay_speed!r}")
        if self.history_limit < 1:
            raise ConfigError("history_limit", f"must be at least 1, got {self.history_limit}")
        if self.max_body_bytes < 1024:
            raise ConfigError("max_body_bytes", f"must be at least 1024, got {self.max_body_bytes}")
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError("redis_url", "must start with redis://, rediss:// or unix://")
        self._check_feed_settings()
        self._check_security_settings()
        self._check_fx_feed()

    def _check_fx_feed(self) -> None:
        if self.fx_feed not in ("none", "cbr"):
            raise ConfigError("fx_feed", f"must be none or cbr, got {self.fx_feed!r}")
        # The rate changes once a day: a poll a minute is more than enough.
        _check_polled_origin(
            "cbr", self.cbr_url, self.cbr_interval_seconds, 60.0, "the Bank's rates need none"
        )
        if self.fx_feed == "cbr" and self.feed.startswith("replay:") and self.replay_speed > 0:
            raise ConfigError(
                "fx_feed", "cbr polls today's rates: not with a replay on its recorded clock"
            )

    def _check_feed_settings(self) -> None:
        for name in ("ws_ping_interval", "ws_ping_timeout"):
            seconds = getattr(self, name)
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ConfigError(name, f"must be 0 or more seconds, got {seconds!r}")
        for name in ("ws_heartbeat_seconds", "ws_max_lag_seconds"):
            seconds = getattr(self, name)
            if not (math.isfinite(seconds) and seconds > 0):
                raise ConfigError(name, f"must be a positive number of seconds, got {seconds!r}")
        for name in (
            "ws_queue_size",
            "ws_max_subscriptions",
            "ws_replay_limit",
            "ws_max_connections_per_key",
            "ws_max_connections_per_address",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.ws_max_dropped < 0:
            raise ConfigError("ws_max_dropped", f"must be 0 or more, got {self.ws_max_dropped}")
        if self.ws_live_min_interval_ms < 10:
            raise ConfigError(
                "ws_live_min_interval_ms",
                f"must be at least 10, got {self.ws_live_min_interval_ms}",
            )
        for name in ("ingest_stream", "leader_lease"):
            if getattr(self, name) and self.redis_url is None:
                raise ConfigError(name, "needs redis_url: it lives in Redis")
        if self.lease_seconds is not None and not self.lease_seconds > 0:
            raise ConfigError("lease_seconds", f"must be positive, got {self.lease_seconds}")
        if self.api_keys_redis and self.redis_url is None:
            raise ConfigError("api_keys_redis", "needs redis_url: the keys are a Redis set")
        _check_polled_origin(
            "iss",
            self.iss_url,
            self.iss_interval_seconds,
            MIN_ISS_INTERVAL_SECONDS,
            f"use {ISS_TOKEN_ENV}",
        )

    def _check_security_settings(self) -> None:
        rate = self.ingest_rate_per_second
        if not (math.isfinite(rate) and rate >= 0):
            raise ConfigError("ingest_rate_per_second", f"must be 0 or more, got {rate!r}")
        if self.ingest_burst < 1:
            raise ConfigError("ingest_burst", f"must be at least 1, got {self.ingest_burst}")
        for peer in self.forwarded_allow_ips:
            if not isinstance(peer, str) or not (peer == "*" or _is_network(peer)):
                raise ConfigError(
                    "forwarded_allow_ips", f"{peer!r}: must be '*', an IP address or a network"
                )
        for origin in self.cors_origins:
            # A browser sends scheme://host[:port] and nothing else: anything more never matches.
            if not isinstance(origin, str) or not (origin == "*" or ORIGIN.fullmatch(origin)):
                raise ConfigError(
                    "cors_origins", f"{origin!r}: must be '*' or scheme://host[:port], no path"
                )

    def trade_date(self) -> date | None:
        """replay_date as a date (the trading day of a MOEX trades file's TRADETIME rows)."""
        return None if self.replay_date is None else date.fromisoformat(self.replay_date)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given keys replaced; None means 'not given' and keeps the value."""
        given = {key: value for key, value in overrides.items() if value is not None}
        return replace(self, **given)


def _field_types() -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(Settings)}


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _check_polled_origin(
    prefix: str, url: str, interval: float, minimum: float, credentials: str
) -> None:
    """`{prefix}_url`, an HTTP service polled by a feed, is scheme://host[:port] without
    credentials (`credentials` says where they go instead); `{prefix}_interval_seconds` is at
    least `minimum`."""
    if "@" in url:
        raise ConfigError(f"{prefix}_url", f"must not carry credentials: {credentials}")
    if not ORIGIN.fullmatch(url.rstrip("/")):
        raise ConfigError(
            f"{prefix}_url", f"must be scheme://host[:port] (http or https), got {url!r}"
        )
    if not (math.isfinite(interval) and interval >= minimum):
        raise ConfigError(
            f"{prefix}_interval_seconds", f"must be at least {minimum:g} seconds, got {interval!r}"
        )


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """The keys a TOML settings file sets, type-checked (a relative `definition` is taken from
    the file's directory); unknown keys and wrong types are errors naming the key and the file."""
    file = Path(path)
    data = read_toml(file, "config")
    types = _field_types()
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in types:
            raise ConfigError(key, "unknown key", str(file))
        kind = types[key]
        expected: tuple[type, ...]
        if kind == "bool":
            expected = (bool,)
        elif kind.startswith("tuple"):
            expected = (list,)
        elif "float" in kind:
            expected = (int, float)
        elif "int" in kind:
            expected = (int,)
        else:
            expected = (str,)
        if (isinstance(value, bool) and kind != "bool") or not isinstance(value, expected):
            raise ConfigError(key, f"has the wrong type {type(value).__name__}", str(file))
        if isinstance(value, list):
            values[key] = tuple(value)  # element types are checked by Settings
        else:
            values[key] = float(value) if "float" in kind else value
    if isinstance(values.get("definition"), str) and not Path(values["definition"]).is_absolute():
        values["definition"] = str((file.resolve().parent / values["definition"]).resolve())
    return values


def load_settings_file(path: str | Path, defaults: Settings | None = None) -> Settings:
    """Read a TOML settings file; unknown keys and wrong types are errors naming the key."""
    values = read_settings_file(path)
    try:
        return replace(defaults or Settings(), **values)
    except ConfigError as error:
        raise ConfigError(error.key, error.reason, str(path)) from None


# --- the environment --------------------------------------------------------------------------

Source = Literal["default", "file", "env", "flag"]


def env_name(key: str) -> str:
    """The environment variable of a settings key: INDEX_TICKER_<KEY in upper case>."""
    return ENV_PREFIX + key.upper()


def parse_env_value(key: str, text: str) -> Any:
    """A settings value from its variable's text, by the key's type: bool true/false/1/0/yes/no,
    lists comma-separated; empty is None for an optional key, () for a list, else an error."""
    name = env_name(key)
    kind = _field_types()[key]
    optional = kind.endswith(" | None")
    base = kind.removesuffix(" | None")
    value = text.strip()
    if base.startswith("tuple"):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    if not value:
        if optional:
            return None
        raise ConfigError(name, "is empty: give a value or unset the variable")
    if base == "bool":
        if value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        raise ConfigError(name, f"must be true, false, 1, 0, yes or no, got {text!r}")
    if base in ("int", "float"):
        try:
            number = int(value) if base == "int" else float(value)
        except ValueError:
            word = "a whole number" if base == "int" else "a number"
            raise ConfigError(name, f"must be {word}, got {text!r}") from None
        if not math.isfinite(number):
            raise ConfigError(name, f"must be a finite number, got {text!r}")
        return number
    if base != "str":
        raise ConfigError(name, f"cannot be set from the environment (type {kind})")
    return value


def settings_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings keys given as INDEX_TICKER_<KEY> variables; any other INDEX_TICKER_*
    variable that is not a secret or INDEX_TICKER_CONFIG is an error naming it."""
    keys = {env_name(key): key for key in _field_types()}
    values: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in NON_SETTING_ENVS:
            continue
        key = keys.get(name)
        if key is None:
            close = difflib.get_close_matches(name, [*keys, *NON_SETTING_ENVS], n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(name, f"unknown variable: not a settings key or a secret{hint}")
        values[key] = parse_env_value(key, environ[name])
    return values


@dataclass(frozen=True, slots=True)
class EffectiveSettings:
    """The settings a command runs with and where each key's value came from."""

    settings: Settings
    sources: Mapping[str, Source]  # every key: default, file, env or flag
    config: str | None  # the settings file read, if any

    def explicit(self, key: str) -> bool:
        """Whether the key was set anywhere rather than left at its default."""
        return self.sources[key] != "default"


def effective_settings(
    config: str | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> EffectiveSettings:
    """Defaults, then the TOML file (`config`, else INDEX_TICKER_CONFIG), then INDEX_TICKER_<KEY>
    variables, then flags (None: not given); a bad value is an error naming its file, variable
    or key."""
    environ = os.environ if environ is None else environ
    from_env = settings_from_environment(environ)
    path = config or environ.get(CONFIG_ENV, "").strip() or None
    layers: list[tuple[Source, dict[str, Any]]] = [
        ("file", read_settings_file(path) if path else {}),
        ("env", from_env),
        ("flag", {key: value for key, value in (flags or {}).items() if value is not None}),
    ]
    values: dict[str, Any] = {}
    given: dict[str, Source] = {}
    for source, layer in layers:
        values.update(layer)
        given.update(dict.fromkeys(layer, source))
    try:
        settings = Settings(**values)
    except ConfigError as error:
        blamed = given.get(error.key)
        if blamed == "file":
            raise ConfigError(error.key, error.reason, path) from None
        if blamed == "env":
            raise ConfigError(env_name(error.key), error.reason) from None
        raise
    sources = {f.name: given.get(f.name, "default") for f in fields(Settings)}
    return EffectiveSettings(settings, sources, path)


def display_value(value: Any) -> str:
    """A settings value as an operator writes it: lists comma-separated, (none) for unset."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value) if value else "(empty)"
    return str(value)


def secrets_given(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Per secret variable: 'set', 'file' (its _FILE variant) or 'not set'; never the value."""
    environ = os.environ if environ is None else environ
    given: dict[str, str] = {}
    for name in SECRET_ENVS:
        if environ.get(name, "").strip():
            given[name] = "set"
        elif environ.get(f"{name}_FILE", "").strip():
            given[name] = "file"
        else:
            given[name] = "not set"
    return given


def secret(name: str) -> str | None:
    """A secret from the environment variable NAME or the file named by NAME_FILE (at least 16
    characters); None when neither is set."""
    value = os.environ.get(name, "").strip()
    file_name = f"{name}_FILE"
    path = os.environ.get(file_name, "").strip()
    if not value and path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(file_name, f"cannot read: {error.strerror}") from None
    if not value:
        return None
    if len(value) < 16:
        raise ConfigError(name, "must be at least 16 characters")
    return value


def ingest_token() -> tuple[str, bool]:
    """The ingest token from the environment (or a file it names); (token, was_generated)."""
    token = secret(TOKEN_ENV)
    if token is not None:
        return token, False
    return secrets.token_urlsafe(24), True


def admin_token() -> str | None:
    """The admin token (INDEX_TICKER_ADMIN_TOKEN or _FILE); None leaves the admin API off."""
    return secret(ADMIN_TOKEN_ENV)


def iss_token() -> str | None:
    """The MOEX ISS token for real-time data (INDEX_TICKER_ISS_TOKEN or _FILE); None: the free,
    delayed data."""
    return secret(ISS_TOKEN_ENV)


def api_keys() -> tuple[str, ...]:
    """Feed API keys from INDEX_TICKER_API_KEYS (comma separated) or the file named by
    INDEX_TICKER_API_KEYS_FILE (one per line, # comments); empty: no key is required."""
    raw = os.environ.get(API_KEYS_ENV, "")
    file_name = f"{API_KEYS_ENV}_FILE"
    path = os.environ.get(file_name, "").strip()
    keys = [key.strip() for key in raw.split(",")]
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(file_name, f"cannot read: {error.strerror}") from None
        keys += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return tuple(dict.fromkeys(key for key in keys if key))
