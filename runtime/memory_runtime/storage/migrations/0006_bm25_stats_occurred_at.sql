-- Event time: when what a memory records happened (a conversation stored
-- after the fact), default its creation time. Recency weighting, the
-- occurred_from/occurred_to filters and export/import use it.
ALTER TABLE memories ADD COLUMN occurred_at timestamptz;
UPDATE memories SET occurred_at = created_at;
ALTER TABLE memories ALTER COLUMN occurred_at SET NOT NULL;
ALTER TABLE memories ALTER COLUMN occurred_at SET DEFAULT now();
CREATE INDEX memories_occurred_idx ON memories (occurred_at);

-- Keyword recall ranks with Okapi BM25 (docs/RECALL.md), which needs the
-- tenant's own corpus statistics: how many memories hold each stem (document
-- frequency, for IDF) and how long memories are on average. They live here,
-- in the tenant's schema, counted from its own rows only.
--
-- keyword_stats is append-only for writers: a trigger adds one row per stem a
-- statement added or removed (docs = +n / -n), plus one corpus row (term '')
-- whose docs and tokens are the change in memory count and total length. A
-- stem's document frequency is the sum of its rows. Writers never update a
-- shared row, so concurrent writes neither wait for each other nor deadlock,
-- and every count commits or rolls back with the rows it counts. Every 256th
-- counting statement folds the rows into one per stem (keyword_stats_fold),
-- when no other fold runs, so a stem has at most a few hundred rows to sum.
CREATE TABLE keyword_stats (
    term   text NOT NULL,
    docs   bigint NOT NULL,
    tokens bigint NOT NULL DEFAULT 0
);
CREATE INDEX keyword_stats_term_idx ON keyword_stats (term);
CREATE SEQUENCE keyword_stats_writes;

-- A memory's length for BM25: its indexed tokens (stop words are not indexed).
CREATE FUNCTION tsv_tokens(tsv tsvector) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (SELECT coalesce(sum(greatest(1, cardinality(u.positions))), 0) FROM unnest(tsv) AS u);

CREATE FUNCTION keyword_stats_fold() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- one fold at a time (two could delete rows in different orders)
    IF NOT pg_try_advisory_xact_lock(hashtext(current_schema() || ':keyword_stats')) THEN
        RETURN;
    END IF;
    WITH gone AS (DELETE FROM keyword_stats RETURNING term, docs, tokens)
    INSERT INTO keyword_stats (term, docs, tokens)
        SELECT term, sum(docs), sum(tokens) FROM gone GROUP BY term
        HAVING sum(docs) <> 0 OR sum(tokens) <> 0;
END $$;

-- Statement-level, with transition tables: one delta row per stem per
-- statement. For UPDATE only rows whose text changed count (access counting
-- updates many rows and changes no text).
CREATE FUNCTION keyword_stats_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO keyword_stats (term, docs, tokens)
            SELECT l, count(*), 0 FROM new_rows, unnest(tsvector_to_array(tsv)) AS l GROUP BY l
            UNION ALL
            SELECT '', count(*), coalesce(sum(tsv_tokens(tsv)), 0) FROM new_rows HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO keyword_stats (term, docs, tokens)
            SELECT l, -count(*), 0 FROM old_rows, unnest(tsvector_to_array(tsv)) AS l GROUP BY l
            UNION ALL
            SELECT '', -count(*), -coalesce(sum(tsv_tokens(tsv)), 0) FROM old_rows
            HAVING count(*) > 0;
    ELSE
        INSERT INTO keyword_stats (term, docs, tokens)
            SELECT term, sum(n), sum(t) FROM (
                SELECT l AS term, 1 AS n, 0::bigint AS t
                    FROM new_rows n JOIN old_rows o USING (id), unnest(tsvector_to_array(n.tsv)) AS l
                    WHERE n.tsv IS DISTINCT FROM o.tsv
                UNION ALL
                SELECT l, -1, 0
                    FROM new_rows n JOIN old_rows o USING (id), unnest(tsvector_to_array(o.tsv)) AS l
                    WHERE n.tsv IS DISTINCT FROM o.tsv
                UNION ALL
                SELECT '', 0, tsv_tokens(n.tsv) - tsv_tokens(o.tsv)
                    FROM new_rows n JOIN old_rows o USING (id) WHERE n.tsv IS DISTINCT FROM o.tsv
            ) AS change GROUP BY term HAVING sum(n) <> 0 OR sum(t) <> 0;
    END IF;
    IF nextval('keyword_stats_writes') % 256 = 0 THEN
        PERFORM keyword_stats_fold();
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER memories_keyword_stats_insert AFTER INSERT ON memories
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION keyword_stats_count();
CREATE TRIGGER memories_keyword_stats_delete AFTER DELETE ON memories
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION keyword_stats_count();
CREATE TRIGGER memories_keyword_stats_update AFTER UPDATE ON memories
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION keyword_stats_count();

-- the rows already there
INSERT INTO keyword_stats (term, docs, tokens)
    SELECT l, count(*), 0 FROM memories, unnest(tsvector_to_array(tsv)) AS l GROUP BY l
    UNION ALL
    SELECT '', count(*), coalesce(sum(tsv_tokens(tsv)), 0) FROM memories;
