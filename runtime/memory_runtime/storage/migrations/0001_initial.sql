-- Tenant schema, version 1. Runs as the tenant role with
-- search_path = <tenant schema>, <extensions schema>: unqualified names land
-- in the tenant schema (the runner checks current_schema() first).

CREATE TABLE memories (
    id               uuid PRIMARY KEY,
    coordinate       float8[] NOT NULL
                     CHECK (cardinality(coordinate) BETWEEN 1 AND 16),
    memory_type      text NOT NULL CHECK (memory_type IN ('episodic', 'semantic')),
    payload          jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(payload) = 'object'),
    text             text NOT NULL DEFAULT '',
    importance       float8 NOT NULL DEFAULT 0.5 CHECK (importance >= 0 AND importance <= 1),
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    tags             text[] NOT NULL DEFAULT '{}',
    agent_id         text,
    user_id          text,
    session_id       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    last_accessed_at timestamptz NOT NULL DEFAULT now(),
    access_count     bigint NOT NULL DEFAULT 0,
    version          bigint NOT NULL DEFAULT 1,
    expires_at       timestamptz,
    -- The vector is kept here too: PostgreSQL is the source of truth and the
    -- index (pgvector table or Qdrant) can be rebuilt from these rows.
    embedding        float4[],
    -- true from the write transaction until the index confirmed the vector
    index_pending    boolean NOT NULL DEFAULT false,
    tsv              tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
);

-- One address per memory: float8 equality treats -0 and 0 alike, NaN is refused upstream.
CREATE UNIQUE INDEX memories_coordinate_key ON memories (coordinate);
CREATE INDEX memories_tsv_idx ON memories USING gin (tsv);
CREATE INDEX memories_tags_idx ON memories USING gin (tags);
CREATE INDEX memories_metadata_idx ON memories USING gin (metadata jsonb_path_ops);
CREATE INDEX memories_user_idx ON memories (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX memories_agent_idx ON memories (agent_id) WHERE agent_id IS NOT NULL;
CREATE INDEX memories_session_idx ON memories (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX memories_created_idx ON memories (created_at);
CREATE INDEX memories_expires_idx ON memories (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX memories_pending_idx ON memories (updated_at) WHERE index_pending;
CREATE INDEX memories_episodic_access_idx ON memories (last_accessed_at)
    WHERE memory_type = 'episodic';

CREATE TABLE links (
    from_id    uuid NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
    to_id      uuid NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
    type       text NOT NULL CHECK (length(type) BETWEEN 1 AND 64),
    strength   float8 NOT NULL DEFAULT 1 CHECK (strength >= 0 AND strength <= 1),
    metadata   jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    version    bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (from_id, to_id, type),
    CHECK (from_id <> to_id)
);
CREATE INDEX links_to_idx ON links (to_id);

-- Transactional outbox, read by memory_runtime.events.relay.OutboxRelay.
CREATE TABLE outbox (
    id          uuid PRIMARY KEY,
    event_type  text NOT NULL CHECK (event_type IN (
                    'memory.created', 'memory.updated', 'memory.deleted',
                    'link.created', 'link.deleted')),
    memory_id   uuid NOT NULL,
    version     bigint,
    record      jsonb,
    reason      text,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX outbox_unsent_idx ON outbox (occurred_at) WHERE sent_at IS NULL;

-- Vectors whose delete from the index has not been confirmed yet (index down
-- at delete time); the indexer job retries them.
CREATE TABLE vector_tombstones (
    memory_id  uuid PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
