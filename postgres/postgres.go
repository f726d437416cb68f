// Package postgres stores slipway's repositories, builds, logs and build queue in
// PostgreSQL through pgx.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/migrations"
)

// DB is a pool of connections to slipway's database.
type DB struct {
	pool *pgxpool.Pool
}

// Open connects to the database at url and checks that it answers.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message may quote the URL, password included: keep it out.
		return nil, slipway.Errorf(slipway.EINVALID, "SLIPWAY_DATABASE_URL is not a valid PostgreSQL URL or DSN")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening database pool: %w", err)
	}
	db := &DB{pool: pool}
	if err := db.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// Close closes every connection.
func (db *DB) Close() { db.pool.Close() }

// Pool returns the underlying pool, for tests and tools.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("pinging database %s:%d: %w", db.pool.Config().ConnConfig.Host, db.pool.Config().ConnConfig.Port, err)
	}
	return nil
}

func (db *DB) provider() (*goose.Provider, error) {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, fmt.Errorf("creating migration locker: %w", err)
	}
	// The session locker serializes concurrent migrators (several pods starting at once).
	p, err := goose.NewProvider(goose.DialectPostgres, stdlib.OpenDBFromPool(db.pool), migrations.FS,
		goose.WithSessionLocker(locker))
	if err != nil {
		return nil, fmt.Errorf("loading migrations: %w", err)
	}
	return p, nil
}

// Migrate applies every pending migration and returns the versions it applied.
func (db *DB) Migrate(ctx context.Context) ([]int64, error) {
	p, err := db.provider()
	if err != nil {
		return nil, err
	}
	// Close releases the *sql.DB wrapper (and its goroutine), not the pool.
	defer p.Close()
	results, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrating: %w", err)
	}
	versions := make([]int64, 0, len(results))
	for _, r := range results {
		versions = append(versions, r.Source.Version)
	}
	return versions, nil
}

// SchemaCurrent returns nil when every migration is applied, EUNAVAILABLE otherwise.
func (db *DB) SchemaCurrent(ctx context.Context) error {
	p, err := db.provider()
	if err != nil {
		return err
	}
	defer p.Close()
	pending, err := p.HasPending(ctx)
	if err != nil {
		return fmt.Errorf("checking schema version: %w", err)
	}
	if pending {
		return slipway.Errorf(slipway.EUNAVAILABLE, "the database schema is behind this slipway version: run `slipway migrate`")
	}
	return nil
}

// interpretError maps driver errors onto domain errors: no rows becomes not found,
// a unique violation a conflict, a check violation invalid input, and a database
// that cannot be reached or is restarting unavailable (the caller answers 503 and
// the client retries).
func interpretError(err error) error {
	var pgErr *pgconn.PgError
	if unreachable(err) {
		return unavailable(err)
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return slipway.Errorf(slipway.ENOTFOUND, "Not found.")
	case errors.As(err, &pgErr) && pgErr.Code == "23505":
		return slipway.Errorf(slipway.ECONFLICT, "Already exists.")
	case errors.As(err, &pgErr) && pgErr.Code == "23514":
		return slipway.Errorf(slipway.EINVALID, "Invalid value (constraint %s).", pgErr.ConstraintName)
	}
	return err
}

// unreachable tells whether err says the database could not be reached, went
// away, or is starting or shutting down: SQLSTATE classes 08 (connection
// exception) and 57P (operator intervention: admin shutdown, crash, cannot
// connect now), a failed connect, or a broken connection.
func unreachable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P")
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// unavailable marks err as EUNAVAILABLE when it says the database could not be
// reached, so callers answer 503 (try again) instead of 500. Other errors,
// pgx.ErrNoRows included, stay as they are and still match errors.Is.
func unavailable(err error) error {
	if err != nil && unreachable(err) && slipway.ErrorCode(err) != slipway.EUNAVAILABLE {
		return fmt.Errorf("%w: %w", slipway.Errorf(slipway.EUNAVAILABLE, "The database is unavailable; try again shortly."), err)
	}
	return err
}
