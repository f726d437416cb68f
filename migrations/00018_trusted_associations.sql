-- Forks a repository trusts (issue 13 item 3): a fork's pull request whose
-- author has one of the repository's trusted_associations (GitHub's
-- author_association: OWNER, MEMBER, COLLABORATOR) runs without waiting for a
-- developer's approval. Empty: every fork's pull request waits.
-- The build keeps the association its signed delivery named (pr_association,
-- '' when the forge names none) and approval 'trusted' when it let the build
-- run without an approval.

-- +goose Up
ALTER TABLE repos ADD COLUMN trusted_associations text[] NOT NULL DEFAULT '{}'
    CHECK (trusted_associations <@ ARRAY['OWNER', 'MEMBER', 'COLLABORATOR']::text[]);
ALTER TABLE builds
    ADD COLUMN pr_association text NOT NULL DEFAULT '' CHECK (length(pr_association) <= 32),
    DROP CONSTRAINT builds_approval_check,
    ADD CONSTRAINT builds_approval_check CHECK (approval IN ('', 'pending', 'approved', 'trusted'));

-- +goose Down
UPDATE builds SET approval = '' WHERE approval = 'trusted';
ALTER TABLE builds
    DROP COLUMN pr_association,
    DROP CONSTRAINT builds_approval_check,
    ADD CONSTRAINT builds_approval_check CHECK (approval IN ('', 'pending', 'approved'));
ALTER TABLE repos DROP COLUMN trusted_associations;
