"""The KubePort of a pass on shared reads (reconcile.Reconciler._shared_pass):
the operator's own objects of a tenant come from one labelled list per kind and
namespace, shared by the passes of a resync (snapshot.SharedByKey); anything
else raises NeedsExact and the pass runs on exact reads.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable
from typing import cast

from memory_operator import manifests as m
from memory_operator.kube_types import (
    KubeObject,
    MemoryNamespace,
    MemoryNamespaceStatus,
    Rendered,
)
from memory_operator.ports import KubeError, KubePort
from memory_operator.snapshot import NeedsExact, SharedByKey

# What a shared read of a namespace's objects keeps (the operator's own, by label).
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={m.MANAGED_BY}"
SHARED_KINDS = ("Secret", "ConfigMap", "NetworkPolicy", "Deployment", "Service")


def list_managed(kube: KubePort, key: Hashable) -> dict[str, str]:
    """One shared read: the operator's objects of (kind, namespace), by name."""
    kind, namespace = cast(tuple[str, str], key)
    items = kube.list_objects(kind, namespace, MANAGED_SELECTOR)
    return {item["metadata"]["name"]: comparable(item) for item in items}


def comparable(obj: KubeObject) -> str:
    """What a shared read keeps of a live object: all but managedFields (the
    largest part of most objects, never compared), as compact JSON (several times
    smaller than the dict it is parsed back into for one pass)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return json.dumps({**obj, "metadata": meta}, separators=(",", ":"))


class SharedKube(KubePort):
    """The KubePort of a pass on shared reads: GETs of the operator's own objects
    are served from one labelled list per kind and namespace; anything it can't
    serve, and every write, raises NeedsExact. Events pass through (they follow a
    write that a backend without a shared read made on an exact read)."""

    def __init__(
        self,
        kube: KubePort,
        objects: SharedByKey[dict[str, str]],
        not_before: float,
    ) -> None:
        self._kube = kube
        self._objects = objects
        self._not_before = not_before

    def read(self, kind: str, namespace: str, name: str) -> KubeObject | None:
        if kind not in SHARED_KINDS:
            raise NeedsExact(f"{kind} is not read in bulk")
        try:
            live = self._objects.get((kind, namespace), self._not_before).get(name)
        except KubeError as err:
            raise NeedsExact(f"list {kind}: {err.message}") from err
        if live is None:  # missing, or not labelled ours (a tokenSecretRef Secret)
            raise NeedsExact(f"{kind}/{name} not in the shared read")
        return cast(KubeObject, json.loads(live))  # a live object, as comparable() kept it

    def emit_event(self, cr: MemoryNamespace, type_: str, reason: str, message: str) -> None:
        self._kube.emit_event(cr, type_, reason, message)

    def list_memory_namespaces(self, namespace: str | None = None) -> Iterable[MemoryNamespace]:
        return self._kube.list_memory_namespaces(namespace)

    def list_objects(self, kind: str, namespace: str, label_selector: str) -> list[KubeObject]:
        raise NeedsExact("no lists on a shared pass")

    def apply(self, obj: Rendered) -> Rendered:
        raise NeedsExact(f"{obj['kind']}/{obj['metadata']['name']} differs")

    def create(self, obj: Rendered) -> Rendered | None:
        raise NeedsExact(f"{obj['kind']}/{obj['metadata']['name']} missing")

    def patch_status(
        self, namespace: str, name: str, status: MemoryNamespaceStatus
    ) -> MemoryNamespace:
        raise NeedsExact("status differs")
