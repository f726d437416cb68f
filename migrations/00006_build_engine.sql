-- Build engine (issue 4): sealed build secrets per repository, and line numbers
-- for build logs so a live reader resumes exactly where it left off.

-- +goose Up
CREATE TABLE build_secrets (
    repo_id    bigint NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    name       text NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,99}$'),
    -- AES-256-GCM sealed with SLIPWAY_SECRET_KEY, bound to "repo:<id>:secret:<name>".
    value_enc  bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, name)
);

-- builds.log_lines counts the lines stored so far; a chunk holds lines
-- first_line .. first_line + line_count - 1 (numbered from 1 per build). The
-- counter is bumped under the build row's lock, so two appends never number
-- the same line.
ALTER TABLE builds ADD COLUMN log_lines bigint NOT NULL DEFAULT 0 CHECK (log_lines >= 0);
ALTER TABLE build_log_chunks ADD COLUMN first_line bigint, ADD COLUMN line_count integer;
UPDATE build_log_chunks c SET first_line = s.first_line, line_count = s.n
FROM (SELECT id, jsonb_array_length(lines) AS n,
             1 + coalesce(sum(jsonb_array_length(lines)) OVER (PARTITION BY build_id ORDER BY id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS first_line
      FROM build_log_chunks) s
WHERE s.id = c.id;
UPDATE builds b SET log_lines = (SELECT coalesce(sum(line_count), 0) FROM build_log_chunks WHERE build_id = b.id);
ALTER TABLE build_log_chunks
    ALTER COLUMN first_line SET NOT NULL,
    ALTER COLUMN line_count SET NOT NULL,
    ADD CONSTRAINT build_log_chunks_lines CHECK (first_line >= 1 AND line_count = jsonb_array_length(lines));
CREATE UNIQUE INDEX build_log_chunks_first_line ON build_log_chunks (build_id, first_line);

-- Live log readers wait on channel build_log; a build that reaches a final state
-- wakes them too, whoever changed it. The payload is "<build id> end", far below
-- the 8000-byte limit of NOTIFY.
-- +goose StatementBegin
CREATE FUNCTION builds_notify_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('build_log', NEW.id || ' end');
    RETURN NULL;
END $$;
-- +goose StatementEnd
CREATE TRIGGER builds_notify_done AFTER UPDATE OF state ON builds FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'failed', 'canceled') AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION builds_notify_done();

-- +goose Down
DROP TRIGGER builds_notify_done ON builds;
DROP FUNCTION builds_notify_done();
DROP INDEX build_log_chunks_first_line;
ALTER TABLE build_log_chunks DROP COLUMN first_line, DROP COLUMN line_count;
ALTER TABLE builds DROP COLUMN log_lines;
DROP TABLE build_secrets;
