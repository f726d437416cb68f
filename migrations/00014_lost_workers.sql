-- +goose Up
-- How many workers a job lost: rescues of it after its heartbeat went stale
-- (the worker was killed, ran out of memory, or lost the database). The
-- second loss fails the build instead of queueing it again (issue 12): a build
-- that kills its worker would otherwise kill one worker after another.
ALTER TABLE jobs ADD COLUMN lost_workers int NOT NULL DEFAULT 0 CHECK (lost_workers >= 0);

-- +goose Down
ALTER TABLE jobs DROP COLUMN lost_workers;
