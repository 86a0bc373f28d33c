-- Counting an access (recall hits, GET) changes access_count and
-- last_accessed_at. Make that a HOT update: the new row version stays on its
-- page and none of the table's indexes (tsvector GIN, tags, metadata,
-- coordinate, scopes...) gets a new entry. Before, every counted access wrote
-- an entry into each index and grew the GIN pending list that every keyword
-- search then has to scan.
--
-- 1. No index may cover those columns. memories_episodic_access_idx did, and
--    nothing could use it: pruning compares importance * 0.5^(age/half-life)
--    with a threshold, an expression over two columns and two settings.
DROP INDEX IF EXISTS memories_episodic_access_idx;
-- 2. Pages need room for the new version: leave 15% free. Applies to pages
--    written from now on; existing full pages keep their fill until rewritten
--    (VACUUM FULL or pg_repack, an operator's choice).
ALTER TABLE memories SET (fillfactor = 85);
