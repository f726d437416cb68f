-- +goose Up
-- Where a repository's builds may be promoted besides their own image
-- (issue 12: promotion reached any registry host and any repository).
-- Empty: SLIPWAY_PROMOTION_TARGETS applies.
ALTER TABLE repos ADD COLUMN promotion_targets text[] NOT NULL DEFAULT '{}';

-- +goose Down
ALTER TABLE repos DROP COLUMN promotion_targets;
