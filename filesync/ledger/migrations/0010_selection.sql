-- The one definition of "a `filesync run` selection names this file" (ids, a path regular expression, a
-- dateTaken range), shared by the claim and by the display's count of what the selection will copy. A SQL
-- function of one expression: the planner inlines it, so a NULL argument folds away as before.
CREATE OR REPLACE FUNCTION {schema}.selected(file_id text, path text, date_taken text, ids text[], path_re text,
                                            since timestamptz, until timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT (ids IS NULL OR file_id = ANY(ids))
       AND (path_re IS NULL OR path ~ path_re)
       AND (since IS NULL OR (CASE WHEN date_taken ~ '^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'
                                   THEN date_taken::timestamptz END) >= since)
       AND (until IS NULL OR (CASE WHEN date_taken ~ '^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'
                                   THEN date_taken::timestamptz END) < until)
$$;
