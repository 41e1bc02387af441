"""Settings from defaults, a TOML file, INDEX_TICKER_* variables and flags, in that order; every
bad value names its variable; a variable that is no setting is refused; `index-ticker settings`;
every key documented in docs/operations.md."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port

from streaming.errors import ConfigError
from streaming.settings import (
    NON_SETTING_ENVS,
    Settings,
    display_value,
    effective_settings,
    env_name,
    parse_env_value,
)

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "settings-env-test-token-0123456789"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "service.toml"
    path.write_text(
        'port = 9000\ncadence = 5\nsession = "moex"\nfx_rate = 91.5\n'
        'cors_origins = ["https://file.example"]\nhistory_limit = 500\n'
    )
    return path


def test_each_layer_overrides_the_one_below_for_every_type(config: Path) -> None:
    environ = {
        "INDEX_TICKER_PORT": "9100",
        "INDEX_TICKER_CADENCE": "10",
        "INDEX_TICKER_FX_RATE": "95.25",
        "INDEX_TICKER_REDIS_URL": "redis://cache.internal:6379/2",
        "INDEX_TICKER_LEADER_LEASE": "yes",
        "INDEX_TICKER_CORS_ORIGINS": "https://a.example, https://b.example",
        "INDEX_TICKER_WS_PER_MESSAGE_DEFLATE": "1",
        "INDEX_TICKER_INGEST_TOKEN": TOKEN,  # a secret: read elsewhere, not a setting
        "PATH": "/usr/bin",
    }
    effective = effective_settings(str(config), {"port": 9200, "seed": None}, environ)
    s = effective.settings
    assert (s.port, effective.sources["port"]) == (9200, "flag")  # int: default<file<env<flag
    assert (s.cadence, effective.sources["cadence"]) == (10, "env")  # optional int over the file
    assert (s.fx_rate, effective.sources["fx_rate"]) == (95.25, "env")  # float over the file
    assert (s.session, effective.sources["session"]) == ("moex", "file")  # str from the file
    assert (s.history_limit, effective.sources["history_limit"]) == (500, "file")
    assert s.redis_url == "redis://cache.internal:6379/2"
    assert (s.leader_lease, s.ws_per_message_deflate) == (True, True)  # bool words
    assert s.cors_origins == ("https://a.example", "https://b.example")  # list over the file
    assert (s.seed, effective.sources["seed"]) == (1, "default")  # a flag not given: None
    assert (s.namespace, effective.sources["namespace"]) == ("index-ticker", "default")
    assert effective.config == str(config)
    assert set(effective.sources) == {f.name for f in fields(Settings)}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("1", True),
        ("false", False),
        ("No", False),
        ("0", False),
        (" on ", None),
    ],
)
def test_bool_words(text: str, value: bool | None) -> None:
    if value is None:
        with pytest.raises(ConfigError) as caught:
            parse_env_value("api_keys_redis", text)
        assert caught.value.key == "INDEX_TICKER_API_KEYS_REDIS"
        assert "true, false, 1, 0, yes or no" in caught.value.reason
    else:
        assert parse_env_value("api_keys_redis", text) is value


def test_an_empty_value_unsets_an_optional_key_and_empties_a_list(config: Path) -> None:
    environ = {
        "INDEX_TICKER_CADENCE": "",
        "INDEX_TICKER_FX_RATE": " ",
        "INDEX_TICKER_CORS_ORIGINS": "",
    }
    effective = effective_settings(str(config), {}, environ)
    assert (effective.settings.cadence, effective.sources["cadence"]) == (None, "env")
    assert effective.settings.fx_rate is None and effective.settings.cors_origins == ()


@pytest.mark.parametrize(
    ("variable", "text", "words"),
    [
        ("INDEX_TICKER_PORT", "eighty", "must be a whole number, got 'eighty'"),
        ("INDEX_TICKER_PORT", "8000.5", "must be a whole number"),
        ("INDEX_TICKER_PORT", "70000", "must be 1..65535, got 70000"),
        ("INDEX_TICKER_OPS_PORT", "0", "must be 1..65535"),
        ("INDEX_TICKER_PORT", "", "is empty"),
        ("INDEX_TICKER_CADENCE", "7", "must divide 3600"),
        ("INDEX_TICKER_CADENCE", "five", "must be a whole number"),
        ("INDEX_TICKER_FX_RATE", "abc", "must be a number, got 'abc'"),
        ("INDEX_TICKER_FX_RATE", "nan", "must be a finite number"),
        ("INDEX_TICKER_FX_RATE", "-1", "must be positive"),
        ("INDEX_TICKER_LEADER_LEASE", "maybe", "true, false, 1, 0, yes or no"),
        ("INDEX_TICKER_INGEST_STREAM", "true", "needs redis_url"),
        ("INDEX_TICKER_SESSION", "sometimes", "must be one of"),
        ("INDEX_TICKER_FEED", "carrier-pigeon", "must be simulator, none, iss or replay:PATH"),
        ("INDEX_TICKER_REDIS_URL", "localhost:6379", "must start with redis://"),
        ("INDEX_TICKER_CORS_ORIGINS", "https://a.example/path", "no path"),
        ("INDEX_TICKER_LOG_FORMAT", "xml", "must be one of ('text', 'json')"),
        ("INDEX_TICKER_LOG_LEVEL", "loud", "must be one of"),
        ("INDEX_TICKER_FORWARDED_ALLOW_IPS", "proxy.internal", "an IP address or a network"),
        ("INDEX_TICKER_WS_QUEUE_SIZE", "0", "must be at least 1"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        effective_settings(None, {}, {variable: text})
    assert caught.value.key == variable
    assert words in caught.value.reason
    assert str(caught.value).startswith(f"{variable}: ")


def test_a_variable_that_is_no_setting_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        effective_settings(None, {}, {"INDEX_TICKER_CADENSE": "5"})
    assert caught.value.key == "INDEX_TICKER_CADENSE"
    assert "unknown variable" in caught.value.reason
    assert "did you mean INDEX_TICKER_CADENCE?" in caught.value.reason
    with pytest.raises(ConfigError, match="INDEX_TICKER_cadence"):
        effective_settings(None, {}, {"INDEX_TICKER_cadence": "5"})
    # The secrets, their _FILE forms and the settings file are known, and are not settings.
    known = dict.fromkeys(NON_SETTING_ENVS - {"INDEX_TICKER_CONFIG"}, "x")
    assert effective_settings(None, {}, known).sources == effective_settings(None, {}, {}).sources


def test_the_settings_file_comes_from_the_flag_or_the_environment(
    config: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.toml"
    other.write_text("port = 9300\n")
    from_env = effective_settings(None, {}, {"INDEX_TICKER_CONFIG": str(config)})
    assert (from_env.settings.port, from_env.sources["port"], from_env.config) == (
        9000,
        "file",
        str(config),
    )
    flag_wins = effective_settings(str(other), {}, {"INDEX_TICKER_CONFIG": str(config)})
    assert (flag_wins.settings.port, flag_wins.settings.cadence) == (9300, None)
    # Errors of a file's value still name the file; a flag's the key.
    other.write_text("port = 70000\n")
    with pytest.raises(ConfigError) as caught:
        effective_settings(str(other), {}, {})
    assert (caught.value.key, caught.value.source) == ("port", str(other))
    with pytest.raises(ConfigError) as caught:
        effective_settings(None, {"cadence": 7}, {})
    assert (caught.value.key, caught.value.source) == ("cadence", None)


def test_every_key_reads_back_what_the_settings_command_shows() -> None:
    for f in fields(Settings):
        default = getattr(Settings(), f.name)
        text = "" if default in (None, ()) else display_value(default)
        assert parse_env_value(f.name, text) == default, f.name


# --- `index-ticker settings` --------------------------------------------------------------------


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("INDEX_TICKER_")}
    return subprocess.run(
        [sys.executable, "-m", "streaming.cli", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.system
def test_the_settings_command_shows_each_value_and_its_source_never_a_secret(
    config: Path,
) -> None:
    env = {
        "INDEX_TICKER_CONFIG": str(config),
        "INDEX_TICKER_CADENCE": "30",
        "INDEX_TICKER_CORS_ORIGINS": "https://a.example,https://b.example",
        "INDEX_TICKER_INGEST_TOKEN": TOKEN,
    }
    done = run("settings", "--json", env=env)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["config"] == str(config)
    values = shown["settings"]
    assert set(values) == {f.name for f in fields(Settings)}
    assert values["cadence"] == {"value": 30, "source": "env"}
    assert values["port"] == {"value": 9000, "source": "file"}
    assert values["redis_url"] == {"value": None, "source": "default"}
    assert values["cors_origins"]["value"] == ["https://a.example", "https://b.example"]
    assert shown["secrets"]["INDEX_TICKER_INGEST_TOKEN"] == "set"
    assert shown["secrets"]["INDEX_TICKER_ADMIN_TOKEN"] == "not set"
    assert TOKEN not in done.stdout and TOKEN not in done.stderr

    table = run("settings", "--config", str(config), env={"INDEX_TICKER_SESSION": "always"})
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines() if line[:1] != "#"}
    assert rows["session"][1:] == ["always", "env", "INDEX_TICKER_SESSION"]
    assert rows["port"][1:] == ["9000", "file", "INDEX_TICKER_PORT"]
    assert rows["redis_url"][1:] == ["(none)", "default", "INDEX_TICKER_REDIS_URL"]
    assert f"# settings file: {config}" in table.stdout

    wrong = run("settings", env={"INDEX_TICKER_REDIS_URI": "redis://x:6379/0"})
    assert wrong.returncode == 2
    assert "INDEX_TICKER_REDIS_URI: unknown variable" in wrong.stderr
    assert "did you mean INDEX_TICKER_REDIS_URL?" in wrong.stderr


@pytest.mark.system
def test_serve_runs_with_settings_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "INDEX_TICKER_PORT": str(port),
        "INDEX_TICKER_FEED": "none",
        "INDEX_TICKER_CADENCE": "2",
        "INDEX_TICKER_LOG_LEVEL": "warning",
        "INDEX_TICKER_INGEST_TOKEN": TOKEN,
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith("INDEX_TICKER_")}
    with (tmp_path / "serve.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streaming.cli", "serve", "--cadence", "5"],
            env={**base, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        body: dict[str, Any] | None = None
        while body is None:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve did not answer on INDEX_TICKER_PORT"
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()
            except httpx.HTTPError:
                time.sleep(0.1)
        engine = body["engine"]
        assert engine["cadence_seconds"] == 5  # the flag over INDEX_TICKER_CADENCE
        assert engine["sources"] == []  # INDEX_TICKER_FEED=none
    finally:
        process.terminate()
        process.wait(15)


# --- the documentation --------------------------------------------------------------------------

ROW = re.compile(
    r"^\|\s*`([a-z_0-9]+)`\s*\|\s*`(INDEX_TICKER_[A-Z_0-9]+)`\s*\|\s*([a-z/, ]+?)\s*\|\s*`([^`]*)`\s*\|\s*(.+?)\s*\|\s*$"
)


KINDS = {"str": "text", "int": "integer", "float": "number", "bool": "true/false"}


def kind_in_words(annotation: str) -> str:
    """A field's annotation as the table says it: `int | None` is 'integer, optional'."""
    base = annotation.removesuffix(" | None")
    words = "list" if base.startswith("tuple[") else KINDS[base]
    return f"{words}, optional" if annotation.endswith(" | None") else words


def test_every_settings_key_is_documented_in_operations_md() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.groups()[1:] for m in map(ROW.match, text.splitlines()) if m}
    keys = [f.name for f in fields(Settings)]
    missing = [key for key in keys if key not in rows]
    assert not missing, f"docs/operations.md has no row for {missing}"
    stale = sorted(set(rows) - set(keys))
    assert not stale, f"docs/operations.md documents keys that do not exist: {stale}"
    for f in fields(Settings):
        variable, kind, default, meaning = rows[f.name]
        assert variable == env_name(f.name), f.name
        assert kind == kind_in_words(str(f.type)), f"{f.name}: documented as {kind}, is {f.type}"
        assert default == display_value(f.default), f"{f.name}: documented default {default}"
        assert len(meaning) > 10, f"{f.name}: say what it means"
