"""claims.py: who owns a tenant name, from an index or from a plain list."""

from __future__ import annotations

from typing import Any

from memory_operator.claims import NOT_OWNER, Claim, claims_from, owner, tenant_key


def cr(ns: str, name: str, uid: str, created: str | None, tenant: str | None = None) -> dict:
    md: dict[str, Any] = {"namespace": ns, "name": name, "uid": uid}
    if created:
        md["creationTimestamp"] = created
    return {"metadata": md, "spec": {"tenant": tenant} if tenant else {}}


OLD = cr("ns1", "a", "u1", "2026-01-01T00:00:00Z", "acme")
NEW = cr("ns2", "b", "u2", "2026-02-01T00:00:00Z", "acme")
OTHER = cr("ns2", "acme-corp", "u3", "2025-01-01T00:00:00Z")


def test_oldest_claim_wins_whichever_asks() -> None:
    index = claims_from([NEW, OTHER, OLD])
    assert owner(index, "acme", Claim.of(OLD)) is None
    assert owner(index, "acme", Claim.of(NEW)) == Claim.of(OLD)
    assert owner(index, "acme-corp", Claim.of(OTHER)) is None


def test_a_claim_missing_from_the_index_still_takes_part() -> None:
    # A CR the watch has not delivered yet is compared with what the index holds.
    assert owner({}, "acme", Claim.of(NEW)) is None
    assert owner(claims_from([NEW]), "acme", Claim.of(OLD)) is None
    assert owner(claims_from([OLD]), "acme", Claim.of(NEW)) == Claim.of(OLD)


def test_ties_break_by_namespace_then_name_and_unsaved_is_youngest() -> None:
    t = "2026-01-01T00:00:00Z"
    a, b = cr("ns1", "z", "u1", t, "x"), cr("ns2", "a", "u2", t, "x")
    assert owner(claims_from([a, b]), "x", Claim.of(b)) == Claim.of(a)
    unsaved = cr("ns0", "a", "u0", None, "x")
    assert owner(claims_from([a, unsaved]), "x", Claim.of(unsaved)) == Claim.of(a)


def test_tenant_defaults_to_the_cr_name() -> None:
    assert list(tenant_key(OTHER)) == ["acme-corp"]
    assert list(tenant_key(OLD)) == ["acme"]


def test_a_cr_refused_as_not_the_owner_claims_nothing() -> None:
    # ns2's CR came while ns1's was gone and was refused (ns1 owns the retained
    # data): it must not keep ns1's new CR from adopting its data again.
    refused = {
        **NEW,
        "status": {"conditions": [{"type": "SchemaReady", "reason": NOT_OWNER}]},
    }
    assert tenant_key(refused) == {}
    adopter = cr("ns1", "a-again", "u9", "2026-03-01T00:00:00Z", "acme")
    assert owner(claims_from([refused, adopter]), "acme", Claim.of(adopter)) is None
    assert owner(claims_from([NEW, adopter]), "acme", Claim.of(adopter)) == Claim.of(NEW)
