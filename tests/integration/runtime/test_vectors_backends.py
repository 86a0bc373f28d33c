"""One behaviour suite for both VectorIndex backends (pgvector and Qdrant's local engine).

Expected results are computed by brute force over the same data, so each
assertion checks the engine, not a hard-coded answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from psycopg_pool import ConnectionPool
from qdrant_client import QdrantClient

from memory_runtime.filters import FilterError
from memory_runtime.ports import VectorFilter, VectorIndex, VectorItem
from memory_runtime.vectors import VectorIndexError, VectorIndexUnavailable, build_vector_index

pytestmark = pytest.mark.integration

DIM = 8
SCHEMA = "mem_acme"
EXT = "extensions"
T0 = datetime(2026, 1, 1, tzinfo=UTC)

IndexFactory = Callable[..., VectorIndex]


@pytest.fixture(params=["postgres", "qdrant"])
def make_index(request: pytest.FixtureRequest) -> Iterator[IndexFactory]:
    """A factory building (and ensuring) an index on a fresh engine for each test."""
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("pg_database")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {EXT}")
            conn.execute(f"CREATE EXTENSION vector SCHEMA {EXT}")
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
        pool = ConnectionPool(dsn, min_size=1, max_size=4, open=True)
        client = None
    else:
        pool = None
        client = QdrantClient(":memory:")

    def factory(distance: str = "Cosine", dimensions: int = DIM) -> VectorIndex:
        index = build_vector_index(
            request.param,
            pool=pool,
            schema=SCHEMA,
            extensions_schema=EXT,
            dimensions=dimensions,
            distance=distance,
            qdrant_url=None,
            qdrant_api_key=None,
            collection="mem_acme",
            qdrant_client=client,
        )
        index.ensure()
        return index

    yield factory
    if pool is not None:
        pool.close()
    if client is not None:
        client.close()


def make_items(n: int, seed: int = 7) -> list[VectorItem]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        items.append(
            VectorItem(
                memory_id=uuid.UUID(bytes=rng.bytes(16)),
                vector=rng.normal(size=DIM).tolist(),
                memory_type="episodic" if i % 2 else "semantic",
                tags=tuple(t for t, on in (("red", i % 3 == 0), ("blue", i % 5 == 0)) if on),
                agent_id=f"agent-{i % 4}",
                user_id=f"user-{i % 7}",
                session_id=f"s-{i % 3}",
                metadata={"topic": ["cats", "dogs"][i % 2], "level": i % 4, "vip": i % 6 == 0},
                created_at=T0 + timedelta(hours=i),
                coordinate=(float(i % 10), float(i // 10)),
                occurred_at=T0 - timedelta(days=i),
            )
        )
    return items


def brute_force(
    items: list[VectorItem], query: list[float], distance: str, keep: Callable[[VectorItem], bool]
) -> list[tuple[uuid.UUID, float]]:
    q = np.array(query)
    scored = []
    for item in items:
        if not keep(item):
            continue
        v = np.array(item.vector)
        if distance == "Cosine":
            s = float(v @ q / (np.linalg.norm(v) * np.linalg.norm(q)))
        elif distance == "Dot":
            s = float(v @ q)
        else:
            s = 1.0 / (1.0 + float(np.linalg.norm(v - q)))
        scored.append((item.memory_id, s))
    return sorted(scored, key=lambda x: -x[1])


@pytest.mark.parametrize("distance", ["Cosine", "Dot", "Euclid"])
def test_search_order_and_scores_match_brute_force(make_index: IndexFactory, distance: str) -> None:
    index = make_index(distance)
    items = make_items(60)
    index.upsert(items)
    query = np.random.default_rng(1).normal(size=DIM).tolist()
    hits = index.search(query, 10, VectorFilter())
    expected = brute_force(items, query, distance, lambda _: True)[:10]
    assert [h.memory_id for h in hits] == [e[0] for e in expected]
    np.testing.assert_allclose([h.similarity for h in hits], [e[1] for e in expected], atol=1e-4)


FILTERS: dict[str, tuple[VectorFilter, Callable[[VectorItem], bool]]] = {
    "memory_type": (
        VectorFilter(memory_types=("episodic",)),
        lambda i: i.memory_type == "episodic",
    ),
    "tags_all": (VectorFilter(tags=("red", "blue")), lambda i: {"red", "blue"} <= set(i.tags)),
    "agent": (VectorFilter(agent_id="agent-1"), lambda i: i.agent_id == "agent-1"),
    "user": (VectorFilter(user_id="user-3"), lambda i: i.user_id == "user-3"),
    "session": (VectorFilter(session_id="s-2"), lambda i: i.session_id == "s-2"),
    "metadata": (
        VectorFilter(metadata={"topic": "dogs", "level": 1}),
        lambda i: i.metadata["topic"] == "dogs" and i.metadata["level"] == 1,
    ),
    "metadata_bool": (VectorFilter(metadata={"vip": True}), lambda i: i.metadata["vip"] is True),
    "created_range": (
        VectorFilter(created_from=T0 + timedelta(hours=10), created_to=T0 + timedelta(hours=20)),
        lambda i: T0 + timedelta(hours=10) <= i.created_at <= T0 + timedelta(hours=20),
    ),
    "occurred_range": (
        VectorFilter(occurred_from=T0 - timedelta(days=40), occurred_to=T0 - timedelta(days=10)),
        lambda i: T0 - timedelta(days=40) <= i.occurred_at <= T0 - timedelta(days=10),
    ),
    "coordinate_box": (
        VectorFilter(coordinate_min=(2.0, 1.0), coordinate_max=(5.0, 3.0)),
        lambda i: 2 <= i.coordinate[0] <= 5 and 1 <= i.coordinate[1] <= 3,
    ),
    "combined": (
        VectorFilter(memory_types=("semantic",), tags=("red",), agent_id="agent-2"),
        lambda i: i.memory_type == "semantic" and "red" in i.tags and i.agent_id == "agent-2",
    ),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_each_filter_kind(make_index: IndexFactory, name: str) -> None:
    flt, keep = FILTERS[name]
    index = make_index()
    items = make_items(120)
    index.upsert(items)
    query = np.random.default_rng(2).normal(size=DIM).tolist()
    expected = brute_force(items, query, "Cosine", keep)[:8]
    assert expected, "the filter must match something for the test to mean anything"
    hits = index.search(query, 8, flt)
    assert [h.memory_id for h in hits] == [e[0] for e in expected]


def test_top_k_is_respected_under_a_selective_filter(make_index: IndexFactory) -> None:
    index = make_index()
    rng = np.random.default_rng(3)
    query = rng.normal(size=DIM)
    items = []
    for i in range(3000):
        rare = i % 100 == 0  # 30 rare items, pointing away from the query
        vector = (-query + rng.normal(scale=0.3, size=DIM)) if rare else rng.normal(size=DIM)
        items.append(
            VectorItem(
                memory_id=uuid.uuid4(),
                vector=vector.tolist(),
                memory_type="semantic" if rare else "episodic",
                tags=(),
                agent_id=None,
                user_id="rare" if rare else "common",
                session_id=None,
                metadata={},
                created_at=T0,
                coordinate=(float(i),),
                occurred_at=T0,
            )
        )
    for start in range(0, len(items), 500):
        index.upsert(items[start : start + 500])
    flt = VectorFilter(user_id="rare")
    hits = index.search(query.tolist(), 20, flt)
    expected = brute_force(items, query.tolist(), "Cosine", lambda i: i.user_id == "rare")[:20]
    assert len(hits) == 20
    assert [h.memory_id for h in hits] == [e[0] for e in expected]
    assert len(index.search(query.tolist(), 5, VectorFilter())) == 5


def test_delete_and_count(make_index: IndexFactory) -> None:
    index = make_index()
    items = make_items(20)
    index.upsert(items)
    assert index.count() == 20
    gone = [items[0].memory_id, items[5].memory_id]
    index.delete(gone)
    index.delete([uuid.uuid4()])  # unknown ids are fine
    index.delete([])
    assert index.count() == 18
    hits = index.search(list(items[0].vector), 20, VectorFilter())
    assert {h.memory_id for h in hits}.isdisjoint(gone)
    assert len(hits) == 18


def test_reupsert_is_idempotent_and_updates_fields(make_index: IndexFactory) -> None:
    index = make_index()
    items = make_items(10)
    index.upsert(items)
    index.upsert(items)
    assert index.count() == 10
    changed = replace(items[3], memory_type="semantic", tags=("moved",), vector=[1.0] * DIM)
    index.upsert([changed])
    assert index.count() == 10
    hits = index.search([1.0] * DIM, 1, VectorFilter(tags=("moved",)))
    assert [h.memory_id for h in hits] == [changed.memory_id]
    assert hits[0].similarity == pytest.approx(1.0, abs=1e-5)


def test_one_upsert_of_new_and_present_ids(make_index: IndexFactory) -> None:
    # pgvector writes the new ids with COPY and the present ones with ON CONFLICT
    index = make_index()
    items = make_items(12)
    index.upsert(items[:6])
    moved = [replace(i, tags=("moved",), vector=[1.0] * DIM) for i in items[:3]]
    index.upsert([*moved, *items[6:]])
    assert index.count() == 12
    hits = index.search([1.0] * DIM, 10, VectorFilter(tags=("moved",)))
    assert {h.memory_id for h in hits} == {i.memory_id for i in moved}
    everything = index.search(list(items[8].vector), 12, VectorFilter())
    assert {h.memory_id for h in everything} == {i.memory_id for i in items}


def test_a_staged_write_shows_only_after_commit_and_an_abort_leaves_nothing(
    make_index: IndexFactory,
) -> None:
    # pgvector writes the rows ahead in a transaction of its own (on its own
    # thread); the index must not serve them before the caller commits
    index = make_index()
    items = make_items(30)
    staged = index.stage()
    staged.write(items[:20])
    staged.write(items[20:])
    assert index.count() == 0
    assert index.search(list(items[0].vector), 5, VectorFilter()) == []
    staged.commit()
    assert index.count() == 30
    assert index.search(list(items[0].vector), 1, VectorFilter())[0].memory_id == (
        items[0].memory_id
    )
    aborted = index.stage()
    aborted.write(make_items(5, seed=11))
    aborted.abort()
    assert index.count() == 30
    nothing = index.stage()
    nothing.commit()  # nothing written: a no-op
    assert index.count() == 30


def test_a_staged_write_with_bad_input_fails_at_commit_and_writes_nothing(
    make_index: IndexFactory,
) -> None:
    index = make_index()
    good = make_items(3)
    staged = index.stage()
    staged.write(good[:2])
    staged.write([replace(good[2], vector=[float("nan")] * DIM)])  # never raises here
    with pytest.raises(VectorIndexError, match="finite"):
        staged.commit()
    assert index.count() == 0


def test_ensure_is_idempotent_and_ping_works(make_index: IndexFactory) -> None:
    index = make_index()
    index.upsert(make_items(3))
    index.ensure()
    index.ping()
    assert index.count() == 3


def test_existing_index_with_other_dimension_is_refused(make_index: IndexFactory) -> None:
    make_index(dimensions=DIM)
    with pytest.raises(VectorIndexError, match=str(DIM)):
        make_index(dimensions=DIM * 2)


def test_bad_input_writes_nothing(make_index: IndexFactory) -> None:
    index = make_index()
    good = make_items(2)
    bad = replace(good[1], vector=[0.0] * (DIM - 1))
    with pytest.raises(VectorIndexError, match="dimensions"):
        index.upsert([good[0], bad])
    assert index.count() == 0
    nan = replace(good[1], vector=[float("nan")] * DIM)
    with pytest.raises(VectorIndexError, match="finite"):
        index.upsert([nan])
    query = [0.1] * DIM
    with pytest.raises(VectorIndexError, match="top_k"):
        index.search(query, 0, VectorFilter())
    # a filter breaking a rule never reaches an engine: it cannot be built
    with pytest.raises(FilterError, match="together"):
        VectorFilter(coordinate_min=(0.0,))
    with pytest.raises(VectorIndexError, match="dimensions"):
        index.search([0.1] * (DIM + 1), 5, VectorFilter())


def test_filtered_ann_scan_still_fills_top_k(make_index: IndexFactory) -> None:
    # 25% selectivity, top_k 10: with fresh statistics pgvector's planner walks the
    # HNSW index (checked with EXPLAIN). The matching rows point away from the
    # query, so the first ef_search=40 candidates contain none of them: only the
    # iterative scan (hnsw.iterative_scan) finds top_k rows that pass the filter.
    index = make_index()
    rng = np.random.default_rng(4)
    query = rng.normal(size=DIM)
    items = []
    for i in range(3000):
        far = i % 4 == 0
        vector = (-query + rng.normal(scale=0.5, size=DIM)) if far else rng.normal(size=DIM)
        items.append(
            VectorItem(
                memory_id=uuid.uuid4(),
                vector=vector.tolist(),
                memory_type="semantic" if far else "episodic",
                tags=(),
                agent_id=None,
                user_id=None,
                session_id=None,
                metadata={},
                created_at=T0,
                coordinate=(0.0,),
                occurred_at=T0,
            )
        )
    for start in range(0, len(items), 500):
        index.upsert(items[start : start + 500])
    analyze = getattr(index, "analyze", None)
    if analyze is not None:
        analyze()
    hits = index.search(query.tolist(), 10, VectorFilter(memory_types=("semantic",)))
    far_ids = {i.memory_id for i in items if i.memory_type == "semantic"}
    assert len(hits) == 10
    assert {h.memory_id for h in hits} <= far_ids
    expected = brute_force(items, query.tolist(), "Cosine", lambda i: i.memory_type == "semantic")
    # HNSW is approximate: most (not necessarily all) of the exact top 10 come back.
    assert len({h.memory_id for h in hits} & {e[0] for e in expected[:10]}) >= 8


def test_pgvector_outages_are_unavailable_not_bad_input(pg_database: str) -> None:
    # Recall degrades only on VectorIndexUnavailable: a missing table (index not
    # created yet) and a closed/unreachable pool must raise it, not VectorIndexError.
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {EXT}")
        conn.execute(f"CREATE EXTENSION vector SCHEMA {EXT}")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
    pool = ConnectionPool(pg_database, min_size=1, max_size=2, open=True)
    index = build_vector_index(
        "postgres",
        pool=pool,
        schema=SCHEMA,
        extensions_schema=EXT,
        dimensions=DIM,
        distance="Cosine",
        qdrant_url=None,
        qdrant_api_key=None,
        collection="",
    )
    with pytest.raises(VectorIndexUnavailable):
        index.search([0.1] * DIM, 5, VectorFilter())  # ensure() never ran
    index.ensure()
    assert index.search([0.1] * DIM, 5, VectorFilter()) == []
    pool.close()
    with pytest.raises(VectorIndexUnavailable):
        index.search([0.1] * DIM, 5, VectorFilter())
