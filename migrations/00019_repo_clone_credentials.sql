-- A repository's own clone credentials (issue 15 item 3), sealed with
-- SLIPWAY_SECRET_KEY like build secrets and bound to the row: an access
-- token (with the username git sends it under) for HTTPS clones, and an
-- OpenSSH deploy key for ssh:// and git@host:path clones. The worker sends
-- each only to the repository's own clone URL. The deploy key's public
-- half and SHA256 fingerprint are kept in the clear for the API to show.

-- +goose Up
ALTER TABLE repos
    ADD COLUMN clone_token_enc bytea,
    ADD COLUMN clone_token_username text NOT NULL DEFAULT '' CHECK (length(clone_token_username) <= 100),
    ADD COLUMN deploy_key_enc bytea,
    ADD COLUMN deploy_key_public text NOT NULL DEFAULT '' CHECK (length(deploy_key_public) <= 16384),
    ADD COLUMN deploy_key_fingerprint text NOT NULL DEFAULT '' CHECK (length(deploy_key_fingerprint) <= 100),
    ADD CONSTRAINT repos_deploy_key_check CHECK ((deploy_key_enc IS NULL) = (deploy_key_fingerprint = ''));

-- +goose Down
ALTER TABLE repos
    DROP CONSTRAINT repos_deploy_key_check,
    DROP COLUMN deploy_key_fingerprint,
    DROP COLUMN deploy_key_public,
    DROP COLUMN deploy_key_enc,
    DROP COLUMN clone_token_username,
    DROP COLUMN clone_token_enc;
