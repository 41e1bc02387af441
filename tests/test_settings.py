"""Settings: defaults, a TOML file, flags on top; every error names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.errors import ConfigError
from streaming.settings import Settings, admin_token, ingest_token, load_settings_file


def test_defaults_are_the_embedded_demo() -> None:
    s = Settings()
    assert (s.host, s.port, s.redis_url, s.feed, s.session) == (
        "127.0.0.1",
        8000,
        None,
        "simulator",
        "always",
    )


def test_file_then_flags_each_flag_changes_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "service.toml"
    path.write_text('session = "moex"\nport = 9000\ncadence = 5\ndefinition = "defs/x.toml"\n')
    from_file = load_settings_file(path)
    assert (from_file.session, from_file.port, from_file.cadence) == ("moex", 9000, 5)
    assert from_file.definition == str((tmp_path / "defs" / "x.toml").resolve())
    flagged = from_file.with_overrides(port=9100, session=None, redis_url=None)
    assert (flagged.port, flagged.session, flagged.cadence) == (9100, "moex", 5)


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ("sesion = 'moex'\n", "sesion"),
        ("port = 'eighty'\n", "port"),
        ("port = 70000\n", "port"),
        ("cadence = 7\n", "cadence"),
        ("session = 'sometimes'\n", "session"),
        ("feed = 'carrier-pigeon'\n", "feed"),
        ("redis_url = 'localhost:6379'\n", "redis_url"),
        ("fx_rate = -1\n", "fx_rate"),
        ("history_limit = true\n", "history_limit"),
        ("port = \n", "config"),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, content: str, key: str) -> None:
    path = tmp_path / "service.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_settings_file(path)
    assert caught.value.key == key
    assert str(path) in str(caught.value)


def test_ingest_token_from_env_file_or_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INDEX_TICKER_INGEST_TOKEN", raising=False)
    monkeypatch.delenv("INDEX_TICKER_INGEST_TOKEN_FILE", raising=False)
    token, generated = ingest_token()
    assert generated and len(token) >= 16
    secret = tmp_path / "token"
    secret.write_text("a-token-from-a-file-0123\n")
    monkeypatch.setenv("INDEX_TICKER_INGEST_TOKEN_FILE", str(secret))
    assert ingest_token() == ("a-token-from-a-file-0123", False)
    monkeypatch.setenv("INDEX_TICKER_INGEST_TOKEN", "short")
    with pytest.raises(ConfigError, match="16"):
        ingest_token()


def test_admin_token_is_optional_and_separate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INDEX_TICKER_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("INDEX_TICKER_ADMIN_TOKEN_FILE", raising=False)
    assert admin_token() is None
    monkeypatch.setenv("INDEX_TICKER_ADMIN_TOKEN", "an-admin-token-0123456789")
    assert admin_token() == "an-admin-token-0123456789"
