"""Links, k-hop neighbours and shortest paths."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from tests.integration.runtime.conftest import Tenant
from tests.integration.runtime.helpers import admin_rows, outbox

pytestmark = pytest.mark.integration


@pytest.fixture
def graph(client: TestClient) -> TestClient:
    """1 -> 2 -> 3 -> 4, 1 -> 5 -> 4 (weak), 2 -> 6 (type cites), 7 isolated."""
    ids = {}
    for n in range(1, 8):
        r = client.post("/memories", json={"coordinate": [n], "payload": {"text": f"node {n}"}})
        ids[n] = r.json()["id"]
    edges = [
        (1, 2, "related", 0.9),
        (2, 3, "related", 0.9),
        (3, 4, "related", 0.9),
        (1, 5, "related", 0.2),
        (5, 4, "related", 0.2),
        (2, 6, "cites", 1.0),
    ]
    for a, b, kind, strength in edges:
        r = client.post(
            "/graph/link", json={"from": str(a), "to": [b], "type": kind, "strength": strength}
        )
        assert r.status_code == 201, r.text
    return client


def neighbour_coords(response) -> dict[float, int]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return {n["memory"]["coordinate"][0]: n["depth"] for n in response.json()["neighbors"]}


def test_link_is_unique_per_from_to_type(client: TestClient, tenant: Tenant):
    a = client.post("/memories", json={"coordinate": [1], "payload": {}}).json()
    client.post("/memories", json={"coordinate": [2], "payload": {}})
    first = client.post("/graph/link", json={"from": a["id"], "to": "2", "strength": 0.5})
    assert first.status_code == 201
    assert first.json()["from"] == a["id"]
    again = client.post("/graph/link", json={"from": "1", "to": "2", "strength": 0.5})
    assert again.status_code == 200
    assert again.json()["version"] == 1  # unchanged: no write, no event
    changed = client.post("/graph/link", json={"from": "1", "to": "2", "strength": 0.7})
    assert changed.json()["version"] == 2
    other = client.post("/graph/link", json={"from": "1", "to": "2", "type": "cites"})
    assert other.status_code == 201
    assert admin_rows(tenant, "SELECT count(*) AS n FROM links")[0]["n"] == 2
    link_events = [e["event_type"] for e in outbox(tenant) if e["event_type"].startswith("link")]
    assert link_events == ["link.created"] * 3
    assert client.post("/graph/link", json={"from": "1", "to": "1"}).status_code == 422
    assert client.post("/graph/link", json={"from": "1", "to": "9"}).status_code == 404
    assert (
        client.post("/graph/link", json={"from": "1", "to": "2", "strength": 3}).status_code == 422
    )


def test_unlink(graph: TestClient, tenant: Tenant):
    r = graph.delete("/graph/link", params={"from": "2", "to": "6", "type": "cites"})
    assert r.status_code == 200
    assert r.json()["type"] == "cites"
    assert (
        graph.delete("/graph/link", params={"from": "2", "to": "6", "type": "cites"}).status_code
        == 404
    )
    assert outbox(tenant)[-1]["event_type"] == "link.deleted"


def test_neighbours_depth_direction_and_type(graph: TestClient):
    assert neighbour_coords(graph.get("/graph/neighbors", params={"key": "1"})) == {2.0: 1, 5.0: 1}
    deep = graph.get("/graph/neighbors", params={"key": "1", "depth": 2})
    assert neighbour_coords(deep) == {2.0: 1, 5.0: 1, 3.0: 2, 4.0: 2, 6.0: 2}
    typed = graph.get("/graph/neighbors", params={"key": "1", "depth": 3, "type": "related"})
    assert neighbour_coords(typed) == {2.0: 1, 5.0: 1, 3.0: 2, 4.0: 2}
    incoming = graph.get("/graph/neighbors", params={"key": "4", "direction": "in"})
    assert neighbour_coords(incoming) == {3.0: 1, 5.0: 1}
    both = graph.get("/graph/neighbors", params={"key": "2", "direction": "both"})
    assert neighbour_coords(both) == {1.0: 1, 3.0: 1, 6.0: 1}
    via = both.json()["neighbors"][0]["via"]
    assert set(via) >= {"from", "to", "type", "strength"}
    limited = graph.get("/graph/neighbors", params={"key": "1", "depth": 3, "limit": 2})
    assert len(limited.json()["neighbors"]) == 2
    assert neighbour_coords(graph.get("/graph/neighbors", params={"key": "7"})) == {}
    assert graph.get("/graph/neighbors", params={"key": "1", "depth": 9}).status_code == 422
    assert graph.get("/graph/neighbors", params={"key": "99"}).status_code == 404


def test_shortest_path_fewest_hops_then_strongest(graph: TestClient):
    r = graph.get("/graph/path", params={"from": "1", "to": "4"})
    body = r.json()
    assert body["found"] is True
    assert body["hops"] == 2  # 1->5->4 beats the stronger 3-hop 1->2->3->4
    assert [m["coordinate"][0] for m in body["memories"]] == [1.0, 5.0, 4.0]
    assert body["strength"] == pytest.approx(0.04)
    assert [link["type"] for link in body["links"]] == ["related", "related"]
    # add a strong 2-hop alternative: same hops, stronger wins
    graph.post("/graph/link", json={"from": "2", "to": "4", "strength": 0.8})
    body = graph.get("/graph/path", params={"from": "1", "to": "4"}).json()
    assert [m["coordinate"][0] for m in body["memories"]] == [1.0, 2.0, 4.0]
    assert body["strength"] == pytest.approx(0.72)


def test_path_respects_type_direction_and_depth(graph: TestClient):
    none = graph.get("/graph/path", params={"from": "4", "to": "1"}).json()
    assert none == {"found": False, "hops": None, "strength": None, "memories": [], "links": []}
    back = graph.get("/graph/path", params={"from": "4", "to": "1", "direction": "both"}).json()
    assert back["hops"] == 2
    cites = graph.get("/graph/path", params={"from": "1", "to": "6", "type": "cites"}).json()
    assert cites["found"] is False
    assert graph.get("/graph/path", params={"from": "1", "to": "6"}).json()["hops"] == 2
    shallow = graph.get("/graph/path", params={"from": "1", "to": "4", "max_depth": 1}).json()
    assert shallow["found"] is False
    same = graph.get("/graph/path", params={"from": "1", "to": "1.0"}).json()
    assert (same["found"], same["hops"]) == (True, 0)


def test_links_go_with_either_end(graph: TestClient, tenant: Tenant):
    graph.delete("/memories/2")
    left = admin_rows(tenant, "SELECT count(*) AS n FROM links")[0]["n"]
    assert left == 3  # 1->2, 2->3, 2->6 removed
    assert neighbour_coords(graph.get("/graph/neighbors", params={"key": "1"})) == {5.0: 1}


def test_link_racing_a_delete_is_404_or_409_never_500(client: TestClient, tenant: Tenant):
    """A link to a memory deleted at the same moment: a clean status, no link left behind."""
    statuses: dict[str, list[int]] = {"link": [], "delete": []}

    def link(doomed: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        r = client.post("/graph/link", json={"from": "0", "to": doomed})
        statuses["link"].append(r.status_code)

    def delete(doomed: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        statuses["delete"].append(client.delete(f"/memories/{doomed}").status_code)

    client.post("/memories", json={"coordinate": [0], "payload": {"text": "anchor"}})
    for trial in range(1, 41):
        r = client.post("/memories", json={"coordinate": [trial], "payload": {"text": "doomed"}})
        args = (r.json()["id"], threading.Barrier(2))
        threads = [threading.Thread(target=f, args=args) for f in (link, delete)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert set(statuses["delete"]) == {200}
    # the link either came first (201, then removed with the memory) or found it gone
    assert set(statuses["link"]) <= {201, 404}, statuses["link"]
    assert admin_rows(tenant, "SELECT count(*) AS n FROM links")[0]["n"] == 0
    # and a link that came first was deleted with an event, like any other
    events = outbox(tenant)
    created = sum(e["event_type"] == "link.created" for e in events)
    assert created == statuses["link"].count(201)
    assert sum(e["event_type"] == "link.deleted" for e in events) == created
