"""What the vector index still owes: pending vectors, tombstones, vectors in
flight, and what pruning may delete."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from psycopg import sql

from memory_runtime.filters import EXPIRED, LIVE
from memory_runtime.ranking import (
    DECAY_FACTOR_SQL,
)
from memory_runtime.record import MemoryRow
from memory_runtime.storage.rows import MEMORY_COLUMNS
from memory_runtime.storage.tx_base import TxBase


class IndexState(TxBase):
    @staticmethod
    def vector_rows(ids: Sequence[uuid.UUID]) -> sql.Composable:
        """The query of these memories' vector rows as the index keeps them (its
        write_in_transaction): id, vector, and the fields its filters read."""
        return sql.SQL(
            "SELECT m.id AS memory_id, e.embedding, m.memory_type, m.tags, m.agent_id,"
            " m.user_id, m.session_id, m.metadata, m.created_at, m.coordinate, m.occurred_at"
            " FROM memories m JOIN memory_embeddings e ON e.memory_id = m.id"
            " WHERE m.id = ANY({})"
        ).format(sql.Literal(list(ids)))

    def mark_index_pending(self, ids: Sequence[uuid.UUID]) -> None:
        if ids:
            self.conn.execute(
                "UPDATE memories SET index_pending = true WHERE id = ANY(%s)", (sorted(ids),)
            )

    def set_index_done(self, written: Sequence[tuple[uuid.UUID, int]]) -> None:
        """The index took these (id, version)s: clear the pending flag of rows
        still at that version. A write that landed late, after a newer version
        or a delete, may have overwritten newer state in the index: such a row
        is marked pending again, and a deleted one gets a tombstone, so that
        catch-up puts the index right."""
        if not written:
            return
        ids = sorted(written)  # one lock order for every writer
        self.conn.execute(
            """WITH d AS (SELECT * FROM unnest(%s::uuid[], %s::bigint[]) AS d(id, version)),
                    done AS (UPDATE memories AS m SET index_pending = m.version <> d.version
                               FROM d WHERE m.id = d.id
                                 AND (m.index_pending OR m.version <> d.version))
               INSERT INTO vector_tombstones (memory_id)
               SELECT d.id FROM d WHERE NOT EXISTS (SELECT FROM memories m WHERE m.id = d.id)
               ON CONFLICT (memory_id) DO NOTHING""",
            ([i for i, _ in ids], [v for _, v in ids]),
        )

    def mark_in_flight(self, written: Sequence[tuple[uuid.UUID, int]]) -> None:
        """In the vectors' transaction: these (id, version)s are written ahead of
        their memories' commit (migration 0010)."""
        if written:
            ids = sorted(written)
            self.conn.execute(
                "INSERT INTO index_in_flight (memory_id, version)"
                " SELECT * FROM unnest(%s::uuid[], %s::bigint[]) ON CONFLICT DO NOTHING",
                ([i for i, _ in ids], [v for _, v in ids]),
            )

    def land_in_flight(self, ids: Sequence[uuid.UUID]) -> None:
        """In the memories' transaction, after the vectors committed: they land with it."""
        if ids:
            self.conn.execute(
                "DELETE FROM index_in_flight WHERE memory_id = ANY(%s)", (sorted(ids),)
            )

    def recover_in_flight(self, grace_seconds: float) -> int:
        """Vectors whose memories did not commit (a crash or a failed commit
        between the two): a new memory's vector gets a tombstone, an updated
        memory (still at an older version) is marked pending, so that catch-up
        writes its committed state again. Returns how many were recovered."""
        row = self.conn.execute(
            """WITH stale AS (
                   DELETE FROM index_in_flight WHERE (memory_id, version) IN (
                       SELECT memory_id, version FROM index_in_flight
                       WHERE written_at < now() - make_interval(secs => %s)
                       FOR UPDATE SKIP LOCKED)
                   RETURNING memory_id, version),
               repend AS (
                   UPDATE memories AS m SET index_pending = true FROM stale s
                   WHERE m.id = s.memory_id AND m.version <> s.version AND NOT m.index_pending),
               gone AS (
                   INSERT INTO vector_tombstones (memory_id)
                   SELECT DISTINCT s.memory_id FROM stale s
                   WHERE NOT EXISTS (SELECT FROM memories m WHERE m.id = s.memory_id)
                   ON CONFLICT (memory_id) DO NOTHING)
               SELECT count(*) AS n FROM stale""",
            (grace_seconds,),
        ).fetchone()
        return int(row["n"]) if row else 0

    def pending_index(self, limit: int) -> list[MemoryRow]:
        rows = self.conn.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE index_pending"
            " ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED",
            (limit,),
        ).fetchall()
        return [MemoryRow.from_db(r) for r in rows]

    def tombstones(self, limit: int) -> list[uuid.UUID]:
        rows = self.conn.execute(
            "SELECT memory_id FROM vector_tombstones ORDER BY deleted_at LIMIT %s"
            " FOR UPDATE SKIP LOCKED",
            (limit,),
        ).fetchall()
        return [r["memory_id"] for r in rows]

    def clear_tombstones(self, ids: Sequence[uuid.UUID]) -> None:
        """The index confirmed these deletes. A memory that lives again under one
        of these ids (a restore from an export) may have lost its new vector to
        that delete: it is marked pending, so that catch-up writes it again."""
        if ids:
            self.conn.execute(
                """WITH gone AS (DELETE FROM vector_tombstones WHERE memory_id = ANY(%s))
                   UPDATE memories AS m SET index_pending = true
                   WHERE m.id = ANY(%s) AND NOT m.index_pending
                     AND EXISTS (SELECT FROM memory_embeddings e WHERE e.memory_id = m.id)""",
                (list(ids), sorted(ids)),
            )

    def prunable(
        self, prune_below: float, half_life_hours: float, decay: bool, limit: int
    ) -> list[tuple[uuid.UUID, str]]:
        """Expired memories, and decayed episodic ones: (id, reason)."""
        decayed = DECAY_FACTOR_SQL.format(since="last_accessed_at", half_life="%s")
        rows = self.conn.execute(
            sql.SQL(
                "SELECT id, 'expired' AS reason FROM memories WHERE {expired}"
                " UNION ALL"
                " SELECT id, 'decayed' FROM memories"
                "  WHERE %s AND memory_type = 'episodic' AND {live} AND importance * {decayed} < %s"
                " LIMIT %s"
            ).format(expired=EXPIRED, live=LIVE, decayed=sql.SQL(decayed)),
            (decay, half_life_hours, prune_below, limit),
        ).fetchall()
        return [(r["id"], r["reason"]) for r in rows]
