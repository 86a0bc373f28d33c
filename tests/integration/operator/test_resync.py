"""The resync loop (resync.py) against a real kube-apiserver: it walks the CRs
page by page (one listing per page, never one list of every body), runs one
pass per CR, retries a temporarily failed pass after the backoff instead of at
the next walk, and makes no pass while its replica is paused (peering)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from memory_operator.adapters.kube import KubeApi
from memory_operator.owned_watch import OwnedWatch
from memory_operator.reconcile import Result
from memory_operator.resync import Resync
from tests.e2e.harness import delete, kube_api, memory_namespace, new_namespace, wait_for
from tests.servers.kube import KubeCluster, install_crds

pytestmark = pytest.mark.integration
PAGE = 100  # KubeApi.list_objects' page size


@pytest.fixture(scope="module")
def api(kube: KubeCluster) -> Iterator[KubeApi]:
    install_crds(kube, "crds/")
    client = kube_api(kube)
    yield client
    client.close()


class Passes:
    """A pass that records what it was given; `fail` names fail temporarily once."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.guard = threading.Lock()
        self.calls: list[tuple[str, int]] = []  # (name, retry)
        self.fail = set(fail or ())

    def __call__(self, cr: dict[str, Any], retry: int) -> Result:
        name = cr["metadata"]["name"]
        with self.guard:
            self.calls.append((name, retry))
            if name in self.fail:
                self.fail.discard(name)
                return Result({}, error="temporary", reason="PostgresUnavailable")
        return Result({}, ready=True, reason="Ready")

    def names(self) -> Counter[str]:
        with self.guard:
            return Counter(name for name, _ in self.calls)


def _collection_gets(api: KubeApi, ns: str) -> list[httpx.URL]:
    """Record every GET of the namespace's MemoryNamespace collection."""
    seen: list[httpx.URL] = []

    def hook(request: httpx.Request) -> None:
        if request.method == "GET" and request.url.path.endswith(f"/{ns}/memorynamespaces"):
            seen.append(request.url)

    api._http.event_hooks["request"].append(hook)
    return seen


def test_a_walk_lists_page_by_page_and_passes_every_cr_once(api: KubeApi) -> None:
    ns = new_namespace(api, "page")
    count = 2 * PAGE + 37  # three pages
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: memory_namespace(api, ns, f"r{i:03d}", {"paused": True}), range(count)
            )
        )
    walker = kube_api_like(api)
    gets = _collection_gets(walker, ns)
    passes = Passes()
    resync = Resync(
        walker, passes, interval=3600, namespaces=(ns,), workers=4, backoff=lambda _: 1.0
    )
    resync.start()
    try:
        wait_for(lambda: resync.walks == 1, timeout=120, what="the first walk")
        assert passes.names() == Counter({f"r{i:03d}": 1 for i in range(count)})
        assert len(gets) == 3  # one listing per page
        assert all(url.params["limit"] == str(PAGE) for url in gets)
        assert [("continue" in url.params) for url in gets] == [False, True, True]
    finally:
        resync.stop()
        walker.close()
        delete(api, f"/api/v1/namespaces/{ns}")


def kube_api_like(api: KubeApi) -> KubeApi:
    """A second client with the same credentials (its own request hooks)."""
    return KubeApi(api._login)


def test_a_failed_pass_is_retried_after_the_backoff_not_at_the_next_walk(api: KubeApi) -> None:
    ns = new_namespace(api, "retry")
    for name in ("ok", "flaky"):
        memory_namespace(api, ns, name, {"paused": True})
    passes = Passes(fail={"flaky"})
    resync = Resync(api, passes, interval=3600, namespaces=(ns,), workers=2, backoff=lambda _: 1.0)
    resync.start()
    try:
        wait_for(lambda: passes.names()["flaky"] == 2, timeout=30, what="the retry")
        with passes.guard:
            assert sorted(r for n, r in passes.calls if n == "flaky") == [0, 1]
        assert passes.names()["ok"] == 1  # no second walk: the interval is an hour
        wait_for(lambda: len(resync.retries) == 0, timeout=10, what="the retry forgotten")
    finally:
        resync.stop()
        delete(api, f"/api/v1/namespaces/{ns}")


def test_a_paused_replica_makes_no_pass_and_walks_at_once_when_active(api: KubeApi) -> None:
    ns = new_namespace(api, "pause")
    memory_namespace(api, ns, "one", {"paused": True})
    active = threading.Event()
    passes = Passes()
    resync = Resync(
        api,
        passes,
        interval=3600,
        namespaces=(ns,),
        workers=2,
        backoff=lambda _: 1.0,
        is_active=active.is_set,
    )
    resync.start()
    try:
        threading.Event().wait(3)  # three ticks of the loop while paused
        assert passes.names() == Counter()
        active.set()  # the active replica died: this one takes over
        wait_for(lambda: passes.names()["one"] == 1, timeout=10, what="a walk at once")
    finally:
        resync.stop()
        delete(api, f"/api/v1/namespaces/{ns}")


def _deployment(api: KubeApi, ns: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    out = api._request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", body=body)
    assert out is not None
    return out


def test_the_deployment_watch_lists_then_watches_and_keeps_digests_only(
    api: KubeApi,
) -> None:
    """The Deployment watch lists the labelled Deployments once, then watches
    from the list's version: a new one's event arrives as a digest (no spec, no
    status); unlabelled Deployments are not watched. (410 Gone: the unit test,
    test_owned_watch.py; this API server could not be made to answer it.)"""
    ns = new_namespace(api, "dw")
    labels = {"app.kubernetes.io/managed-by": "somafractal-operator"}
    first = _deployment(api, ns, "first", labels)
    seen: list[dict[str, Any]] = []
    watch = OwnedWatch(
        kube_api_like(api),
        "Deployment",
        "app.kubernetes.io/managed-by=somafractal-operator",
        (ns,),
        seen.append,
    )
    watch.start()
    try:
        wait_for(lambda: any(e["type"] is None for e in seen), timeout=30, what="the listing")
        listed = [e for e in seen if e["type"] is None]
        assert [e["object"]["metadata"]["uid"] for e in listed] == [first["metadata"]["uid"]]
        _deployment(api, ns, "other", {"app": "unrelated"})
        second = _deployment(api, ns, "second", labels)
        wait_for(
            lambda: any(
                e["type"] == "ADDED" and e["object"]["metadata"]["name"] == "second" for e in seen
            ),
            timeout=30,
            what="the watch's event",
        )
        event = next(e for e in seen if e["object"]["metadata"]["name"] == "second")
        assert set(event["object"]) == {"metadata"}  # a digest: no spec, no status
        assert event["object"]["metadata"]["uid"] == second["metadata"]["uid"]
        assert all(e["object"]["metadata"]["name"] != "other" for e in seen)
        assert watch.lists == 1
    finally:
        watch.stop()
        delete(api, f"/api/v1/namespaces/{ns}")
