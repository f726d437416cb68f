-- API tokens with roles, the audit trail of promotions, and the one-time
-- callbacks of external integration tests.

-- +goose Up
-- A token is stored as the SHA-256 of its secret; the secret itself is shown
-- once, when the token is created.
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$'),
    role         text NOT NULL CHECK (role IN ('viewer', 'developer', 'release-manager', 'admin')),
    token_sha256 bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
CREATE UNIQUE INDEX api_tokens_name ON api_tokens (lower(name));

-- One row per promotion attempt, refusals included. Rows are never updated.
CREATE TABLE promotions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    build_id        bigint NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    actor           text NOT NULL,              -- token name
    digest          text NOT NULL DEFAULT '',   -- the build's index digest
    source          text NOT NULL DEFAULT '',   -- repo@digest promoted from
    target          text NOT NULL,              -- repo:tag promoted to
    target_repo     text NOT NULL,
    tag             text NOT NULL,
    previous_digest text NOT NULL DEFAULT '',   -- what the tag held before ('' when new)
    forced          boolean NOT NULL DEFAULT false,
    outcome         text NOT NULL CHECK (outcome IN ('promoted', 'unchanged', 'refused', 'failed')),
    reason          text NOT NULL DEFAULT '' CHECK (length(reason) <= 4096),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX promotions_target ON promotions (target_repo, tag, id DESC);
CREATE INDEX promotions_build ON promotions (build_id, id DESC);

-- The one-time callback of an external integration test run: the webhook
-- receiver answers POST /api/v1/builds/{id}/tests with the token. Only the
-- token's SHA-256 is kept; result is NULL until the callback arrives.
CREATE TABLE integration_callbacks (
    build_id     bigint PRIMARY KEY REFERENCES builds (id) ON DELETE CASCADE,
    token_sha256 bytea NOT NULL CHECK (length(token_sha256) = 32),
    expires_at   timestamptz NOT NULL,
    result       jsonb CHECK (result IS NULL OR jsonb_typeof(result) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE integration_callbacks;
DROP TABLE promotions;
DROP TABLE api_tokens;
