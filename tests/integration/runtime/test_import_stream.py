"""POST /import of any size: streamed, chunked commits, cut and resumed, same rules as the API.

A real uvicorn server runs the app, so a client can really hang up mid-upload.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from memory_runtime.api import create_app, transfer_routes
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    DIMENSIONS,
    HashingTestEmbedder,
    Tenant,
    bearer,
    tenant_settings,
)
from tests.integration.runtime.helpers import admin_rows, vector_ids

pytestmark = pytest.mark.integration

MEMORIES = 20_000
LINKS = 2_000
SERVICES: dict[str, Any] = {}  # the served app's service, by tenant schema


def stream_lines(memories: int, links: int, seed: int = 7) -> list[bytes]:
    """An export-shaped stream: memories, then links between them (times kept as given)."""
    rng = random.Random(seed)
    ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(memories)]
    lines = []
    for n, memory_id in enumerate(ids):
        record = {
            "id": str(memory_id),
            "coordinate": [float(n), float(n % 7)],
            "memory_type": "semantic" if n % 3 else "episodic",
            "payload": {"text": f"imported memory number {n} word{n % 97}"},
            "text": f"imported memory number {n} word{n % 97}",
            "importance": 0.25,
            "metadata": {"batch": n // 1000},
            "tags": [f"t{n % 5}"],
            "agent_id": None,
            "user_id": "u1",
            "session_id": None,
            "created_at": f"2025-0{1 + n % 9}-01T00:00:00Z",
            "updated_at": "2025-10-01T00:00:00Z",
            "last_accessed_at": "2025-11-01T00:00:00Z",
            "access_count": n % 4,
            "version": 1 + n % 3,
            "expires_at": None,
            "occurred_at": f"2024-0{1 + n % 9}-02T00:00:00Z",
            # multiples of 1/64: exact in float32, so the copy compares equal
            "vector": [rng.randint(-64, 64) / 64 for _ in range(DIMENSIONS)],
        }
        record["vector"][0] = 1.0  # never all zero
        lines.append(json.dumps({"kind": "memory", "record": record}).encode())
    for n in range(links):
        link = {
            "from": str(ids[n]),
            "to": str(ids[(n * 31 + 1) % memories]),
            "type": "next" if n % 2 else "related",
            "strength": 0.5,
            "metadata": {"n": n},
            "created_at": "2024-03-01T10:00:00Z",
            "updated_at": "2024-04-01T10:00:00Z",
            "version": 2,
        }
        lines.append(json.dumps({"kind": "link", "record": link}).encode())
    return lines


@pytest.fixture
def server(tenant: Tenant) -> Iterator[str]:
    """The tenant API on a real HTTP server, events on (outbox written), 1 MiB per request."""
    settings = tenant_settings(
        tenant,
        embedding_provider="local",
        events_enabled=True,
        kafka_bootstrap="127.0.0.1:1",
        kafka_topic="mem.acme.events",
        max_body_bytes=1 << 20,
        # this machine is shared and often overloaded: a 1 s probe would open
        # the database circuit (503s) for reasons that are not under test here
        probe_timeout_seconds=10,
    )
    app = create_app(settings, embedder=HashingTestEmbedder())
    SERVICES[tenant.schema] = app.state.runtime.service
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive(), "server thread died"
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=30)


def http(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers=bearer(ADMIN_TOKEN), timeout=300)


def cut_upload(url: str, path: str, lines: list[bytes], wait_for: Any) -> None:
    """Send lines chunked on a raw socket, then hang up (RST) once `wait_for()` is true."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sock.sendall(head.encode())
    for n in range(0, len(lines), 500):
        data = b"".join(line + b"\n" for line in lines[n : n + 500])
        sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    deadline = time.monotonic() + 120
    while not wait_for():
        assert time.monotonic() < deadline, "the server committed nothing"
        time.sleep(0.05)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def records(url: str) -> dict[str, list[dict[str, Any]]]:
    with http(url) as c:
        export = c.get("/export")
    assert export.status_code == 200
    out: dict[str, list[dict[str, Any]]] = {"memory": [], "link": []}
    for line in export.text.splitlines():
        entry = json.loads(line)
        out[entry["kind"]].append(entry["record"])
    return out


@pytest.mark.timeout(900)  # 22k lines through a real server on a shared 2-core machine
def test_import_of_20k_cut_mid_stream_resumes_to_the_same_end_state(
    server: str, tenant: Tenant
) -> None:
    lines = stream_lines(MEMORIES, LINKS)
    assert sum(map(len, lines)) > 4 << 20  # far over the 1 MiB request cap
    with http(server) as c:

        def committed() -> int:
            r = c.get("/import/move-1")
            return int(r.json()["lines"]) if r.status_code == 200 else 0

        # the client dies mid-stream once some chunks are in
        cut_upload(server, "/import?import_id=move-1", lines[:12_500], lambda: committed() > 0)
        # what the server reports is committed, in whole chunks, short of the end
        status = c.get("/import/move-1").json()
        assert 0 < status["lines"] < 12_500, status
        assert status["lines"] % 1000 == 0
        assert status["finished"] is False
        stored = admin_rows(tenant, "SELECT count(*) AS n FROM memories")[0]["n"]
        assert stored >= status["memories"]["created"] == status["lines"]

        # a gap is refused, nothing is read (past every line the cut request
        # got: the chunk it may still commit after the status above cannot
        # close this gap)
        gap = c.post(
            "/import",
            params={"import_id": "move-1", "start_line": 12_502},
            content=b"".join(line + b"\n" for line in lines[12_501:]),
        )
        assert gap.status_code == 409, gap.text

        # resume where the server says it stopped, as a generator (chunked upload);
        # a 503 (the cut request still held a lock past lock_timeout) means: ask
        # again where it stands and resume from there, as a client should
        for _attempt in range(5):
            start = c.get("/import/move-1").json()["lines"] + 1
            rest = (line + b"\n" for line in lines[start - 1 :])
            r = c.post("/import", params={"import_id": "move-1", "start_line": start}, content=rest)
            if r.status_code != 503:
                break
            time.sleep(1)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["lines"] == MEMORIES + LINKS
        # the cut request may still commit the chunk it was in while this one
        # starts: its lines are then skipped here or found unchanged, never doubled
        assert body["memories"]["created"] <= MEMORIES - status["lines"]
        assert body["links"] == {"created": LINKS, "updated": 0, "unchanged": 0}
        final = c.get("/import/move-1").json()
        assert final["finished"] is True
        assert final["lines"] == MEMORIES + LINKS
        assert final["memories"]["created"] == MEMORIES
        assert final["links"]["created"] == LINKS

        # a client that lost even the status re-sends everything: all skipped unread
        again = c.post(
            "/import",
            params={"import_id": "move-1"},
            content=b"".join(line + b"\n" for line in lines),
        )
        assert again.json()["skipped_lines"] == MEMORIES + LINKS
        # and without an id every line is read and found unchanged
        anon = c.post("/import", content=b"".join(line + b"\n" for line in lines))
        assert anon.json()["memories"] == {"created": 0, "updated": 0, "unchanged": MEMORIES}
        assert anon.json()["links"] == {"created": 0, "updated": 0, "unchanged": LINKS}

        # rows whose index write failed meanwhile are the index job's (not run
        # here): run it as it would, then every memory is in the index
        deadline = time.monotonic() + 300
        while c.get("/stats").json()["index_pending"]:
            assert time.monotonic() < deadline, "the index never caught up"
            if not SERVICES[tenant.schema].index_pending():
                time.sleep(0.5)  # e.g. the cut request's graph build still holds the table

    # the end state is the stream, exactly once: no duplicate rows or events
    sent = [json.loads(line)["record"] for line in lines]
    got = records(server)
    assert sorted(got["memory"], key=lambda r: r["id"]) == sorted(
        sent[:MEMORIES], key=lambda r: r["id"]
    )
    assert sorted(got["link"], key=lambda r: (r["from"], r["to"], r["type"])) == sorted(
        sent[MEMORIES:], key=lambda r: (r["from"], r["to"], r["type"])
    )
    events = admin_rows(
        tenant, "SELECT event_type, count(*) AS n FROM outbox GROUP BY event_type ORDER BY 1"
    )
    assert {e["event_type"]: e["n"] for e in events} == {
        "link.created": LINKS,
        "memory.created": MEMORIES,
    }
    assert len(vector_ids(tenant)) == MEMORIES
    with http(server) as c:  # searchable by keyword and by vector
        hit = c.get("/memories/search", params={"query": "number 12345", "mode": "keyword"})
        assert hit.json()["hits"][0]["memory"]["coordinate"] == [12345.0, 12345 % 7]
        vector = sent[777]["vector"]
        hit = c.post("/memories/search", json={"vector": vector, "mode": "vector", "top_k": 1})
        assert hit.json()["hits"][0]["memory"]["id"] == sent[777]["id"]


def test_invalid_lines_are_refused_by_line_and_never_stored(server: str, tenant: Tenant) -> None:
    lines = stream_lines(1_500, 0)
    nan = json.loads(lines[1_200])
    nan["record"]["vector"][3] = float("nan")
    bad = [*lines[:1_200], json.dumps(nan).encode(), *lines[1_201:]]
    with http(server) as c:
        r = c.post("/import", content=b"\n".join(bad))
        assert r.status_code == 422
        problem = r.json()
        assert problem["line"] == 1_201
        assert problem["detail"].startswith("line 1201: record.vector")
        assert problem["committed_lines"] == 1_000  # the first chunk; not the bad one's
        assert admin_rows(tenant, "SELECT count(*) AS n FROM memories")[0]["n"] == 1_000
        assert "NaN" not in c.get("/export").text

        # the limits of POST /memories hold line by line (same model)
        record = json.loads(lines[0])["record"]
        too_many_tags = dict(record, id=str(uuid.uuid4()), coordinate=[-1.0], tags=["x"] * 65)
        line = json.dumps({"kind": "memory", "record": too_many_tags}).encode()
        assert c.post("/memories", json={"tags": ["x"] * 65}).status_code == 422
        r = c.post("/import", content=line)
        assert r.status_code == 422
        assert r.json()["line"] == 1
        assert "tags" in r.json()["detail"]
        wrong_dims = dict(record, id=str(uuid.uuid4()), coordinate=[-2.0], vector=[1.0, 2.0])
        r = c.post("/import", content=json.dumps({"kind": "memory", "record": wrong_dims}))
        assert r.status_code == 422
        assert "dimensions" in r.json()["detail"]
        extra = dict(record, id=str(uuid.uuid4()), coordinate=[-3.0], owner="someone")
        r = c.post("/import", content=json.dumps({"kind": "memory", "record": extra}))
        assert r.status_code == 422
        assert "owner" in r.json()["detail"]
        # a line over the per-request cap is a 413 naming it
        huge = dict(record, id=str(uuid.uuid4()), coordinate=[-4.0], payload={"x": "y" * 2**20})
        r = c.post(
            "/import",
            content=b"\n".join([lines[0], json.dumps({"kind": "memory", "record": huge}).encode()]),
        )
        assert r.status_code == 413
        assert r.json()["line"] == 2
        for coordinate in ([-1.0], [-2.0], [-3.0], [-4.0]):
            assert c.get(f"/memories/{coordinate[0]}").status_code == 404
        # a link to a memory that is not there
        ghost = {
            "from": record["id"],
            "to": str(uuid.uuid4()),
            "type": "x",
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
        }
        r = c.post("/import", content=json.dumps({"kind": "link", "record": ghost}))
        assert r.status_code == 422
        assert "not found" in r.json()["detail"]


def test_links_keep_their_times_and_a_newer_version_replaces(client: TestClient) -> None:
    lines = stream_lines(3, 1)
    r = client.post("/import", content=b"\n".join(lines))
    assert r.json()["links"]["created"] == 1
    link = json.loads(lines[-1])["record"]
    exported = [json.loads(x) for x in client.get("/export").text.splitlines()]
    [copy] = [e["record"] for e in exported if e["kind"] == "link"]
    assert copy["created_at"] == link["created_at"] == "2024-03-01T10:00:00Z"
    assert copy["updated_at"] == "2024-04-01T10:00:00Z"
    assert copy["version"] == 2
    older = dict(link, strength=0.1, version=1)
    r = client.post("/import", content=json.dumps({"kind": "link", "record": older}))
    assert r.json()["links"] == {"created": 0, "updated": 0, "unchanged": 1}
    newer = dict(link, strength=0.9, version=3, updated_at="2024-05-01T00:00:00Z")
    r = client.post("/import", content=json.dumps({"kind": "link", "record": newer}))
    assert r.json()["links"] == {"created": 0, "updated": 1, "unchanged": 0}
    exported = [json.loads(x) for x in client.get("/export").text.splitlines()]
    [copy] = [e["record"] for e in exported if e["kind"] == "link"]
    assert (copy["strength"], copy["version"], copy["updated_at"]) == (
        0.9,
        3,
        "2024-05-01T00:00:00Z",
    )


@pytest.fixture
def patient_client(tenant: Tenant) -> Iterator[TestClient]:
    """In-process API whose health probes tolerate the shared, overloaded machine."""
    app = create_app(
        tenant_settings(tenant, embedding_provider="local", probe_timeout_seconds=10),
        embedder=HashingTestEmbedder(),
    )
    with TestClient(app) as c:
        c.headers.update(bearer(ADMIN_TOKEN))
        yield c


def test_export_streams_in_constant_memory(patient_client: TestClient) -> None:
    """The export's Python allocations stay flat while megabytes stream out."""
    client = patient_client
    for n in range(0, 6_000, 1_000):
        chunk = stream_lines(6_000, 0)[n : n + 1_000]
        assert client.post("/import", content=b"\n".join(chunk)).status_code == 200
    service = client.app.state.runtime.service  # type: ignore[attr-defined]

    def peak_while_exporting(limit: int) -> tuple[int, int]:
        tracemalloc.start()
        total = 0
        for rows, line in enumerate(service.export_lines(), start=1):
            total += len(line)
            if rows == limit:
                break
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak, total

    small_peak, small_bytes = peak_while_exporting(1_000)
    peak, total = peak_while_exporting(6_000)
    assert total > 3 << 20
    assert total > 5 * small_bytes
    # six times the rows, not six times the memory: one cursor batch at a time
    assert peak < 1.5 * small_peak, (peak, small_peak)


def hnsw_oid(tenant: Tenant) -> int | None:
    rows = admin_rows(
        tenant,
        "SELECT c.oid::bigint AS oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_am a ON a.oid = c.relam WHERE i.indrelid = 'memory_vectors'::regclass"
        " AND a.amname = 'hnsw'",
    )
    return rows[0]["oid"] if rows else None


def test_a_load_as_large_as_the_index_rebuilds_its_graph_once(
    client: TestClient, tenant: Tenant
) -> None:
    """Into a non-empty index, an import at least as large as the index drops the
    HNSW graph and builds it once at the end; a small one inserts into the graph."""
    lines = stream_lines(130, 0)
    first = client.post("/import", content=b"\n".join(lines[:40]))  # empty: bulk
    assert first.json()["memories"]["created"] == 40
    graph = hnsw_oid(tenant)
    assert graph is not None
    small = client.post("/import", content=b"\n".join(lines[40:50]))  # 10 into 40
    assert small.json()["memories"]["created"] == 10
    assert hnsw_oid(tenant) == graph  # kept: rows went into the existing graph
    large = client.post("/import", content=b"\n".join(lines[50:]))  # 80 into 50
    assert large.json()["memories"]["created"] == 80
    rebuilt = hnsw_oid(tenant)
    assert rebuilt is not None
    assert rebuilt != graph
    # every memory is in the index and found by vector and by keyword
    assert len(vector_ids(tenant)) == 130
    assert client.get("/stats").json()["index_pending"] == 0
    last = json.loads(lines[-1])["record"]
    hit = client.post(
        "/memories/search", json={"vector": last["vector"], "mode": "vector", "top_k": 1}
    ).json()["hits"][0]
    assert hit["memory"]["id"] == last["id"]
    words = client.post(
        "/memories/search", json={"query": "number 129", "mode": "keyword", "top_k": 3}
    ).json()["hits"]
    assert last["id"] in {h["memory"]["id"] for h in words}


def test_a_bulk_import_commits_each_chunks_vectors_with_its_memories(
    client: TestClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the graph dropped for a bulk load, a chunk's vectors are written in
    the chunk's own transaction: memory and vector rows share their xmin (no
    second transaction for the vectors, no UPDATE clearing a pending flag),
    and a chunk refused by a later line leaves none of its vectors behind."""
    monkeypatch.setattr(transfer_routes, "IMPORT_CHUNK_LINES", 30)
    lines = stream_lines(100, 0)
    # line 75 (third chunk) takes line 1's coordinate: 409 after two chunks committed
    bad = json.loads(lines[74])
    bad["record"]["coordinate"] = json.loads(lines[0])["record"]["coordinate"]
    lines[74] = json.dumps(bad).encode()
    answer = client.post("/import", content=b"\n".join(lines))
    assert answer.status_code == 409, answer.text
    assert answer.json()["committed_lines"] == 60
    committed = {json.loads(line)["record"]["id"] for line in lines[:60]}
    assert vector_ids(tenant) == committed
    split = admin_rows(
        tenant,
        "SELECT count(*) AS n FROM memories m JOIN memory_vectors v ON v.memory_id = m.id"
        " WHERE m.xmin <> v.xmin OR m.index_pending",
    )
    assert split[0]["n"] == 0
    assert hnsw_oid(tenant) is not None  # rebuilt after the refused chunk
    first = json.loads(lines[0])["record"]
    hit = client.post(
        "/memories/search", json={"vector": first["vector"], "mode": "vector", "top_k": 1}
    ).json()["hits"][0]
    assert hit["memory"]["id"] == first["id"]


def test_a_chunk_is_validated_while_the_one_before_is_written_and_errors_keep_their_order(
    client: TestClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunk k+1 is parsed while chunk k is written: a conflict found by chunk 2's
    write is the answer even though chunk 3 holds a malformed line (parsed
    meanwhile), and only chunk 1 stays committed."""
    monkeypatch.setattr(transfer_routes, "IMPORT_CHUNK_LINES", 30)
    lines = stream_lines(90, 0)
    taken = json.loads(lines[35])  # chunk 2 reuses line 1's coordinate
    taken["record"]["coordinate"] = json.loads(lines[0])["record"]["coordinate"]
    lines[35] = json.dumps(taken).encode()
    lines[70] = b'{"kind": "memory", "record": {"id": "not a uuid"}}'  # chunk 3
    answer = client.post("/import", content=b"\n".join(lines))
    assert answer.status_code == 409, answer.text
    assert answer.json()["committed_lines"] == 30
    assert "line 36" in answer.json()["detail"]
    assert vector_ids(tenant) == {json.loads(line)["record"]["id"] for line in lines[:30]}
    # a malformed line after committed chunks: 422 naming it, the chunks before it kept
    again = client.post("/import", content=b"\n".join([*lines[30:35], *lines[36:70], lines[70]]))
    assert again.status_code == 422, again.text
    assert again.json()["committed_lines"] == 30  # its first chunk (30 lines)
    assert "line 40" in again.json()["detail"]


def test_a_bulk_chunk_the_index_refuses_to_take_in_its_transaction_is_indexed_after_it(
    client: TestClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the index answers that it cannot take a bulk chunk's vectors in the
    chunk's transaction (e.g. its circuit is open), the chunk's memories are
    committed pending and written to the index after the commit: none is lost."""
    monkeypatch.setattr(transfer_routes, "IMPORT_CHUNK_LINES", 30)
    index = client.app.state.runtime.service.index  # type: ignore[attr-defined]
    refused: list[int] = []

    def refuse(conn: object, source: object) -> bool:
        refused.append(1)
        return False

    monkeypatch.setattr(index, "write_in_transaction", refuse)
    lines = stream_lines(70, 0)
    answer = client.post("/import", content=b"\n".join(lines))
    assert answer.status_code == 200, answer.text
    assert answer.json()["memories"]["created"] == 70
    assert len(refused) == 3  # every chunk asked, every chunk refused
    assert vector_ids(tenant) == {json.loads(line)["record"]["id"] for line in lines}
    assert client.get("/stats").json()["index_pending"] == 0
    second_tx = admin_rows(
        tenant,
        "SELECT count(*) AS n FROM memories m JOIN memory_vectors v ON v.memory_id = m.id"
        " WHERE m.xmin <> v.xmin",
    )
    assert second_tx[0]["n"] == 70  # written after their chunk committed
