-- The queue grows superseding, per-repository limits, retries of infrastructure
-- failures with backoff, hand-back on worker shutdown, and a record of every attempt.

-- +goose Up
ALTER TABLE jobs
    -- The build's repository, copied from builds at insert, so a claim can count a
    -- repository's running jobs and pick fairly without a join.
    ADD COLUMN repo_id bigint REFERENCES repos (id) ON DELETE CASCADE,
    -- Set while a running job should stop ("superseded by build 7"); the worker is
    -- told by NOTIFY on slipway_cancel and, failing that, by its next heartbeat.
    ADD COLUMN cancel_reason text CHECK (length(cancel_reason) <= 500),
    -- Attempts handed back by a worker that shut down; they do not count against
    -- the attempt limit.
    ADD COLUMN released integer NOT NULL DEFAULT 0 CHECK (released >= 0);
UPDATE jobs j SET repo_id = b.repo_id FROM builds b WHERE b.id = j.build_id;
ALTER TABLE jobs ALTER COLUMN repo_id SET NOT NULL;

-- +goose StatementBegin
CREATE FUNCTION jobs_set_repo_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.repo_id IS NULL THEN
        SELECT repo_id INTO NEW.repo_id FROM builds WHERE id = NEW.build_id;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER jobs_set_repo_id BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_set_repo_id();

-- JobClaim counts each repository's running jobs and finds its oldest available one.
CREATE INDEX jobs_repo_active ON jobs (repo_id, state, created_at) WHERE state IN ('available', 'running');

-- JobSupersede finds a branch's builds still on their way without scanning the
-- repository's whole queue.
CREATE INDEX builds_active_ref ON builds (repo_id, ref, id) WHERE state IN ('queued', 'running', 'testing');

-- One row per attempt of a build: who ran it, when, and how it ended.
CREATE TABLE build_attempts (
    build_id    bigint NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    attempt     integer NOT NULL CHECK (attempt >= 1),
    worker      text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- What ended the attempt; empty for a success.
    error       text NOT NULL DEFAULT '' CHECK (length(error) <= 4096),
    -- The attempt ended by a failure of the infrastructure (buildkitd, registry,
    -- a lost worker), not of the build itself.
    infra       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (build_id, attempt)
);

-- +goose Down
DROP TABLE build_attempts;
DROP TRIGGER jobs_set_repo_id ON jobs;
DROP FUNCTION jobs_set_repo_id();
DROP INDEX jobs_repo_active;
DROP INDEX builds_active_ref;
ALTER TABLE jobs DROP COLUMN repo_id, DROP COLUMN cancel_reason, DROP COLUMN released;
