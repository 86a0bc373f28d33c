-- Fold only the stems that have more than one row (0006 rewrote every row of
-- keyword_stats on each fold): with a large vocabulary, a fold then costs a
-- scan of the table plus the stems written since the last fold, not a rewrite
-- of the whole vocabulary every 256 writing statements.
CREATE OR REPLACE FUNCTION keyword_stats_fold() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- one fold at a time (two could delete rows in different orders)
    IF NOT pg_try_advisory_xact_lock(hashtext(current_schema() || ':keyword_stats')) THEN
        RETURN;
    END IF;
    WITH split AS (SELECT term FROM keyword_stats GROUP BY term HAVING count(*) > 1),
    gone AS (
        DELETE FROM keyword_stats s USING split WHERE s.term = split.term
        RETURNING s.term, s.docs, s.tokens)
    INSERT INTO keyword_stats (term, docs, tokens)
        SELECT term, sum(docs), sum(tokens) FROM gone GROUP BY term
        HAVING sum(docs) <> 0 OR sum(tokens) <> 0;
END $$;
