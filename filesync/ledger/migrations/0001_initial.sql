-- filesync's own tables. The app's table is never altered; only its copied flag is written.

CREATE TABLE IF NOT EXISTS {schema}.files (
    file_id         text PRIMARY KEY,
    path            text,
    date_taken      text,
    gps             text,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'done', 'skipped', 'failed')),
    kind            text,
    mime            text,
    size            bigint,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_by      text,
    claimed_until   timestamptz,
    error_class     text,
    error_status    integer,
    error           text,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz
);

-- Claiming reads only due pending rows, oldest first (replaced by 0003 with the full claim order).
CREATE INDEX IF NOT EXISTS files_due_idx ON {schema}.files (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS files_claimed_idx ON {schema}.files (claimed_by) WHERE claimed_by IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_state_idx ON {schema}.files (state);

CREATE TABLE IF NOT EXISTS {schema}.transfers (
    file_id      text NOT NULL REFERENCES {schema}.files (file_id) ON DELETE CASCADE,
    sink         text NOT NULL,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    resume_token text,
    remote_id    text,
    remote_url   text,
    bytes        bigint,
    checksum     text,
    error_class  text,
    error_status integer,
    error        text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz,
    PRIMARY KEY (file_id, sink)
);

CREATE INDEX IF NOT EXISTS transfers_done_idx ON {schema}.transfers (sink, done_at) WHERE state = 'done';

CREATE TABLE IF NOT EXISTS {schema}.runs (
    id          bigserial PRIMARY KEY,
    worker      text NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text NOT NULL DEFAULT 'running',
    copied      integer NOT NULL DEFAULT 0,
    skipped     integer NOT NULL DEFAULT 0,
    failed      integer NOT NULL DEFAULT 0,
    retry_later integer NOT NULL DEFAULT 0,
    bytes       bigint NOT NULL DEFAULT 0,
    error       text
);
