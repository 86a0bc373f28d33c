"""Background jobs (pruning, index catch-up, outbox relay) under a PostgreSQL lease."""

from memory_runtime.jobs.locks import JobLock, PostgresLease
from memory_runtime.jobs.periodic import PeriodicJob

__all__ = ["JobLock", "PeriodicJob", "PostgresLease"]
