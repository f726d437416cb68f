-- Commit statuses back to the forge (issue 3, item 6) and the platforms a
-- repository's settings ask a build for (issue 3, item 1).

-- +goose Up

-- The platforms the repository's settings asked for when the build was queued;
-- empty: .slipway.yml decides (else linux/amd64 + linux/arm64). Named apart from
-- builds.platforms, which holds the pushed per-platform digests.
ALTER TABLE builds ADD COLUMN target_platforms text[] NOT NULL DEFAULT '{}';

-- The outbox of commit statuses to send to the forge. A row is written by the
-- trigger below in the very transaction that changes the build's state, so a
-- state change and its status are committed together or not at all; a sender
-- loop (forge.Sender) posts them later and retries with backoff. A forge that is
-- down therefore never fails or delays a build.
--
-- outcome: pending (to send, or waiting for a retry at next_attempt_at),
-- sent, superseded (a newer state of the same build was queued before this one
-- went out), failed (gave up after max attempts), skipped (no API token for the
-- forge). leased_until is set while a sender is posting the row, so two senders
-- never post the same build's statuses at once or out of order.
CREATE TABLE forge_statuses (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    build_id        bigint NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    state           text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    outcome         text NOT NULL DEFAULT 'pending'
                    CHECK (outcome IN ('pending', 'sent', 'superseded', 'failed', 'skipped')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    last_error      text NOT NULL DEFAULT '' CHECK (length(last_error) <= 1024),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX forge_statuses_pending ON forge_statuses (next_attempt_at, id) WHERE outcome = 'pending';
CREATE INDEX forge_statuses_build ON forge_statuses (build_id, id DESC);

-- ForgeStatusEnqueue: one outbox row per state a forge is told about. testing is
-- not one of them (the forge still sees "running").
-- +goose StatementBegin
CREATE FUNCTION forge_status_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IN ('queued', 'running', 'succeeded', 'failed', 'canceled')
       AND (TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state) THEN
        INSERT INTO forge_statuses (build_id, state) VALUES (NEW.id, NEW.state);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER builds_forge_status AFTER INSERT OR UPDATE OF state ON builds
    FOR EACH ROW EXECUTE FUNCTION forge_status_enqueue();

-- +goose Down
DROP TRIGGER builds_forge_status ON builds;
DROP FUNCTION forge_status_enqueue();
DROP TABLE forge_statuses;
ALTER TABLE builds DROP COLUMN target_platforms;
