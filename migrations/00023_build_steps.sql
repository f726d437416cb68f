-- The step each platform of a build is at (issue 11 item 4), kept by the
-- log store as the worker's lines arrive (AppendLog): the Now page reads one
-- row per platform instead of re-reading every running build's log. The
-- platform '' holds the steps of no platform (checkout, push). attempt is the
-- build's attempt the step belongs to, so a retried build shows no step of
-- its last attempt. A changed step sends NOTIFY slipway_builds.

-- +goose Up
CREATE TABLE build_steps (
    build_id bigint NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    platform text NOT NULL CHECK (length(platform) <= 100),
    step text NOT NULL CHECK (length(step) BETWEEN 1 AND 200),
    attempt integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (build_id, platform)
);

-- +goose Down
DROP TABLE build_steps;
