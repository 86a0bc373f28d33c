"""What this replica knows of every MemoryNamespace it watches, and nothing more:
each CR's tenant claim (claims.py's rule) and Ready status (the
`somafractal_memorynamespaces` metric) — a few short strings per CR. No I/O:
handlers.py fills it from one listing at start and keeps it with Kopf's watch
events (DELETED drops a CR). Thread-safe: passes run in Kopf's thread pool and
scrapes in the metrics server's thread.

Why not Kopf's `@kopf.index`: the operator bounds how many CRs Kopf works on at
once (`settings.queueing.worker_limit`), which is what keeps a burst of 1,000
CRs from holding 1,000 handler tasks in memory. With Kopf indexes the workers
admitted first wait until every index is complete, which takes a worker per
object: a restart with 301 CRs and a limit of 32 reconciled nothing
(bench/README.md). This index is complete before Kopf starts watching.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

from memory_operator.claims import Claim, tenant_key
from memory_operator.conditions import ready_status
from memory_operator.kube_types import MemoryNamespace


class Fleet(Mapping[str, tuple[Claim, ...]]):
    """tenant -> the claims on it (the `Claims` the reconciler reads), plus each
    CR's (namespace, Ready status) for the metric."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        # uid -> (claimed tenant or None, (namespace, Ready status))
        self._crs: dict[str, tuple[str | None, tuple[str, str]]] = {}
        self._claims: dict[str, dict[str, Claim]] = {}  # tenant -> uid -> claim
        self._deleting: set[str] = set()  # uids with a deletionTimestamp

    def fill(self, crs: Iterable[MemoryNamespace]) -> None:
        for cr in crs:
            self.put(cr)

    def put(self, cr: MemoryNamespace) -> None:
        """Add or update one CR (a listing or a watch event other than DELETED)."""
        uid = cr["metadata"]["uid"]
        tenant, claim = next(iter(tenant_key(cr).items()), (None, None))
        readiness = (cr["metadata"]["namespace"], ready_status(cr))
        with self._guard:
            self._drop(uid)
            self._crs[uid] = (tenant, readiness)
            if cr["metadata"].get("deletionTimestamp"):
                self._deleting.add(uid)
            if tenant is not None and claim is not None:
                self._claims.setdefault(tenant, {})[uid] = claim

    def remove(self, uid: str) -> None:
        with self._guard:
            self._drop(uid)

    def live(self, uid: str) -> bool:
        """The CR exists and is not being deleted, as far as the watch has told:
        a resync pass on a body listed earlier runs only then (resync.py)."""
        with self._guard:
            return uid in self._crs and uid not in self._deleting

    def _drop(self, uid: str) -> None:
        self._deleting.discard(uid)
        tenant, _ = self._crs.pop(uid, (None, None))
        if tenant is not None:
            claims = self._claims.get(tenant, {})
            claims.pop(uid, None)
            if not claims:
                self._claims.pop(tenant, None)

    def readiness(self) -> dict[tuple[str, str], int]:
        """(namespace, Ready status) -> how many CRs."""
        with self._guard:
            return dict(Counter(readiness for _, readiness in self._crs.values()))

    # Mapping: the claims, as snapshots (a pass never sees a half-updated entry).
    def __getitem__(self, tenant: str) -> tuple[Claim, ...]:
        with self._guard:
            return tuple(self._claims[tenant].values())

    def __iter__(self) -> Iterator[str]:
        with self._guard:
            return iter(list(self._claims))

    def __len__(self) -> int:
        with self._guard:
            return len(self._claims)
