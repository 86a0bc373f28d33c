"""Background jobs (pruning, index catch-up, outbox relay) under a cross-replica lock."""

from memory_runtime.jobs.locks import JobLock, LocalLock, RedisLock, build_lock
from memory_runtime.jobs.periodic import PeriodicJob

__all__ = ["JobLock", "LocalLock", "PeriodicJob", "RedisLock", "build_lock"]
