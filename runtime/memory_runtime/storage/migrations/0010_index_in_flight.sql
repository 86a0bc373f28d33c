-- A store on pgvector commits its vectors (their own transaction, written while
-- the memories' one runs) just before its memories, with the memories already
-- written as indexed: no pending flag to set and clear afterwards (an UPDATE
-- of every stored row, in every index of memories). What covers a crash or a
-- failed commit between the two commits: the vectors' transaction leaves one
-- row here per vector, and the memories' transaction deletes them before it
-- commits. A row still here after a grace period belongs to memories that
-- never committed: catch-up deletes its vector (a new memory) or marks the
-- memory pending (an update), so that the index follows the memories again.
CREATE TABLE index_in_flight (
    memory_id uuid NOT NULL,
    version bigint NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (memory_id, version)
);
