"""Bulk reads shared by the passes of a resync (no I/O here: loaders are passed in).

A resync reconciles every Ready tenant; reading each tenant's objects one by one
costs a round trip per object and tenant. Instead a backend's (or a namespace's
Kubernetes objects') state is read once, in bulk, and shared by the passes that
start within a short window. The rules that keep this correct:

- a snapshot may only say "nothing to do": any difference, or anything it can't
  answer, raises `NeedsExact` and the pass runs again on exact per-tenant reads,
  where every write is decided (reconcile.py);
- only a pass over a tenant that is Ready for its current generation consults a
  snapshot: a first pass or a spec change never does;
- a pass never uses a snapshot whose load began before that tenant's previous
  pass ended (`not_before`), so drift made by someone else after a pass is seen
  by the next pass, and so are the operator's own writes; and no snapshot is
  used once `window` seconds have passed since its load ended (counted from the
  end: a load of a large fleet's objects takes seconds on a busy host, and a
  window counted from its start left the passes reloading most of the time).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

# Seconds a bulk read is shared: long enough to serve a resync of 1,000 tenants
# with one read. The next pass over a tenant never uses a read older than its
# previous pass, whatever the interval (SOMAFRACTAL_RESYNC_SECONDS >= 5).
WINDOW_SECONDS = 30.0


class NeedsExact(Exception):
    """The snapshot can't vouch for this pass: run it on exact reads."""


class Shared(Generic[T]):
    """One bulk read, loaded on demand by one thread and shared for `window` s."""

    def __init__(
        self,
        load: Callable[[], T],
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()  # one load at a time; the others wait and share it
        self._value: T | None = None
        self._started = float("-inf")  # when the held value's load began
        self._loaded = float("-inf")  # and when it ended
        self.loads = 0  # bulk reads made (tests count round trips with it)

    def get(self, not_before: float) -> T:
        """The shared value, loaded again unless its load began at or after
        `not_before` and ended less than `window` seconds ago. Load errors propagate."""
        with self._lock:
            started = self._clock()
            if self._value is None or not (
                self._started >= not_before and started - self._loaded < self._window
            ):
                self._value = None  # never serve a value older than the caller allows
                value = self._load()
                self._value, self._started, self._loaded = value, started, self._clock()
                self.loads += 1
            return self._value

    def expired(self) -> bool:
        return self._clock() - self._loaded >= self._window


class SharedByKey(Generic[T]):
    """A `Shared` per key (e.g. per Kubernetes kind and namespace); expired ones
    are dropped when a new key is added, so the memory follows what is in use."""

    def __init__(
        self,
        load: Callable[[Hashable], T],
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        def new_shared(key: Hashable) -> Shared[T]:
            # its own load; the window and clock of every other key
            return Shared(functools.partial(load, key), window, clock)

        self._new_shared = new_shared
        self._guard = threading.Lock()
        self._by_key: dict[Hashable, Shared[T]] = {}

    def get(self, key: Hashable, not_before: float) -> T:
        with self._guard:
            shared = self._by_key.get(key)
            if shared is None:
                for old in [k for k, s in self._by_key.items() if s.expired()]:
                    del self._by_key[old]
                shared = self._by_key[key] = self._new_shared(key)
        return shared.get(not_before)

    @property
    def loads(self) -> int:
        with self._guard:
            return sum(s.loads for s in self._by_key.values())
