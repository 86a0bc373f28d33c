"""Graph traversal over memory links, pure: the caller's `links_from(frontier)`
answers the links touching a set of nodes (the store: one round trip per hop),
and these functions decide which nodes are reached, at what depth and how.

Why breadth-first in Python over per-hop queries instead of a recursive CTE:
with cycles a recursive CTE enumerates paths, not nodes, and grows
exponentially with depth; a visited set keeps this linear in the edges it
touches, and the depth and result limit bound the work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar
from uuid import UUID

from memory_runtime.models import Direction


class Edge(Protocol):
    @property
    def from_id(self) -> UUID: ...
    @property
    def to_id(self) -> UUID: ...
    @property
    def strength(self) -> float: ...


E = TypeVar("E", bound=Edge)
LinksFrom = Callable[[Sequence[UUID]], Iterable[E]]


def steps(link: Edge, front: set[UUID], direction: Direction) -> list[tuple[UUID, UUID]]:
    """(here, there) for each way `link` leads out of `front` in `direction`."""
    out: list[tuple[UUID, UUID]] = []
    if direction in ("out", "both") and link.from_id in front:
        out.append((link.from_id, link.to_id))
    if direction in ("in", "both") and link.to_id in front:
        out.append((link.to_id, link.from_id))
    return out


def neighbourhood(
    start: UUID, depth: int, direction: Direction, limit: int, links_from: LinksFrom[E]
) -> dict[UUID, tuple[int, E]]:
    """Every node within `depth` hops of `start` (at most `limit`), in the order
    reached: its depth and the link that reached it first."""
    seen: dict[UUID, tuple[int, E]] = {}
    visited = {start}
    frontier = [start]
    for level in range(1, depth + 1):
        if not frontier or len(seen) >= limit:
            break
        reached: list[UUID] = []
        front = set(frontier)
        for link in links_from(frontier):
            for _, there in steps(link, front, direction):
                if there not in visited and len(seen) < limit:
                    visited.add(there)
                    seen[there] = (level, link)
                    reached.append(there)
        frontier = reached
    return seen


@dataclass(frozen=True)
class Path(Generic[E]):
    nodes: list[UUID]  # source first, target last
    links: list[E]  # links[i] joins nodes[i] and nodes[i + 1]
    strength: float  # the product of the links' strengths


def strongest_shortest_path(
    source: UUID, target: UUID, max_depth: int, direction: Direction, links_from: LinksFrom[E]
) -> Path[E] | None:
    """Fewest hops first; among those, the largest product of link strengths.

    Layered BFS: every shortest path to a node at depth d passes through depth
    d-1, so a max-product choice per layer is exact. None if no path within
    `max_depth` hops.
    """
    if source == target:
        return Path([source], [], 1.0)
    # node -> (best strength to it, previous node, the link from there)
    best: dict[UUID, tuple[float, UUID | None, E | None]] = {source: (1.0, None, None)}
    frontier = [source]
    for _ in range(max_depth):
        layer: dict[UUID, tuple[float, UUID, E]] = {}
        front = set(frontier)
        for link in links_from(frontier):
            for here, there in steps(link, front, direction):
                if there in best:
                    continue
                strength = best[here][0] * link.strength
                current = layer.get(there)
                if current is None or strength > current[0]:
                    layer[there] = (strength, here, link)
        if not layer:
            return None
        best.update(layer)
        if target in layer:
            return _walk_back(best, target)
        frontier = sorted(layer)
    return None


def _walk_back(best: dict[UUID, tuple[float, UUID | None, E | None]], target: UUID) -> Path[E]:
    nodes, links = [target], []
    _, previous, link = best[target]
    while previous is not None and link is not None:
        links.append(link)
        nodes.append(previous)
        _, previous, link = best[previous]
    nodes.reverse()
    links.reverse()
    return Path(nodes, links, best[target][0])
