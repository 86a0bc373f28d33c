"""The graph: link, unlink, neighbours, paths (traversal itself: memory_runtime.graph)."""

from __future__ import annotations

from memory_runtime import graph
from memory_runtime.models import (
    MAX_DEPTH,
    Direction,
    Link,
    LinkIn,
    LinkKey,
    Neighbor,
    NeighborsOut,
    PathOut,
)
from memory_runtime.service.base import UseCase
from memory_runtime.service.errors import InvalidInputError, NotFoundError
from memory_runtime.service.shapes import link_record, to_link, to_memory
from memory_runtime.storage.rows import LinkRow


class Links(UseCase):
    def link(self, req: LinkIn) -> tuple[Link, bool]:
        with self.db.tx() as tx:
            source = self.resolve(tx, req.from_)
            target = self.resolve(tx, req.to)
            if source.id == target.id:
                raise InvalidInputError("a link needs two different memories")
            # Hold both ends until commit: a delete racing this link either
            # finished first (404 here) or waits for the link and removes it too.
            live = tx.live_ids([source.id, target.id])
            for end in (source, target):
                if end.id not in live:
                    raise NotFoundError(f"memory {end.id} was deleted")
            row, created, changed = tx.upsert_link(
                LinkRow(source.id, target.id, req.type, req.strength, req.metadata)
            )
            if changed:
                tx.outbox("link.created", row.from_id, row.version, link_record(row))
        return to_link(row), created

    def unlink(self, req: LinkKey) -> Link:
        with self.db.tx() as tx:
            source = self.resolve(tx, req.from_)
            target = self.resolve(tx, req.to)
            row = tx.delete_link(source.id, target.id, req.type)
            if row is None:
                raise NotFoundError(f"no {req.type!r} link between these memories")
            tx.outbox("link.deleted", row.from_id, row.version, link_record(row), "unlinked")
        return to_link(row)

    def neighbors(
        self, key: str, depth: int, direction: Direction, link_type: str | None, limit: int
    ) -> NeighborsOut:
        """Breadth-first k-hop neighbourhood (graph.py), one SQL round trip per hop."""
        if not 1 <= depth <= MAX_DEPTH:
            raise InvalidInputError(f"depth must be within 1..{MAX_DEPTH}")
        with self.db.tx() as tx:
            start = self.resolve(tx, key)
            seen = graph.neighbourhood(
                start.id,
                depth,
                direction,
                limit,
                lambda frontier: tx.links_from_frontier(frontier, direction, link_type),
            )
            rows = {r.id: r for r in tx.get_many(list(seen), vectors=False)}
        neighbours = [
            Neighbor(depth=d, memory=to_memory(rows[i]), via=to_link(link))
            for i, (d, link) in seen.items()
            if i in rows
        ]
        return NeighborsOut(start=start.id, neighbors=neighbours)

    def path(
        self,
        source_key: str,
        target_key: str,
        max_depth: int,
        direction: Direction,
        link_type: str | None,
    ) -> PathOut:
        """Fewest hops first; among those, the largest product of link strengths (graph.py)."""
        if not 1 <= max_depth <= MAX_DEPTH:
            raise InvalidInputError(f"max_depth must be within 1..{MAX_DEPTH}")
        with self.db.tx() as tx:
            source = self.resolve(tx, source_key)
            target = self.resolve(tx, target_key)
            found = graph.strongest_shortest_path(
                source.id,
                target.id,
                max_depth,
                direction,
                lambda frontier: tx.links_from_frontier(frontier, direction, link_type),
            )
            if found is None:
                return PathOut(found=False, hops=None, strength=None, memories=[], links=[])
            rows = {r.id: r for r in tx.get_many(found.nodes, live_only=False, vectors=False)}
        return PathOut(
            found=True,
            hops=len(found.links),
            strength=found.strength,
            memories=[to_memory(rows[i]) for i in found.nodes],
            links=[to_link(link) for link in found.links],
        )
