-- +goose Up
-- The tags a build did not move because another ref or a promotion owns
-- them (issue 10: a branch and a tag with the same name).
ALTER TABLE builds ADD COLUMN skipped_tags jsonb NOT NULL DEFAULT '[]'::jsonb;

-- +goose Down
ALTER TABLE builds DROP COLUMN skipped_tags;
