-- +goose Up
-- The commit-status outbox rows are written by the Go code's statements
-- (postgres.statusOutbox, in the statement that changes a build's state),
-- where the rule is visible and tested, instead of by a trigger.
DROP TRIGGER builds_forge_status ON builds;
DROP FUNCTION forge_status_enqueue();

-- +goose Down
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
