"""PostgresStore.reads(): statements without a transaction around them, and the
connection handed back to the pool as it came (transactions for the next user)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import pq

from memory_runtime.storage.postgres import PostgresStore
from tests.integration.runtime.conftest import Tenant

pytestmark = pytest.mark.integration


@pytest.fixture
def store(migrated: Tenant) -> Iterator[PostgresStore]:
    s = PostgresStore(migrated.dsn, migrated.schema, "extensions", min_size=1, max_size=1)
    s.open()
    yield s
    s.close()


def test_reads_run_outside_a_transaction_and_restore_the_connection(store: PostgresStore) -> None:
    with store.reads() as tx:
        assert tx.count() == 0
        # no BEGIN was sent: nothing is open after the statement
        assert tx.conn.connection.info.transaction_status == pq.TransactionStatus.IDLE
    with store.tx() as tx:  # the pool's only connection again
        assert tx.count() == 0
        assert not tx.conn.connection.autocommit
        assert tx.conn.connection.info.transaction_status == pq.TransactionStatus.INTRANS


def test_a_failed_read_leaves_the_connection_usable(store: PostgresStore) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable), store.reads() as tx:
        tx.conn.execute("SELECT * FROM no_such_table")
    with store.tx() as tx:
        assert not tx.conn.connection.autocommit
        assert tx.count() == 0
