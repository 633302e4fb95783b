"""The one Settings class. Every tunable has a type, a default that works on a
development machine, and its unit in its name where the unit is not obvious."""

from __future__ import annotations

import os
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
    # Deliveries a tenant may have waiting (sent, not started) in a pool's priority
    # lanes before its next ones go to the pool's bulk lane (application/lanes.py).
    tenant_share: int = Field(default=16, ge=1)


class LedgerSettings(BaseModel):
    group_commit: bool = True
    group_commit_max_batch: int = Field(default=500, ge=1)
    group_commit_max_wait_s: float = Field(default=0.002, ge=0)
    # The followers' reads, at most one per interval while commits keep coming (one
    # commit after a quiet spell is read at once): at a steady rate each read then
    # takes several commits' events, and wakes its process once for them.
    dispatcher_read_interval_s: float = Field(default=0.01, ge=0, le=1)
    projector_read_interval_s: float = Field(default=0.05, ge=0, le=5)


def _otel_env(name: str, default: str = "") -> str:
    """A standard ``OTEL_*`` variable: the default of an OtelSettings field, which the
    ``JOBLEDGER_OTEL__*`` variable of the same field overrides."""
    return os.environ.get(name, default).strip()


def _otel_enabled() -> bool:
    disabled = _otel_env("OTEL_SDK_DISABLED").lower() == "true"
    return not disabled and bool(_otel_env("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _otel_sample_ratio() -> float:
    try:
        return min(1.0, max(0.0, float(_otel_env("OTEL_TRACES_SAMPLER_ARG", "1.0"))))
    except ValueError:
        return 1.0


class OtelSettings(BaseModel):
    """Tracing and metrics export. Off unless enabled here or an
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; off, no SDK is installed at all."""

    enabled: bool = Field(default_factory=_otel_enabled)
    service_name: str = Field(
        default_factory=lambda: _otel_env("OTEL_SERVICE_NAME", "jobledger") or "jobledger"
    )
    # The collector's base URL; empty means the protocol's default on localhost.
    endpoint: str = Field(default_factory=lambda: _otel_env("OTEL_EXPORTER_OTLP_ENDPOINT"))
    protocol: Literal["http/protobuf", "grpc"] = Field(
        default_factory=lambda: (
            "grpc" if _otel_env("OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc" else "http/protobuf"
        )
    )
    # Fraction of new traces kept (a trace continued from a caller follows its decision).
    sample_ratio: float = Field(default_factory=_otel_sample_ratio, ge=0.0, le=1.0)
    metrics_export_interval_s: float = Field(default=10.0, gt=0)


class WorkerSettings(BaseModel):
    pool: str = "default"
    concurrency: int = Field(default=4, ge=1)
    prefetch: int = Field(default=8, ge=1, le=65535)  # AMQP's prefetch count is 16 bits
    # Picks of a higher lane a waiting lower lane may be passed over before it is
    # served once (application/lanes.py).
    starvation_bound: int = Field(default=8, ge=1)
    progress_interval_s: float = 0.1
    # A failed attempt's traceback, logged at ERROR with the job's ids (it is kept in
    # the ledger either way): off where error texts may hold patient data.
    log_tracebacks: bool = True
    processes: int = Field(default=1, ge=1)
    shutdown_timeout_s: float = 30.0
    heartbeat_interval_s: float = 2.0
    heartbeat_ttl_s: float = 10.0


class RetrySettings(BaseModel):
    """The default retry policy; a job type may set its own."""

    max_attempts: int = 3
    base_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 300.0


class SchedulingSettings(BaseModel):
    """Jobs scheduled for later (``run_at`` / ``delay_s``)."""

    # How far ahead a job may be scheduled (further: 422); a year by default.
    horizon_s: float = Field(default=365 * 86400.0, gt=0)
    # How often the dispatcher hands the jobs kept in the ledger (scheduled beyond what
    # the delay queues carry) to the delay queues as they come within their range; at
    # most half that range (application/handover.py), whatever is set here.
    hand_over_interval_s: float = Field(default=60.0, gt=0)


class GatewaySettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    read_your_writes_timeout_s: float = 2.0
    # How long a new connection may take to send its first request's headers, a request
    # its body, and how long a connection may sit idle between requests.
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    keep_alive_timeout_s: float = Field(default=5.0, gt=0)
    # Processes serving the one port, each with its own event loop (the bound on submits
    # a second), sharing the tenants' quotas; kept up by a supervisor.
    processes: int = Field(default=1, ge=1)
    dev_tenant: str = "dev"
    dev_subject: str = "dev"
    # Import the listings' SQL module once listening, in a thread (about a CPU-second),
    # rather than in the first listing a person waits for; off where the gateway
    # starts often and lives briefly (the tests).
    warm_up: bool = True


class ObservabilitySettings(BaseModel):
    """Logs, correlation ids and the operations port of the non-HTTP processes."""

    json_logs: bool = False  # one JSON object per log line, with the job's ids
    correlation_header: str = "X-Correlation-ID"
    # /healthz, /readyz and /metrics of the dispatcher, projector and worker: off when
    # unset, an ephemeral port when 0 (the gateway serves them on its own port).
    ops_host: str = "127.0.0.1"
    ops_port: int | None = Field(default=None, ge=0, le=65535)
    # How often the dispatcher samples the depth of the work queues and the DLQ.
    queue_depth_interval_s: float = Field(default=5.0, gt=0)
    # A work queue holding jobs with no consumer this long is logged as a warning.
    unserved_pool_warning_s: float = Field(default=60.0, ge=0)
    # The tracing UI's page of a trace, ``{trace_id}`` in it (e.g. Jaeger's
    # http://127.0.0.1:16686/trace/{trace_id}): the dashboard links each event's trace.
    trace_url: str = Field(default="", pattern=r"^(https?://[^\s\"<>]*\{trace_id\}[^\s\"<>]*)?$")


# The well-known development key. Tokens signed with it prove nothing: it is used only
# when nothing else is configured and the environment is development (`jobledger run
# --dev`, `make up`), and only by a gateway that listens on a loopback address.
DEV_AUTH_SECRET = "jobledger-development-key-do-not-use-in-production"  # noqa: S105


class AuthSettings(BaseModel):
    """How the gateway verifies bearer tokens (JWT). One key source: the HS256
    ``secret``, a PEM ``public_key_file`` (RS256/ES256/PS256) or a ``jwks_file``."""

    environment: Literal["development", "production"] = "production"
    algorithm: Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256"] = (
        "HS256"
    )
    secret: SecretStr | None = None
    public_key_file: Path | None = None
    jwks_file: Path | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    tenant_claim: str = "tenant"
    # The longest a token may live (exp - iat; exp - now without iat); 0: no bound.
    max_token_lifetime_s: float = Field(default=86400.0, ge=0)


class QuotaSettings(BaseModel):
    """Per-tenant limits on submitting (429 with Retry-After past them). ``tenants``
    overrides them per tenant: {"acme": {"submits_per_s": 50, "max_waiting": 1000}}."""

    submits_per_s: float = Field(default=500.0, ge=0)  # jobs a second; 0: no limit
    burst: int = Field(default=2000, ge=1)  # jobs at once above the rate
    max_waiting: int = Field(default=50_000, ge=0)  # scheduled, queued or retry-scheduled; 0: none
    tenants: dict[str, dict[str, float]] = {}


class InputSettings(BaseModel):
    """Bounds on what a request may send the gateway."""

    max_body_bytes: int = Field(default=65536, ge=1024)
    max_batch_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)  # POST /jobs/batch
    max_header_bytes: int = Field(default=8192, ge=1024)


class StreamSettings(BaseModel):
    """The live streams (SSE) of the gateway."""

    heartbeat_interval_s: float = Field(default=15.0, gt=0)
    client_queue_size: int = Field(default=1000, ge=1)  # events; a client further behind is cut off
    reconnect_ms: int = Field(default=1000, ge=0)  # the SSE retry: a client waits this to reconnect
    catch_up_page_size: int = Field(default=500, ge=1)  # events read per ledger query on resume
    # A case or tenant feed resumes at most this far behind the ledger (else 409).
    max_catch_up_events: int = Field(default=100_000, ge=0)


class SchedulerSettings(BaseModel):
    """The scheduler: fires the cron schedules' ticks (``jobledger scheduler``, and a
    task of ``jobledger run``)."""

    # The longest it waits before looking for schedules created or changed (the ticks
    # it knows of it fires at their time).
    interval_s: float = Field(default=1.0, gt=0)
    # A tick at most this old is on time; older ones were missed and follow catch_up.
    on_time_s: float = Field(default=60.0, gt=0)
    max_ticks_per_pass: int = Field(default=1000, ge=1)  # catch_up=all: missed ticks a pass
    # Where the schedules declared in code (@registry.job(..., schedule=...)) live.
    code_tenant: str = "system"
    code_case_id: str = "schedules"


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
    otel: OtelSettings = Field(default_factory=OtelSettings)  # reads OTEL_* when built
    worker: WorkerSettings = WorkerSettings()
    scheduling: SchedulingSettings = SchedulingSettings()
    gateway: GatewaySettings = GatewaySettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    auth: AuthSettings = AuthSettings()
    input: InputSettings = InputSettings()
    quota: QuotaSettings = QuotaSettings()
    stream: StreamSettings = StreamSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    token: SecretStr | None = None  # the bearer token `jobledger submit` sends (JOBLEDGER_TOKEN)
