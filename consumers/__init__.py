"""What user code imports to write job types."""

from consumers.context import JobCancelled, JobContext, PermanentError, Retry
from consumers.registry import JobRegistry, JobType, Limits
from domain.retry import RetryPolicy

__all__ = [
    "JobCancelled",
    "JobContext",
    "JobRegistry",
    "JobType",
    "Limits",
    "PermanentError",
    "Retry",
    "RetryPolicy",
]
