-- Full-text index without a pending list. With GIN's fastupdate (the default)
-- new rows wait in an unsorted pending list (up to 4 MB) until a vacuum merges
-- it, and every keyword search scans that list linearly: right after 10k
-- inserts into 100k memories keyword search went from ~12 ms to ~20 ms (p50).
-- Writing each row into the index directly costs ~20 us more per insert,
-- small next to the rest of a store (embedding, HNSW insert, transaction).
ALTER INDEX memories_tsv_idx SET (fastupdate = off);
