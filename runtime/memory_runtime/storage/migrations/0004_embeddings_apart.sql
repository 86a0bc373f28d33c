-- Vectors move out of the memories heap into a table of their own.
--
-- A 384-float vector is ~1.5 kB: too small for TOAST (tried only for rows over
-- ~2 kB), so it sat inline in every memories row, 1.5 of each row's 1.9 kB.
-- No recall, filter or full-text query reads it (the vector index has its own
-- copy), yet they all paid for it: at 100k memories the heap was 230 MB instead
-- of 44 MB, five times the pages per scan, and too big for the shared buffers
-- it competed for. The vector is still PostgreSQL's to keep (the index can be
-- rebuilt from it), one row per memory that has one, gone with its memory.
CREATE TABLE memory_embeddings (
    memory_id uuid PRIMARY KEY REFERENCES memories (id) ON DELETE CASCADE,
    embedding float4[] NOT NULL
);
INSERT INTO memory_embeddings (memory_id, embedding)
    SELECT id, embedding FROM memories WHERE embedding IS NOT NULL;
ALTER TABLE memories DROP COLUMN embedding;
-- DROP COLUMN only hides the column; rewrite the table so the vectors leave its
-- pages now (CLUSTER rewrites inside this transaction, VACUUM FULL cannot).
-- The table is locked while it is rewritten: seconds per 100k memories.
CLUSTER memories USING memories_pkey;
ALTER TABLE memories SET WITHOUT CLUSTER;
