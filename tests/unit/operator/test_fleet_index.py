"""fleet.Fleet: the operator's own index of tenant claims and Ready statuses."""

from __future__ import annotations

from typing import Any

from memory_operator.claims import NOT_OWNER, owner
from memory_operator.fleet import Fleet


def cr(
    name: str,
    *,
    ns: str = "tenants",
    tenant: str | None = None,
    created: str = "2026-12-01T00:00:00Z",
    ready: str | None = None,
    reason: str = "Ready",
) -> dict[str, Any]:
    status = {}
    if ready is not None:
        status = {"conditions": [{"type": "Ready", "status": ready, "reason": reason}]}
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{ns}-{name}",
            "creationTimestamp": created,
        },
        "spec": {"tenant": tenant} if tenant else {},
        "status": status,
    }


def test_claims_follow_puts_and_removes() -> None:
    fleet = Fleet()
    older = cr("a", tenant="acme", created="2026-12-01T00:00:00Z")
    newer = cr("b", ns="other", tenant="acme", created="2026-12-01T00:00:05Z")
    fleet.fill([older, newer, cr("solo")])
    assert sorted(fleet) == ["acme", "solo"]
    assert {c.by.name for c in fleet["acme"]} == {"a", "b"}
    mine = fleet["acme"]
    winner = owner(fleet, "acme", next(c for c in mine if c.by.name == "b"))
    assert winner is not None
    assert winner.by.name == "a"

    fleet.remove(older["metadata"]["uid"])
    assert owner(fleet, "acme", next(c for c in mine if c.by.name == "b")) is None
    assert len(fleet["acme"]) == 1
    fleet.remove(newer["metadata"]["uid"])
    assert "acme" not in fleet
    assert fleet.get("acme", ()) == ()
    fleet.remove("never-seen")  # a DELETED event of a CR the index never held
    assert len(fleet) == 1


def test_a_refused_owner_claims_nothing_once_its_status_says_so() -> None:
    fleet = Fleet()
    fleet.put(cr("late", tenant="acme"))
    assert "acme" in fleet
    fleet.put(cr("late", tenant="acme", ready="False", reason=NOT_OWNER))
    assert "acme" not in fleet


def test_snapshots_do_not_change_under_the_reader() -> None:
    fleet = Fleet()
    fleet.put(cr("a", tenant="acme"))
    seen = fleet["acme"]
    fleet.put(cr("b", tenant="acme"))
    assert len(seen) == 1
    assert len(fleet["acme"]) == 2


def test_readiness_counts_per_namespace_and_status() -> None:
    fleet = Fleet()
    fleet.fill(
        [
            cr("a", ready="True"),
            cr("b", ready="False", reason="PostgresUnavailable"),
            cr("c"),
            cr("d", ns="other", ready="True"),
        ]
    )
    assert fleet.readiness() == {
        ("tenants", "True"): 1,
        ("tenants", "False"): 1,
        ("tenants", "Unknown"): 1,
        ("other", "True"): 1,
    }
    fleet.put(cr("b", ready="True"))  # a status change replaces the CR's entry
    fleet.remove(cr("d", ns="other")["metadata"]["uid"])
    assert fleet.readiness() == {("tenants", "True"): 2, ("tenants", "Unknown"): 1}


def test_a_thousand_crs_cost_one_lookup() -> None:
    fleet = Fleet()
    fleet.fill(
        cr(f"t{i:04d}", created=f"2026-12-01T00:{i // 60:02d}:{i % 60:02d}Z") for i in range(1000)
    )
    assert len(fleet) == 1000
    assert [c.by.name for c in fleet["t0007"]] == ["t0007"]
