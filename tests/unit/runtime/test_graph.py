"""Graph traversal (graph.py) over an in-memory edge list: no server."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID, uuid5

import pytest

from memory_runtime import graph

NS = UUID("00000000-0000-0000-0000-000000000000")


def node(name: str) -> UUID:
    return uuid5(NS, name)


@dataclass(frozen=True)
class L:
    from_id: UUID
    to_id: UUID
    strength: float = 1.0


class Links:
    """The store's port: the links touching a frontier; counts the round trips."""

    def __init__(self, *edges: tuple[str, str, float]) -> None:
        self.links = [L(node(a), node(b), s) for a, b, s in edges]
        self.calls: list[set[UUID]] = []

    def __call__(self, frontier: Sequence[UUID]) -> list[L]:
        front = set(frontier)
        self.calls.append(front)
        return [x for x in self.links if x.from_id in front or x.to_id in front]


def names(ids: object) -> list[str]:
    lookup = {node(c): c for c in "abcdefghij"}
    return [lookup[i] for i in ids]  # type: ignore[attr-defined]


def test_neighbourhood_reports_depth_and_the_first_link_and_survives_a_cycle() -> None:
    links = Links(("a", "b", 1), ("b", "c", 1), ("c", "a", 1), ("c", "d", 1))
    seen = graph.neighbourhood(node("a"), 6, "out", 100, links)
    assert names(seen) == ["b", "c", "d"]
    assert [d for d, _ in seen.values()] == [1, 2, 3]
    assert seen[node("d")][1] == L(node("c"), node("d"))
    assert len(links.calls) == 4  # one round trip per hop; the 4th finds nothing new


def test_neighbourhood_follows_the_direction_asked() -> None:
    links = Links(("a", "b", 1), ("c", "a", 1))
    assert names(graph.neighbourhood(node("a"), 1, "out", 10, links)) == ["b"]
    assert names(graph.neighbourhood(node("a"), 1, "in", 10, links)) == ["c"]
    assert sorted(names(graph.neighbourhood(node("a"), 1, "both", 10, links))) == ["b", "c"]


def test_neighbourhood_stops_at_the_depth_and_the_limit() -> None:
    links = Links(("a", "b", 1), ("a", "c", 1), ("b", "d", 1), ("c", "e", 1))
    assert names(graph.neighbourhood(node("a"), 1, "out", 10, links)) == ["b", "c"]
    assert len(graph.neighbourhood(node("a"), 2, "out", 3, links)) == 3
    limited = Links(("a", "b", 1), ("a", "c", 1), ("b", "d", 1))
    graph.neighbourhood(node("a"), 6, "out", 2, limited)
    assert len(limited.calls) == 1  # the limit reached: no further hop


def test_path_prefers_fewer_hops_over_stronger_links() -> None:
    links = Links(("a", "b", 0.1), ("b", "d", 0.1), ("a", "c", 1), ("c", "e", 1), ("e", "d", 1))
    found = graph.strongest_shortest_path(node("a"), node("d"), 6, "out", links)
    assert found is not None
    assert names(found.nodes) == ["a", "b", "d"]
    assert found.strength == pytest.approx(0.01)
    assert found.links == [L(node("a"), node("b"), 0.1), L(node("b"), node("d"), 0.1)]


def test_path_among_equally_short_ones_takes_the_largest_product() -> None:
    links = Links(("a", "b", 0.9), ("b", "d", 0.5), ("a", "c", 0.6), ("c", "d", 0.8))
    found = graph.strongest_shortest_path(node("a"), node("d"), 6, "out", links)
    assert found is not None
    assert names(found.nodes) == ["a", "c", "d"]
    assert found.strength == pytest.approx(0.48)


def test_path_backwards_uses_incoming_links_and_respects_max_depth() -> None:
    links = Links(("b", "a", 0.5), ("c", "b", 0.5))
    assert graph.strongest_shortest_path(node("a"), node("c"), 6, "out", links) is None
    back = graph.strongest_shortest_path(node("a"), node("c"), 6, "in", links)
    assert back is not None
    assert names(back.nodes) == ["a", "b", "c"]
    assert back.links == [L(node("b"), node("a"), 0.5), L(node("c"), node("b"), 0.5)]
    assert graph.strongest_shortest_path(node("a"), node("c"), 1, "in", links) is None


def test_path_to_itself_is_zero_hops() -> None:
    found = graph.strongest_shortest_path(node("a"), node("a"), 3, "out", Links())
    assert found == graph.Path([node("a")], [], 1.0)
