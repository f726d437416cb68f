-- Pull requests (issue 13): a build of a pull request (a merge request on
-- GitLab) keeps its number, title, author and web link, and whether its head
-- branch lives in a fork. Its ref is the base repository's pull-request ref
-- (refs/pull/N/head, refs/merge-requests/N/head), so superseding and the ref
-- filter treat one pull request as one line of builds.

-- +goose Up
ALTER TABLE builds
    ADD COLUMN pull_request integer CHECK (pull_request > 0),
    ADD COLUMN pr_title     text NOT NULL DEFAULT '' CHECK (length(pr_title) <= 1000),
    ADD COLUMN pr_author    text NOT NULL DEFAULT '' CHECK (length(pr_author) <= 255),
    ADD COLUMN pr_url       text NOT NULL DEFAULT '' CHECK (length(pr_url) <= 2048),
    ADD COLUMN pr_fork      boolean NOT NULL DEFAULT false,
    ADD COLUMN pr_base      text NOT NULL DEFAULT '' CHECK (length(pr_base) <= 255);
CREATE INDEX builds_pull_request ON builds (repo_id, pull_request, id) WHERE pull_request IS NOT NULL;

-- A fork's pull request waits for a developer's approval: approval is
-- 'pending' and its job's run_after is 'infinity', so no claim takes it
-- (claims need run_after <= now()); approving sets run_after to now().
ALTER TABLE builds
    ADD COLUMN approval    text NOT NULL DEFAULT '' CHECK (approval IN ('', 'pending', 'approved')),
    ADD COLUMN approved_by text NOT NULL DEFAULT '' CHECK (length(approved_by) <= 255),
    ADD COLUMN approved_at timestamptz;

-- +goose Down
ALTER TABLE builds DROP COLUMN approval, DROP COLUMN approved_by, DROP COLUMN approved_at;
DROP INDEX builds_pull_request;
ALTER TABLE builds
    DROP COLUMN pull_request,
    DROP COLUMN pr_title,
    DROP COLUMN pr_author,
    DROP COLUMN pr_url,
    DROP COLUMN pr_fork,
    DROP COLUMN pr_base;
