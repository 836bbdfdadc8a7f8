-- Claims order by (next_attempt_at, file_id). Rows enqueued in one pass share a due time, so an index on
-- next_attempt_at alone cannot give that order and every claim sorted the whole backlog (bench/README.md:
-- 35 ms per claim at 100k rows, 3 ms with this index).
CREATE INDEX IF NOT EXISTS files_due_order_idx ON {schema}.files (next_attempt_at, file_id) WHERE state = 'pending';
DROP INDEX IF EXISTS {schema}.files_due_idx;
