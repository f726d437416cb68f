-- The release record (issue 13 item 7): what a version tag released, for a
-- QA sign-off. Its own table, not columns on builds: a release has its own
-- key (repository, version), it joins two builds (the tested build whose
-- index it promoted, and the tag push's build, the same one when the tag's
-- commit had to be built first), and one tested build can be released under
-- several versions.
--
-- A row is written only once a release has fully succeeded: its tags were
-- promoted (audit rows promotion_ids) and, when .slipway.yml names a chart,
-- the chart was pushed. A refused or failed release writes no row (its audit
-- rows say why). The version tag never moves, so a second successful release
-- of a version (the tag pushed again, a retry) has the same index digest; it
-- replaces the row with its own build, chart push and time.

-- +goose Up
CREATE TABLE releases (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repo_id         bigint NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    version         text NOT NULL CHECK (version ~ '^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$'), -- 1.2.3, the version tag
    tag             text NOT NULL CHECK (length(tag) BETWEEN 1 AND 255),                   -- v1.2.3, as tagged in git
    tags            text[] NOT NULL,                                                       -- every image tag written
    image           text NOT NULL,                                                         -- registry/owner/name
    commit_sha      text NOT NULL CHECK (commit_sha ~ '^[0-9a-f]{40}$'),
    index_digest    text NOT NULL CHECK (index_digest ~ '^sha256:[0-9a-f]{64}$'),
    -- [{"platform", "digest", "attestation"}]: each platform's image manifest
    -- and the digest of its provenance attestation manifest ('' for none).
    platforms       jsonb NOT NULL CHECK (jsonb_typeof(platforms) = 'array'),
    source_build_id bigint NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    build_id        bigint NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    -- The pushed chart, '' when .slipway.yml names none.
    chart_ref         text NOT NULL DEFAULT '', -- oci://host/owner/charts/name:1.2.3
    chart_digest      text NOT NULL DEFAULT '' CHECK (chart_digest = '' OR chart_digest ~ '^sha256:[0-9a-f]{64}$'),
    chart_version     text NOT NULL DEFAULT '',
    chart_app_version text NOT NULL DEFAULT '',
    released_by     text NOT NULL,               -- the audit rows' actor: tag push v1.2.3 by <sender>
    promotion_ids   bigint[] NOT NULL DEFAULT '{}',
    released_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((chart_ref = '') = (chart_digest = ''))
);
CREATE UNIQUE INDEX releases_version ON releases (repo_id, version);
CREATE INDEX releases_repo ON releases (repo_id, released_at DESC, id DESC);

-- +goose Down
DROP TABLE releases;
