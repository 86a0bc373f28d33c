"""Kubernetes I/O for the reconciler: get, server-side apply, create, status
patch, Events, listing MemoryNamespaces and (for a resync's shared reads) the
objects rendered per tenant, in pages; a watch (the Deployment watch,
owned_watch.py). Nothing else in the operator talks to the API server (Kopf's
own watch of the CRs aside).

A small REST client over httpx: server-side apply needs
`application/apply-patch+yaml` bodies, which is simplest to send directly. Its
credentials are the ones Kopf's watch uses, from Kopf's own login helpers (the
pod's service account, else a kubeconfig): `login` below serves both. The
`kubernetes` package is not used, nor installed in the operator image: Kopf
imports it whenever it is installed, a large part of the operator's memory
(bench/README.md, "Peak RSS").
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import kopf

from memory_operator.kube_types import (
    Event,
    KubeObject,
    MemoryNamespace,
    MemoryNamespaceStatus,
    Rendered,
    WatchEvent,
)
from memory_operator.manifests import API_VERSION, FIELD_MANAGER, KIND
from memory_operator.ports import (
    KubeBusy,
    KubeConflict,
    KubeError,
    KubePort,
    KubeRejected,
    KubeUnavailable,
)

# kind -> (API prefix, plural)
_RESOURCES: dict[str, tuple[str, str]] = {
    "Secret": ("/api/v1", "secrets"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "Event": ("/api/v1", "events"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    KIND: (f"/apis/{API_VERSION}", "memorynamespaces"),
    # Kopf's peering objects (several replicas, docs/OPERATOR.md).
    "ClusterKopfPeering": ("/apis/kopf.dev/v1", "clusterkopfpeerings"),
    "KopfPeering": ("/apis/kopf.dev/v1", "kopfpeerings"),
}


def error_for(status: int, message: str) -> KubeError:
    """The typed error for an HTTP answer (ports.py has the meanings)."""
    if status == 409:
        return KubeConflict(status, message)
    if status == 429 or status >= 500:
        return KubeBusy(status, message)
    return KubeRejected(status, message)


def _path(kind: str, namespace: str | None, name: str | None = None) -> str:
    try:
        prefix, plural = _RESOURCES[kind]
    except KeyError:
        raise ValueError(f"unsupported kind {kind!r}") from None
    path = prefix + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    return path + (f"/{name}" if name else "")


Login = Callable[..., kopf.ConnectionInfo]


def in_cluster_login(**_: object) -> kopf.ConnectionInfo | None:
    """The pod's service account (None outside a pod), through Kopf's helper. Kopf
    names the server https://kubernetes.default.svc; like client-go's
    InClusterConfig, KUBERNETES_SERVICE_HOST/PORT win when set (a hostNetwork pod
    may not resolve cluster DNS names)."""
    info = kopf.login_with_service_account(settings=kopf.OperatorSettings())
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if info is not None and host and port:
        host = f"[{host}]" if ":" in host else host
        info = dataclasses.replace(info, server=f"https://{host}:{port}")
    return info


def kubeconfig_login(**_: object) -> kopf.ConnectionInfo:
    """The current context of $KUBECONFIG, else ~/.kube/config, through Kopf's helper
    (certificates, tokens, basic auth; no exec or auth-provider plugins)."""
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    if info is None:
        raise kopf.LoginError("no kubeconfig: $KUBECONFIG is unset and ~/.kube/config is absent")
    return info


def login(**kwargs: object) -> kopf.ConnectionInfo:
    """A Kopf login handler, and KubeApi's: in a pod its service account, else a kubeconfig."""
    return in_cluster_login(**kwargs) or kubeconfig_login(**kwargs)


class KubeApi(KubePort):
    """Thin, synchronous client; one instance is shared by all reconciles.

    `login` is called again after a 401 (a rotated service-account token) and the
    request is retried once with the new credentials."""

    def __init__(self, login: Login = login, timeout: float = 30.0) -> None:
        self._login = login
        info = login()
        self._auth = info.as_http_headers()
        self._http = httpx.Client(
            base_url=info.server, verify=info.as_ssl_context(), timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    # -- transport -------------------------------------------------------

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", **self._auth}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> dict[str, Any] | None:
        content = None if body is None else json.dumps(body).encode()
        try:
            for attempt in (1, 2):
                resp = self._http.request(
                    method,
                    path,
                    params=params,
                    content=content,
                    headers=self._headers(content_type if body is not None else None),
                )
                if resp.status_code != 401 or attempt == 2:
                    break
                self._auth = self._login().as_http_headers()
        except (httpx.HTTPError, kopf.LoginError) as err:
            raise KubeUnavailable(0, f"{method} {path}: {err}") from err
        if resp.status_code == 404 and method == "GET":
            return None
        if resp.status_code >= 400:
            try:
                message = resp.json().get("message", resp.text)
            except ValueError:
                message = resp.text
            raise error_for(resp.status_code, message)
        return resp.json() if resp.content else {}

    # -- operations the reconciler uses ---------------------------------

    # The API server's JSON is taken as the shape of its kind (kube_types.py): the
    # server validated it against the kind's schema.

    def read(self, kind: str, namespace: str, name: str) -> KubeObject | None:
        return cast(KubeObject | None, self._request("GET", _path(kind, namespace, name)))

    def apply(self, obj: Rendered) -> Rendered:
        """Server-side apply under the operator's single field manager. force=true:
        the operator is the authority for every field it renders."""
        meta = obj["metadata"]
        out = self._request(
            "PATCH",
            _path(obj["kind"], meta["namespace"], meta["name"]),
            body=obj,  # JSON is valid YAML
            content_type="application/apply-patch+yaml",
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
        )
        return cast(Rendered, out or {})

    def create(self, obj: Rendered) -> Rendered | None:
        """Create; None if it already exists (someone else won the race)."""
        meta = obj["metadata"]
        try:
            out = self._request(
                "POST",
                _path(obj["kind"], meta.get("namespace")),
                body=obj,
                params={"fieldManager": FIELD_MANAGER},
            )
            return cast(Rendered | None, out)
        except KubeConflict:
            return None

    def patch_status(
        self, namespace: str, name: str, status: MemoryNamespaceStatus
    ) -> MemoryNamespace:
        out = self._request(
            "PATCH",
            _path(KIND, namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )
        return cast(MemoryNamespace, out or {})

    def list_objects(
        self, kind: str, namespace: str, label_selector: str, page: int = 100
    ) -> Iterator[KubeObject]:
        """Every object of `kind` in `namespace` with the labels, each with its
        apiVersion and kind, as a GET returns it (list items come without). Yielded
        page by page: a caller that keeps a digest of each object holds one page of
        decoded objects at a time, not a thousand tenants' (memory, bench/README.md)."""
        for items, _ in self.list_pages(kind, namespace, label_selector, page):
            yield from items

    def list_pages(
        self, kind: str, namespace: str, label_selector: str, page: int = 100
    ) -> Iterator[tuple[list[KubeObject], str]]:
        """list_objects' pages, each with the list's resourceVersion (to watch from)."""
        params = {"labelSelector": label_selector, "limit": str(page)}
        while True:
            out = self._request("GET", _path(kind, namespace), params=params) or {}
            api_version = out.get("apiVersion")
            meta = out.get("metadata") or {}
            items = out.pop("items", None) or []
            yield (
                [
                    cast(KubeObject, {"apiVersion": api_version, "kind": kind, **item})
                    for item in items
                ],
                meta.get("resourceVersion", ""),
            )
            del items
            if not meta.get("continue"):
                return
            params["continue"] = meta["continue"]

    def watch(
        self,
        kind: str,
        namespace: str,
        label_selector: str,
        resource_version: str,
        timeout: int = 60,
    ) -> Iterator[WatchEvent]:
        """Watch events from `resource_version` (with bookmarks) until the server
        ends the request after `timeout` s, decoded one line at a time. A 410 Gone
        answer is yielded as the watch's own ERROR event with code 410."""
        params = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "labelSelector": label_selector,
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout),
        }
        try:
            with self._http.stream(
                "GET",
                _path(kind, namespace),
                params=params,
                headers=self._headers(),
                timeout=httpx.Timeout(30.0, read=timeout + 30.0),
            ) as resp:
                if resp.status_code == 401:
                    self._auth = self._login().as_http_headers()  # the next request uses it
                if resp.status_code == 410:
                    yield {"type": "ERROR", "object": {"code": 410, "message": "Gone"}}
                    return
                if resp.status_code >= 400:
                    resp.read()
                    raise error_for(resp.status_code, resp.text)
                for line in resp.iter_lines():
                    if line:
                        yield cast(WatchEvent, json.loads(line))
        except (httpx.HTTPError, kopf.LoginError) as err:
            raise KubeUnavailable(0, f"watch {kind}: {err}") from err

    def list_memory_namespaces(self, namespace: str | None = None) -> Iterator[MemoryNamespace]:
        """Every MemoryNamespace (of `namespace` only when given), page by page."""
        return cast(Iterator[MemoryNamespace], self.list_objects(KIND, namespace or "", ""))

    def emit_event(self, cr: MemoryNamespace, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the CR (what `kubectl describe memns` shows)."""
        meta = cr["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event: Event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._request("POST", _path("Event", meta["namespace"]), body=event)
