-- The vector engines hold each memory's occurred_at (event time), so the
-- occurred_from/occurred_to filters run inside them like every other filter.
-- Only the column is added here: filling it in place would rewrite every row
-- of the HNSW graph in this transaction (10k rows: 44 s, measured; a large
-- tenant would outlast the migration timeout at every start). A vector row
-- without it (written before) passes the engines' event-time filter and
-- PostgreSQL decides for it (filters.sql_where, as before); it gets the field
-- when it is written again. Qdrant payloads likewise.
DO $$
BEGIN
    IF to_regclass('memory_vectors') IS NOT NULL THEN
        ALTER TABLE memory_vectors ADD COLUMN IF NOT EXISTS occurred_at timestamptz;
    END IF;
END $$;
