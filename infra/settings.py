"""The one Settings class. Every tunable has a type, a default that works on a
development machine, and its unit in its name where the unit is not obvious."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PostgresSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 5432
    dbname: str = "jobledger"
    user: str = "postgres"
    password: str = ""
    schema_: str = Field(default="public", alias="schema")
    pool_size: int = 2
    max_overflow: int = 10
    connect_timeout_s: int = 5

    model_config = {"populate_by_name": True}

    @property
    def conninfo(self) -> str:
        return (
            f"host={self.host} port={self.port} dbname={self.dbname} user={self.user} "
            f"password={self.password} connect_timeout={self.connect_timeout_s}"
        )


class AmqpSettings(BaseModel):
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    management_url: str = "http://guest:guest@127.0.0.1:15672"
    prefix: str = "jobledger"
    delay_levels: int = Field(default=16, ge=1, le=24)
    delivery_limit: int = 20
    publish_window: int = 256


class LedgerSettings(BaseModel):
    group_commit: bool = True
    group_commit_max_batch: int = Field(default=500, ge=1)
    group_commit_max_wait_s: float = Field(default=0.002, ge=0)


class OtelSettings(BaseModel):
    enabled: bool = False
    service_name: str = "jobledger"


class WorkerSettings(BaseModel):
    pool: str = "default"
    concurrency: int = 4
    prefetch: int = 8
    progress_interval_s: float = 0.1
    processes: int = 1
    shutdown_timeout_s: float = 30.0
    heartbeat_interval_s: float = 2.0
    heartbeat_ttl_s: float = 10.0


class RetrySettings(BaseModel):
    """The default retry policy; a job type may set its own."""

    max_attempts: int = 3
    base_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 300.0


class GatewaySettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    read_your_writes_timeout_s: float = 2.0
    dev_tenant: str = "dev"
    dev_subject: str = "dev"


# The well-known development key. Tokens signed with it prove nothing: the gateway
# refuses to start with it, and `jobledger token` refuses to mint with it, in production.
DEV_AUTH_SECRET = "jobledger-development-key-do-not-use-in-production"  # noqa: S105


class AuthSettings(BaseModel):
    """How the gateway verifies bearer tokens (JWT). One key source: the HS256
    ``secret``, a PEM ``public_key_file`` (RS256/ES256/PS256) or a ``jwks_file``."""

    environment: Literal["development", "production"] = "development"
    algorithm: Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256"] = (
        "HS256"
    )
    secret: SecretStr = SecretStr(DEV_AUTH_SECRET)
    public_key_file: Path | None = None
    jwks_file: Path | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    tenant_claim: str = "tenant"


class InputSettings(BaseModel):
    """Bounds on what a request may send the gateway."""

    max_body_bytes: int = Field(default=65536, ge=1024)
    max_header_bytes: int = Field(default=8192, ge=1024)


class Settings(BaseSettings):
    """Read from JOBLEDGER_* variables; nested groups use a double underscore,
    e.g. JOBLEDGER_POSTGRES__HOST or JOBLEDGER_WORKER__CONCURRENCY."""

    model_config = SettingsConfigDict(
        env_prefix="JOBLEDGER_", env_nested_delimiter="__", extra="ignore"
    )

    app: str = "dental.jobs"
    retry: RetrySettings = RetrySettings()
    postgres: PostgresSettings = PostgresSettings()
    ledger: LedgerSettings = LedgerSettings()
    amqp: AmqpSettings = AmqpSettings()
    otel: OtelSettings = OtelSettings()
    worker: WorkerSettings = WorkerSettings()
    gateway: GatewaySettings = GatewaySettings()
    auth: AuthSettings = AuthSettings()
    input: InputSettings = InputSettings()
    token: SecretStr | None = None  # the bearer token `jobledger submit` sends (JOBLEDGER_TOKEN)
