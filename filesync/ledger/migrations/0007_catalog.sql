-- The catalog: every object of the source when there is no app table (`filesync scan`, FILESYNC_CATALOG).
-- Runs read it through catalog_files, an updatable view shaped like an app table (key as id and path),
-- so enqueue, the flag and everything after work unchanged. Objects gone from the source, and objects the
-- source cannot give bytes for (a Google Docs file: metadata 'skip'), stay listed but are not copied.
CREATE TABLE IF NOT EXISTS {schema}.catalog (
    key          text PRIMARY KEY,
    size         bigint,
    etag         text,
    content_type text,
    modified     timestamptz,
    metadata     jsonb NOT NULL DEFAULT '{{}}',
    date_taken   text GENERATED ALWAYS AS (metadata ->> 'dateTaken') STORED,
    gps          text GENERATED ALWAYS AS (metadata ->> 'gpsCoordinates') STORED,
    skip         text GENERATED ALWAYS AS (metadata ->> 'skip') STORED,
    copied       boolean NOT NULL DEFAULT false,
    gone         boolean NOT NULL DEFAULT false,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    changed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS catalog_not_copied_idx ON {schema}.catalog (key) WHERE NOT copied;
CREATE OR REPLACE VIEW {schema}.catalog_files AS
    SELECT key, date_taken, gps, copied FROM {schema}.catalog WHERE NOT gone AND skip IS NULL;
