-- A file handed back because a destination was stopped for a run (credentials refused, quota) is not
-- claimed again by that run; the next run takes it, with no attempt counted.
ALTER TABLE {schema}.files ADD COLUMN IF NOT EXISTS deferred_run bigint;
-- Enqueue remembers when it last ran, so replicas ticking on one schedule do not scan the app table
-- one after the other within the same few seconds.
INSERT INTO {schema}.meta (key, value) VALUES ('enqueued_at', '-infinity') ON CONFLICT (key) DO NOTHING;
