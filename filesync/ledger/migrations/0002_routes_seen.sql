-- Remembers the routes the last run used, so the backfill scan runs only when they change.
CREATE TABLE IF NOT EXISTS {schema}.meta (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
