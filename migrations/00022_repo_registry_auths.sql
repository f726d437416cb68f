-- A repository's own registry credentials (issue 15 item 1), for teams that
-- push to their own namespace: one row per registry host, the password (or
-- identity token) sealed with SLIPWAY_SECRET_KEY like build secrets and bound
-- to the repository and host. The username is kept in the clear for the API
-- to show; the password never leaves the server except to the worker that
-- builds the repository (and never for fork pull requests).

-- +goose Up
CREATE TABLE repo_registry_auths (
    repo_id bigint NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    registry text NOT NULL CHECK (length(registry) BETWEEN 1 AND 255),
    username text NOT NULL CHECK (length(username) <= 255),
    password_enc bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, registry)
);

-- +goose Down
DROP TABLE repo_registry_auths;
