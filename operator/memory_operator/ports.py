"""Interfaces of the adapters and the errors they raise, by meaning.

Backends: every `ensure_*` is idempotent and returns Outcome.UNCHANGED when the
backend already matches (no write at all); every `delete_*` is idempotent too.
Adapters raise BackendUnavailable when the server can't be reached (a temporary
error) and BackendRejected when the request itself can never succeed (a
permanent error).

Kubernetes (KubePort, adapters/kube.py): the same split, KubeUnavailable when
the API server does not answer, KubeRejected when it refuses the request for
good (invalid object, forbidden), KubeConflict and KubeBusy for answers that
pass with time; callers catch meanings, not status numbers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Protocol, overload

from memory_operator.domain import (
    CacheUserTarget,
    CollectionTarget,
    DatabaseTarget,
    Outcome,
    TopicsTarget,
)
from memory_operator.kube_types import (
    ConfigMap,
    Deployment,
    KopfPeering,
    KubeObject,
    MemoryNamespace,
    MemoryNamespaceStatus,
    NetworkPolicy,
    Rendered,
    Secret,
    Service,
)


class BackendError(RuntimeError):
    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.message = message


class BackendUnavailable(BackendError):
    """Temporary: retry with backoff."""


class BackendRejected(BackendError):
    """Permanent: the backend refuses this desired state (e.g. shrink partitions)."""


class BackendNotOwner(BackendRejected):
    """The data exists and belongs to another owner (ownership.py); nothing was written."""


class DatabaseAdmin(Protocol):
    def ensure_tenant(self, target: DatabaseTarget) -> Outcome: ...
    def delete_tenant(self, target: DatabaseTarget) -> Outcome: ...  # DROP SCHEMA CASCADE + role


class VectorAdmin(Protocol):
    def ensure_collection(self, target: CollectionTarget) -> Outcome: ...
    def delete_collection(self, name: str) -> Outcome: ...


class EventsAdmin(Protocol):
    def ensure_topics(self, target: TopicsTarget) -> Outcome: ...
    def delete_topics(self, target: TopicsTarget) -> Outcome: ...


class CacheAdmin(Protocol):
    def ensure_user(self, target: CacheUserTarget) -> Outcome: ...
    def delete_user(self, target: CacheUserTarget) -> Outcome: ...  # user and its keys


class KubeError(RuntimeError):
    """A Kubernetes API call failed. `status`: the HTTP status, 0 without an answer."""

    temporary = True  # worth retrying with backoff

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"kubernetes API {status}: {message}")
        self.status = status
        self.message = message


class KubeUnavailable(KubeError):
    """Temporary: no answer (connection refused, timeout, login failed)."""


class KubeConflict(KubeError):
    """Temporary: 409, someone else wrote first (a create that lost a race)."""


class KubeBusy(KubeError):
    """Temporary: 429 throttling or a 5xx server error."""


class KubeRejected(KubeError):
    """Permanent: any other 4xx (invalid object, unauthorized, forbidden)."""

    temporary = False


class KubePort(Protocol):
    """What the operator needs from Kubernetes (adapters.kube.KubeApi implements it).

    An implementation provides `read`; `get` is `read` typed by kind (the API
    server answers a GET of a kind with an object of that kind), here once for all."""

    def read(self, kind: str, namespace: str, name: str) -> KubeObject | None:
        """The object as the API server returns it; None if it does not exist."""
        ...

    @overload
    def get(self, kind: Literal["Secret"], namespace: str, name: str) -> Secret | None: ...
    @overload
    def get(self, kind: Literal["ConfigMap"], namespace: str, name: str) -> ConfigMap | None: ...
    @overload
    def get(self, kind: Literal["Deployment"], namespace: str, name: str) -> Deployment | None: ...
    @overload
    def get(self, kind: Literal["Service"], namespace: str, name: str) -> Service | None: ...
    @overload
    def get(
        self, kind: Literal["NetworkPolicy"], namespace: str, name: str
    ) -> NetworkPolicy | None: ...
    @overload
    def get(
        self, kind: Literal["MemoryNamespace"], namespace: str, name: str
    ) -> MemoryNamespace | None: ...
    @overload
    def get(
        self, kind: Literal["ClusterKopfPeering", "KopfPeering"], namespace: str, name: str
    ) -> KopfPeering | None: ...
    @overload
    def get(self, kind: str, namespace: str, name: str) -> KubeObject | None: ...
    def get(self, kind: str, namespace: str, name: str) -> KubeObject | None:
        return self.read(kind, namespace, name)

    def apply(self, obj: Rendered) -> Rendered: ...
    def create(self, obj: Rendered) -> Rendered | None: ...
    def patch_status(
        self, namespace: str, name: str, status: MemoryNamespaceStatus
    ) -> MemoryNamespace: ...
    def list_memory_namespaces(self, namespace: str | None = None) -> Iterable[MemoryNamespace]: ...
    def list_objects(
        self, kind: str, namespace: str, label_selector: str
    ) -> Iterable[KubeObject]: ...
    def emit_event(self, cr: MemoryNamespace, type_: str, reason: str, message: str) -> None: ...
