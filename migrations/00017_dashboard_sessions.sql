-- +goose Up
-- Dashboard sessions (issue 12: the session cookie was the raw API token and
-- still worked on the API after sign-out). The cookie holds a random id; only
-- its SHA-256 is stored. A session of a stored token ends with the token; one
-- of the admin token (token_id NULL) holds the SHA-256 of the admin token it
-- signed in with, so changing SLIPWAY_ADMIN_TOKEN ends it.
CREATE TABLE dashboard_sessions (
    id_sha256   bytea PRIMARY KEY CHECK (length(id_sha256) = 32),
    token_id    bigint REFERENCES api_tokens (id) ON DELETE CASCADE,
    admin_sha256 bytea CHECK (admin_sha256 IS NULL OR length(admin_sha256) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    CHECK ((token_id IS NULL) <> (admin_sha256 IS NULL))
);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);

-- +goose Down
DROP TABLE dashboard_sessions;
