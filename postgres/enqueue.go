package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/slipway-ci/slipway"
)

// EnqueueTrigger implements slipway.BuildService in one transaction: the
// repository upsert, the ref lock, the build with its delivery and its job
// (with the superseding of older builds) go to PostgreSQL as one pipelined
// batch inside BEGIN and COMMIT: all of it commits or none. The workers'
// wake-up follows in the same batch, after the COMMIT (see sqlJobWake); the
// new build is read back after it. A delivery id seen before makes no build
// (sqlEnqueue skips it), so a redelivery leaves nothing written, and answers
// the first build with Created false. When another delivery of the same id
// is still in flight, the delivery insert waits for it, as the unique index
// makes it, and then fails on it: the transaction rolls back, and the answer
// is the same.
func (s *BuildService) EnqueueTrigger(ctx context.Context, t slipway.Trigger, image string) (slipway.EnqueueResult, error) {
	return s.enqueueAlone(ctx, t, image, true)
}

// EnqueueTriggerID implements slipway.BuildService. A delivery of a
// registered repository (Trigger.RepoID and DeliveryID set) joins the
// deliveries that arrive while others are being committed, and goes to
// PostgreSQL with them in one transaction (see intake), and an error
// reaches only the delivery it belongs to (see intake.send); any other
// trigger is enqueued alone, as EnqueueTrigger does.
func (s *BuildService) EnqueueTriggerID(ctx context.Context, t slipway.Trigger, image string) (slipway.EnqueueResult, error) {
	if t.RepoID == 0 || t.DeliveryID == "" {
		return s.enqueueAlone(ctx, t, image, false)
	}
	id, err := s.intake.enqueue(ctx, s, t, image)
	return s.enqueueResult(ctx, t, id, err, false)
}

// enqueueAlone enqueues t in a transaction of its own; readBack reads the
// new build (or the duplicate's) into EnqueueResult.Build.
func (s *BuildService) enqueueAlone(ctx context.Context, t slipway.Trigger, image string, readBack bool) (slipway.EnqueueResult, error) {
	ids, err := enqueueTx(ctx, s.db, []enqueueCall{{t: t, image: image}})
	var id int64
	if err == nil {
		id = ids[0]
	}
	return s.enqueueResult(ctx, t, id, err, readBack)
}

// enqueueResult makes the answer of an enqueue of t that gave id or err; id
// 0 without an error says sqlEnqueue skipped t. A delivery id seen before
// (skipped, or refused by the unique index when both raced) answers the
// build it made, Created false; a trigger skipped for any other reason had
// its repository deleted or renamed meanwhile.
func (s *BuildService) enqueueResult(ctx context.Context, t slipway.Trigger, id int64, err error, readBack bool) (slipway.EnqueueResult, error) {
	res := slipway.EnqueueResult{BuildID: id, Created: true}
	var pgErr *pgconn.PgError
	if err == nil && id == 0 || errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.TableName == "webhook_deliveries" {
		res = slipway.EnqueueResult{}
		err = s.db.pool.QueryRow(ctx, sqlDeliveryFind, t.Forge, t.DeliveryID).Scan(&res.BuildID)
		if errors.Is(err, pgx.ErrNoRows) {
			err = repoGone(t)
		}
	}
	if err == nil && readBack {
		res.Build, err = findBuildByID(ctx, s.db.pool, res.BuildID)
	}
	if err != nil {
		return slipway.EnqueueResult{}, unavailable(fmt.Errorf("enqueueing %s delivery %s: %w", t.Forge, t.DeliveryID, interpretError(err)))
	}
	return res, nil
}

// repoGone is the error of a trigger whose repository sqlEnqueue did not
// find: ECONFLICT when the caller had found it (Trigger.RepoID), since
// deleted or renamed.
func repoGone(t slipway.Trigger) error {
	if t.RepoID != 0 {
		return slipway.Errorf(slipway.ECONFLICT, "Repository %s/%s changed while the delivery was received; redeliver it.", t.Owner, t.Name)
	}
	return fmt.Errorf("inserting build: repository %s/%s not found after its upsert", t.Owner, t.Name)
}

// newBuildID is the id of the build the last sqlEnqueue of the session
// inserted: the session's last value of the builds' identity sequence. A
// scalar subquery, so PostgreSQL evaluates currval (volatile) once and can
// use the primary key, instead of once per row of a scan. The sequence is
// named (builds_id_seq, PostgreSQL's name for the identity column
// builds.id, which TestMigrate checks) and resolved once, when the
// statement is prepared.
const newBuildID = `(SELECT currval('builds_id_seq'::regclass))`

const (
	// enqueueTx of a new repository: registers it on first sight. A
	// registered repository's clone URL and image are its settings (only the
	// admin API changes them) and win over the ones passed in: a delivery
	// never re-points a repository at other code. Of a registered repository
	// only the default branch is updated, and only when the payload names
	// another one: an upsert that always updated would lock the repository's
	// row until commit and so queue every delivery of the repository behind
	// the WAL flush of the one before (issue 11, Speed). A delivery racing the
	// first one of a new repository waits on DO NOTHING for it, and its next
	// statements see the row.
	sqlRepoUpsert = `-- EnqueueTrigger
WITH ins AS (
    INSERT INTO repos (forge, owner, name, clone_url, image, default_branch) VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (forge, lower(owner), lower(name)) DO NOTHING
    RETURNING id
)
UPDATE repos SET default_branch = $6
WHERE forge = $1 AND lower(owner) = lower($2) AND lower(name) = lower($3)
  AND $6 <> '' AND default_branch <> $6 AND NOT EXISTS (SELECT FROM ins)`

	// enqueueTx of repositories the callers found (Trigger.RepoID): $1 their
	// ids, $2 the default branches the payloads name. Only a branch that
	// changed is written, so only then is the repository's row locked; the
	// rows are locked in the order of their ids (PostgreSQL locks the rows of
	// a sorted SELECT … FOR UPDATE after sorting them), so two batches that
	// change some of the same repositories cannot deadlock.
	sqlRepoBranch = `-- EnqueueTrigger
WITH changed AS (
    SELECT r.id, v.branch FROM repos r JOIN unnest($1::bigint[], $2::text[]) AS v(id, branch) ON r.id = v.id
    WHERE v.branch <> '' AND r.default_branch <> v.branch
    ORDER BY r.id
    FOR UPDATE OF r
)
UPDATE repos r SET default_branch = changed.branch FROM changed WHERE r.id = changed.id`

	// enqueueTx: serializes the deliveries of one ref of one repository
	// until commit, so the later of two concurrent pushes to a branch sees
	// the earlier build and supersedes it (sqlEnqueue); deliveries of other
	// refs go on in parallel. $1 are the lock keys of the refs (see
	// enqueueLockKey). Their locks are taken in the order of their hashes
	// (the sorted subquery feeds the aggregate row by row), so two
	// transactions that lock some of the same refs cannot deadlock.
	sqlRefLock = `-- EnqueueTrigger
SELECT count(pg_advisory_xact_lock(` + advisoryEnqueue + `, k))
FROM (SELECT DISTINCT hashtext(x) AS k FROM unnest($1::text[]) AS x ORDER BY k) keys`

	// enqueueTx: wakes the workers on $1 (slipway_jobs) once the builds are
	// committed, in a transaction of its own that commits without waiting
	// for the WAL flush. PostgreSQL serializes the commits of the
	// transactions that sent a NOTIFY (one lock on the notification queue,
	// held through the commit's flush), so a NOTIFY in the enqueue
	// transaction queued every delivery's durable commit behind the one
	// before (issue 11, Speed). A wake-up lost to a crash is a hint lost:
	// workers poll too. One wake-up serves all the builds of a transaction
	// (a worker claims until the queue is empty); it names the last one
	// (currval is the session's, so it still does after the COMMIT). When
	// the transaction made no build (every trigger skipped) it names the
	// session's build before, or fails on a session that never made one, and
	// either does no harm.
	sqlJobWake = `-- EnqueueTrigger
SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, ` + newBuildID + `::text)`

	sqlDeliveryFind = `-- EnqueueTrigger
SELECT build_id FROM webhook_deliveries WHERE forge = $1 AND delivery_id = $2`
)

// sqlEnqueue inserts the builds of enqueueTx, one per element of the
// parameter arrays $1–$19 (one trigger each, see enqueueArgs), with their
// deliveries and their queue jobs, and supersedes. It answers one row: ids,
// the new builds' ids in the order of the triggers, NULL for a trigger it
// skipped (identity values are drawn in the order of the sorted rows), and
// queued, the jobs it queued.
//
// A build takes its repository's clone URL, image and platforms as its
// settings are now, so a later change of the settings does not change a
// queued build; the repository is found by id ($4) when the caller found it,
// else by name. A trigger whose repository is not there (deleted or renamed
// since the caller found it) is skipped, and so is a trigger whose delivery
// id ($9) was committed before: a redelivery, found by the primary key of
// webhook_deliveries. Skipping (not failing) keeps the other triggers of
// the call, and the ids they draw, as they are. A trigger whose delivery id
// another transaction is committing at the same time fails the statement on
// that primary key, and the transaction rolls back. The image of a fork's
// pull request gets its suffix ($18, slipway.ForkImageSuffix). approval is
// slipway.ForkTrusted's rule on the trusted associations read in this
// transaction, so the setting that decides is the one the build is queued
// under: 'trusted' for a fork whose author's association the repository
// trusts, 'pending' for any other fork, ” otherwise.
//
// Each job is claimable at once, or never until approved for a build whose
// approval is pending. Supersede: a new build of a branch (or of a pull
// request, whose ref is its pull-request ref) stops the older builds of that
// ref still on their way, when its repository supersedes. Only the same ref
// is touched, so a tag, another branch or the default branch is never
// superseded by a different ref. A queued build ends canceled here; a
// running one gets cancel_reason, and its worker is told on $20
// (slipway_cancel, "JOB_ID REASON") or by its heartbeat. Every stopped build
// is announced on $21 (slipway_builds). The notifications go out at commit;
// the workers are woken after it (sqlJobWake). The older job rows are locked
// oldest build first (as CancelRefBuilds does; every other writer locks one
// job, then its build).
//
// The older builds are read from the statement's snapshot, which holds none
// of the builds it inserts: so no two triggers of one call may share a ref
// (the intake keeps them apart by their lock keys), or the later would not
// supersede the earlier; nor may two share a delivery id (ids pairs them
// with their triggers by it).
var sqlEnqueue = `-- JobInsert
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::int[], $11::text[], $12::text[], $13::text[], $14::bool[], $15::text[],
        $16::bool[], $17::text[], $18::text[], $19::text[]) WITH ORDINALITY
        AS v(forge, owner, name, repo_id, ref, commit_sha, message, sender, delivery_id, pull_request, pr_title,
             pr_author, pr_url, pr_fork, pr_base, verify_ref, pr_association, image_suffix, event, ord)
), nb AS (
    INSERT INTO builds (repo_id, ref, commit_sha, message, sender, delivery_id, clone_url, image, target_platforms,
        pull_request, pr_title, pr_author, pr_url, pr_fork, pr_base, verify_ref, pr_association, approval)
    SELECT r.id, v.ref, v.commit_sha, v.message, v.sender, v.delivery_id, r.clone_url, r.image || v.image_suffix,
        r.platforms, v.pull_request, v.pr_title, v.pr_author, v.pr_url, v.pr_fork, v.pr_base, v.verify_ref,
        v.pr_association,
        CASE WHEN NOT v.pr_fork THEN ''
             WHEN v.pr_association <> '' AND v.pr_association = ANY (r.trusted_associations) THEN 'trusted'
             ELSE 'pending' END
    -- Each trigger's repository, and its delivery id's earlier delivery, is
    -- a lookup of its own by a unique index: OFFSET 0 keeps the
    -- repository's from becoming a hash join over every repository, and the
    -- delivery's from becoming a hashed subplan over every delivery ever
    -- received (both were the generic plan, cached while the tables were
    -- small, and intake slowed as the deliveries grew).
    FROM v CROSS JOIN LATERAL (
        SELECT * FROM repos r
        WHERE r.forge = v.forge AND lower(r.owner) = lower(v.owner) AND lower(r.name) = lower(v.name)
          AND (v.repo_id = 0 OR r.id = v.repo_id)
        OFFSET 0
    ) r
    WHERE v.delivery_id = ''
       OR NOT EXISTS (SELECT FROM webhook_deliveries d WHERE d.forge = v.forge AND d.delivery_id = v.delivery_id OFFSET 0)
    ORDER BY v.ord
    RETURNING id, repo_id, ref, state, approval, delivery_id
), delivery AS (
    INSERT INTO webhook_deliveries (forge, delivery_id, event, build_id)
    SELECT v.forge, v.delivery_id, v.event, nb.id FROM nb JOIN v ON v.delivery_id = nb.delivery_id
    WHERE v.delivery_id <> ''
), job AS (
    INSERT INTO jobs (build_id, repo_id, run_after)
    SELECT nb.id, nb.repo_id, CASE WHEN nb.approval = 'pending' THEN 'infinity'::timestamptz ELSE now() END
    FROM nb
    RETURNING id
), newer AS (
    SELECT nb.id, nb.repo_id, nb.ref,
           CASE WHEN nb.ref LIKE 'refs/heads/%' THEN substr(nb.ref, 12) END AS short
    FROM nb JOIN repos r ON r.id = nb.repo_id
    WHERE r.supersede
      AND (nb.ref LIKE 'refs/heads/%' OR nb.ref LIKE 'refs/pull/%' OR nb.ref LIKE 'refs/merge-requests/%')
), older AS (
    -- The older builds are looked up per new build by repository and ref,
    -- each by equality, so the scan is of builds_active_ref (the ref's
    -- active builds), never of every build the repository ever had. An API
    -- build not resolved yet may name the branch by its short name: both
    -- names go in one "= ANY" of that index (a second lookup by the short
    -- name alone was planned as a scan of builds_repo_id, the repository's
    -- whole history). "+ 0" keeps "id <" from making builds_repo_id look as
    -- good to a plan cached while the tables were small (a fresh
    -- installation, the benchmark). Each older build's job is then looked up
    -- by its build_id (one job per build): LIMIT 1 keeps that lookup a
    -- subquery of its own, so no plan can turn it into a scan of every active
    -- job of the queue (a plain join did, in a plan cached while the queue
    -- was short, and intake slowed with every job waiting). The index gives
    -- a ref's builds oldest first, so their jobs are locked in the order
    -- CancelRefBuilds locks them in.
    SELECT j.id, j.build_id, j.state, newer.id AS newer_id FROM newer
    CROSS JOIN LATERAL (
        SELECT b.id FROM builds b
        WHERE b.repo_id = newer.repo_id AND b.ref = ANY (ARRAY[newer.ref, newer.short]) AND b.id + 0 < newer.id
          AND b.state IN ('queued', 'running', 'testing') AND (b.ref = newer.ref OR b.commit_sha = '')
    ) b
    CROSS JOIN LATERAL (
        SELECT j.id, j.build_id, j.state FROM jobs j
        WHERE j.build_id = b.id AND j.state IN ('available', 'running') AND j.cancel_reason IS NULL
        LIMIT 1
    ) j
    FOR UPDATE OF j
), stopped AS (
    UPDATE jobs j
    SET cancel_reason = 'superseded by build ' || older.newer_id,
        state = CASE WHEN older.state = 'available' THEN 'completed' ELSE j.state END,
        finished_at = CASE WHEN older.state = 'available' THEN now() END
    FROM older WHERE j.id = older.id
    RETURNING j.id, j.build_id, older.state, older.newer_id
), canceled AS (
    UPDATE builds b SET state = 'canceled', error = 'superseded by build ' || stopped.newer_id, finished_at = now()
    FROM stopped WHERE b.id = stopped.build_id AND stopped.state = 'available'
    RETURNING b.id, b.state
), ` + statusOutbox("canceled_status", "canceled") + `, ` + statusOutbox("new_status", "nb") + `
SELECT (SELECT array_agg(nb.id ORDER BY v.ord) FROM v LEFT JOIN nb ON nb.delivery_id = v.delivery_id) AS ids,
       (SELECT count(*) FROM job) AS queued,
       (SELECT count(pg_notify($20, stopped.id || ' superseded by build ' || stopped.newer_id)) FROM stopped
        WHERE stopped.state = 'running') AS canceling,
       (SELECT count(pg_notify($21, build_id::text)) FROM stopped) AS announced`

// enqueueCall is one trigger of enqueueTx, with the image a new
// repository gets.
type enqueueCall struct {
	t     slipway.Trigger
	image string
}

// enqueueArgs are the parameters of sqlEnqueue for calls, then its
// channels.
func enqueueArgs(calls []enqueueCall) []any {
	n := len(calls)
	var (
		forge, owner, name, ref, commit, message, sender, delivery = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		title, author, url, base, association, suffix, event       = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		repoID                                                     = make([]int64, n)
		pull                                                       = make([]*int32, n)
		fork, verify                                               = make([]bool, n), make([]bool, n)
	)
	for i, c := range calls {
		t := c.t
		forge[i], owner[i], name[i], repoID[i], ref[i], commit[i] = t.Forge, t.Owner, t.Name, t.RepoID, t.Ref, t.Commit
		message[i], sender[i], delivery[i], event[i] = t.Message, t.Sender, t.DeliveryID, t.Event
		verify[i] = t.VerifyRef && t.Commit != ""
		if pr := t.PullRequest; pr != nil {
			num := int32(pr.Number)
			pull[i] = &num
			title[i], author[i], url[i], fork[i], base[i], association[i] = pr.Title, pr.Author, pr.URL, pr.Fork, pr.Base, pr.AuthorAssociation
			if pr.Fork {
				// Untrusted code never lands beside release images, nor does a
				// trusted author's fork: its head branch may take pushes from others.
				suffix[i] = slipway.ForkImageSuffix
			}
		}
	}
	return []any{forge, owner, name, repoID, ref, commit, message, sender, delivery, pull, title, author, url, fork,
		base, verify, association, suffix, event, ChannelCancel, ChannelBuilds}
}

// enqueueTx enqueues calls in one transaction, sent as one pipelined batch,
// and returns the new builds' ids in the order of calls, 0 for a call
// skipped (see sqlEnqueue: its delivery id was seen before, or its
// repository is gone). Each call is of a repository found by id
// (Trigger.RepoID), or calls is one call, whose repository is registered on
// first sight. An error leaves nothing written: a delivery id being
// committed at the same time fails with PostgreSQL's unique violation on
// webhook_deliveries.
func enqueueTx(ctx context.Context, db *DB, calls []enqueueCall) ([]int64, error) {
	repoIDs, branches, keys := make([]int64, len(calls)), make([]string, len(calls)), make([]string, len(calls))
	for i, c := range calls {
		repoIDs[i], branches[i], keys[i] = c.t.RepoID, c.t.DefaultBranch, enqueueLockKey(c.t)
	}
	batch := &pgx.Batch{}
	batch.Queue("BEGIN")
	if t := calls[0].t; t.RepoID == 0 {
		batch.Queue(sqlRepoUpsert, t.Forge, t.Owner, t.Name, t.CloneURL, calls[0].image, t.DefaultBranch)
	} else {
		batch.Queue(sqlRepoBranch, repoIDs, branches)
	}
	batch.Queue(sqlRefLock, keys)
	batch.Queue(sqlEnqueue, enqueueArgs(calls)...)
	batch.Queue("COMMIT")
	batch.Queue(sqlJobWake, ChannelJobs)

	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	ids, err := sendEnqueueBatch(ctx, conn.Conn(), batch, len(calls))
	if err != nil && conn.Conn().PgConn().TxStatus() == 'E' {
		// A failed statement leaves the explicit transaction aborted: roll it
		// back here, or the pool would close the connection.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
	}
	return ids, err
}

// sendEnqueueBatch sends the batch of enqueueTx for n calls on conn and
// reads its results in order.
func sendEnqueueBatch(ctx context.Context, conn *pgx.Conn, batch *pgx.Batch, n int) ([]int64, error) {
	br := conn.SendBatch(ctx, batch)
	defer br.Close()
	for _, what := range []string{"beginning", "registering repository", "locking ref"} {
		if _, err := br.Exec(); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	var (
		found  []*int64
		queued int64
	)
	if err := br.QueryRow().Scan(&found, &queued, nil, nil); err != nil {
		return nil, fmt.Errorf("inserting builds: %w", err)
	}
	ids := make([]int64, len(found))
	made := 0
	for i, id := range found {
		if id != nil {
			ids[i] = *id
			made++
		}
	}
	if len(ids) != n || queued != int64(made) {
		// Not reached: the COMMIT already sent commits what was inserted.
		return nil, fmt.Errorf("inserting builds: %d answers and %d jobs for %d triggers and %d builds", len(ids), queued, n, made)
	}
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("committing: %w", err)
	}
	// The builds are committed: a failed wake-up is only a late pickup (the
	// workers poll), not a failed delivery.
	_, _ = br.Exec()
	_ = br.Close()
	return ids, nil
}

// advisoryEnqueue is the first key of EnqueueTrigger's advisory locks
// ("slie"), apart from JobClaim's.
const advisoryEnqueue = "1936484709"

// enqueueLockKey names the ref of t for sqlRefLock: forge, owner and name in
// lower case, as the repository's unique index compares them, and the branch
// by its short name, since a build triggered through the API may name it so
// (sqlEnqueue supersedes across both spellings).
func enqueueLockKey(t slipway.Trigger) string {
	ref, _ := strings.CutPrefix(t.Ref, "refs/heads/")
	return t.Forge + "/" + strings.ToLower(t.Owner) + "/" + strings.ToLower(t.Name) + " " + ref
}
