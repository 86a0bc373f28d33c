"""Tenant claims: which MemoryNamespace owns a tenant name. Pure, no I/O.

Two CRs claiming the same tenant anywhere the operator watches: the oldest wins
(ties by namespace/name, so every pass and every replica agrees). A CR refused
because the tenant's data is recorded to another owner (`NOT_OWNER`) claims
nothing: otherwise a CR of another namespace, created while the owner's CR was
gone, would keep the owner from ever taking its retained data back. The operator
keeps the claims in an index fed by its watch (fleet.py), so a reconcile
looks up one tenant instead of listing every CR.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from memory_operator.conditions import Reason
from memory_operator.kube_types import MemoryNamespace
from memory_operator.ownership import Owner
from memory_operator.spec import effective_tenant


@dataclass(frozen=True, order=True)
class Claim:
    # Field order is the precedence: oldest first, then namespace/name (Owner's order).
    created: str
    by: Owner

    @classmethod
    def of(cls, obj: MemoryNamespace) -> Claim:
        created = obj["metadata"].get("creationTimestamp") or "9999"  # not yet stored: youngest
        return cls(created, Owner.of(obj))


NOT_OWNER = Reason.TENANT_OWNED_ELSEWHERE  # the tenant's data has another owner

# tenant -> the claims on it (a Kopf index has this shape: key -> iterable of values).
Claims = Mapping[str, Iterable[Claim]]


def tenant_key(obj: MemoryNamespace) -> dict[str, Claim]:
    """One CR's entry in the claims index (none if it was refused as not the owner)."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    if any(cond.get("reason") == NOT_OWNER for cond in conditions):
        return {}
    return {effective_tenant(obj): Claim.of(obj)}


def claims_from(items: Iterable[MemoryNamespace]) -> dict[str, list[Claim]]:
    """The index built from a plain list of CRs (callers without a watch)."""
    out: dict[str, list[Claim]] = {}
    for obj in items:
        for tenant, claim in tenant_key(obj).items():
            out.setdefault(tenant, []).append(claim)
    return out


def owner(claims: Claims, tenant: str, mine: Claim) -> Claim | None:
    """The claim that owns `tenant` if it isn't `mine` (which always takes part)."""
    others = [c for c in claims.get(tenant, ()) if c.by.uid != mine.by.uid]
    winner = min([*others, mine])
    return None if winner.by.uid == mine.by.uid else winner
