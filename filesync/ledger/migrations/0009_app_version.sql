-- The version of the app's row each file was last read from (its xmin): enqueue then skips rows whose version
-- it has seen, without comparing their values, so its cost follows what changed, not the rows not yet copied.
ALTER TABLE {schema}.files ADD COLUMN IF NOT EXISTS app_version xid;
-- The catalog's rows not yet copied, by the predicate the engine's queries use (`copied IS NOT TRUE`): an
-- index on `NOT copied` cannot serve it.
CREATE INDEX IF NOT EXISTS catalog_due_idx ON {schema}.catalog (key) WHERE copied IS NOT TRUE;
DROP INDEX IF EXISTS {schema}.catalog_not_copied_idx;
