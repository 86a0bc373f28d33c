"""Outbox relay: unsent outbox rows -> the tenant's Kafka topic, then marked sent.

At-least-once: a row is marked sent only after Kafka acknowledged it (acks=all,
idempotent producer), so a Kafka outage delays events and never loses them. A
crash between delivery and marking re-sends the same event (same event_id), which
consumers deduplicate on.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from uuid import UUID

from confluent_kafka import KafkaError, Message, Producer
from psycopg import sql
from psycopg.rows import dict_row

from memory_runtime.events.envelope import EventError, build_event, encode

log = logging.getLogger("memory_runtime.events")

# Fields a caller may not override: they are what makes delivery safe.
_SAFETY = {"enable.idempotence": True, "acks": "all"}


def in_order_prefix(rows: list[dict[str, Any]], delivered: set[UUID]) -> list[UUID]:
    """The delivered rows (in `seq` order) that may be marked sent: a memory's
    rows after one of its rows that was not delivered stay unsent too, so the
    retry publishes them again after it, never before it."""
    failed: set[UUID] = set()
    sent: list[UUID] = []
    for row in rows:
        if row["id"] in delivered and row["memory_id"] not in failed:
            sent.append(row["id"])
        elif row["id"] not in delivered and "unpublishable" not in row:
            failed.add(row["memory_id"])
    return sent


class OutboxRelay:
    def __init__(
        self,
        pool: Any,  # psycopg_pool.ConnectionPool
        schema: str,
        tenant: str,
        producer_config: dict[str, Any],
        topic: str,
        *,
        delivery_timeout_seconds: float = 30.0,
    ) -> None:
        if not topic:
            raise ValueError("the outbox relay needs a topic")
        if not producer_config.get("bootstrap.servers"):
            raise ValueError("the outbox relay needs bootstrap.servers")
        self._pool = pool
        self._table = sql.Identifier(schema, "outbox")
        self._tenant = tenant
        self._topic = topic
        self._timeout = delivery_timeout_seconds
        timeout_ms = int(delivery_timeout_seconds * 1000)
        self._config: dict[str, Any] = {
            "linger.ms": 5,
            **producer_config,
            **_SAFETY,
            # Every message of a batch is delivered or failed within this bound,
            # so publish_pending() knows the fate of each row before it returns.
            "message.timeout.ms": timeout_ms,
            "request.timeout.ms": min(timeout_ms, 30_000),
        }
        self._producer: Producer | None = None
        self._lock = threading.Lock()  # one publish at a time per relay

    def _get_producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self._config)
        return self._producer

    def publish_pending(self, limit: int = 500) -> int:
        """Publish up to `limit` unsent rows in order; return how many were marked sent."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        with self._lock:
            rows = self._read_unsent(limit)
            if not rows:
                return 0
            sent = in_order_prefix(rows, set(self._publish(rows)))
            if sent:
                self._mark_sent(sent)
            return len(sent)

    def _read_unsent(self, limit: int) -> list[dict[str, Any]]:
        statement = sql.SQL(
            "SELECT id, event_type, memory_id, version, record, reason, occurred_at "
            "FROM {t} WHERE sent_at IS NULL ORDER BY seq LIMIT %s"
        ).format(t=self._table)
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(statement, (limit,))
            return list(cur.fetchall())

    def _publish(self, rows: list[dict[str, Any]]) -> list[UUID]:
        producer = self._get_producer()
        delivered: list[UUID] = []
        fatal: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, msg: Message, event_id: UUID) -> None:
            if err is None:
                delivered.append(event_id)
            else:
                log.warning("event %s not delivered: %s", event_id, err)
                if err.fatal():
                    fatal.append(err)

        for row in rows:
            try:
                event = build_event(row, self._tenant)
            except EventError as exc:
                # Left unsent (visible as lag) rather than dropped or blocking others.
                log.error("outbox row %s cannot be published: %s", row.get("id"), exc)
                row["unpublishable"] = True  # stays unsent, and holds back nothing
                continue
            event_id = row["id"]
            kwargs: dict[str, Any] = {
                "key": event["memory_id"].encode(),
                "value": encode(event),
                "headers": [("event_type", event["type"]), ("event_id", event["event_id"])],
                "on_delivery": lambda err, msg, eid=event_id: on_delivery(err, msg, eid),
            }
            try:
                producer.produce(self._topic, **kwargs)
            except BufferError:
                producer.poll(1.0)  # local queue full: serve callbacks, then retry once
                producer.produce(self._topic, **kwargs)
            producer.poll(0)
        # Waits for every callback: message.timeout.ms bounds it below this margin.
        remaining = producer.flush(self._timeout + 10)
        if remaining:
            log.warning("%d events still queued after flush; they stay unsent", remaining)
        if fatal or remaining:
            # A fatal error poisons the idempotent producer; start a fresh one next time.
            self._producer = None
        return delivered

    def _mark_sent(self, event_ids: list[UUID]) -> None:
        statement = sql.SQL(
            "UPDATE {t} SET sent_at = now() WHERE id = ANY(%s) AND sent_at IS NULL"
        ).format(t=self._table)
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(statement, (event_ids,))

    def lag(self) -> int:
        """Rows not yet published."""
        statement = sql.SQL("SELECT count(*) FROM {t} WHERE sent_at IS NULL").format(t=self._table)
        with self._pool.connection() as conn:
            row = conn.execute(statement).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self._timeout)
            self._producer = None
