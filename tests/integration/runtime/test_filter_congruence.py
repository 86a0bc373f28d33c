"""Same filter, same memories: keyword, vector and hybrid recall on both vector
backends (pgvector, Qdrant's local engine), against the real PostgreSQL.

Every memory holds the query word, and every filter here selects at most
`top_k` live memories, so each mode must answer exactly the memories the
filter selects: computed in Python from what was stored, never hard-coded.
(The engines' own filter suite: test_vectors_backends.py.)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from memory_runtime.api.state import state_of
from tests.integration.runtime.conftest import DIMENSIONS, Tenant
from tests.integration.runtime.helpers import admin_exec, admin_rows

pytestmark = pytest.mark.integration

N = 240
BATCH = 40  # one created_at per batch
T0 = datetime(2025, 1, 1, tzinfo=UTC)
MODES = ("keyword", "vector", "hybrid")
FAR = range(200, 220)  # memories whose vectors point away from the query


@dataclass
class Stored:
    i: int
    body: dict[str, Any]
    created_at: datetime

    @property
    def key(self) -> str:
        return ",".join(str(c) for c in self.body["coordinate"])

    def meta(self, key: str) -> Any:
        return self.body["metadata"][key]


def unit(rng: random.Random, towards: list[float] | None = None) -> list[float]:
    vec = [rng.gauss(0, 1) for _ in range(DIMENSIONS)]
    if towards is not None:
        vec = [-4 * t + 0.2 * v for t, v in zip(towards, vec, strict=True)]
    norm = math.sqrt(sum(v * v for v in vec))
    return [v / norm for v in vec]


QUERY = unit(random.Random(99))


def body(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "coordinate": [float(i % 16), float(i // 16)],
        "memory_type": "semantic" if i % 3 == 0 else "episodic",
        "payload": {"text": f"note {i}"},
        "tags": [t for t, on in (("red", i % 4 == 0), ("blue", i % 5 == 0)) if on],
        "agent_id": f"agent-{i % 4}",
        "user_id": f"user-{i % 7}",
        "session_id": f"s-{i % 3}",
        "metadata": {
            "topic": ["cats", "dogs", "birds"][i % 3],
            "level": i % 4,
            "weight": (i % 5) * 0.5,
            "vip": i % 6 == 0,
        },
        "occurred_at": (T0 + timedelta(days=i)).isoformat(),
        # a few expired memories: invisible to every mode
        "expires_at": "2001-01-01T00:00:00Z" if i % 23 == 0 else None,
        "vector": unit(rng, QUERY if i in FAR else None),
    }


@pytest.fixture
def zoned(tenant: Tenant) -> Tenant:
    """The tenant role's sessions in another time zone than UTC (a server's
    default is its host's zone): a naive filter time must still mean UTC."""
    admin_exec(
        tenant,
        sql.SQL("ALTER ROLE {} SET timezone = 'Asia/Kolkata'")
        .format(sql.Identifier(tenant.role))
        .as_string(None),
    )
    return tenant


@pytest.fixture
def stored(zoned: Tenant, backend_api: TestClient) -> list[Stored]:
    rng = random.Random(5)
    bodies = [body(i, rng) for i in range(N)]
    for start in range(0, N, BATCH):
        r = backend_api.post("/memories/batch", json={"memories": bodies[start : start + BATCH]})
        assert r.status_code == 200, r.text
    created = {
        tuple(r["coordinate"]): r["created_at"]
        for r in admin_rows(zoned, "SELECT coordinate, created_at FROM memories")
    }
    assert len(set(created.values())) == N // BATCH
    return [Stored(i, b, created[tuple(b["coordinate"])]) for i, b in enumerate(bodies)]


def batch_time(stored: list[Stored], n: int) -> datetime:
    return stored[n * BATCH].created_at


Keep = Callable[[Stored], bool]


def filters(stored: list[Stored]) -> dict[str, tuple[dict[str, Any], Keep]]:
    """name -> (the request's filter fields, which stored memories it selects)."""
    second, third = batch_time(stored, 2), batch_time(stored, 3)
    naive = {
        "created_from": second.astimezone(UTC).replace(tzinfo=None).isoformat(),
        "created_to": third.astimezone(UTC).replace(tzinfo=None).isoformat(),
    }
    return {
        "memory_type": ({"memory_type": "semantic"}, lambda m: m.i % 3 == 0),
        "tags_all": ({"tags": ["red", "blue"]}, lambda m: m.i % 20 == 0),
        "agent": ({"agent_id": "agent-1"}, lambda m: m.i % 4 == 1),
        "user": ({"user_id": "user-3"}, lambda m: m.i % 7 == 3),
        "session": ({"session_id": "s-2"}, lambda m: m.i % 3 == 2),
        "metadata": (
            {"metadata": {"topic": "dogs", "level": 1}},
            lambda m: m.meta("topic") == "dogs" and m.meta("level") == 1,
        ),
        "metadata_float": ({"metadata": {"weight": 1.0}}, lambda m: m.meta("weight") == 1.0),
        "metadata_int_as_float": ({"metadata": {"level": 2.0}}, lambda m: m.meta("level") == 2),
        # stored 1.0: a number equals a number, whichever JSON spelling
        "metadata_float_as_int": ({"metadata": {"weight": 1}}, lambda m: m.meta("weight") == 1),
        "metadata_bool": ({"metadata": {"vip": True}}, lambda m: m.meta("vip") is True),
        "created_range": (
            {"created_from": second.isoformat(), "created_to": third.isoformat()},
            lambda m: second <= m.created_at <= third,
        ),
        "created_range_naive_is_utc": (naive, lambda m: second <= m.created_at <= third),
        "occurred_range": (
            {
                "occurred_from": (T0 + timedelta(days=30)).isoformat(),
                "occurred_to": (T0 + timedelta(days=59, hours=1)).isoformat(),
            },
            lambda m: 30 <= m.i <= 59,
        ),
        "coordinate_box": (
            {"coordinate_min": [2, 1], "coordinate_max": [5, 3]},
            lambda m: 2 <= m.i % 16 <= 5 and 1 <= m.i // 16 <= 3,
        ),
        "combined": (
            {"memory_type": "episodic", "tags": ["red"], "user_id": "user-2"},
            lambda m: m.i % 3 != 0 and m.i % 4 == 0 and m.i % 7 == 2,
        ),
    }


def live(m: Stored) -> bool:
    return m.body["expires_at"] is None


def recall(api: TestClient, mode: str, flt: dict[str, Any]) -> set[str]:
    r = api.post(
        "/memories/search",
        json={"query": "note", "vector": QUERY, "mode": mode, "top_k": 100, **flt},
    )
    assert r.status_code == 200, r.text
    assert r.json()["degraded"] == []
    return {",".join(str(c) for c in h["memory"]["coordinate"]) for h in r.json()["hits"]}


def test_every_mode_answers_exactly_what_each_filter_selects(
    backend_api: TestClient, stored: list[Stored]
) -> None:
    wrong = {}
    for name, (flt, keep) in filters(stored).items():
        expected = {m.key for m in stored if keep(m) and live(m)}
        assert 0 < len(expected) <= 100, (name, len(expected))
        for mode in MODES:
            got = recall(backend_api, mode, flt)
            if got != expected:
                wrong[(name, mode)] = (len(got - expected), len(expected - got))
    # (filter, mode) -> (memories answered that it excludes, selected ones missed)
    assert wrong == {}


def test_vectors_written_before_the_engines_held_event_time_are_not_lost(
    backend_api: TestClient, stored: list[Stored], zoned: Tenant
) -> None:
    # Rows and points from before migration 0009 have no occurred_at: the
    # engines let them through their event-time filter and PostgreSQL decides.
    window = [m for m in stored if 30 <= m.i <= 59 and live(m)]
    by_key = {
        ",".join(str(c) for c in r["coordinate"]): str(r["id"])
        for r in admin_rows(zoned, "SELECT id, coordinate FROM memories")
    }
    old = [by_key[m.key] for m in window]
    index = state_of(backend_api.app).service.index.inner  # type: ignore[attr-defined]
    if hasattr(index, "_client"):  # Qdrant: the field left out of those points
        index._client.delete_payload(index._collection, keys=["occurred_at"], points=old)
    else:
        admin_exec(
            zoned,
            sql.SQL("UPDATE memory_vectors SET occurred_at = NULL WHERE memory_id = ANY({})")
            .format(sql.Literal(old))
            .as_string(None),
        )
    flt, _ = filters(stored)["occurred_range"]
    assert recall(backend_api, "vector", flt) == {m.key for m in window}
