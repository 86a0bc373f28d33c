"""The memories' rows: read, write, count, delete, range."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg import sql

from memory_runtime.filters import LIVE, VectorFilter, sql_where
from memory_runtime.record import MemoryRow
from memory_runtime.storage.rows import (
    COLUMN_ADAPTERS,
    MEMORY_COLUMNS,
    MEMORY_COLUMNS_NO_VECTOR,
    ROW_COLUMNS,
    float4_array_binary,
)
from memory_runtime.storage.tx_base import TxBase


class MemoryRows(TxBase):
    def get(self, memory_id: uuid.UUID, *, for_update: bool = False) -> MemoryRow | None:
        lock = " FOR UPDATE" if for_update else ""
        row = self.conn.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id = %s{lock}", (memory_id,)
        ).fetchone()
        return MemoryRow.from_db(row) if row else None

    def get_by_coordinate(
        self, coordinate: Sequence[float], *, for_update: bool = False
    ) -> MemoryRow | None:
        lock = " FOR UPDATE" if for_update else ""
        row = self.conn.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE coordinate = %s::float8[]{lock}",
            (list(coordinate),),
        ).fetchone()
        return MemoryRow.from_db(row) if row else None

    def get_many(
        self, ids: Sequence[uuid.UUID], *, live_only: bool = True, vectors: bool = True
    ) -> list[MemoryRow]:
        """Rows by id. `vectors=False` leaves the embeddings in the database (the
        rows say only whether they have one: `stored_vector`), which spares
        shipping and parsing 384 floats per row for answers without them."""
        if not ids:
            return []
        where: sql.Composable = sql.SQL("id = ANY(%s)")
        if live_only:
            where = sql.SQL(" AND ").join([where, LIVE])
        columns = MEMORY_COLUMNS if vectors else MEMORY_COLUMNS_NO_VECTOR
        query = sql.SQL("SELECT {} FROM memories WHERE {}").format(sql.SQL(columns), where)
        return [MemoryRow.from_db(r) for r in self.conn.execute(query, (list(ids),))]

    def versions(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The current version of each of these memories that exists, rows locked."""
        rows = self.conn.execute(
            "SELECT id, version FROM memories WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            (list(ids),),
        )
        return {r["id"]: int(r["version"]) for r in rows}

    def live_ids(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these memories exist, held (KEY SHARE) until the transaction ends:
        a concurrent delete waits for us, so a link written now has both ends."""
        rows = self.conn.execute(
            "SELECT id FROM memories WHERE id = ANY(%s) ORDER BY id FOR KEY SHARE",
            (list(ids),),
        )
        return {r["id"] for r in rows}

    def coordinate_holders(
        self, coordinates: Sequence[Sequence[float]], *, lock: bool = False
    ) -> list[uuid.UUID | None]:
        """For each coordinate, the id of the memory at it (None if free)."""
        if not coordinates:
            return []
        literals = ["{" + ",".join(repr(float(c)) for c in coord) + "}" for coord in coordinates]
        rows = self.conn.execute(
            "SELECT c.n, m.id FROM unnest(%s::text[]) WITH ORDINALITY AS c(coord, n)"
            " JOIN memories m ON m.coordinate = c.coord::float8[]"
            + (" ORDER BY m.id FOR UPDATE OF m" if lock else ""),
            (literals,),
        )
        found: list[uuid.UUID | None] = [None] * len(coordinates)
        for r in rows:
            found[int(r["n"]) - 1] = r["id"]
        return found

    def insert_many(self, rows: Sequence[MemoryRow]) -> None:
        """Insert new memories and their vectors with COPY (the bulk form of insert)."""
        if not rows:
            return
        params = [self._params(row) for row in rows]
        columns = [c for c in params[0] if c != "embedding"]
        copy_sql = sql.SQL("COPY memories ({}) FROM STDIN").format(
            sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with self.conn.copy(copy_sql) as copy:
            for p in params:
                copy.write_row([p[c] for c in columns])
        with self.conn.copy(
            "COPY memory_embeddings (memory_id, embedding) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            # each float4[] in PostgreSQL's binary form, encoded by numpy: a text
            # literal (Python's repr per element, the server's parse) cost ~10x
            copy.set_types(["uuid", "bytea"])
            for p in params:
                if p["embedding"] is not None:
                    copy.write_row((p["id"], float4_array_binary(p["embedding"])))

    def count(self) -> int:
        row = self.conn.execute("SELECT count(*) AS n FROM memories").fetchone()
        return int(row["n"]) if row else 0

    def lock_quota(self) -> None:
        """Serialise inserts while a quota is enforced (count-then-insert is racy
        otherwise): a row of this schema, which no other tenant can lock."""
        self.conn.execute("SELECT FROM runtime_locks WHERE name = 'quota' FOR UPDATE")

    def insert(self, row: MemoryRow) -> MemoryRow:
        """Insert a memory and its vector (if any) in one statement."""
        result = self.conn.execute(
            f"""WITH saved AS (
                    INSERT INTO memories (id, coordinate, memory_type, payload, text, importance,
                        metadata, tags, agent_id, user_id, session_id, created_at, updated_at,
                        last_accessed_at, access_count, version, expires_at, index_pending,
                        occurred_at)
                    VALUES (%(id)s, %(coordinate)s::float8[], %(memory_type)s, %(payload)s,
                        %(text)s, %(importance)s, %(metadata)s, %(tags)s::text[], %(agent_id)s,
                        %(user_id)s, %(session_id)s, %(created_at)s, %(updated_at)s,
                        %(last_accessed_at)s, %(access_count)s, %(version)s, %(expires_at)s,
                        %(index_pending)s, %(occurred_at)s)
                    RETURNING {ROW_COLUMNS}),
                kept AS (
                    INSERT INTO memory_embeddings (memory_id, embedding)
                    SELECT id, %(embedding)s::float4[] FROM saved
                    WHERE %(embedding)s::float4[] IS NOT NULL)
                SELECT * FROM saved""",
            self._params(row),
        ).fetchone()
        assert result is not None
        return MemoryRow.from_db({**result, "embedding": row.embedding})

    def update(self, row: MemoryRow) -> MemoryRow:
        """Overwrite every column of an existing row (the caller bumped `version`)
        and its vector: replaced, removed (None) or, if equal, left unwritten."""
        result = self.conn.execute(
            f"""WITH saved AS (
                    UPDATE memories SET coordinate = %(coordinate)s::float8[],
                        memory_type = %(memory_type)s, payload = %(payload)s, text = %(text)s,
                        importance = %(importance)s, metadata = %(metadata)s,
                        tags = %(tags)s::text[], agent_id = %(agent_id)s, user_id = %(user_id)s,
                        session_id = %(session_id)s, created_at = %(created_at)s,
                        updated_at = %(updated_at)s, last_accessed_at = %(last_accessed_at)s,
                        access_count = %(access_count)s, version = %(version)s,
                        expires_at = %(expires_at)s, index_pending = %(index_pending)s,
                        occurred_at = %(occurred_at)s
                    WHERE id = %(id)s RETURNING {ROW_COLUMNS}),
                dropped AS (
                    DELETE FROM memory_embeddings
                    WHERE memory_id = %(id)s AND %(embedding)s::float4[] IS NULL),
                kept AS (
                    INSERT INTO memory_embeddings (memory_id, embedding)
                    SELECT id, %(embedding)s::float4[] FROM saved
                    WHERE %(embedding)s::float4[] IS NOT NULL
                    ON CONFLICT (memory_id) DO UPDATE SET embedding = EXCLUDED.embedding
                    WHERE memory_embeddings.embedding IS DISTINCT FROM EXCLUDED.embedding)
                SELECT * FROM saved""",
            self._params(row),
        ).fetchone()
        assert result is not None
        return MemoryRow.from_db({**result, "embedding": row.embedding})

    @staticmethod
    def _params(row: MemoryRow) -> dict[str, Any]:
        if row.stored_vector:
            # writing back a row read without its vector would erase the vector
            raise ValueError("this row was read without its vector; read it whole to write it")
        params = row.record()
        for name, adapt in COLUMN_ADAPTERS.items():
            params[name] = adapt(params[name])
        params["embedding"] = row.embedding
        return params

    def touch(self, ids: Sequence[uuid.UUID]) -> None:
        """Count an access now (GET): feeds decay and access statistics."""
        if ids:
            self.conn.execute(
                "UPDATE memories SET access_count = access_count + 1, last_accessed_at = now()"
                " WHERE id = ANY(%s)",
                (list(ids),),
            )

    def add_accesses(self, counts: Mapping[uuid.UUID, tuple[int, datetime]]) -> None:
        """Add batched access counts (AccessLog): n accesses, the last one at `at`."""
        if not counts:
            return
        ids = sorted(counts)  # one lock order for every writer: no deadlocks between batches
        self.conn.execute(
            "UPDATE memories AS m SET access_count = m.access_count + c.n,"
            " last_accessed_at = greatest(m.last_accessed_at, c.at)"
            " FROM unnest(%s::uuid[], %s::bigint[], %s::timestamptz[]) AS c(id, n, at)"
            " WHERE m.id = c.id",
            (ids, [counts[i][0] for i in ids], [counts[i][1] for i in ids]),
        )

    def delete_rows(self, ids: Sequence[uuid.UUID]) -> list[MemoryRow]:
        if not ids:
            return []
        rows = self.conn.execute(
            f"DELETE FROM memories WHERE id = ANY(%s) RETURNING {MEMORY_COLUMNS}", (list(ids),)
        ).fetchall()
        self.conn.execute(
            "INSERT INTO vector_tombstones (memory_id) SELECT unnest(%s::uuid[])"
            " ON CONFLICT (memory_id) DO UPDATE SET deleted_at = now()",
            (list(ids),),
        )
        return [MemoryRow.from_db(r) for r in rows]

    def ids_matching(self, flt: VectorFilter, *, for_update: bool = True) -> list[uuid.UUID]:
        where, params = sql_where(flt)
        query = sql.SQL("SELECT id FROM memories WHERE {} ORDER BY id{}").format(
            where, sql.SQL(" FOR UPDATE" if for_update else "")
        )
        return [r["id"] for r in self.conn.execute(query, params)]

    def range(self, flt: VectorFilter, limit: int, offset: int) -> list[MemoryRow]:
        where, params = sql_where(flt)
        query = sql.SQL(
            "SELECT {} FROM memories WHERE {} AND {} ORDER BY coordinate LIMIT %s OFFSET %s"
        ).format(sql.SQL(MEMORY_COLUMNS), where, LIVE)
        return [MemoryRow.from_db(r) for r in self.conn.execute(query, [*params, limit, offset])]
