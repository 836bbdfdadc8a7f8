-- A transfer whose file changed after it was sent (its row's path changed, or the app reset its flag)
-- is sent again replacing what the destination holds, instead of counting the old copy as done.
ALTER TABLE {schema}.transfers ADD COLUMN IF NOT EXISTS replace boolean NOT NULL DEFAULT false;

-- Destination names of path-based destinations (bunny, s3, local): a name belongs to the file that took
-- it first. A second file whose template maps to the same name is refused instead of overwriting it.
CREATE TABLE IF NOT EXISTS {schema}.names (
    sink       text NOT NULL,
    name       text NOT NULL,
    file_id    text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, name)
);
