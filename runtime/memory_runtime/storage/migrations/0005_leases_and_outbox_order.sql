-- Background job leases (memory_runtime.jobs.locks.PostgresLease): one holder
-- per job across every replica, with or without Redis; a crashed holder's
-- lease runs out within seconds. In the tenant's own schema, so no other
-- tenant can take, hold or even see them.
CREATE TABLE job_leases (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- Rows locked FOR UPDATE to serialise work inside this schema (the quota
-- check), instead of database-wide advisory locks whose keys anyone can compute.
CREATE TABLE runtime_locks (name text PRIMARY KEY);
INSERT INTO runtime_locks (name) VALUES ('quota');

-- Publish order. occurred_at is the transaction's start, not its commit: two
-- updates of one memory could start in one order and commit in the other.
-- seq is taken when the outbox row is written, which for a memory's events is
-- after its row lock is held, so per memory it follows the version order.
ALTER TABLE outbox ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
DROP INDEX outbox_unsent_idx;
CREATE INDEX outbox_unsent_seq_idx ON outbox (seq) WHERE sent_at IS NULL;
