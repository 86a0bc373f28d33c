"""VectorIndex on pgvector: table <schema>.memory_vectors with an HNSW index.

Filters go into the same WHERE clause as the ANN ordering, and pgvector 0.8's
iterative index scan keeps scanning the HNSW graph until enough rows pass them,
so a selective filter still returns top_k hits (filtering happens in the engine).

Why ~550 lines: one engine's whole life cycle: the table and its graph (built
with the tenant's HNSW parameters, rebuilt beside the old one when they
change), search, upserts staged beside the memories' transaction, and the
bulk-load path of a large import (graph dropped, rebuilt once, sized memory).
"""

from __future__ import annotations

import functools
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import numpy as np
import psycopg
from pgvector import Vector
from pgvector.psycopg.vector import register_vector_info
from psycopg import Connection, errors, sql
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb
from psycopg_pool import PoolClosed, PoolTimeout

from memory_contract.limits import (
    HNSW_EF_CONSTRUCT_DEFAULT,
    HNSW_M_DEFAULT,
    MAX_DIMENSIONS_BY_BACKEND,
)
from memory_runtime.filters import as_utc, sql_where
from memory_runtime.ports import VectorFilter, VectorHit, VectorItem
from memory_runtime.vectors.common import (
    Shaped,
    VectorIndexError,
    VectorIndexUnavailable,
    check_array,
    check_top_k,
    check_vector,
    normalise_distance,
    similarity,
)

TABLE = "memory_vectors"

# Engine not reachable or not ready (table not created yet): recall may degrade.
_OUTAGES = (psycopg.OperationalError, PoolTimeout, PoolClosed, psycopg.errors.UndefinedTable)

# A staged write that was neither committed nor aborted gives up after this long
# (its transaction would otherwise hold a connection and row locks).
STAGE_WAIT_SECONDS = 600

# Building the HNSW graph after a bulk load (begin_bulk_load / finish_bulk_load):
# in memory while the graph fits in maintenance_work_mem (pgvector: "significantly
# more time" past it), so the build asks for what its rows need, within these bounds (a
# shared server's memory is every tenant's).
BULK_BUILD_MEMORY_MIN = 256 * 2**20
BULK_BUILD_MEMORY_MAX = 2**30
BULK_BUILD_SECONDS = 1800


def build_memory(rows: int, dimensions: int, m: int) -> str:
    """maintenance_work_mem for building an HNSW graph of `rows` vectors in memory:
    per row the vector plus its neighbour lists and element header (the formula
    checked against pgvector's "no longer fits" notice: bench/README.md), a
    quarter more for slack."""
    need = rows * (4 * dimensions + 24 * m + 320) * 5 // 4
    return f"{max(BULK_BUILD_MEMORY_MIN, min(BULK_BUILD_MEMORY_MAX, need)) // 2**20}MB"


# the binary COPY's column types, in the order of upsert's rows
_COPY_TYPES = [
    "uuid",
    "vector",
    "text",
    "text[]",
    "text",
    "text",
    "text",
    "jsonb",
    "timestamptz",
    "float8[]",
    "timestamptz",
]

# distance -> (operator, HNSW operator class); the operator returns a distance.
_OPS = {
    "Cosine": ("<=>", "vector_cosine_ops"),
    "Dot": ("<#>", "vector_ip_ops"),  # negative inner product
    "Euclid": ("<->", "vector_l2_ops"),
}


class PgVectorIndex(Shaped):
    def __init__(
        self,
        pool: Any,  # psycopg_pool.ConnectionPool (anything with .connection())
        *,
        schema: str,
        extensions_schema: str,
        dimensions: int,
        distance: str,
        hnsw_m: int = HNSW_M_DEFAULT,
        hnsw_ef_construct: int = HNSW_EF_CONSTRUCT_DEFAULT,
    ) -> None:
        most = MAX_DIMENSIONS_BY_BACKEND["postgres"]
        if not 1 <= dimensions <= most:
            raise VectorIndexError(f"pgvector HNSW supports 1..{most} dimensions, got {dimensions}")
        self._pool = pool
        self._schema = schema
        self._ext = extensions_schema
        self._dimensions = dimensions
        self._distance = normalise_distance(distance)
        self._m = hnsw_m
        self._ef_construct = hnsw_ef_construct
        self._table = sql.Identifier(schema, TABLE)
        # Schema-qualified so it works whatever the connection's search_path is.
        self._op = sql.SQL("OPERATOR({}.{})").format(
            sql.Identifier(extensions_schema), sql.SQL(_OPS[self._distance][0])
        )
        columns = sql.SQL(
            "memory_id, embedding, memory_type, tags, agent_id, user_id, session_id,"
            " metadata, created_at, coordinate, occurred_at"
        )
        self._copy = sql.SQL("COPY {t} ({c}) FROM STDIN (FORMAT BINARY)").format(
            t=self._table, c=columns
        )
        on_conflict = sql.SQL(
            """ON CONFLICT (memory_id) DO UPDATE SET
                   embedding = EXCLUDED.embedding, memory_type = EXCLUDED.memory_type,
                   tags = EXCLUDED.tags, agent_id = EXCLUDED.agent_id,
                   user_id = EXCLUDED.user_id, session_id = EXCLUDED.session_id,
                   metadata = EXCLUDED.metadata, created_at = EXCLUDED.created_at,
                   coordinate = EXCLUDED.coordinate, occurred_at = EXCLUDED.occurred_at"""
        )
        self._upsert = sql.SQL(
            "INSERT INTO {t} ({c}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) {o}"
        ).format(t=self._table, c=columns, o=on_conflict)
        # rows selected in the same database, their float4[] cast to a vector there
        self._upsert_selected = functools.partial(
            sql.SQL(
                "INSERT INTO {t} ({c}) SELECT memory_id, embedding::{ext}.vector, memory_type,"
                " tags, agent_id, user_id, session_id, metadata, created_at, coordinate,"
                " occurred_at FROM ({source}) AS s {o}"
            ).format,
            t=self._table,
            c=columns,
            ext=sql.Identifier(extensions_schema),
            o=on_conflict,
        )
        # Connections whose adapters already know the vector type (one lookup each).
        self._registered: weakref.WeakSet[Connection[Any]] = weakref.WeakSet()
        self._register_lock = threading.Lock()

    def _prepare(self, conn: Connection[Any]) -> None:
        if conn in self._registered:
            return
        info = TypeInfo.fetch(conn, f"{_quote(self._ext)}.vector")
        if info is None:
            raise VectorIndexError(f"the vector extension is not installed in schema {self._ext}")
        register_vector_info(conn, info)
        with self._register_lock:
            self._registered.add(conn)

    @property
    def _hnsw_index(self) -> str:
        return f"{TABLE}_embedding_{self._distance.lower()}_hnsw"

    def _hnsw_name(self) -> sql.Identifier:
        return sql.Identifier(self._schema, self._hnsw_index)

    def begin_bulk_load(self, expected_rows: int = 0) -> bool:
        """Before a large load: drop the HNSW graph, so rows go in at heap speed (a
        graph insert costs milliseconds per row); `finish_bulk_load` then builds
        the graph once, many times faster. Searches meanwhile scan exactly.
        Large means: the index is empty, or the load brings at least as many rows
        as it holds (a rebuild of all is then cheaper than inserting the new).
        True if the graph was dropped."""
        with self._pool.connection() as conn, conn.transaction():
            # counts at most expected_rows + 1 rows, not the whole table
            row = conn.execute(
                sql.SQL("SELECT count(*) <= %s FROM (SELECT FROM {t} LIMIT %s) AS held").format(
                    t=self._table
                ),
                (expected_rows, expected_rows + 1),
            ).fetchone()
            bulk = bool(row and row[0])
            if bulk:
                conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(self._hnsw_name()))
        return bulk

    def finish_bulk_load(self) -> None:
        """Build what `begin_bulk_load` dropped (`ensure` recreates anything missing)."""
        self.ensure(build_seconds=BULK_BUILD_SECONDS, build_rows=self.count())

    def ensure(self, build_seconds: int | None = None, build_rows: int = 0) -> None:
        """Create the table and its indexes if missing; rebuild the HNSW graph when
        it was built with other parameters (spec.vectors.hnsw changed)."""
        ext = sql.Identifier(self._ext)
        statements = [
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {t} (
                    memory_id uuid PRIMARY KEY,
                    embedding {ext}.vector({dim}) NOT NULL,
                    memory_type text NOT NULL,
                    tags text[] NOT NULL DEFAULT '{{}}',
                    agent_id text,
                    user_id text,
                    session_id text,
                    metadata jsonb NOT NULL DEFAULT '{{}}',
                    created_at timestamptz NOT NULL,
                    coordinate float8[] NOT NULL,
                    occurred_at timestamptz
                )"""
            ).format(t=self._table, ext=ext, dim=sql.Literal(self._dimensions)),
            self._create_hnsw(self._hnsw_index, if_not_exists=True),
        ]
        for column in (
            "memory_type",
            "agent_id",
            "user_id",
            "session_id",
            "created_at",
            "occurred_at",
        ):
            statements.append(
                sql.SQL("CREATE INDEX IF NOT EXISTS {name} ON {t} ({col})").format(
                    name=sql.Identifier(f"{TABLE}_{column}_idx"),
                    t=self._table,
                    col=sql.Identifier(column),
                )
            )
        statements.append(
            sql.SQL("CREATE INDEX IF NOT EXISTS {name} ON {t} USING gin (tags)").format(
                name=sql.Identifier(f"{TABLE}_tags_gin"), t=self._table
            )
        )
        statements.append(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {name} ON {t} USING gin (metadata jsonb_path_ops)"
            ).format(name=sql.Identifier(f"{TABLE}_metadata_gin"), t=self._table)
        )
        built_as_wanted = False
        for attempt in range(2):
            try:
                with self._pool.connection() as conn, conn.transaction():
                    if build_seconds is not None:
                        self._build_settings(conn, build_seconds, build_rows)
                    for statement in statements:
                        conn.execute(statement)
                    self._check_dimension(conn)
                    built_as_wanted = self._hnsw_options(conn) == self._hnsw_wanted
                break
            except (errors.UniqueViolation, errors.DuplicateTable, errors.DuplicateObject):
                # Two replicas starting together raced on CREATE ... IF NOT EXISTS
                # (not atomic); the second pass finds everything there. (No
                # advisory lock: its key would be computable by other tenants.)
                if attempt:
                    raise
        if not built_as_wanted:
            self._rebuild_hnsw()

    def _build_settings(self, conn: Connection[Any], build_seconds: int, rows: int) -> None:
        # an HNSW build is fast while its graph fits in memory and may outlast the
        # per-statement timeout of API requests
        conn.execute(
            "SELECT set_config('maintenance_work_mem', %s, true),"
            " set_config('statement_timeout', %s, true)",
            (build_memory(rows, self._dimensions, self._m), f"{build_seconds}s"),
        )

    def _create_hnsw(self, name: str, if_not_exists: bool = False) -> sql.Composed:
        opclass = sql.SQL("{}.{}").format(
            sql.Identifier(self._ext), sql.Identifier(_OPS[self._distance][1])
        )
        return sql.SQL(
            "CREATE INDEX {ine} {name} ON {t} USING hnsw (embedding {opclass}) "
            "WITH (m = {m}, ef_construction = {ef})"
        ).format(
            ine=sql.SQL("IF NOT EXISTS" if if_not_exists else ""),
            name=sql.Identifier(name),
            t=self._table,
            opclass=opclass,
            m=sql.Literal(self._m),
            ef=sql.Literal(self._ef_construct),
        )

    @property
    def _hnsw_wanted(self) -> set[str]:
        return {f"m={self._m}", f"ef_construction={self._ef_construct}"}

    def _hnsw_options(self, conn: Connection[Any]) -> set[str] | None:
        """The live HNSW index's parameters as PostgreSQL stores them ("m=16"), None if missing."""
        row = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)",
            (f"{_quote(self._schema)}.{_quote(self._hnsw_index)}",),
        ).fetchone()
        return None if row is None else set(row[0] or ())

    def _rebuild_hnsw(self) -> None:
        """Build the graph again with this index's m / ef_construction. The new graph
        is built beside the old one, which keeps answering searches meanwhile, and
        replaces it in the same transaction: a crash or a timeout leaves the old
        graph in place (the next start tries again). Writes to the table wait for
        the build (CREATE INDEX takes a SHARE lock), like a bulk load's build."""
        new = f"{self._hnsw_index}_new"
        for attempt in range(2):
            try:
                rows = self.count()
                with self._pool.connection() as conn, conn.transaction():
                    if self._hnsw_options(conn) == self._hnsw_wanted:
                        return  # another replica rebuilt it meanwhile
                    self._build_settings(conn, BULK_BUILD_SECONDS, rows)
                    conn.execute(self._create_hnsw(new))
                    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(self._hnsw_name()))
                    conn.execute(
                        sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                            sql.Identifier(self._schema, new), sql.Identifier(self._hnsw_index)
                        )
                    )
                return
            except (errors.DeadlockDetected, errors.UniqueViolation, errors.DuplicateTable):
                # two replicas rebuilding at once: the second looks again
                if attempt:
                    raise

    def _check_dimension(self, conn: Connection[Any]) -> None:
        # An existing table with another dimension would fail every write later; say so now.
        row = conn.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attname = 'embedding'",
            (f"{_quote(self._schema)}.{TABLE}",),
        ).fetchone()
        if row is not None and row[0] != self._dimensions:
            raise VectorIndexError(
                f"{self._schema}.{TABLE} holds {row[0]}-dimensional vectors, "
                f"the namespace declares {self._dimensions}"
            )

    def _row(self, item: VectorItem) -> tuple[Any, ...]:
        """One row of the binary COPY (or INSERT), its vector checked (VectorIndexError)."""
        return (
            item.memory_id,
            Vector(check_array(item.vector, self._dimensions)),
            item.memory_type,
            list(item.tags),
            item.agent_id,
            item.user_id,
            item.session_id,
            Jsonb(item.metadata),
            as_utc(item.created_at),
            [float(c) for c in item.coordinate],
            as_utc(item.occurred_at),
        )

    def upsert(self, items: Sequence[VectorItem]) -> None:
        if not items:
            return
        with self._pool.connection() as conn:
            self._prepare(conn)
            with conn.transaction():  # a refused item rolls back the others
                self._write_rows(conn, items)

    def stage(self) -> StagedUpsert:
        return StagedUpsert(self)

    def write_in_transaction(self, conn: Connection[Any], source: sql.Composable) -> bool:
        """The rows `source` selects, in the caller's transaction (same database):
        no second transaction, no pending flag to clear after it, and no row
        built in Python. For bulk loads, where the graph is dropped and a row
        costs a heap insert, not a graph insert worth overlapping (stage)."""
        conn.execute(self._upsert_selected(source=source))
        return True

    def _write_rows(self, conn: Connection[Any], items: Sequence[VectorItem]) -> None:
        """Write items inside the connection's open transaction (in a savepoint)."""
        ordered = sorted(items, key=lambda i: i.memory_id)  # one lock order
        for attempt in range(2):
            try:
                with conn.transaction():
                    self._write(conn, ordered, copy_new=attempt == 0)
                return
            except errors.UniqueViolation:
                # a concurrent writer added one of the "new" ids: upsert all
                if attempt:
                    raise

    def _write(self, conn: Connection[Any], items: list[VectorItem], copy_new: bool) -> None:
        """New ids by binary COPY (faster than INSERTs into the HNSW index:
        bench/README.md, ingest), ids already present by INSERT ... ON CONFLICT.
        The COPY's rows are built as they are sent: the server inserts the
        first ones into the graph while the next are built."""
        if copy_new:
            present = {
                r[0]
                for r in conn.execute(
                    sql.SQL("SELECT memory_id FROM {t} WHERE memory_id = ANY(%s)").format(
                        t=self._table
                    ),
                    ([i.memory_id for i in items],),
                )
            }
        else:
            present = {i.memory_id for i in items}
        new = [i for i in items if i.memory_id not in present]
        if new:
            with conn.cursor() as cur, cur.copy(self._copy) as copy:
                copy.set_types(_COPY_TYPES)
                for item in new:
                    copy.write_row(self._row(item))
        old = [self._row(i) for i in items if i.memory_id in present]
        if old:
            with conn.cursor() as cur:
                cur.executemany(self._upsert, old)

    def delete(self, memory_ids: Sequence[UUID]) -> None:
        if not memory_ids:
            return
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(
                sql.SQL("DELETE FROM {t} WHERE memory_id = ANY(%s)").format(t=self._table),
                (list(memory_ids),),
            )

    def search(self, vector: Sequence[float], top_k: int, flt: VectorFilter) -> list[VectorHit]:
        check_top_k(top_k)
        query = Vector(np.asarray(check_vector(vector, self._dimensions), dtype=np.float32))
        where, where_params = sql_where(flt)  # in the ANN scan's own WHERE
        statement = sql.SQL(
            "SELECT memory_id, embedding {op} %s AS d FROM {t} WHERE {where} "
            "ORDER BY embedding {op} %s LIMIT %s"
        ).format(op=self._op, t=self._table, where=where)
        params = [query, *where_params, query, top_k]
        try:
            with self._pool.connection() as conn:
                self._prepare(conn)
                # Pipeline: BEGIN, the settings, the query and COMMIT travel together
                # (one network round trip instead of five).
                with conn.pipeline(), conn.transaction():
                    # relaxed_order: keep walking the graph until top_k rows pass the
                    # filter; ef_search must be >= top_k or HNSW caps the result size.
                    conn.execute(
                        "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true),"
                        " set_config('hnsw.ef_search', %s, true)",
                        (str(max(40, top_k)),),
                    )
                    rows = conn.execute(statement, params).fetchall()
        except _OUTAGES as exc:
            raise VectorIndexUnavailable(f"pgvector search failed: {type(exc).__name__}") from exc
        # relaxed_order may return rows slightly out of order: sort exactly here.
        rows.sort(key=lambda r: r[1])
        return [VectorHit(memory_id=r[0], similarity=self._similarity(r[1])) for r in rows]

    def _similarity(self, d: float) -> float:
        if self._distance == "Cosine":
            return similarity("Cosine", 1.0 - d)
        if self._distance == "Dot":
            return similarity("Dot", -d)  # <#> is the negated inner product
        return similarity("Euclid", d)

    def count(self) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=self._table)).fetchone()
        return int(row[0]) if row else 0

    def ping(self) -> None:
        with self._pool.connection() as conn:
            conn.execute("SELECT 1")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


_COMMIT = object()
_ABORT = object()


class StagedUpsert:
    """pgvector's StagedWrite: the rows go into the HNSW index in a transaction of
    their own, on a thread of their own, while the caller's memories transaction
    runs (the graph insert, most of a batch store's time, overlaps the memories'
    writes); `commit` waits for the writes and commits them, just before the
    memories' transaction commits (the store's `_commit_first`).
    An aborted or failed stage rolls back: the index never holds a vector of a
    memory that did not commit."""

    writes_ahead = True

    def __init__(self, index: PgVectorIndex) -> None:
        self._index = index
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last: Callable[[Connection[Any]], None] | None = None

    def write(self, items: Sequence[VectorItem]) -> None:
        # a refused item (its vector) fails the thread's writes: it surfaces at commit
        if not items or self._error is not None:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="staged-upsert", daemon=True)
            self._thread.start()
        self._queue.put(list(items))

    def commit(self, last: Callable[[Connection[Any]], None] | None = None) -> None:
        # a write refused here (bad input) rolls the others back: all or nothing
        self._last = last
        self._finish(_COMMIT if self._error is None else _ABORT)
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        self._finish(_ABORT)

    def _finish(self, decision: object) -> None:
        if self._thread is not None:
            self._queue.put(decision)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        decided = False
        try:
            with self._index._pool.connection() as conn:
                self._index._prepare(conn)
                with conn.transaction():
                    while True:
                        message = self._queue.get(timeout=STAGE_WAIT_SECONDS)
                        decided = message is _ABORT or message is _COMMIT
                        if message is _ABORT:
                            raise psycopg.Rollback()
                        if message is _COMMIT:
                            if self._last is not None:  # e.g. the memories' pending flags
                                self._last(conn)
                            break
                        assert isinstance(message, list)
                        self._index._write_rows(conn, message)
        except BaseException as exc:
            self._error = exc
            # the caller's commit or abort is still to come: wait for it (join)
            while not decided:
                decided = self._queue.get() in (_COMMIT, _ABORT)
