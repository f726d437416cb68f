-- The first schema of slipway: repositories, builds, the build queue, webhook
-- deliveries (for deduplication) and build log chunks.

-- +goose Up
CREATE TABLE repos (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    forge      text NOT NULL CHECK (forge IN ('github', 'gitlab', 'gitea')),
    owner      text NOT NULL CHECK (length(owner) BETWEEN 1 AND 255),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    clone_url  text NOT NULL CHECK (length(clone_url) BETWEEN 1 AND 2048),
    image      text NOT NULL CHECK (length(image) BETWEEN 1 AND 512),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Forges treat owner and name case-insensitively; so do we.
CREATE UNIQUE INDEX repos_forge_owner_name ON repos (forge, lower(owner), lower(name));

CREATE TABLE builds (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repo_id      bigint NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    ref          text NOT NULL CHECK (ref LIKE 'refs/%' AND length(ref) <= 1024),
    commit_sha   text NOT NULL CHECK (commit_sha ~ '^[0-9a-f]{40}$'),
    message      text NOT NULL DEFAULT '',
    sender       text NOT NULL DEFAULT '',
    delivery_id  text NOT NULL DEFAULT '',
    clone_url    text NOT NULL CHECK (length(clone_url) BETWEEN 1 AND 2048),
    state        text NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'testing', 'succeeded', 'failed', 'canceled')),
    image        text NOT NULL,
    image_ref    text NOT NULL DEFAULT '',
    index_digest text NOT NULL DEFAULT '',
    platforms    jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(platforms) = 'array'),
    tests        jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(tests) = 'array'),
    tags         text[] NOT NULL DEFAULT '{}',
    error        text NOT NULL DEFAULT '' CHECK (length(error) <= 4096),
    attempt      integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    -- A final build has a finish time; a build still on its way has none.
    CONSTRAINT builds_finished CHECK ((state IN ('succeeded', 'failed', 'canceled')) = (finished_at IS NOT NULL))
);
CREATE INDEX builds_repo_id ON builds (repo_id, id DESC);
CREATE INDEX builds_state ON builds (state, id DESC);

-- One row per webhook delivery that made (or will make) a build. The primary key
-- is what makes a redelivery return the first build instead of queueing another.
CREATE TABLE webhook_deliveries (
    forge       text NOT NULL CHECK (forge IN ('github', 'gitlab', 'gitea')),
    delivery_id text NOT NULL CHECK (length(delivery_id) BETWEEN 1 AND 200),
    event       text NOT NULL,
    build_id    bigint NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (forge, delivery_id)
);

-- The build queue. A job is available, running under a worker's lease (claimed_by,
-- renewed heartbeat_at), or completed. One job per build.
CREATE TABLE jobs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    build_id     bigint NOT NULL UNIQUE REFERENCES builds (id) ON DELETE CASCADE,
    state        text NOT NULL DEFAULT 'available' CHECK (state IN ('available', 'running', 'completed')),
    priority     smallint NOT NULL DEFAULT 1,
    attempt      integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    claimed_by   text,
    heartbeat_at timestamptz,
    run_after    timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    CONSTRAINT jobs_lease CHECK ((state = 'running') = (claimed_by IS NOT NULL AND heartbeat_at IS NOT NULL)),
    CONSTRAINT jobs_finished CHECK ((state = 'completed') = (finished_at IS NOT NULL))
);
CREATE INDEX jobs_available ON jobs (priority, created_at, id) WHERE state = 'available';
CREATE INDEX jobs_running ON jobs (heartbeat_at) WHERE state = 'running';

-- A build's log, stored a batch of lines per row. seq orders the chunks of a build.
CREATE TABLE build_log_chunks (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    build_id   bigint NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    attempt    integer NOT NULL,
    lines      jsonb NOT NULL CHECK (jsonb_typeof(lines) = 'array'),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX build_log_chunks_build ON build_log_chunks (build_id, id);

-- +goose Down
DROP TABLE build_log_chunks;
DROP TABLE jobs;
DROP TABLE webhook_deliveries;
DROP TABLE builds;
DROP TABLE repos;
