// Package pgtest gives tests a fresh, migrated PostgreSQL database of their own,
// on the server that TEST_DATABASE_URL points at (make test starts one).
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway/postgres"
)

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
	counter      atomic.Int64
)

// URL returns TEST_DATABASE_URL, skipping the test when it is unset.
func URL(t testing.TB) string {
	u := os.Getenv("TEST_DATABASE_URL")
	if u == "" {
		t.Skip("TEST_DATABASE_URL is unset: run `make test`, which starts PostgreSQL")
	}
	return u
}

// NewDB returns a connected DB on a new database migrated to the current schema,
// dropped when the test ends. Databases are copied from a template migrated once
// per test binary, which is much faster than migrating each.
func NewDB(t testing.TB) *postgres.DB {
	t.Helper()
	db, _ := NewDBURL(t)
	return db
}

// NewDBURL is NewDB that also returns the new database's URL, for tests that start
// a whole slipway process on it.
func NewDBURL(t testing.TB) (*postgres.DB, string) {
	t.Helper()
	base := URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	templateOnce.Do(func() { templateName, templateErr = makeTemplate(ctx, base) })
	if templateErr != nil {
		t.Fatalf("preparing template database: %v", templateErr)
	}
	name := fmt.Sprintf("%s_%d", templateName, counter.Add(1))
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connecting to TEST_DATABASE_URL: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, templateName)); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	dbURL := withDatabase(t, base, name)
	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatalf("opening database %s: %v", name, err)
	}
	t.Cleanup(func() {
		db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("connecting to drop %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			t.Errorf("dropping database %s: %v", name, err)
		}
	})
	return db, dbURL
}

func makeTemplate(ctx context.Context, base string) (string, error) {
	name := fmt.Sprintf("slipway_test_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6)
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	db, err := postgres.Open(ctx, u.String())
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		return "", err
	}
	return name, nil
}

func withDatabase(t testing.TB, base, name string) string {
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("TEST_DATABASE_URL must be a URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}
