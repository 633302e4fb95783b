"""The one Settings class. Every tunable has a type, a default that works on a
development machine, and its unit in its name where the unit is not obvious."""

from __future__ import annotations

from pydantic import BaseModel, Field
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


class StreamSettings(BaseModel):
    """The live streams (SSE) of the gateway."""

    heartbeat_interval_s: float = Field(default=15.0, gt=0)
    client_queue_size: int = Field(default=1000, ge=1)  # events; a client further behind is cut off
    reconnect_ms: int = Field(default=1000, ge=0)  # the SSE retry: a client waits this to reconnect
    catch_up_page_size: int = Field(default=500, ge=1)  # events read per ledger query on resume


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
    stream: StreamSettings = StreamSettings()
    # The bearer token the command-line clients send (jobledger watch, submit --watch).
    token: str = ""
