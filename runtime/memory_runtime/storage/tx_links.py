"""The links between memories."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from memory_runtime.storage.rows import LINK_COLUMNS, LinkRow
from memory_runtime.storage.tx_base import TxBase


class LinkRows(TxBase):
    def upsert_link(self, link: LinkRow) -> tuple[LinkRow, bool, bool]:
        """Insert or update; returns (row, created, changed)."""
        before = self.conn.execute(
            f"SELECT {LINK_COLUMNS} FROM links WHERE from_id = %s AND to_id = %s AND type = %s"
            " FOR UPDATE",
            (link.from_id, link.to_id, link.type),
        ).fetchone()
        if before is None:
            row = self.conn.execute(
                f"INSERT INTO links (from_id, to_id, type, strength, metadata)"
                f" VALUES (%s, %s, %s, %s, %s) RETURNING {LINK_COLUMNS}",
                (link.from_id, link.to_id, link.type, link.strength, Jsonb(link.metadata)),
            ).fetchone()
            assert row is not None
            return LinkRow.from_db(row), True, True
        if before["strength"] == link.strength and before["metadata"] == link.metadata:
            return LinkRow.from_db(before), False, False
        row = self.conn.execute(
            f"UPDATE links SET strength = %s, metadata = %s, updated_at = now(),"
            f" version = version + 1 WHERE from_id = %s AND to_id = %s AND type = %s"
            f" RETURNING {LINK_COLUMNS}",
            (link.strength, Jsonb(link.metadata), link.from_id, link.to_id, link.type),
        ).fetchone()
        assert row is not None
        return LinkRow.from_db(row), False, True

    def link_versions(
        self, keys: Sequence[tuple[uuid.UUID, uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, uuid.UUID, str], int]:
        """The current version of each of these links that exists, rows locked."""
        rows = self.conn.execute(
            "SELECT l.from_id, l.to_id, l.type, l.version FROM links l"
            " JOIN unnest(%s::uuid[], %s::uuid[], %s::text[]) AS k(f, t, ty)"
            " ON l.from_id = k.f AND l.to_id = k.t AND l.type = k.ty"
            " ORDER BY 1, 2, 3 FOR UPDATE OF l",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
        )
        return {(r["from_id"], r["to_id"], r["type"]): int(r["version"]) for r in rows}

    def write_links(self, links: Sequence[LinkRow], *, new: bool) -> None:
        """Insert (new) or overwrite links as given, times and version included (import)."""
        if not links:
            return
        if new:
            with self.conn.copy(f"COPY links ({LINK_COLUMNS}) FROM STDIN") as copy:
                for link in links:
                    copy.write_row(self._link_params(link))
            return
        self.conn.executemany(
            "UPDATE links SET strength = %s, metadata = %s, created_at = %s, updated_at = %s,"
            " version = %s WHERE from_id = %s AND to_id = %s AND type = %s",
            [(*self._link_params(link)[3:], *self._link_params(link)[:3]) for link in links],
        )

    @staticmethod
    def _link_params(link: LinkRow) -> tuple[Any, ...]:
        """LINK_COLUMNS' values, in that order."""
        return (
            link.from_id,
            link.to_id,
            link.type,
            link.strength,
            Jsonb(link.metadata),
            link.created_at,
            link.updated_at,
            link.version,
        )

    def delete_link(self, from_id: uuid.UUID, to_id: uuid.UUID, link_type: str) -> LinkRow | None:
        row = self.conn.execute(
            f"DELETE FROM links WHERE from_id = %s AND to_id = %s AND type = %s"
            f" RETURNING {LINK_COLUMNS}",
            (from_id, to_id, link_type),
        ).fetchone()
        return LinkRow.from_db(row) if row else None

    def delete_links_of(self, ids: Sequence[uuid.UUID]) -> list[LinkRow]:
        if not ids:
            return []
        rows = self.conn.execute(
            f"DELETE FROM links WHERE from_id = ANY(%s) OR to_id = ANY(%s)"
            f" RETURNING {LINK_COLUMNS}",
            (list(ids), list(ids)),
        ).fetchall()
        return [LinkRow.from_db(r) for r in rows]

    def links_from_frontier(
        self, frontier: Sequence[uuid.UUID], direction: str, link_type: str | None
    ) -> list[LinkRow]:
        if direction == "out":
            where: sql.Composable = sql.SQL("from_id = ANY(%s)")
            params: list[Any] = [list(frontier)]
        elif direction == "in":
            where = sql.SQL("to_id = ANY(%s)")
            params = [list(frontier)]
        else:
            where = sql.SQL("(from_id = ANY(%s) OR to_id = ANY(%s))")
            params = [list(frontier), list(frontier)]
        if link_type is not None:
            where = sql.SQL("{} AND type = %s").format(where)
            params.append(link_type)
        query = sql.SQL("SELECT {} FROM links WHERE {} ORDER BY from_id, to_id, type").format(
            sql.SQL(LINK_COLUMNS), where
        )
        return [LinkRow.from_db(r) for r in self.conn.execute(query, params)]
