-- The app's table as the README describes it, for the bundled PostgreSQL of the `local-db` compose profile
-- (run once, when its data volume is first created). Your own app's database already has this table.
CREATE TABLE IF NOT EXISTS "File" (
  id                   text PRIMARY KEY,
  path                 text NOT NULL,
  "dateTaken"          timestamptz,
  "gpsCoordinates"     text,
  "copiedToCloudflare" boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS "File_not_copied_idx" ON "File" (id) WHERE NOT "copiedToCloudflare";
