-- Progress of named imports (POST /import?import_id=...). Each chunk of an
-- import updates its row in the chunk's own transaction, so `lines` is exactly
-- the last line committed: a client cut off mid-stream resumes after it.
CREATE TABLE imports (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    lines       bigint NOT NULL DEFAULT 0,
    counts      jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
