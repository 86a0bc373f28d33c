"""peering.py: Kopf's peering rule (kopf._core.engines.peering.process_peering_event)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from memory_operator.peering import DEFAULT_LIFETIME, Peer, active, others

NOW = datetime(2026, 12, 2, 1, 0, 0, tzinfo=UTC)


def _peer(priority: int, seconds_left: float, identity: str = "other") -> Peer:
    return Peer(identity, priority, NOW + timedelta(seconds=seconds_left))


def test_alone_or_only_lower_priorities_is_active() -> None:
    assert active([], 100, NOW)
    assert active([_peer(50, 10), _peer(99, 10, "b")], 100, NOW)


def test_a_live_higher_priority_peer_pauses() -> None:
    assert not active([_peer(200, 10)], 100, NOW)
    assert not active([_peer(50, 10), _peer(200, 0.001, "b")], 100, NOW)


def test_the_same_priority_is_a_conflict_and_pauses() -> None:
    assert not active([_peer(100, 10)], 100, NOW)


def test_a_dead_peer_counts_for_nothing() -> None:
    # Kopf: dead when lastseen + lifetime <= now (the deadline itself is dead).
    assert active([_peer(200, 0)], 100, NOW)
    assert active([_peer(200, -5), _peer(100, -1, "b")], 100, NOW)


def test_others_parses_kopfs_status_and_skips_own_record() -> None:
    status = {
        "me": {"priority": 100, "lifetime": 15, "lastseen": NOW.isoformat()},
        "hi": {
            "priority": 200,
            "lifetime": 15,
            "lastseen": (NOW - timedelta(seconds=5)).isoformat(),
        },
        "old": {"priority": 300, "lifetime": 15, "lastseen": "2026-12-02T00:59:40+00:00"},
        "fresh": {"priority": 1},  # no lastseen: seen now; no lifetime: Kopf's default
    }
    peers = {p.identity: p for p in others(status, "me", NOW)}
    assert set(peers) == {"hi", "old", "fresh"}
    assert peers["hi"].deadline == NOW + timedelta(seconds=10)
    assert peers["old"].deadline == NOW - timedelta(seconds=5)
    assert peers["fresh"].deadline == NOW + timedelta(seconds=DEFAULT_LIFETIME)
    assert peers["fresh"].priority == 1
    assert not active(others(status, "me", NOW), 100, NOW)  # "hi" is live and higher
    assert active(
        others(status, "me", NOW + timedelta(seconds=10)), 100, NOW + timedelta(seconds=10)
    )
    assert others(None, "me", NOW) == []
