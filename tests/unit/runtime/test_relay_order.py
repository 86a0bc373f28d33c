"""Which delivered outbox rows the relay may mark sent (pure)."""

from __future__ import annotations

import uuid

from memory_runtime.events.relay import in_order_prefix


def rows(*spec: tuple[str, bool]) -> tuple[list[dict], set[uuid.UUID]]:  # type: ignore[type-arg]
    out, delivered = [], set()
    for memory, ok in spec:
        row = {"id": uuid.uuid4(), "memory_id": memory}
        out.append(row)
        if ok:
            delivered.add(row["id"])
    return out, delivered


def test_a_memory_after_an_undelivered_row_stays_unsent_others_go_on() -> None:
    batch, delivered = rows(("a", True), ("b", False), ("a", True), ("b", True), ("c", True))
    sent = in_order_prefix(batch, delivered)
    # b's second event was delivered, but after b's first failed: it is sent again
    # after it next time, never marked sent before it
    assert sent == [batch[0]["id"], batch[2]["id"], batch[4]["id"]]


def test_an_unpublishable_row_holds_nothing_back() -> None:
    batch, delivered = rows(("a", False), ("a", True))
    batch[0]["unpublishable"] = True
    assert in_order_prefix(batch, delivered) == [batch[1]["id"]]
