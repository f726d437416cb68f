-- The test cases of the JUnit reports tests' runners write (issue 14 item
-- 4): one row per case of one test (.slipway.yml's tests[].name) on one
-- platform of a build. Their own table, not the builds row's tests JSON: a
-- report may hold thousands of cases, and the build JSON carries only their
-- counts (tests[].cases). An attempt that runs a test again replaces that
-- test's and platform's rows.

-- +goose Up
CREATE TABLE test_cases (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- report order within (build, test, platform)
    build_id     bigint NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    platform     text NOT NULL,                                     -- linux/arm64
    test         text NOT NULL,                                     -- the slipway test
    name         text NOT NULL CHECK (length(name) <= 1024),        -- <testcase name>
    classname    text NOT NULL DEFAULT '' CHECK (length(classname) <= 1024),
    time_seconds double precision NOT NULL DEFAULT 0 CHECK (time_seconds >= 0),
    status       text NOT NULL CHECK (status IN ('passed', 'failed', 'skipped', 'error')),
    message      text NOT NULL DEFAULT '' CHECK (length(message) <= 4096) -- cut to 4 KiB
);
CREATE INDEX test_cases_build ON test_cases (build_id, test, platform, id);

-- +goose Down
DROP TABLE test_cases;
