"""NEXUS settings: one pydantic-settings class, every field overridable as ``NEXUS_<FIELD>``.

In development NEXUS runs with no configuration at all: data lives in ``.nexus/`` (SQLite now,
DuckDB and keys later) and a random secret key is generated there on first use. In production
it refuses to start while a secret is missing or still a known default, and says which.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nexus.core.errors import ConfigurationError

# Values that must never protect a production deployment: documentation examples and the
# placeholders people copy from them.
KNOWN_DEFAULT_SECRETS = frozenset(
    {"", "changeme", "change-me", "secret", "nexus", "development", "dev", "insecure"}
)
MIN_SECRET_LENGTH = 32


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every knob of a NEXUS process. See docs/configuration.md for each."""

    model_config = SettingsConfigDict(
        env_prefix="NEXUS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path(".nexus")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is a SQLite file in data_dir. "
        "postgresql://… selects PostgreSQL (psycopg 3).",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs sessions and CSRF tokens. Required in production.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_url: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    session_ttl_hours: int = Field(default=24 * 14, ge=1)
    login_rate_limit: str = "5/minute"
    login_ip_rate_limit: str = "30/minute"
    cookie_secure: bool | None = Field(
        default=None, description="Secure cookies; default on in production only."
    )
    events_memory_limit: str = Field(
        default="1GB",
        pattern=r"^[0-9]+(\.[0-9]+)?\s*(KB|MB|GB|KiB|MiB|GiB)$",
        description="Memory DuckDB may use for the embedded event store.",
    )
    identity_merge: Literal["retroactive", "forward"] = Field(
        default="retroactive",
        description="retroactive: an identified person's earlier anonymous events count as "
        "theirs; forward: only events from the identification on.",
    )
    ingest_max_lag_mb: int = Field(
        default=256,
        ge=1,
        description="Journal bytes not yet in the event store beyond which ingestion answers "
        "503 with Retry-After.",
    )
    ingest_max_concurrency: int = Field(
        default=64, ge=1, description="Ingest requests processed at once; more get 503."
    )
    ingest_rate_limit: str | None = Field(
        default=None,
        description="Per-workspace limit on events, e.g. '100000/minute'; unset = no limit. "
        "Past it ingestion answers 429 with Retry-After.",
    )

    emotion_edge_share: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="Share of texts the emotion cascade leaves to the edge tier; the rest go "
        "to the server tier.",
    )
    emotion_enrichment: Literal["cascade", "edge", "server", "off"] = Field(
        default="cascade",
        description="Which emotion tier reads text properties of incoming events, or off.",
    )
    emotion_threads: int = Field(
        default=2, ge=1, le=64, description="CPU threads of the server emotion model."
    )
    default_consent_mode: Literal["opt_in", "opt_out"] = Field(
        default="opt_out",
        description="What a visitor's silence means in a workspace that has not chosen: "
        "opt_in permits a purpose only once granted (GDPR's rule for anything not strictly "
        "necessary); opt_out permits it unless denied.",
    )
    pii_ner_model: str | None = Field(
        default=None,
        description="A spaCy model (installed package name or saved pipeline directory) for "
        "person-name detection; unset, PERSON rules are refused (pattern recognizers only).",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhooks go to loopback, private and link-local addresses (receivers "
        "on an internal network); off, such URLs are refused (SSRF).",
    )
    retention_interval: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds between retention runs (each workspace's retention_days).",
    )
    decide_emotion_mode: Literal["edge", "cascade", "server"] = Field(
        default="edge",
        description="Which emotion tier reads the text sent to /v1/decide: the edge tier "
        "keeps decisions within milliseconds; cascade and server read better but slower.",
    )
    decide_learn_interval: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="Seconds between passes that journal decisions, close reward windows "
        "and save bandit states.",
    )
    rollout_check_interval: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="Seconds between automatic checks of every running guarded rollout.",
    )
    copy_generator_url: str = Field(
        default="",
        max_length=2000,
        description="An OpenAI-compatible API root (https://…/v1) that writes copy "
        "candidates for evolution campaigns; empty (the default): no generator, no network.",
    )
    copy_generator_model: str = Field(default="", max_length=200, description="Its model name.")
    copy_generator_api_key: SecretStr | None = Field(
        default=None, description="Bearer key for the copy generator, if it needs one."
    )
    copy_generator_require_approval: bool = Field(
        default=True,
        description="Hold generated copy for a person's approval before evolution may try it.",
    )
    evolution_interval: float = Field(
        default=10.0,
        gt=0,
        le=86_400,
        description="Seconds between passes that recount evolution campaigns' fitness from "
        "stored events, breed generations and follow promotions.",
    )
    health_interval: float = Field(
        default=60.0,
        ge=0,
        le=86_400,
        description="Seconds between passes of the funnel monitor over every hosted funnel's "
        "new events; 0 runs no monitor in this process (run it in one replica).",
    )
    emotion_models_dir: Path | None = Field(
        default=None,
        description="Directory with the emotion model artifacts; default: those shipped.",
    )

    # --- abuse limits (issue #6) ---
    rate_limit_enabled: bool = Field(
        default=True, description="API rate limits per address, credential and workspace."
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="Where rate-limit counters live: memory:// (this process) or "
        "redis://host:6379 (shared by replicas; needs the redis package).",
    )
    rate_limit_hot_ip: str = Field(
        default="100000/minute",
        description="Ingest, decide, OFREP and flag-definition requests per client address.",
    )
    rate_limit_hot_key: str = Field(
        default="100000/minute", description="The same paths, per key or dashboard session."
    )
    rate_limit_hot_workspace: str = Field(
        default="200000/minute", description="The same paths, per workspace (keys only)."
    )
    rate_limit_admin_ip: str = Field(
        default="3000/minute", description="Other requests with credentials, per address."
    )
    rate_limit_admin_key: str = Field(
        default="1200/minute", description="Other requests, per key or dashboard session."
    )
    rate_limit_admin_workspace: str = Field(
        default="6000/minute", description="Other requests, per workspace (keys only)."
    )
    rate_limit_anonymous_ip: str = Field(
        default="600/minute", description="Other requests without credentials, per address."
    )
    rate_limit_auth_failures: str = Field(
        default="30/minute",
        description="401 answers per address; past it the address is refused altogether "
        "until the window ends.",
    )
    rate_limit_exempt: str = Field(
        default="127.0.0.0/8,::1/128",
        description="Comma-separated CIDRs whose requests skip the rate limits.",
    )
    rate_limit_max_keys: int = Field(
        default=100_000, ge=1000, description="Counters kept in memory (memory:// only)."
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated CIDRs of reverse proxies whose X-Forwarded-For names "
        "the client; from anyone else the header is ignored.",
    )
    max_query_bytes: int = Field(default=8192, ge=256, description="Longest query string.")
    max_query_params: int = Field(default=100, ge=1, description="Most query parameters.")
    max_json_depth: int = Field(
        default=32, ge=2, le=1000, description="Deepest nesting of an admin API JSON body."
    )
    max_json_items: int = Field(
        default=10_000, ge=1, description="Most array items and object members in one body."
    )
    login_lockout_threshold: int = Field(
        default=5, ge=1, description="Consecutive failed sign-ins that lock an account."
    )
    login_lockout_seconds: float = Field(
        default=30.0, gt=0, description="The first lock; it doubles per further failure."
    )
    login_lockout_max_seconds: float = Field(default=3600.0, gt=0, description="The longest lock.")
    login_stuffing_accounts: int = Field(
        default=10,
        ge=2,
        description="Distinct accounts failing from one address within the window that "
        "block it (credential stuffing).",
    )
    login_stuffing_network_accounts: int = Field(
        default=30, ge=2, description="The same for its /24 (IPv4) or /64 (IPv6) network."
    )
    login_stuffing_window_seconds: float = Field(default=600.0, gt=0)
    login_stuffing_block_seconds: float = Field(default=3600.0, gt=0)
    login_spike_accounts: int = Field(
        default=100,
        ge=2,
        description="Distinct accounts failing across all addresses within the window that, "
        "at the failure ratio below, mean a distributed attack: sources are then blocked "
        "after 3 accounts.",
    )
    login_spike_failure_ratio: float = Field(default=0.9, gt=0, le=1)

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> Settings:
        if self.env is not Environment.PRODUCTION:
            return self
        key = self.secret_key.get_secret_value() if self.secret_key else None
        if key is None:
            raise ConfigurationError(
                "NEXUS_SECRET_KEY is missing: production needs a random secret of at least "
                f"{MIN_SECRET_LENGTH} characters (generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        if key.strip().lower() in KNOWN_DEFAULT_SECRETS or len(key) < MIN_SECRET_LENGTH:
            raise ConfigurationError(
                "NEXUS_SECRET_KEY is a default or too short: production needs a random secret "
                f"of at least {MIN_SECRET_LENGTH} characters"
            )
        return self

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION

    @property
    def resolved_database_url(self) -> str:
        """The database URL, with PostgreSQL URLs pinned to the psycopg 3 driver."""
        if self.database_url is None:
            return f"sqlite:///{(self.data_dir / 'nexus.db').as_posix()}"
        url = self.database_url
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def events_path(self) -> Path:
        """The embedded event store (DuckDB)."""
        return self.data_dir / "events.duckdb"

    @property
    def journal_dir(self) -> Path:
        """The ingest journal's segments."""
        return self.data_dir / "journal"

    @property
    def is_embedded_database(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def secure_cookies(self) -> bool:
        return self.is_production if self.cookie_secure is None else self.cookie_secure

    @property
    def resolved_log_format(self) -> Literal["json", "console"]:
        if self.log_format == "auto":
            return "json" if self.is_production else "console"
        return self.log_format

    @cached_property
    def signing_key(self) -> bytes:
        """The secret that signs cookies and CSRF tokens.

        Outside production a missing key is generated once and kept in ``data_dir`` so that
        sessions survive restarts; production never gets here without one (see the validator).
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "secret.key"
        if path.exists():
            return path.read_bytes().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48).encode()
        path.touch(mode=0o600)
        path.write_bytes(key)
        return key
