"""Infrastructure failures, as the rest of the system sees them."""

from __future__ import annotations


class InfraError(Exception):
    """A service the system depends on failed."""


class StoreUnavailable(InfraError):
    """PostgreSQL is unreachable."""


class BrokerUnavailable(InfraError):
    """RabbitMQ is unreachable."""


class ConfigurationError(InfraError):
    """The settings name something that does not exist."""
