"""PostgresStore.reads(): statements without a transaction around them, and the
connection handed back to the pool as it came (transactions for the next user)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import pq

from memory_runtime.storage.postgres import PostgresStore

pytestmark = pytest.mark.integration


def test_reads_run_outside_a_transaction_and_restore_the_connection(
    pg_store: PostgresStore,
) -> None:
    with pg_store.reads() as tx:
        assert tx.count() == 0
        # no BEGIN was sent: nothing is open after the statement
        assert tx.conn.connection.info.transaction_status == pq.TransactionStatus.IDLE
    with pg_store.tx() as tx:  # the pool's only connection again
        assert tx.count() == 0
        assert not tx.conn.connection.autocommit
        assert tx.conn.connection.info.transaction_status == pq.TransactionStatus.INTRANS


def test_a_failed_read_leaves_the_connection_usable(pg_store: PostgresStore) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable), pg_store.reads() as tx:
        tx.conn.execute("SELECT * FROM no_such_table")
    with pg_store.tx() as tx:
        assert not tx.conn.connection.autocommit
        assert tx.count() == 0


def test_a_block_on_a_store_connection_commits_like_the_pools_own(
    pg_store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    """store.connection() replaces psycopg_pool's connection() for every
    adapter (pgvector, relay): statements outside conn.transaction() are
    committed at the end of the block, rolled back on an error."""
    with pg_store.connection() as conn:
        conn.execute("INSERT INTO runtime_locks (name) VALUES ('kept')")

    def failing_block() -> None:
        with pg_store.connection() as conn:
            conn.execute("INSERT INTO runtime_locks (name) VALUES ('dropped')")
            raise RuntimeError("the block failed")

    with pytest.raises(RuntimeError):
        failing_block()
    with pg_store.connection() as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM runtime_locks")}
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
    assert names == {"quota", "kept"}
    assert "rolling back returned connection" not in caplog.text
