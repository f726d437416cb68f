-- +goose Up
-- The rules on single columns of the tables that every delivery and every
-- build step writes (builds, jobs, webhook_deliveries, build_attempts,
-- forge_statuses) move from CHECK constraints to domains; the rules are the
-- same. PostgreSQL reads a table's CHECK constraints back from their stored
-- text and plans them again for every INSERT and UPDATE statement it runs,
-- while a domain's constraints are read once per session and kept in its
-- type cache. On a webhook delivery that work was about a fifth of the
-- database's CPU (issue 11, Speed). Rules across columns stay CHECK
-- constraints of their tables. A column's domain is shown by \d and in
-- information_schema.columns.domain_name; a value that breaks its rule fails
-- with the same SQLSTATE (23514, check_violation) as before.
--
-- Changing a column to a domain rewrites the table once, under an ACCESS
-- EXCLUSIVE lock, to check its rows.
--
-- The trigger jobs_set_repo_id goes too: it filled a job's repo_id from its
-- build when an INSERT left it out, and the one INSERT into jobs
-- (postgres.sqlJobInsert) names it; NOT NULL refuses one that does not. It
-- ran a PL/pgSQL function for every job queued.
DROP TRIGGER jobs_set_repo_id ON jobs;
DROP FUNCTION jobs_set_repo_id();

-- builds_notify_done reads builds.state, so it is made again after the change.
DROP TRIGGER builds_notify_done ON builds;

CREATE DOMAIN build_state AS text
    CHECK (VALUE IN ('queued', 'running', 'testing', 'succeeded', 'failed', 'canceled'));
CREATE DOMAIN job_state AS text CHECK (VALUE IN ('available', 'running', 'completed'));
CREATE DOMAIN status_state AS text CHECK (VALUE IN ('queued', 'running', 'succeeded', 'failed', 'canceled'));
CREATE DOMAIN status_outcome AS text CHECK (VALUE IN ('pending', 'sent', 'superseded', 'failed', 'skipped'));
CREATE DOMAIN approval_state AS text CHECK (VALUE IN ('', 'pending', 'approved', 'trusted'));
CREATE DOMAIN forge_name AS text CHECK (VALUE IN ('github', 'gitlab', 'gitea'));
-- A full commit id in lower-case hex, or '' while an API build's commit is
-- not resolved yet.
CREATE DOMAIN commit_sha AS text CHECK (VALUE ~ '^[0-9a-f]{40}$' OR VALUE = '');
CREATE DOMAIN git_ref AS text CHECK (length(VALUE) BETWEEN 1 AND 1024);
CREATE DOMAIN clone_url AS text CHECK (length(VALUE) BETWEEN 1 AND 2048);
CREATE DOMAIN delivery_id AS text CHECK (length(VALUE) BETWEEN 1 AND 200);
-- A statement that binds a parameter to a json_array column casts it
-- ($1::jsonb): pgx does not know the domain and would send a []byte as bytea.
CREATE DOMAIN json_array AS jsonb CHECK (jsonb_typeof(VALUE) = 'array');
CREATE DOMAIN nonnegative_int AS integer CHECK (VALUE >= 0);
CREATE DOMAIN nonnegative_bigint AS bigint CHECK (VALUE >= 0);
CREATE DOMAIN positive_int AS integer CHECK (VALUE >= 1);
-- Text of at most N characters.
CREATE DOMAIN text_max_32 AS text CHECK (length(VALUE) <= 32);
CREATE DOMAIN text_max_255 AS text CHECK (length(VALUE) <= 255);
CREATE DOMAIN text_max_500 AS text CHECK (length(VALUE) <= 500);
CREATE DOMAIN text_max_1000 AS text CHECK (length(VALUE) <= 1000);
CREATE DOMAIN text_max_1024 AS text CHECK (length(VALUE) <= 1024);
CREATE DOMAIN text_max_2048 AS text CHECK (length(VALUE) <= 2048);
CREATE DOMAIN text_max_4096 AS text CHECK (length(VALUE) <= 4096);

ALTER TABLE builds
    DROP CONSTRAINT builds_approval_check,
    DROP CONSTRAINT builds_approved_by_check,
    DROP CONSTRAINT builds_attempt_check,
    DROP CONSTRAINT builds_clone_url_check,
    DROP CONSTRAINT builds_commit_sha_check,
    DROP CONSTRAINT builds_error_check,
    DROP CONSTRAINT builds_log_lines_check,
    DROP CONSTRAINT builds_platforms_check,
    DROP CONSTRAINT builds_pr_association_check,
    DROP CONSTRAINT builds_pr_author_check,
    DROP CONSTRAINT builds_pr_base_check,
    DROP CONSTRAINT builds_pr_title_check,
    DROP CONSTRAINT builds_pr_url_check,
    DROP CONSTRAINT builds_pull_request_check,
    DROP CONSTRAINT builds_ref_check,
    DROP CONSTRAINT builds_state_check,
    DROP CONSTRAINT builds_tests_check,
    ALTER COLUMN ref TYPE git_ref,
    ALTER COLUMN commit_sha TYPE commit_sha,
    ALTER COLUMN clone_url TYPE clone_url,
    ALTER COLUMN state TYPE build_state,
    ALTER COLUMN platforms TYPE json_array,
    ALTER COLUMN tests TYPE json_array,
    ALTER COLUMN error TYPE text_max_4096,
    ALTER COLUMN attempt TYPE nonnegative_int,
    ALTER COLUMN log_lines TYPE nonnegative_bigint,
    ALTER COLUMN pull_request TYPE positive_int,
    ALTER COLUMN pr_title TYPE text_max_1000,
    ALTER COLUMN pr_author TYPE text_max_255,
    ALTER COLUMN pr_url TYPE text_max_2048,
    ALTER COLUMN pr_base TYPE text_max_255,
    ALTER COLUMN pr_association TYPE text_max_32,
    ALTER COLUMN approval TYPE approval_state,
    ALTER COLUMN approved_by TYPE text_max_255,
    -- A ref outside refs/ only while the commit is unresolved (an API build
    -- may name a branch by its short name); testing and succeeded need a commit.
    ADD CONSTRAINT builds_ref_check CHECK (ref LIKE 'refs/%' OR commit_sha = ''),
    ADD CONSTRAINT builds_commit_sha_check CHECK (commit_sha <> '' OR state NOT IN ('testing', 'succeeded'));

ALTER TABLE webhook_deliveries
    DROP CONSTRAINT webhook_deliveries_delivery_id_check,
    DROP CONSTRAINT webhook_deliveries_forge_check,
    ALTER COLUMN forge TYPE forge_name,
    ALTER COLUMN delivery_id TYPE delivery_id;

ALTER TABLE jobs
    DROP CONSTRAINT jobs_attempt_check,
    DROP CONSTRAINT jobs_cancel_reason_check,
    DROP CONSTRAINT jobs_lost_workers_check,
    DROP CONSTRAINT jobs_max_attempts_check,
    DROP CONSTRAINT jobs_released_check,
    DROP CONSTRAINT jobs_state_check,
    ALTER COLUMN state TYPE job_state,
    ALTER COLUMN attempt TYPE nonnegative_int,
    ALTER COLUMN max_attempts TYPE positive_int,
    ALTER COLUMN cancel_reason TYPE text_max_500,
    ALTER COLUMN released TYPE nonnegative_int,
    ALTER COLUMN lost_workers TYPE nonnegative_int;

ALTER TABLE build_attempts
    DROP CONSTRAINT build_attempts_attempt_check,
    DROP CONSTRAINT build_attempts_error_check,
    ALTER COLUMN attempt TYPE positive_int,
    ALTER COLUMN error TYPE text_max_4096;

ALTER TABLE forge_statuses
    DROP CONSTRAINT forge_statuses_attempts_check,
    DROP CONSTRAINT forge_statuses_last_error_check,
    DROP CONSTRAINT forge_statuses_outcome_check,
    DROP CONSTRAINT forge_statuses_state_check,
    ALTER COLUMN state TYPE status_state,
    ALTER COLUMN outcome TYPE status_outcome,
    ALTER COLUMN attempts TYPE nonnegative_int,
    ALTER COLUMN last_error TYPE text_max_1024;

CREATE TRIGGER builds_notify_done AFTER UPDATE OF state ON builds FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'failed', 'canceled') AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION builds_notify_done();

-- +goose Down
DROP TRIGGER builds_notify_done ON builds;

ALTER TABLE forge_statuses
    ALTER COLUMN state TYPE text,
    ALTER COLUMN outcome TYPE text,
    ALTER COLUMN attempts TYPE integer,
    ALTER COLUMN last_error TYPE text,
    ADD CONSTRAINT forge_statuses_attempts_check CHECK (attempts >= 0),
    ADD CONSTRAINT forge_statuses_last_error_check CHECK (length(last_error) <= 1024),
    ADD CONSTRAINT forge_statuses_outcome_check CHECK (outcome IN ('pending', 'sent', 'superseded', 'failed', 'skipped')),
    ADD CONSTRAINT forge_statuses_state_check CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled'));

ALTER TABLE build_attempts
    ALTER COLUMN attempt TYPE integer,
    ALTER COLUMN error TYPE text,
    ADD CONSTRAINT build_attempts_attempt_check CHECK (attempt >= 1),
    ADD CONSTRAINT build_attempts_error_check CHECK (length(error) <= 4096);

ALTER TABLE jobs
    ALTER COLUMN state TYPE text,
    ALTER COLUMN attempt TYPE integer,
    ALTER COLUMN max_attempts TYPE integer,
    ALTER COLUMN cancel_reason TYPE text,
    ALTER COLUMN released TYPE integer,
    ALTER COLUMN lost_workers TYPE integer,
    ADD CONSTRAINT jobs_attempt_check CHECK (attempt >= 0),
    ADD CONSTRAINT jobs_cancel_reason_check CHECK (length(cancel_reason) <= 500),
    ADD CONSTRAINT jobs_lost_workers_check CHECK (lost_workers >= 0),
    ADD CONSTRAINT jobs_max_attempts_check CHECK (max_attempts >= 1),
    ADD CONSTRAINT jobs_released_check CHECK (released >= 0),
    ADD CONSTRAINT jobs_state_check CHECK (state IN ('available', 'running', 'completed'));

ALTER TABLE webhook_deliveries
    ALTER COLUMN forge TYPE text,
    ALTER COLUMN delivery_id TYPE text,
    ADD CONSTRAINT webhook_deliveries_delivery_id_check CHECK (length(delivery_id) BETWEEN 1 AND 200),
    ADD CONSTRAINT webhook_deliveries_forge_check CHECK (forge IN ('github', 'gitlab', 'gitea'));

ALTER TABLE builds
    DROP CONSTRAINT builds_ref_check,
    DROP CONSTRAINT builds_commit_sha_check,
    ALTER COLUMN ref TYPE text,
    ALTER COLUMN commit_sha TYPE text,
    ALTER COLUMN clone_url TYPE text,
    ALTER COLUMN state TYPE text,
    ALTER COLUMN platforms TYPE jsonb,
    ALTER COLUMN tests TYPE jsonb,
    ALTER COLUMN error TYPE text,
    ALTER COLUMN attempt TYPE integer,
    ALTER COLUMN log_lines TYPE bigint,
    ALTER COLUMN pull_request TYPE integer,
    ALTER COLUMN pr_title TYPE text,
    ALTER COLUMN pr_author TYPE text,
    ALTER COLUMN pr_url TYPE text,
    ALTER COLUMN pr_base TYPE text,
    ALTER COLUMN pr_association TYPE text,
    ALTER COLUMN approval TYPE text,
    ALTER COLUMN approved_by TYPE text,
    ADD CONSTRAINT builds_approval_check CHECK (approval IN ('', 'pending', 'approved', 'trusted')),
    ADD CONSTRAINT builds_approved_by_check CHECK (length(approved_by) <= 255),
    ADD CONSTRAINT builds_attempt_check CHECK (attempt >= 0),
    ADD CONSTRAINT builds_clone_url_check CHECK (length(clone_url) BETWEEN 1 AND 2048),
    ADD CONSTRAINT builds_commit_sha_check
        CHECK (commit_sha ~ '^[0-9a-f]{40}$' OR (commit_sha = '' AND state NOT IN ('testing', 'succeeded'))),
    ADD CONSTRAINT builds_error_check CHECK (length(error) <= 4096),
    ADD CONSTRAINT builds_log_lines_check CHECK (log_lines >= 0),
    ADD CONSTRAINT builds_platforms_check CHECK (jsonb_typeof(platforms) = 'array'),
    ADD CONSTRAINT builds_pr_association_check CHECK (length(pr_association) <= 32),
    ADD CONSTRAINT builds_pr_author_check CHECK (length(pr_author) <= 255),
    ADD CONSTRAINT builds_pr_base_check CHECK (length(pr_base) <= 255),
    ADD CONSTRAINT builds_pr_title_check CHECK (length(pr_title) <= 1000),
    ADD CONSTRAINT builds_pr_url_check CHECK (length(pr_url) <= 2048),
    ADD CONSTRAINT builds_pull_request_check CHECK (pull_request > 0),
    ADD CONSTRAINT builds_ref_check CHECK ((ref LIKE 'refs/%' OR commit_sha = '') AND length(ref) BETWEEN 1 AND 1024),
    ADD CONSTRAINT builds_state_check CHECK (state IN ('queued', 'running', 'testing', 'succeeded', 'failed', 'canceled')),
    ADD CONSTRAINT builds_tests_check CHECK (jsonb_typeof(tests) = 'array');

CREATE TRIGGER builds_notify_done AFTER UPDATE OF state ON builds FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'failed', 'canceled') AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION builds_notify_done();

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
CREATE TRIGGER jobs_set_repo_id BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_set_repo_id();

DROP DOMAIN build_state, job_state, status_state, status_outcome, approval_state, forge_name, commit_sha, git_ref,
    clone_url, delivery_id, json_array, nonnegative_int, nonnegative_bigint, positive_int,
    text_max_32, text_max_255, text_max_500, text_max_1000, text_max_1024, text_max_2048, text_max_4096;
