"""What user code imports to write job types."""

from consumers.context import JobCancelled, JobContext, PermanentError
from consumers.registry import JobRegistry, JobType

__all__ = ["JobCancelled", "JobContext", "JobRegistry", "JobType", "PermanentError"]
