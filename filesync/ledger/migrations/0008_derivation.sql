-- A copy fitted, converted or compressed on the way (FILESYNC_TRANSFORMS) records what it was derived from:
-- the original's and the sent copy's size, width, height and type, and a description of the transform.
ALTER TABLE {schema}.transfers ADD COLUMN IF NOT EXISTS derivation jsonb;
