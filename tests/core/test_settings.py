"""Settings: zero-config development, and a production that refuses unsafe secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus.core.errors import ConfigurationError
from nexus.core.settings import Settings


def test_defaults_use_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.data_dir == Path(".nexus")
    assert settings.resolved_database_url == "sqlite:///.nexus/nexus.db"
    assert settings.is_embedded_database
    assert not settings.secure_cookies
    assert settings.resolved_log_format == "console"


def test_env_prefix_and_postgres_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_DATABASE_URL", "postgres://u:p@db:5432/nexus")
    monkeypatch.setenv("NEXUS_PORT", "9000")
    settings = Settings()
    assert settings.resolved_database_url == "postgresql+psycopg://u:p@db:5432/nexus"
    assert not settings.is_embedded_database
    assert settings.port == 9000


@pytest.mark.parametrize(
    ("secret", "message"),
    [(None, "missing"), ("changeme", "default"), ("short-but-random", "too short")],
)
def test_production_refuses_unsafe_secrets(
    monkeypatch: pytest.MonkeyPatch, secret: str | None, message: str
) -> None:
    monkeypatch.setenv("NEXUS_ENV", "production")
    if secret is None:
        monkeypatch.delenv("NEXUS_SECRET_KEY", raising=False)
    else:
        monkeypatch.setenv("NEXUS_SECRET_KEY", secret)
    with pytest.raises(ConfigurationError, match="NEXUS_SECRET_KEY") as info:
        Settings()
    assert any(word in str(info.value) for word in message.split())


def test_production_accepts_a_real_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_ENV", "production")
    monkeypatch.setenv("NEXUS_SECRET_KEY", "k" * 16 + "Zq8#x1!vT0pLm9Rs2Yw4")
    settings = Settings()
    assert settings.secure_cookies
    assert settings.resolved_log_format == "json"


def test_development_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).signing_key
    second = Settings(data_dir=tmp_path).signing_key
    assert first == second
    assert len(first) >= 48
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
