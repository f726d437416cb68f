-- Per-repository settings that override the global ones. An empty array or NULL
-- means "use the global setting" (or .slipway.yml for platforms).

-- +goose Up
ALTER TABLE repos
    -- The repository's own webhook secret, AES-256-GCM sealed with SLIPWAY_SECRET_KEY
    -- (nonce || ciphertext). NULL: the forge's global secret applies.
    ADD COLUMN webhook_secret_enc bytea,
    -- Platforms to build; empty: .slipway.yml, else linux/amd64 + linux/arm64.
    ADD COLUMN platforms text[] NOT NULL DEFAULT '{}',
    -- Branch name patterns (path.Match globs) that are built; empty: every branch.
    -- Tags are always built.
    ADD COLUMN allowed_branches text[] NOT NULL DEFAULT '{}',
    -- At most this many builds of the repository run at once.
    ADD COLUMN max_running integer NOT NULL DEFAULT 2 CHECK (max_running BETWEEN 1 AND 100),
    -- A new push to a branch cancels that branch's older queued and running builds.
    ADD COLUMN supersede boolean NOT NULL DEFAULT true,
    -- The forge's default branch, from the last push payload that named it.
    ADD COLUMN default_branch text NOT NULL DEFAULT '',
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- +goose Down
ALTER TABLE repos
    DROP COLUMN webhook_secret_enc,
    DROP COLUMN platforms,
    DROP COLUMN allowed_branches,
    DROP COLUMN max_running,
    DROP COLUMN supersede,
    DROP COLUMN default_branch,
    DROP COLUMN updated_at;
