-- Read-only queries of the file browser (GET /api/files, /api/files/{id}), loaded by filesync.ledger.browse.
-- {schema} is filesync's schema; {app}, {app_id} and {app_copied} are the app's table and columns. States are
-- the operator's, as in reports.sql: a claimed file is `in_progress`, a pending file not due yet is `waiting`.

-- name: browse_files
-- One page of files in id order after a keyset cursor, filtered by operator's state, destination and id or path.
SELECT x.* FROM (
    SELECT f.file_id, f.path,
           CASE WHEN f.state = 'pending' AND f.claimed_until > now() THEN 'in_progress'
                WHEN f.state = 'pending' AND f.next_attempt_at > now() THEN 'waiting'
                ELSE f.state END AS state,
           f.kind, f.mime, f.size, f.attempts, f.next_attempt_at, f.error_class, f.error_status, f.error,
           f.first_seen, f.updated_at, f.done_at
    FROM {schema}.files AS f
    WHERE (%(after)s::text IS NULL OR f.file_id > %(after)s::text)
      AND (%(sink)s::text IS NULL
           OR EXISTS (SELECT 1 FROM {schema}.transfers AS t WHERE t.file_id = f.file_id AND t.sink = %(sink)s::text))
      -- strpos, not LIKE: a percent sign or underscore typed is a character to find, not a wildcard
      AND (%(q)s::text IS NULL OR strpos(lower(f.file_id), lower(%(q)s::text)) > 0
           OR strpos(lower(coalesce(f.path, '')), lower(%(q)s::text)) > 0)
) AS x
WHERE %(state)s::text IS NULL OR x.state = %(state)s::text
ORDER BY x.file_id
LIMIT %(limit)s

-- name: browse_transfers
-- Every destination's transfer of these files: state, remote id and URL, bytes, last error and attempts.
SELECT file_id, sink, state, attempts, remote_id, remote_url, bytes, checksum, error_class, error_status, error,
       replace, resume_token IS NOT NULL, updated_at, done_at
FROM {schema}.transfers
WHERE file_id = ANY(%(ids)s::text[])
ORDER BY file_id, sink

-- name: browse_file
-- One file's ledger row, with the lease a worker holds on it now and the run that handed it back, if any.
SELECT f.file_id, f.path,
       CASE WHEN f.state = 'pending' AND f.claimed_until > now() THEN 'in_progress'
            WHEN f.state = 'pending' AND f.next_attempt_at > now() THEN 'waiting'
            ELSE f.state END,
       f.kind, f.mime, f.size, f.attempts, f.next_attempt_at, f.error_class, f.error_status, f.error,
       f.first_seen, f.updated_at, f.done_at, f.date_taken, f.gps,
       CASE WHEN f.claimed_until > now() THEN f.claimed_by END, CASE WHEN f.claimed_until > now() THEN f.claimed_until END,
       f.deferred_run
FROM {schema}.files AS f
WHERE f.file_id = %(file_id)s

-- name: browse_names
-- The destination names the file took at path-based destinations (first come, first served).
SELECT sink, name, claimed_at FROM {schema}.names WHERE file_id = %(file_id)s ORDER BY sink, name

-- name: browse_app_flag
-- The app's copied flag for the file, as its own table holds it (no row: the app no longer lists the file).
SELECT a.{app_copied} IS TRUE FROM {app} AS a WHERE a.{app_id}::text = %(file_id)s LIMIT 1
