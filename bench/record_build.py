"""What building and answering 500 memories costs in the runtime's own code.

The record (`memory_runtime.record`) is built per memory on the write and
read paths: 500 rows as a batch store builds them, 500 rows read back
(`from_db`, 384-d vectors), and 500 answers (`to_memory`), serialised as the
batch route answers, as outbox events and as export lines. Best of N runs,
in milliseconds; run it in two checkouts to compare (bench/README.md).

    PYTHONPATH=runtime:operator:client:. .venv/bin/python bench/record_build.py
"""

from __future__ import annotations

import random
import timeit
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from memory_runtime.models import MemoryList
from memory_runtime.record import MemoryRow
from memory_runtime.service.shapes import memory_record, to_memory

N = 500
DIMS = 384
# a checkout from before MemoryRow.unchecked built its rows with the class itself
build: Callable[..., MemoryRow] = getattr(MemoryRow, "unchecked", MemoryRow)


def fields(i: int, now: datetime, vector: list[float]) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "coordinate": (float(i), 2.0),
        "memory_type": "episodic",
        "payload": {"text": f"memory {i}", "n": i},
        "text": f"memory {i}",
        "importance": 0.5,
        "metadata": {"k": "v"},
        "tags": ["a", "b"],
        "agent_id": "agent",
        "user_id": None,
        "session_id": None,
        "created_at": now,
        "updated_at": now,
        "last_accessed_at": now,
        "access_count": 0,
        "version": 1,
        "expires_at": None,
        "embedding": vector,
        "index_pending": True,
        "occurred_at": now,
    }


def best_ms(fn: Callable[[], object], repeat: int = 20) -> float:
    return min(timeit.repeat(fn, number=1, repeat=repeat)) * 1000


def main() -> None:
    now = datetime.now(UTC)
    rng = random.Random(1)
    data = [fields(i, now, [rng.random() for _ in range(DIMS)]) for i in range(N)]
    read = [{**d, "coordinate": list(d["coordinate"]), "stored_vector": None} for d in data]
    rows = [build(**d) for d in data]
    series: dict[str, Callable[[], object]] = {
        "build rows": lambda: [build(**d) for d in data],
        "rows from_db": lambda: [MemoryRow.from_db(d) for d in read],
        "answers (to_memory)": lambda: [to_memory(r) for r in rows],
        "batch answer JSON": lambda: MemoryList(
            memories=[to_memory(r) for r in rows]
        ).model_dump_json(by_alias=True),
        "outbox events": lambda: [memory_record(r) for r in rows],
        "export records": lambda: [
            to_memory(r, include_vector=True).model_dump(
                mode="json", exclude={"has_vector", "index_pending"}
            )
            for r in rows
        ],
    }
    for name, fn in series.items():
        print(f"{name:22} {best_ms(fn):7.2f} ms per {N}")


if __name__ == "__main__":
    main()
