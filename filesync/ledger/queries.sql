-- Named queries, loaded once by filesync.ledger.sql. {schema} is filesync's schema; {app}, {app_id},
-- {app_path}, {app_date}, {app_gps} and {app_copied} are the app's table and columns. All are quoted with
-- psycopg.sql.Identifier; values are always bound parameters.

-- name: enqueue_lock
-- One enqueue at a time per schema: replicas on one schedule would otherwise scan the app table together.
SELECT pg_try_advisory_xact_lock(hashtextextended(%(key)s, 0))

-- name: enqueue_mark
-- Remembers when enqueue ran; returns no row when another worker already enqueued within `window` seconds
-- (replicas on one schedule: the first scans, the others skip). A NULL window always enqueues.
UPDATE {schema}.meta SET value = now()::text, updated_at = now()
WHERE key = 'enqueued_at'
  AND (%(window)s::float8 IS NULL OR value::timestamptz < now() - make_interval(secs => %(window)s::float8))
RETURNING key

-- name: requeue_moved
-- Rows not yet copied whose path changed while some destinations already hold the old path's bytes:
-- those transfers are sent again, replacing what is there (before the upsert below records the new path).
UPDATE {schema}.transfers AS t
SET state = 'pending', replace = true, resume_token = NULL, updated_at = now()
FROM {schema}.files AS f, {app} AS a
WHERE t.file_id = f.file_id AND t.state = 'done' AND f.state <> 'done'
  AND a.{app_copied} IS NOT TRUE AND a.{app_id} IS NOT NULL AND f.file_id = a.{app_id}::text
  AND f.path IS DISTINCT FROM a.{app_path}::text

-- name: enqueue
-- New not-yet-copied rows of the app's table become pending files; a pending, parked or skipped file
-- whose row changed takes the new values (a new path makes it due again with fresh attempts). Dates are
-- read through to_json, whose ISO 8601 form does not depend on the session's DateStyle. A file marked
-- done while this statement waited on its row keeps its state: the DO UPDATE sees the row as committed.
-- Rows the ledger already holds unchanged are left out by an anti-join, not probed by ON CONFLICT: a run with
-- nothing new writes nothing and locks nothing.
INSERT INTO {schema}.files AS f (file_id, path, date_taken, gps)
SELECT DISTINCT ON (a.{app_id}::text)
       a.{app_id}::text, a.{app_path}::text, to_json(a.{app_date}) #>> '{{}}', a.{app_gps}::text
FROM {app} AS a
WHERE a.{app_copied} IS NOT TRUE AND a.{app_id} IS NOT NULL
  AND NOT EXISTS (
        SELECT 1 FROM {schema}.files AS k
        WHERE k.file_id = a.{app_id}::text
          AND (k.state = 'done'  -- a copied file with its flag reset: requeue_reset's, not this statement's
               OR (k.path, k.date_taken, k.gps) IS NOT DISTINCT FROM
                  (a.{app_path}::text, to_json(a.{app_date}) #>> '{{}}', a.{app_gps}::text)))
ORDER BY a.{app_id}::text
ON CONFLICT (file_id) DO UPDATE
SET path = EXCLUDED.path, date_taken = EXCLUDED.date_taken, gps = EXCLUDED.gps,
    state = CASE WHEN f.path IS DISTINCT FROM EXCLUDED.path THEN 'pending' ELSE f.state END,
    attempts = CASE WHEN f.path IS DISTINCT FROM EXCLUDED.path THEN 0 ELSE f.attempts END,
    next_attempt_at = CASE WHEN f.path IS DISTINCT FROM EXCLUDED.path THEN now() ELSE f.next_attempt_at END,
    updated_at = now()
WHERE f.state <> 'done'
  AND (f.path, f.date_taken, f.gps) IS DISTINCT FROM (EXCLUDED.path, EXCLUDED.date_taken, EXCLUDED.gps)

-- name: enqueue_versioned
-- `enqueue` for an app table with row versions (a table, not a view): a row whose version (xmin: any
-- insert or update gives the row a new one) is the one the ledger last read is left out without reading
-- its values, so the anti-join costs an index merge, not a date formatted per row. A changed row takes its
-- new values and version; a new path makes it due again with fresh attempts, as in `enqueue`.
INSERT INTO {schema}.files AS f (file_id, path, date_taken, gps, app_version)
SELECT DISTINCT ON (a.{app_id}::text)
       a.{app_id}::text, a.{app_path}::text, to_json(a.{app_date}) #>> '{{}}', a.{app_gps}::text, a.xmin
FROM {app} AS a
WHERE a.{app_copied} IS NOT TRUE AND a.{app_id} IS NOT NULL
  AND NOT EXISTS (
        SELECT 1 FROM {schema}.files AS k
        WHERE k.file_id = a.{app_id}::text
          AND (k.state = 'done'  -- a copied file with its flag reset: requeue_reset's, not this statement's
               OR k.app_version = a.xmin))
ORDER BY a.{app_id}::text
ON CONFLICT (file_id) DO UPDATE
SET path = EXCLUDED.path, date_taken = EXCLUDED.date_taken, gps = EXCLUDED.gps, app_version = EXCLUDED.app_version,
    state = CASE WHEN f.path IS DISTINCT FROM EXCLUDED.path THEN 'pending' ELSE f.state END,
    attempts = CASE WHEN f.path IS DISTINCT FROM EXCLUDED.path THEN 0 ELSE f.attempts END,
    next_attempt_at = CASE WHEN f.path IS DISTINCT FROM EXCLUDED.path THEN now() ELSE f.next_attempt_at END,
    updated_at = now()
WHERE f.state <> 'done'

-- name: app_has_versions
-- Whether the app's table is a table (plain or partitioned), whose rows carry a version (xmin); a view has none.
SELECT coalesce((SELECT relkind IN ('r', 'p') FROM pg_class WHERE oid = to_regclass(%(table)s)), false)

-- name: requeue_reset
-- Done files whose flag the app reset (it wants the file copied again, usually with new bytes) are due
-- again at once, every destination to be replaced. SKIP LOCKED and a fresh snapshot: a file another
-- worker is marking right now is either locked (skipped) or already shows its flag set (not selected).
WITH reset AS (
    SELECT f.file_id, a.{app_path}::text AS path, to_json(a.{app_date}) #>> '{{}}' AS date_taken,
           a.{app_gps}::text AS gps
    FROM {app} AS a JOIN {schema}.files AS f ON f.file_id = a.{app_id}::text
    WHERE a.{app_copied} IS NOT TRUE AND a.{app_id} IS NOT NULL AND f.state = 'done'
    FOR UPDATE OF f SKIP LOCKED
), stale AS (
    UPDATE {schema}.transfers AS t SET state = 'pending', replace = true, resume_token = NULL, updated_at = now()
    FROM reset WHERE t.file_id = reset.file_id AND t.state = 'done'
)
UPDATE {schema}.files AS f
SET state = 'pending', path = reset.path, date_taken = reset.date_taken, gps = reset.gps, attempts = 0,
    next_attempt_at = now(), error = NULL, error_class = NULL, error_status = NULL, updated_at = now()
FROM reset WHERE f.file_id = reset.file_id

-- name: rows_without_id
-- App rows filesync cannot track (their id is NULL): counted for `status` and the run summary.
SELECT count(*) FROM {app} AS a WHERE a.{app_id} IS NULL AND a.{app_copied} IS NOT TRUE

-- name: analyze_files
-- Fresh statistics after a large enqueue, so the claim's plan fits the backlog it now has.
ANALYZE {schema}.files

-- name: id_is_unique
-- Whether the app's id column has a unique index of its own: then the duplicate-id pass has nothing to find.
SELECT EXISTS (
    SELECT 1 FROM pg_index AS i JOIN pg_attribute AS c ON c.attrelid = i.indrelid AND c.attnum = i.indkey[0]
    WHERE i.indrelid = to_regclass(%(table)s) AND i.indisunique AND i.indnkeyatts = 1 AND c.attname = %(column)s
)

-- name: duplicate_ids
-- Ids that appear on more than one not-yet-copied row cannot be told apart: park them with a reason.
UPDATE {schema}.files AS f
SET state = 'failed', error_class = 'invalid', error_status = NULL,
    error = 'duplicate id in the app table', updated_at = now()
FROM (SELECT a.{app_id}::text AS id FROM {app} AS a
      WHERE a.{app_copied} IS NOT TRUE GROUP BY 1 HAVING count(*) > 1) AS d
WHERE f.file_id = d.id AND f.state = 'pending'

-- name: claim
-- Lease up to `limit` due pending files to a worker, oldest due first, with what each already has at its
-- destinations (done, parked, resume tokens, to replace), in one round trip; rows another worker is
-- claiming are skipped.
WITH due AS (
    SELECT file_id FROM {schema}.files
    WHERE state = 'pending' AND next_attempt_at <= now()
      AND (claimed_until IS NULL OR claimed_until < now())
      AND NOT (file_id = ANY(%(busy)s::text[]))  -- a stalled transfer of this process is not doubled
      AND (%(run)s::bigint IS NULL OR deferred_run IS DISTINCT FROM %(run)s::bigint)  -- deferred by this run
      -- `filesync run` selections: ids, path globs (as a regular expression), a dateTaken range
      AND {schema}.selected(file_id, path, date_taken, %(ids)s::text[], %(path_re)s::text, %(since)s::timestamptz,
                             %(until)s::timestamptz)
    ORDER BY next_attempt_at, file_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {schema}.files AS f
    SET claimed_by = %(worker)s, claimed_until = now() + make_interval(secs => %(lease)s), updated_at = now()
    FROM due
    WHERE f.file_id = due.file_id
    RETURNING f.file_id, f.path, f.date_taken, f.gps, f.attempts, f.next_attempt_at
)
SELECT c.file_id, c.path, c.date_taken, c.gps, c.attempts,
       coalesce((SELECT json_agg(json_build_array(t.sink, t.state, t.resume_token, coalesce(t.error_class, 'client'),
                                                  coalesce(t.error, ''), t.replace))
                 FROM {schema}.transfers AS t WHERE t.file_id = c.file_id), '[]'::json)
FROM claimed AS c
ORDER BY c.next_attempt_at, c.file_id

-- name: heartbeat
-- Extend a worker's leases on the files it is still working on.
UPDATE {schema}.files SET claimed_until = now() + make_interval(secs => %(lease)s)
WHERE claimed_by = %(worker)s AND file_id = ANY(%(ids)s)

-- name: defer
-- Hand a file back uncounted because a destination is stopped for this run; this run will not claim it again.
UPDATE {schema}.files SET claimed_by = NULL, claimed_until = NULL, deferred_run = %(run)s
WHERE claimed_by = %(worker)s AND file_id = %(file_id)s

-- name: release
-- Drop a worker's leases (all, or these files) without counting an attempt: due again at once.
UPDATE {schema}.files SET claimed_by = NULL, claimed_until = NULL
WHERE claimed_by = %(worker)s AND (%(ids)s::text[] IS NULL OR file_id = ANY(%(ids)s))

-- name: claims_on_host
-- A plain prefix comparison: LIKE would read `_` in a host name as a wildcard.
SELECT DISTINCT claimed_by FROM {schema}.files
WHERE claimed_by IS NOT NULL AND left(claimed_by, length(%(prefix)s)) = %(prefix)s

-- name: claim_name
-- Take a destination name for a file (first come, first served) if the worker still holds the file's lease:
-- (lease held, the file that owns the name). The owner is NULL when another worker took the name after this
-- statement's snapshot: asked again, it is there.
WITH lease AS (
    SELECT file_id FROM {schema}.files
    WHERE file_id = %(file_id)s AND claimed_by = %(worker)s AND claimed_until > now()
), taken AS (
    INSERT INTO {schema}.names (sink, name, file_id) SELECT %(sink)s, %(name)s, file_id FROM lease
    ON CONFLICT (sink, name) DO NOTHING
    RETURNING file_id
)
SELECT EXISTS (SELECT 1 FROM lease),
       coalesce((SELECT file_id FROM taken),
                (SELECT file_id FROM {schema}.names WHERE sink = %(sink)s AND name = %(name)s))

-- name: save_token
-- Store (or clear) a transfer's resume token, e.g. a tus upload URL, before its bytes move; only while the
-- worker holds the file's lease (no row back otherwise).
WITH lease AS (
    SELECT file_id FROM {schema}.files
    WHERE file_id = %(file_id)s AND claimed_by = %(worker)s AND claimed_until > now()
    FOR UPDATE
)
INSERT INTO {schema}.transfers (file_id, sink, resume_token)
SELECT file_id, %(sink)s, %(token)s FROM lease
ON CONFLICT (file_id, sink) DO UPDATE SET resume_token = EXCLUDED.resume_token, updated_at = now()
RETURNING file_id

-- name: transfer_done
-- One destination holds the file, recorded in one statement if the worker still holds the lease: the
-- transfer (remote id, URL, bytes, checksum; the replace mark cleared), what inspection found (kind, type,
-- size), and, when every routed destination now holds the file, the file done and the app's flag set. A
-- row whose path moved since `path` was read records nothing but marks the transfer to be sent again.
-- With no `sink`, no transfer is written: the file is marked complete if its transfers were all done
-- earlier (a reset flag, or a crash between the last transfer and the mark).
-- (lease held, path now, recorded, complete).
WITH lease AS (
    SELECT file_id, path FROM {schema}.files
    WHERE file_id = %(file_id)s AND claimed_by = %(worker)s AND claimed_until > now()
    FOR UPDATE
), fresh AS (
    SELECT file_id FROM lease WHERE %(path)s::text IS NULL OR path IS NOT DISTINCT FROM %(path)s::text
), transfer AS (
    INSERT INTO {schema}.transfers AS t (file_id, sink, state, attempts, remote_id, remote_url, bytes, checksum,
                                         done_at, resume_token, derivation)
    SELECT file_id, %(sink)s::text, 'done', 1, %(remote_id)s, %(url)s, %(bytes)s, %(checksum)s, now(), NULL,
           %(derivation)s::jsonb
    FROM fresh WHERE %(sink)s::text IS NOT NULL
    ON CONFLICT (file_id, sink) DO UPDATE
    SET state = 'done', attempts = t.attempts + 1, remote_id = EXCLUDED.remote_id, remote_url = EXCLUDED.remote_url,
        bytes = EXCLUDED.bytes, checksum = EXCLUDED.checksum, done_at = now(), resume_token = NULL, replace = false,
        derivation = EXCLUDED.derivation,
        error_class = NULL, error_status = NULL, error = NULL, updated_at = now()
), stale AS (
    INSERT INTO {schema}.transfers AS t (file_id, sink, state, replace)
    SELECT file_id, %(sink)s::text, 'pending', true FROM lease
    WHERE NOT EXISTS (SELECT 1 FROM fresh) AND %(sink)s::text IS NOT NULL
    ON CONFLICT (file_id, sink) DO UPDATE SET state = 'pending', replace = true, resume_token = NULL, updated_at = now()
), complete AS (
    SELECT fresh.file_id,
           NOT EXISTS (SELECT 1 FROM unnest(%(routed)s::text[]) AS r(sink)
                       WHERE r.sink IS DISTINCT FROM %(sink)s::text
                         AND NOT EXISTS (SELECT 1 FROM {schema}.transfers AS t
                                         WHERE t.file_id = fresh.file_id AND t.sink = r.sink AND t.state = 'done'))
           AS whole
    FROM fresh
), file AS (
    UPDATE {schema}.files AS f
    SET kind = coalesce(%(kind)s, f.kind), mime = coalesce(%(mime)s, f.mime), size = coalesce(%(size)s, f.size),
        state = CASE WHEN c.whole THEN 'done' ELSE f.state END,
        claimed_by = CASE WHEN c.whole THEN NULL ELSE f.claimed_by END,
        claimed_until = CASE WHEN c.whole THEN NULL ELSE f.claimed_until END,
        error_class = CASE WHEN c.whole THEN NULL ELSE f.error_class END,
        error_status = CASE WHEN c.whole THEN NULL ELSE f.error_status END,
        error = CASE WHEN c.whole THEN NULL ELSE f.error END,
        done_at = CASE WHEN c.whole THEN now() ELSE f.done_at END,
        run_id = CASE WHEN c.whole THEN (SELECT r.id FROM {schema}.runs AS r
                                         WHERE r.worker = f.claimed_by AND r.status = 'running'
                                         ORDER BY r.id DESC LIMIT 1)
                      ELSE f.run_id END,
        updated_at = now()
    FROM complete AS c
    WHERE f.file_id = c.file_id
), app AS (
    UPDATE {app} SET {app_copied} = true
    WHERE {app_id} = %(app_file_id)s AND {app_copied} IS NOT TRUE AND (SELECT whole FROM complete)
)
SELECT EXISTS (SELECT 1 FROM lease), (SELECT path FROM lease), EXISTS (SELECT 1 FROM fresh),
       coalesce((SELECT whole FROM complete), false)

-- name: transfer_failed
-- One destination failed the file: parked ('failed') when permanent, else pending, with the reason; only
-- while the worker holds the file's lease (no row back otherwise).
WITH lease AS (
    SELECT file_id FROM {schema}.files
    WHERE file_id = %(file_id)s AND claimed_by = %(worker)s AND claimed_until > now()
    FOR UPDATE
)
INSERT INTO {schema}.transfers AS t (file_id, sink, state, attempts, error_class, error_status, error)
SELECT file_id, %(sink)s, %(state)s, 1, %(error_class)s, %(status)s, %(error)s FROM lease
ON CONFLICT (file_id, sink) DO UPDATE
SET state = EXCLUDED.state, attempts = t.attempts + 1, error_class = EXCLUDED.error_class,
    error_status = EXCLUDED.error_status, error = EXCLUDED.error, updated_at = now()
RETURNING file_id

-- name: make_due
-- The end-of-run retry pass: these files that failed transiently in this run are due now (attempts kept).
UPDATE {schema}.files SET next_attempt_at = now(), updated_at = now()
WHERE file_id = ANY(%(ids)s) AND state = 'pending' AND claimed_by IS NULL

-- name: file_failed
-- Count an attempt (unless this run counted one already): parked ('failed') or due again after `retry_in`
-- seconds (the policy decided which); with what inspection found. Only the lease holder: no row otherwise.
UPDATE {schema}.files
SET attempts = attempts + CASE WHEN %(count)s THEN 1 ELSE 0 END,
    kind = coalesce(%(kind)s, kind), mime = coalesce(%(mime)s, mime), size = coalesce(%(size)s, size),
    state = CASE WHEN %(park)s THEN 'failed' ELSE 'pending' END,
    next_attempt_at = now() + make_interval(secs => %(retry_in)s),
    error_class = %(error_class)s, error_status = %(status)s, error = %(error)s,
    run_id = (SELECT r.id FROM {schema}.runs AS r WHERE r.worker = {schema}.files.claimed_by AND r.status = 'running'
              ORDER BY r.id DESC LIMIT 1),
    claimed_by = NULL, claimed_until = NULL, updated_at = now()
WHERE file_id = %(file_id)s AND claimed_by = %(worker)s AND claimed_until > now()
RETURNING state, attempts

-- name: file_skipped
-- No route for the file's type: skipped with the reason (and its type) until the routes change. Only the
-- lease holder: no row otherwise.
UPDATE {schema}.files
SET state = 'skipped', error_class = 'unsupported', error_status = NULL, error = %(reason)s,
    kind = coalesce(%(kind)s, kind), mime = coalesce(%(mime)s, mime), size = coalesce(%(size)s, size),
    run_id = (SELECT r.id FROM {schema}.runs AS r WHERE r.worker = {schema}.files.claimed_by AND r.status = 'running'
              ORDER BY r.id DESC LIMIT 1),
    claimed_by = NULL, claimed_until = NULL, updated_at = now()
WHERE file_id = %(file_id)s AND claimed_by = %(worker)s AND claimed_until > now()
RETURNING file_id

-- name: done_mimes
-- MIME types of done or skipped files and the destinations holding them: input of the backfill.
SELECT mime, array_agg(DISTINCT t.sink) FILTER (WHERE t.state = 'done') AS sinks
FROM {schema}.files f LEFT JOIN {schema}.transfers t USING (file_id)
WHERE f.state IN ('done', 'skipped') AND f.mime IS NOT NULL
GROUP BY mime

-- name: requeue_mime
-- Routes changed: files of this type that lack a done transfer to one of `sinks` are due again
-- (a backfill to a newly added sink, or a skipped type that now has a route).
UPDATE {schema}.files AS f
SET state = 'pending', next_attempt_at = now(), attempts = 0, error = NULL, error_class = NULL,
    error_status = NULL, updated_at = now()
WHERE f.state IN ('done', 'skipped') AND f.mime = %(mime)s
  AND EXISTS (SELECT 1 FROM unnest(%(sinks)s::text[]) AS s(name)
              WHERE NOT EXISTS (SELECT 1 FROM {schema}.transfers t
                                WHERE t.file_id = f.file_id AND t.sink = s.name AND t.state = 'done'))

-- name: run_start
-- A new run record, status running.
INSERT INTO {schema}.runs (worker, host, pid) VALUES (%(worker)s, %(host)s, %(pid)s) RETURNING id

-- name: run_finish
-- Close a run record with its status and counts.
UPDATE {schema}.runs
SET finished_at = now(), status = %(status)s, copied = %(copied)s, skipped = %(skipped)s, failed = %(failed)s,
    retry_later = %(retry_later)s, bytes = %(bytes)s, error = %(error)s
WHERE id = %(run_id)s

-- name: backlog
-- Pending files due now.
SELECT count(*) FROM {schema}.files WHERE state = 'pending' AND next_attempt_at <= now()

-- name: retry_failed
-- Operator's retry: parked files (all, or these) are due now with a fresh attempt count.
UPDATE {schema}.files
SET state = 'pending', attempts = 0, next_attempt_at = now(), error = NULL, error_class = NULL,
    error_status = NULL, updated_at = now()
WHERE state = 'failed' AND (%(ids)s::text[] IS NULL OR file_id = ANY(%(ids)s))

-- name: retry_transfers
-- Operator's retry: parked transfers of those files are pending again.
UPDATE {schema}.transfers SET state = 'pending', attempts = 0
WHERE state = 'failed' AND (%(ids)s::text[] IS NULL OR file_id = ANY(%(ids)s))

-- name: state_counts
-- Files per state, for `filesync status`.
SELECT state, count(*) FROM {schema}.files GROUP BY state

-- name: problems
-- The latest parked, skipped or retried files, newest first, for `filesync status`.
SELECT file_id, state, coalesce(error_class, ''), error_status, coalesce(error, ''), attempts, updated_at
FROM {schema}.files WHERE state IN ('failed', 'skipped') OR (state = 'pending' AND attempts > 0)
ORDER BY updated_at DESC LIMIT %(limit)s

-- name: destinations
-- Where each file went (one row per done transfer, or one row for a file with none).
SELECT f.file_id, f.path, f.state, t.sink, t.remote_id, t.remote_url
FROM {schema}.files f LEFT JOIN {schema}.transfers t ON t.file_id = f.file_id AND t.state = 'done'
ORDER BY f.file_id, t.sink

-- name: copied_transfers
-- What `filesync verify` re-checks: confirmed transfers, newest first, optionally since a time, for one sink.
SELECT t.file_id, t.sink, t.remote_id, t.bytes, t.checksum, f.path, f.mime, f.kind, f.size, f.date_taken, f.gps
FROM {schema}.transfers t JOIN {schema}.files f USING (file_id)
WHERE t.state = 'done'
  AND (%(since)s::timestamptz IS NULL OR t.done_at >= %(since)s)
  AND (%(sink)s::text IS NULL OR t.sink = %(sink)s)
ORDER BY CASE WHEN %(sample)s::int IS NULL THEN 0 ELSE random() END, t.done_at DESC
LIMIT %(sample)s

-- name: requeue_transfer
-- `verify --repair`: the copy is gone, so the transfer is due again (the file too); other sinks keep theirs.
WITH t AS (
    UPDATE {schema}.transfers SET state = 'pending', remote_id = NULL, remote_url = NULL, done_at = NULL,
        attempts = 0, error_class = 'not_found', error = %(reason)s, updated_at = now()
    WHERE file_id = %(file_id)s AND sink = %(sink)s
    RETURNING file_id
)
UPDATE {schema}.files SET state = 'pending', next_attempt_at = now(), attempts = 0, updated_at = now()
WHERE file_id IN (SELECT file_id FROM t)

-- name: discourage_seqscan
-- `filesync check`: plan as for a large table, where an index is worth using if one can serve the query.
SET LOCAL enable_seqscan = off

-- name: not_copied_plan
-- `filesync check`: how the planner reads the app's rows not yet copied, as enqueue does.
EXPLAIN (FORMAT JSON) SELECT a.{app_id} FROM {app} AS a WHERE a.{app_copied} IS NOT TRUE AND a.{app_id} IS NOT NULL

-- name: partial_indexes
-- `filesync check`: the names of the app table's partial indexes.
SELECT c.relname FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE i.indrelid = to_regclass(%(table)s) AND i.indpred IS NOT NULL

-- name: routes_changed
-- Records the routes in use; returns a row only when they differ from the last ones seen.
INSERT INTO {schema}.meta AS m (key, value) VALUES ('routes', %(routes)s)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
WHERE m.value IS DISTINCT FROM EXCLUDED.value
RETURNING key

-- name: running_runs
-- Runs but the caller's still `running`; stale: over an hour old and no live lease of its worker (live runs renew).
SELECT r.id, r.worker,
       r.started_at < now() - interval '1 hour'
       AND NOT EXISTS (SELECT 1 FROM {schema}.files AS f WHERE f.claimed_by = r.worker AND f.claimed_until > now())
FROM {schema}.runs AS r
WHERE r.status = 'running' AND r.id <> %(current)s

-- name: abandon_runs
-- Runs whose process died before finishing them become `abandoned`; finished_at stays empty (when is unknown).
UPDATE {schema}.runs SET status = 'abandoned', error = %(error)s
WHERE id = ANY(%(ids)s) AND status = 'running'

-- name: catalog_scan_lock
-- One scan at a time per schema: replicas that scan before their runs do not list the source together.
SELECT pg_try_advisory_xact_lock(hashtextextended(%(key)s, 0))

-- name: catalog_seen_table
-- The keys one scan lists, in a temporary table of its session: what is not there is gone from the source.
CREATE TEMPORARY TABLE IF NOT EXISTS scan_seen (key text PRIMARY KEY) ON COMMIT DROP

-- name: catalog_seen
-- Remember a page of listed keys for the gone-from-source pass.
INSERT INTO scan_seen (key) SELECT unnest(%(keys)s::text[]) ON CONFLICT DO NOTHING

-- name: catalog_upsert
-- A page of listed objects: new ones are added; one whose ETag, size or metadata changed is updated and its
-- flag cleared (its bytes changed: copied again, replacing the old copy); an unchanged one is not written.
INSERT INTO {schema}.catalog AS c (key, size, etag, content_type, modified, metadata)
SELECT * FROM unnest(%(keys)s::text[], %(sizes)s::bigint[], %(etags)s::text[], %(types)s::text[],
                     %(modified)s::timestamptz[], %(metadata)s::jsonb[])
ON CONFLICT (key) DO UPDATE
SET size = EXCLUDED.size, etag = EXCLUDED.etag, content_type = EXCLUDED.content_type,
    modified = EXCLUDED.modified, metadata = EXCLUDED.metadata, gone = false, changed_at = now(),
    copied = CASE WHEN (c.etag, c.size) IS DISTINCT FROM (EXCLUDED.etag, EXCLUDED.size)
                    OR (EXCLUDED.etag IS NULL AND c.modified IS DISTINCT FROM EXCLUDED.modified)  -- no checksum
                  THEN false ELSE c.copied END
WHERE (c.etag, c.size, c.modified, c.metadata, c.gone)
      IS DISTINCT FROM (EXCLUDED.etag, EXCLUDED.size, EXCLUDED.modified, EXCLUDED.metadata, false)
RETURNING (xmax = 0) AS added

-- name: catalog_gone
-- Objects under the scanned prefix that the listing did not return: gone from the source (kept, not copied).
UPDATE {schema}.catalog AS c SET gone = true, changed_at = now()
WHERE NOT c.gone AND left(c.key, length(%(prefix)s)) = %(prefix)s
  AND NOT EXISTS (SELECT 1 FROM scan_seen s WHERE s.key = c.key)

-- name: catalog_counts
-- The catalog at a glance: objects, gone, skipped (no bytes to copy), copied.
SELECT count(*), count(*) FILTER (WHERE gone), count(*) FILTER (WHERE skip IS NOT NULL),
       count(*) FILTER (WHERE copied)
FROM {schema}.catalog
