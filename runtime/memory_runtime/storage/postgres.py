"""PostgreSQL repository: the tenant's source of truth (psycopg 3, sync, pooled).

The pool connects as the tenant role with `search_path = <schema>, <extensions>`,
so every statement here uses unqualified names and can only reach that schema.

Why ~400 lines: the store's life cycle in one place (the pool, its session
settings, cutting a stalled connection, the health probe, statistics and
backlog counts) plus the access-count writer that shares its pool; the
statements themselves live in the tx_* modules that `Tx` composes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from memory_runtime.filters import EXPIRED
from memory_runtime.health import Breaker
from memory_runtime.storage.keyword import KeywordSearch
from memory_runtime.storage.migrate import search_path
from memory_runtime.storage.rows import LINK_COLUMNS, MEMORY_COLUMNS
from memory_runtime.storage.tx_index import IndexState
from memory_runtime.storage.tx_links import LinkRows
from memory_runtime.storage.tx_memories import MemoryRows
from memory_runtime.storage.tx_outbox import Outbox

log = logging.getLogger("memory_runtime.storage")

CONNECT_TIMEOUT_SECONDS = 2  # libpq's connect_timeout: a hung server is not waited on


def session_settings(path: str, statement_timeout_ms: int, lock_timeout_ms: int) -> dict[str, str]:
    """What every runtime connection sets first (pool, migrations, jobs)."""
    return {
        "search_path": path,
        "statement_timeout": str(statement_timeout_ms),
        "lock_timeout": str(lock_timeout_ms),
        # a connection left in a transaction (crashed thread) frees its locks
        "idle_in_transaction_session_timeout": str(max(statement_timeout_ms, 60_000)),
    }


class Tx(MemoryRows, KeywordSearch, IndexState, LinkRows, Outbox):
    """Statements that run inside one transaction of a `PostgresStore.tx()` block;
    each part (memories, keyword search, index state, links, outbox) in its module."""

    def __init__(self, conn: psycopg.Connection[Any], outbox: bool = True) -> None:
        # dict rows on our own cursor: the pool's connections stay default (tuple
        # rows) for the pgvector index, which shares the pool
        self.conn = conn.cursor(row_factory=dict_row)
        self.outbox_enabled = outbox  # events off: no outbox rows pile up unread

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The transaction's connection (for an index in this database: pgvector)."""
        return self.conn.connection


def _rollback(conn: psycopg.Connection[Any]) -> None:
    """Roll back what a failed block left open (and spare the pool its warning)."""
    if conn.broken or conn.closed:
        return
    if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        with suppress(psycopg.Error):
            conn.rollback()


class DatabaseUnavailable(psycopg.OperationalError):
    """PostgreSQL is down or hung (circuit open, or no connection in time): a 503."""


class PostgresStore:
    """Owns the connection pool; hands out transactions.

    Every connection carries `statement_timeout`, `lock_timeout` and
    `idle_in_transaction_session_timeout`, so no statement waits unbounded on
    a lock or a runaway query. A request waits at most `wait_seconds` for a
    connection and gives up at once while the `breaker` is open. A server that
    stopped answering (SIGSTOP, a frozen VM) enforces none of its own timeouts:
    `cut_stalled()` (called by the health monitor when its probe hangs) shuts
    down the sockets of connections busy for longer than a moment, so their
    requests fail with a 503 instead of waiting for the server to come back.
    """

    def __init__(
        self,
        conninfo: str,
        schema: str,
        extensions_schema: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        outbox: bool = True,
        statement_timeout_ms: int = 30_000,
        lock_timeout_ms: int = 5_000,
        wait_seconds: float = 5.0,
        breaker: Breaker | None = None,
    ) -> None:
        self.outbox = outbox
        self.schema = schema
        self.extensions_schema = extensions_schema
        self.conninfo = conninfo
        self.wait_seconds = wait_seconds
        self.breaker = breaker or Breaker("postgres")
        self.session_settings = session_settings(
            search_path(schema, extensions_schema), statement_timeout_ms, lock_timeout_ms
        )
        settings = self.session_settings

        def configure(conn: psycopg.Connection[Any]) -> None:
            for name, value in settings.items():
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))
            conn.commit()

        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
            configure=configure,
            open=False,
            name=f"memory-{schema}",
        )
        self._busy: dict[int, tuple[psycopg.Connection[Any], float]] = {}
        self._busy_lock = threading.Lock()

    def open(self, wait_seconds: float = 30.0) -> None:
        self.pool.open(wait=True, timeout=wait_seconds)

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, or DatabaseUnavailable within `wait_seconds`.

        Only a connection that broke counts against the circuit: a lock or
        statement timeout, a constraint violation or a busy pool are answers
        from a working server (the health probe judges the server itself)."""
        conn = self._checkout()
        key = id(conn)
        with self._busy_lock:
            self._busy[key] = (conn, time.monotonic())
        answered = True
        try:
            yield conn
            # like psycopg_pool's own connection(): a transaction the block
            # left open (statements outside conn.transaction()) is committed
            if conn.info.transaction_status == TransactionStatus.INTRANS:
                conn.commit()
        except psycopg.OperationalError as exc:
            answered = not conn.broken
            if not answered:
                self.breaker.failure(type(exc).__name__)
            _rollback(conn)
            raise
        except BaseException:
            _rollback(conn)
            raise
        finally:
            with self._busy_lock:
                self._busy.pop(key, None)
            self.pool.putconn(conn)
            if answered:
                self.breaker.success()

    def _checkout(self) -> psycopg.Connection[Any]:
        if not self.breaker.allow():
            raise DatabaseUnavailable("the database is unavailable (circuit open)")
        # in short slices, so a request waiting for a connection learns at once
        # that the circuit opened instead of waiting out the whole timeout
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                return self.pool.getconn(timeout=min(0.25, self.wait_seconds))
            except PoolClosed as exc:
                raise DatabaseUnavailable(f"no database connection: {exc}") from exc
            except PoolTimeout as exc:
                if time.monotonic() >= deadline:
                    raise DatabaseUnavailable(f"no database connection: {exc}") from exc
                if self.breaker.state == "open":
                    raise DatabaseUnavailable("the database is unavailable (circuit open)") from exc

    def cut_stalled(self, older_than: float = 1.0) -> int:
        """Shut down the sockets of connections checked out for `older_than`
        seconds or more: their blocked reads return at once with an error."""
        now = time.monotonic()
        with self._busy_lock:
            stalled = [c for c, since in self._busy.values() if now - since >= older_than]
        for conn in stalled:
            try:
                fd = conn.pgconn.socket
                with socket.socket(fileno=os.dup(fd)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except (OSError, psycopg.Error):
                continue  # already closed
        if stalled:
            log.warning("database not answering: cut %d stalled connection(s)", len(stalled))
        return len(stalled)

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        with self.connection() as conn, conn.transaction():
            yield Tx(conn, self.outbox)

    @contextmanager
    def reads(self) -> Iterator[Tx]:
        """Read-only statements that need no common snapshot: each runs on its own
        (autocommit), sparing the BEGIN and COMMIT round trips. Recall uses it:
        a hit deleted between two of its reads is dropped, not half-answered."""
        with self.connection() as conn:
            conn.autocommit = True
            try:
                yield Tx(conn, self.outbox)
            finally:
                if not conn.closed:
                    conn.autocommit = False

    def probe(self) -> dict[str, Any]:
        """The health probe: a fresh connection (never the pool, which requests
        may have exhausted), bounded by its own short timeouts."""
        with psycopg.connect(
            self.conninfo, connect_timeout=CONNECT_TIMEOUT_SECONDS, autocommit=True
        ) as conn:
            conn.execute("SELECT set_config('statement_timeout', '1000', false)")
            conn.execute("SELECT 1")
        return {"schema": self.schema}

    def stream_export(self, batch: int = 500) -> Iterator[tuple[str, dict[str, Any]]]:
        """All memories then all links, from one snapshot (server-side cursor)."""
        with self.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            with conn.cursor(name="export_memories", row_factory=dict_row) as cur:
                cur.itersize = batch
                cur.execute(f"SELECT {MEMORY_COLUMNS} FROM memories ORDER BY created_at, id")
                for row in cur:
                    yield "memory", row
            with conn.cursor(name="export_links", row_factory=dict_row) as cur:
                cur.itersize = batch
                cur.execute(f"SELECT {LINK_COLUMNS} FROM links ORDER BY created_at, from_id")
                for row in cur:
                    yield "link", row

    def stats(self) -> dict[str, Any]:
        with self.tx() as tx:
            c = tx.conn
            expired = sql.SQL("SELECT count(*) FROM memories WHERE {}").format(EXPIRED)
            by_type = {
                r["memory_type"]: int(r["n"])
                for r in c.execute(
                    "SELECT memory_type, count(*) AS n FROM memories GROUP BY memory_type"
                )
            }
            one = c.execute(
                sql.SQL("SELECT (SELECT count(*) FROM links) AS links, ({}) AS expired").format(
                    expired
                )
            ).fetchone()
            assert one is not None
            backlog = _backlog(c)
            # only relations of this schema: the role cannot see others' sizes anyway
            sizes = {
                r["relname"]: int(r["bytes"])
                for r in c.execute(
                    "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
                    (self.schema,),
                )
            }
        return {
            "memories_by_type": by_type,
            "links": int(one["links"]),
            "index_pending": backlog.index_pending,
            "expired": int(one["expired"]),
            "outbox_lag": backlog.outbox_rows,
            "outbox_oldest_age_seconds": backlog.outbox_oldest_age_seconds,
            "table_bytes": sizes,
        }

    def backlog(self) -> Backlog:
        """What the background jobs still have to do; read by /stats and /metrics."""
        with self.reads() as tx:
            return _backlog(tx.conn)


@dataclass(frozen=True)
class Backlog:
    """Work the index catch-up and the outbox relay have not done yet."""

    index_pending: int  # memories whose vector the index has not confirmed
    index_tombstones: int  # deleted memories whose vector may still be in the index
    outbox_rows: int  # events not yet published
    outbox_oldest_age_seconds: float | None  # age of the oldest of them; None: none


def _backlog(cur: psycopg.Cursor[Any]) -> Backlog:
    # Each count reads a partial index (memories_pending_idx, outbox_unsent_idx):
    # it costs the size of the backlog, not of the tenant's data.
    row = cur.execute(
        """SELECT (SELECT count(*) FROM memories WHERE index_pending) AS pending,
                  (SELECT count(*) FROM vector_tombstones) AS tombstones,
                  (SELECT count(*) FROM outbox WHERE sent_at IS NULL) AS outbox,
                  (SELECT extract(epoch FROM now() - min(occurred_at))
                     FROM outbox WHERE sent_at IS NULL) AS oldest"""
    ).fetchone()
    assert row is not None
    oldest = row["oldest"]
    return Backlog(
        int(row["pending"]),
        int(row["tombstones"]),
        int(row["outbox"]),
        float(oldest) if oldest is not None else None,
    )


class AccessLog:
    """Access counts of recall hits, kept off the request path and written in batches.

    Recall used to UPDATE its hits inside the request: a write, row locks and
    WAL on every search, plus two round trips. Now a search only records ids
    here; a background thread adds the counts every `interval` seconds (sooner
    when `max_pending` memories wait) in one UPDATE, and `close()` writes what
    is left, so a clean shutdown loses no count. A crash loses at most one
    interval of counts (they feed decay and statistics, nothing else). A failed
    write keeps the counts for the next try.
    """

    def __init__(
        self, store: PostgresStore, *, interval: float = 1.0, max_pending: int = 5000
    ) -> None:
        self._store = store
        self._interval = interval
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: dict[uuid.UUID, tuple[int, datetime]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, ids: Sequence[uuid.UUID]) -> None:
        if not ids:
            return
        now = datetime.now(UTC)
        with self._lock:
            for memory_id in ids:
                count = self._pending.get(memory_id, (0, now))[0]
                self._pending[memory_id] = (count + 1, now)
            full = len(self._pending) >= self._max_pending
        if full:
            self._wake.set()

    def pending(self) -> int:
        """Memories with counts not written yet."""
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write the pending counts now; returns how many memories were updated."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            with self._store.tx() as tx:
                tx.add_accesses(batch)
        except Exception as exc:
            with self._lock:  # put them back, merged with what arrived meanwhile
                for memory_id, (count, at) in batch.items():
                    now_count, now_at = self._pending.get(memory_id, (0, at))
                    self._pending[memory_id] = (count + now_count, max(at, now_at))
            log.warning("access counts not written (%d memories kept): %s", len(batch), exc)
            return 0
        return len(batch)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Stop the writer and write what is left (before the pool closes)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()
