-- Read models of the operator's console and the status API, loaded by filesync.ledger.reports. All read-only
-- except retry_* (an operator's retry) and alert_state_* (the alerts' memory in meta). {schema} is filesync's
-- schema; {app}, {app_id}, {app_path}, {app_date} and {app_copied} are the app's table and columns.
-- Operator's states: a claimed file is `in_progress`, a pending file not yet due is `waiting`.

-- name: ledger_exists
-- Whether filesync's tables exist yet (no run has migrated this database before): read models answer empty.
SELECT bool_and(to_regclass(quote_ident(%(schema)s::text) || '.' || t) IS NOT NULL)
FROM unnest(ARRAY['files', 'transfers', 'runs', 'meta']) AS t

-- name: status_files
-- Files per operator's state: pending (due now), in_progress, waiting, done, skipped, failed.
SELECT CASE WHEN f.state = 'pending' AND f.claimed_until > now() THEN 'in_progress'
            WHEN f.state = 'pending' AND f.next_attempt_at > now() THEN 'waiting'
            ELSE f.state END AS category,
       count(*)
FROM {schema}.files AS f
GROUP BY 1

-- name: status_destinations
-- Transfers per destination and operator's state; files with no transfer yet (not inspected, skipped) have no sink.
SELECT t.sink,
       CASE WHEN t.state = 'done' THEN 'done'
            WHEN t.state = 'failed' THEN 'failed'
            WHEN f.state = 'pending' AND f.claimed_until > now() THEN 'in_progress'
            WHEN f.state = 'pending' AND f.next_attempt_at > now() THEN 'waiting'
            WHEN f.state = 'pending' THEN 'pending'
            ELSE f.state END AS category,
       count(*)
FROM {schema}.files AS f LEFT JOIN {schema}.transfers AS t ON t.file_id = f.file_id
GROUP BY 1, 2

-- name: status_oldest_due
-- The file due the longest and not claimed: the next claim takes it first.
SELECT file_id, path, next_attempt_at, attempts
FROM {schema}.files
WHERE state = 'pending' AND next_attempt_at <= now() AND (claimed_until IS NULL OR claimed_until < now())
ORDER BY next_attempt_at, file_id
LIMIT 1

-- name: status_next_retry
-- The waiting file due soonest (a backlog of 0 due can still hold files waiting for their retry).
SELECT file_id, path, next_attempt_at, attempts
FROM {schema}.files
WHERE state = 'pending' AND next_attempt_at > now() AND (claimed_until IS NULL OR claimed_until < now())
ORDER BY next_attempt_at, file_id
LIMIT 1

-- name: status_errors
-- The most common current errors of parked and waiting files: class, HTTP status, reason, count, an example.
SELECT coalesce(error_class, ''), error_status, error, count(*), min(file_id), max(updated_at)
FROM {schema}.files
WHERE error IS NOT NULL AND state IN ('failed', 'pending')
GROUP BY 1, 2, 3
ORDER BY 4 DESC, 6 DESC
LIMIT %(limit)s

-- name: status_problems
-- The latest parked, skipped or retried files with their path, newest first.
SELECT f.file_id, f.path,
       CASE WHEN f.state = 'pending' AND f.claimed_until > now() THEN 'in_progress'
            WHEN f.state = 'pending' AND f.next_attempt_at > now() THEN 'waiting'
            ELSE f.state END,
       coalesce(f.error_class, ''), f.error_status, coalesce(f.error, ''), f.attempts, f.updated_at,
       f.next_attempt_at
FROM {schema}.files AS f
WHERE f.state IN ('failed', 'skipped') OR (f.state = 'pending' AND f.attempts > 0)
ORDER BY f.updated_at DESC, f.file_id
LIMIT %(limit)s

-- name: status_backlog
-- Files not done yet (due, waiting or in progress): what the stall alert watches shrink.
SELECT count(*) FROM {schema}.files WHERE state = 'pending'

-- name: runs_latest
-- The latest runs, newest first: start, end (none for a running or abandoned run), worker, status, counts.
SELECT id, worker, host, pid, started_at, finished_at, status, copied, skipped, failed, retry_later, bytes, error
FROM {schema}.runs
ORDER BY id DESC
LIMIT %(limit)s

-- name: run_by_id
-- One run record by id.
SELECT id, worker, host, pid, started_at, finished_at, status, copied, skipped, failed, retry_later, bytes, error
FROM {schema}.runs
WHERE id = %(run_id)s

-- name: routes_seen
-- The routes the last run used (meta 'routes'); no row before the first run.
SELECT value FROM {schema}.meta WHERE key = 'routes'

-- name: backfill_groups
-- Done or skipped files by type and the destinations holding them: what a route change would send where.
SELECT g.mime, g.state, g.sinks, count(*)
FROM (SELECT f.file_id, f.mime, f.state,
             coalesce(array_agg(t.sink ORDER BY t.sink) FILTER (WHERE t.state = 'done'), '{{}}'::text[]) AS sinks
      FROM {schema}.files AS f LEFT JOIN {schema}.transfers AS t ON t.file_id = f.file_id
      WHERE f.state IN ('done', 'skipped') AND f.mime IS NOT NULL
      GROUP BY f.file_id, f.mime, f.state) AS g
GROUP BY 1, 2, 3

-- name: known_ids
-- Which of these ids the ledger holds, with their operator's state: a retry naming an unknown id is refused.
SELECT f.file_id,
       CASE WHEN f.state = 'pending' AND f.claimed_until > now() THEN 'in_progress'
            WHEN f.state = 'pending' AND f.next_attempt_at > now() THEN 'waiting'
            ELSE f.state END
FROM {schema}.files AS f
WHERE f.file_id = ANY(%(ids)s::text[])

-- name: retry_select
-- The files an operator's retry selects, locked: by state, ids, path, destination, error class and time of failure.
SELECT f.file_id
FROM {schema}.files AS f
WHERE (f.claimed_until IS NULL OR f.claimed_until < now())
  AND ((%(failed)s AND f.state = 'failed')
       OR (%(waiting)s AND f.state = 'pending' AND f.next_attempt_at > now())
       OR (%(skipped)s AND f.state = 'skipped')
       -- `--sink NAME --all`: files that destination already holds are sent to it again, replacing the copy
       OR (%(resend)s AND EXISTS (SELECT 1 FROM {schema}.transfers AS t
                                  WHERE t.file_id = f.file_id AND t.sink = %(sink)s::text AND t.state = 'done')))
  AND (%(ids)s::text[] IS NULL OR f.file_id = ANY(%(ids)s::text[]))
  AND (%(path_re)s::text IS NULL OR f.path ~ %(path_re)s::text)
  AND (%(sink)s::text IS NULL OR %(resend)s OR EXISTS (
        SELECT 1 FROM {schema}.transfers AS t
        WHERE t.file_id = f.file_id AND t.sink = %(sink)s::text AND t.state <> 'done'))
  AND (%(error_class)s::text IS NULL OR f.error_class = %(error_class)s::text OR EXISTS (
        SELECT 1 FROM {schema}.transfers AS t
        WHERE t.file_id = f.file_id AND t.state <> 'done' AND t.error_class = %(error_class)s::text))
  AND (%(since)s::timestamptz IS NULL OR f.updated_at >= %(since)s::timestamptz)
ORDER BY f.file_id
FOR UPDATE OF f

-- name: retry_files
-- Make the selected files due now; parked and skipped ones start over with fresh attempts and no error.
UPDATE {schema}.files
SET attempts = CASE WHEN state IN ('failed', 'skipped') THEN 0 ELSE attempts END,
    error = CASE WHEN state IN ('failed', 'skipped') THEN NULL ELSE error END,
    error_class = CASE WHEN state IN ('failed', 'skipped') THEN NULL ELSE error_class END,
    error_status = CASE WHEN state IN ('failed', 'skipped') THEN NULL ELSE error_status END,
    state = 'pending', next_attempt_at = now(), deferred_run = NULL, updated_at = now()
WHERE file_id = ANY(%(ids)s::text[])

-- name: retry_parked_transfers
-- The parked transfers of the retried files (of one destination, with --sink) are pending with fresh attempts.
UPDATE {schema}.transfers
SET state = 'pending', attempts = 0, updated_at = now()
WHERE state = 'failed' AND file_id = ANY(%(ids)s::text[]) AND (%(sink)s::text IS NULL OR sink = %(sink)s::text)

-- name: resend_transfers
-- `filesync retry --sink NAME --all`: that destination's copies of these files are sent again, replacing them
-- (after a change of its FILESYNC_TRANSFORMS, say); the other destinations keep theirs.
UPDATE {schema}.transfers
SET state = 'pending', replace = true, resume_token = NULL, attempts = 0, updated_at = now()
WHERE state = 'done' AND file_id = ANY(%(ids)s::text[]) AND sink = %(sink)s::text

-- name: alert_state_init
-- The alerts' memory in meta, created empty the first time: every worker (cron run or daemon) shares it.
INSERT INTO {schema}.meta (key, value) VALUES ('alerts', '{{}}') ON CONFLICT (key) DO NOTHING

-- name: alert_state_lock
-- The alerts' memory, locked until this run's decision is saved, so two workers never both send one alert.
SELECT value FROM {schema}.meta WHERE key = 'alerts' FOR UPDATE

-- name: alert_state_save
-- Save the alerts' memory: the conditions alerted and not cleared since, and the backlog after recent runs.
UPDATE {schema}.meta SET value = %(value)s, updated_at = now() WHERE key = 'alerts'

-- name: due_selected
-- Due files a narrowed `filesync run` would claim (ids, path regex, dateTaken range): the display's total.
SELECT count(*) FROM {schema}.files
WHERE state = 'pending' AND next_attempt_at <= now() AND (claimed_until IS NULL OR claimed_until < now())
  AND {schema}.selected(file_id, path, date_taken, %(ids)s::text[], %(path_re)s::text, %(since)s::timestamptz,
                         %(until)s::timestamptz)

-- name: report_rows
-- `filesync report`: one row per file and destination (a file with no transfer yet: one row, no destination).
SELECT f.file_id, f.path, f.kind, t.sink,
       CASE WHEN t.state = 'done' THEN 'done'
            WHEN t.state = 'failed' THEN 'failed'
            WHEN f.state = 'pending' AND f.claimed_until > now() THEN 'in_progress'
            WHEN f.state = 'pending' AND f.next_attempt_at > now() THEN 'waiting'
            ELSE f.state END AS state,
       t.remote_id, t.remote_url, t.bytes,
       CASE WHEN t.sink IS NULL THEN f.attempts ELSE t.attempts END,
       CASE WHEN t.sink IS NULL THEN f.error_class ELSE t.error_class END,
       CASE WHEN t.sink IS NULL THEN f.error ELSE t.error END,
       t.done_at,
       t.derivation ->> 'description',
       (t.derivation -> 'original' ->> 'size')::bigint
FROM {schema}.files AS f LEFT JOIN {schema}.transfers AS t ON t.file_id = f.file_id
WHERE (%(sink)s::text IS NULL OR t.sink = %(sink)s::text)
  AND (%(run_id)s::bigint IS NULL OR f.run_id = %(run_id)s::bigint)  -- the run that recorded its outcome
  AND (%(since)s::timestamptz IS NULL OR coalesce(t.updated_at, f.updated_at) >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR coalesce(t.updated_at, f.updated_at) < %(until)s::timestamptz)
  AND (%(state)s::text IS NULL OR %(state)s::text = CASE
            WHEN t.state = 'done' THEN 'done'
            WHEN t.state = 'failed' THEN 'failed'
            WHEN f.state = 'pending' AND f.claimed_until > now() THEN 'in_progress'
            WHEN f.state = 'pending' AND f.next_attempt_at > now() THEN 'waiting'
            ELSE f.state END)
ORDER BY f.file_id, t.sink NULLS FIRST

-- name: plan_rows
-- Dry run: app rows not copied, and ledger files due again though flagged, with their ledger state, in claim order.
SELECT a.{app_id}::text, a.{app_path}::text, to_json(a.{app_date}) #>> '{{}}', a.{app_copied} IS TRUE,
       count(*) OVER (PARTITION BY a.{app_id}::text),
       f.state, f.path, f.attempts, f.next_attempt_at, f.claimed_until > now(), f.error_class, f.error, f.mime,
       (SELECT coalesce(array_agg(t.sink ORDER BY t.sink), '{{}}'::text[]) FROM {schema}.transfers AS t
        WHERE t.file_id = f.file_id AND t.state = 'done'),
       (SELECT coalesce(json_object_agg(t.sink, coalesce(t.error, '')), '{{}}'::json) FROM {schema}.transfers AS t
        WHERE t.file_id = f.file_id AND t.state = 'failed')
FROM {app} AS a LEFT JOIN {schema}.files AS f ON f.file_id = a.{app_id}::text
WHERE a.{app_id} IS NOT NULL AND (a.{app_copied} IS NOT TRUE OR f.state = 'pending')
ORDER BY coalesce(f.next_attempt_at, now()), 1

-- name: plan_rows_fresh
-- Dry run on a database no run has touched yet: every app row not copied is new.
SELECT a.{app_id}::text, a.{app_path}::text, to_json(a.{app_date}) #>> '{{}}', false,
       count(*) OVER (PARTITION BY a.{app_id}::text)
FROM {app} AS a
WHERE a.{app_id} IS NOT NULL AND a.{app_copied} IS NOT TRUE
ORDER BY 1

-- name: name_owner
-- Dry run: which file holds a destination name already (a second file mapping to it would fail).
SELECT file_id FROM {schema}.names WHERE sink = %(sink)s AND name = %(name)s
