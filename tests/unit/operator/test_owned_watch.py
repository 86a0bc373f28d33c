"""owned_watch.py: digests, and a 410 Gone answer makes the watch list again
(a scripted Kubernetes: the test API server would not answer 410 on demand,
not even with its watch cache off and etcd compacted)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from memory_operator.owned_watch import OwnedWatch, digest
from tests.e2e.harness import wait_for

OWNER = {"kind": "MemoryNamespace", "name": "a", "uid": "cr-1", "controller": True}


def _dep(name: str, version: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "resourceVersion": version,
            "ownerReferences": [OWNER, {"kind": "ReplicaSet", "name": "x", "uid": "r"}],
            "managedFields": [{"manager": "x"}],
        },
        "spec": {"replicas": 1},
        "status": {"availableReplicas": 1},
    }


def test_digest_keeps_identity_version_and_controlling_owner_only() -> None:
    event = digest("MODIFIED", _dep("d", "7"))
    assert event == {
        "type": "MODIFIED",
        "object": {
            "metadata": {
                "uid": "uid-d",
                "resourceVersion": "7",
                "name": "d",
                "namespace": "ns",
                "ownerReferences": [
                    {"uid": "cr-1", "name": "a", "kind": "MemoryNamespace", "controller": True}
                ],
            }
        },
    }
    unowned = _dep("e", "8")
    unowned["metadata"]["ownerReferences"] = []
    assert digest(None, unowned)["object"]["metadata"]["ownerReferences"] == []


class Scripted:
    """Lists return `listing`; the first watch answers 410, later ones one event."""

    def __init__(self) -> None:
        self.watched_from: list[str] = []
        self.done = threading.Event()

    def list_pages(self, kind: str, namespace: str, selector: str) -> Iterator[Any]:
        yield [_dep("d", "10")], "10"

    def watch(self, kind: str, namespace: str, selector: str, version: str) -> Iterator[Any]:
        self.watched_from.append(version)
        if len(self.watched_from) == 1:
            yield {"type": "ERROR", "object": {"code": 410, "message": "too old"}}
        elif len(self.watched_from) == 2:
            yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "11"}}}
            yield {"type": "MODIFIED", "object": _dep("d", "12")}
        else:
            self.done.set()
            self.done.wait()
            yield from ()


def test_a_410_lists_again_and_watches_from_the_new_listing() -> None:
    kube = Scripted()
    seen: list[dict[str, Any]] = []
    watch = OwnedWatch(kube, "Deployment", "l=v", ("ns",), seen.append)  # type: ignore[arg-type]
    watch.start(since="3")  # an expired version: 410
    try:
        wait_for(kube.done.is_set, timeout=10, what="three watches")
        assert kube.watched_from[:3] == ["3", "10", "12"]  # the listing's, then the last seen
        assert watch.lists == 1
        assert [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in seen] == [
            (None, "10"),
            ("MODIFIED", "12"),
        ]
    finally:
        watch.stop(timeout=1)


def test_a_paused_replica_handles_nothing() -> None:
    kube = Scripted()
    seen: list[dict[str, Any]] = []
    watch = OwnedWatch(kube, "Deployment", "l=v", ("ns",), seen.append, is_active=lambda: False)  # type: ignore[arg-type]
    watch.start()
    threading.Event().wait(1.5)
    watch.stop(timeout=1)
    assert seen == []
    assert kube.watched_from == []
