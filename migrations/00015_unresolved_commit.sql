-- A build triggered through the API without a commit (issue 12, high 1: the
-- server never runs git against a repository's URL) is queued with the ref as
-- the user gave it and no commit; the worker resolves both with git ls-remote
-- and records them before it checks anything out. And a commit a user named
-- together with a ref is checked by the worker to belong to that ref (issue
-- 12, medium: a developer built any commit and tagged it main).

-- +goose Up

-- commit_sha is '' only while the worker has not resolved it yet: a build
-- that got as far as testing or succeeded always names its commit. One that
-- failed or was canceled before resolving keeps ''.
ALTER TABLE builds DROP CONSTRAINT builds_commit_sha_check;
ALTER TABLE builds ADD CONSTRAINT builds_commit_sha_check
    CHECK (commit_sha ~ '^[0-9a-f]{40}$' OR (commit_sha = '' AND state NOT IN ('testing', 'succeeded')));

-- An unresolved build may carry a short ref ("main", "v1.2"), which the worker
-- tries as a branch, then as a tag; once its commit is known the ref is full.
ALTER TABLE builds DROP CONSTRAINT builds_ref_check;
ALTER TABLE builds ADD CONSTRAINT builds_ref_check
    CHECK ((ref LIKE 'refs/%' OR commit_sha = '') AND length(ref) BETWEEN 1 AND 1024);

-- verify_ref: commit_sha was named by a user, not sent by the forge, so the
-- worker checks that it belongs to ref (reachable from the branch's tip, or
-- the commit a tag points at) before it builds anything.
ALTER TABLE builds ADD COLUMN verify_ref boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE builds DROP COLUMN verify_ref;
ALTER TABLE builds DROP CONSTRAINT builds_ref_check;
ALTER TABLE builds ADD CONSTRAINT builds_ref_check CHECK (ref LIKE 'refs/%' AND length(ref) <= 1024);
ALTER TABLE builds DROP CONSTRAINT builds_commit_sha_check;
ALTER TABLE builds ADD CONSTRAINT builds_commit_sha_check CHECK (commit_sha ~ '^[0-9a-f]{40}$');
