"""Kopf's peering rule, for the work the operator runs outside Kopf's handlers
(the resync loop, resync.py). No I/O here: the peering object is read by the caller.

Kopf keeps one record per operator process in the `status` of its peering object
(ClusterKopfPeering, or a KopfPeering per watched namespace):
`{identity: {priority, lifetime, lastseen}}`. A process pauses while another live
peer has a higher priority, or the same priority (a conflict: Kopf pauses every
such process); a peer is live until `lastseen + lifetime`. This is
`kopf._core.engines.peering.process_peering_event`'s rule (Kopf 1.x), which Kopf
exposes to no handler.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEFAULT_LIFETIME = 60  # Kopf's default when a record has none


@dataclass(frozen=True)
class Peer:
    identity: str
    priority: int
    deadline: datetime  # lastseen + lifetime: dead from then on


def others(status: Mapping[str, object] | None, own_identity: str, now: datetime) -> list[Peer]:
    """The other processes' records in a peering object's status. A record
    without `lastseen` counts as seen now (Kopf's parsing)."""
    peers = []
    for identity, info in (status or {}).items():
        if identity == own_identity or not isinstance(info, Mapping):
            continue
        lastseen = info.get("lastseen")
        seen = datetime.fromisoformat(lastseen) if lastseen else now
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=UTC)
        lifetime = timedelta(seconds=int(info.get("lifetime", DEFAULT_LIFETIME)))
        peers.append(Peer(identity, int(info.get("priority", 0)), seen + lifetime))
    return peers


def active(peers: Iterable[Peer], own_priority: int, now: datetime) -> bool:
    """True unless a live peer has a higher or the same priority (Kopf's rule)."""
    return not any(p.deadline > now and p.priority >= own_priority for p in peers)
