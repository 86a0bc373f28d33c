-- The vector engines hold each memory's occurred_at (event time), so the
-- occurred_from/occurred_to filters run inside them like every other filter
-- (before, PostgreSQL applied them to the engine's nearest 150 only, and a
-- narrow window left vector recall short). pgvector's table, in this schema,
-- is filled from the memories; a Qdrant tenant (no such table) has every
-- vector written again by index catch-up, which adds the field to its payload.
DO $$
BEGIN
    IF to_regclass('memory_vectors') IS NOT NULL THEN
        ALTER TABLE memory_vectors ADD COLUMN IF NOT EXISTS occurred_at timestamptz;
        UPDATE memory_vectors v SET occurred_at = m.occurred_at
            FROM memories m WHERE m.id = v.memory_id;
    ELSE
        UPDATE memories m SET index_pending = true
            WHERE NOT m.index_pending
              AND EXISTS (SELECT FROM memory_embeddings e WHERE e.memory_id = m.id);
    END IF;
END $$;
