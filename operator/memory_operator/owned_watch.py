"""A watch of the tenants' Deployments that keeps no bodies (instead of Kopf's).

Kopf queues each watched object's whole body until one of its workers takes it:
at a restart, every tenant's Deployment at once (about 46 KB each as Python
objects, bench/README.md). This watch lists the Deployments labelled
`app.kubernetes.io/managed-by=somafractal-operator` page by page and then
watches from the list's resourceVersion (with bookmarks), digesting each event
at once into `digest()`'s few fields before it is handed on; a 410 Gone
(the version expired) lists again. It runs only while `is_active()` (peering,
resync.PeeringGate), and lists again after a pause.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Protocol, cast

from memory_operator.kube_types import (
    Deployment,
    KubeObject,
    ObjectMeta,
    OwnedEvent,
    OwnerReference,
    WatchEvent,
)
from memory_operator.manifests import KIND

log = logging.getLogger("memory_operator.owned_watch")

RETRY = 1.0  # seconds before a failed list or watch is tried again


class WatchPort(Protocol):
    """What the watch needs from Kubernetes (adapters.kube.KubeApi implements it)."""

    def list_pages(
        self, kind: str, namespace: str, label_selector: str
    ) -> Iterator[tuple[list[KubeObject], str]]: ...

    def watch(
        self, kind: str, namespace: str, label_selector: str, resource_version: str
    ) -> Iterator[WatchEvent]: ...


class Gone(Exception):
    """The watch's resourceVersion expired (410): list again."""


def digest(event_type: str | None, obj: Deployment) -> OwnedEvent:
    """The event as the Deployment handler needs it: uid, version, name,
    namespace and the controlling MemoryNamespace's reference. No I/O."""
    meta = obj.get("metadata") or ObjectMeta()
    owner: OwnerReference | None = next(
        (
            # The API server requires uid and name of every owner reference.
            OwnerReference(uid=ref["uid"], name=ref["name"])
            for ref in meta.get("ownerReferences") or []
            if ref.get("kind") == KIND and ref.get("controller")
        ),
        None,
    )
    return {
        "type": event_type,
        "object": {
            "metadata": {
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
                "name": meta.get("name", ""),
                "namespace": meta.get("namespace", ""),
                "ownerReferences": [{**owner, "kind": KIND, "controller": True}] if owner else [],
            }
        },
    }


class OwnedWatch:
    """One thread per watched namespace ("" = all): list, then watch; each event
    digested and passed to `handle` (type None for listed objects, like Kopf)."""

    def __init__(
        self,
        kube: WatchPort,
        kind: str,
        label_selector: str,
        namespaces: tuple[str, ...],
        handle: Callable[[OwnedEvent], None],
        is_active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._kube = kube
        self._kind = kind
        self._selector = label_selector
        self._handle = handle
        self._is_active = is_active
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(ns,), name=f"watch-{ns}", daemon=True)
            for ns in namespaces or ("",)
        ]
        self.lists = 0  # listings made (tests: a 410 makes one more)

    def start(self, since: str | None = None) -> None:
        """`since`: watch from this version without a first listing (tests)."""
        self._since = since
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        # A watch request returns within its server-side timeout; threads are
        # daemons, so a stop does not wait for that.
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _run(self, namespace: str) -> None:
        version: str | None = self._since
        while not self._stop.is_set():
            if not self._is_active():
                version = None  # list again when active: events were missed
                self._stop.wait(RETRY)
                continue
            try:
                if version is None:
                    version = self._list(namespace)
                version = self._watch(namespace, version)
            except Gone:
                log.info("watch of %s expired (410): listing again", self._kind)
                version = None
            except Exception as err:
                log.warning("watch of %s failed, again in %.0f s: %s", self._kind, RETRY, err)
                self._stop.wait(RETRY)

    def _list(self, namespace: str) -> str:
        self.lists += 1
        version = ""
        for items, page_version in self._kube.list_pages(self._kind, namespace, self._selector):
            version = page_version  # the same for every page of one listing
            for obj in items:
                self._handle(digest(None, cast(Deployment, obj)))  # the watched kind
            del items
        return version

    def _watch(self, namespace: str, version: str) -> str | None:
        """Until the server ends the request; returns the last version seen
        (None: paused or stopping, so list again when active)."""
        for event in self._kube.watch(self._kind, namespace, self._selector, version):
            if self._stop.is_set():
                return None
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone(obj.get("message", ""))
                raise RuntimeError(f"watch error: {obj.get('message', obj)}")
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if kind == "BOOKMARK":
                continue
            if not self._is_active():
                return None
            self._handle(digest(kind, cast(Deployment, obj)))
        return version
