-- The run that last recorded a file's outcome (complete, failed, waiting, skipped): `filesync report --run ID`
-- lists the files a run touched. The outcome queries find the lease holder's running run; the partial index
-- keeps that lookup to the few running runs however long the history grows.
ALTER TABLE {schema}.files ADD COLUMN IF NOT EXISTS run_id bigint;
CREATE INDEX IF NOT EXISTS runs_running_idx ON {schema}.runs (worker) WHERE status = 'running';
