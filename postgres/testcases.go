package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/slipway-ci/slipway"
)

// TestCaseService implements slipway.TestCaseService.
type TestCaseService struct {
	db *DB
}

var _ slipway.TestCaseService = (*TestCaseService)(nil)

// NewTestCaseService returns a TestCaseService over db.
func NewTestCaseService(db *DB) *TestCaseService { return &TestCaseService{db: db} }

// ReplaceTestCases implements slipway.TestCaseService: one transaction that
// deletes the earlier rows and inserts cases in one statement.
func (s *TestCaseService) ReplaceTestCases(ctx context.Context, buildID int64, test, platform string, cases []slipway.TestCase) error {
	n := len(cases)
	names, classes, statuses, messages := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	times := make([]float64, n)
	for i, c := range cases {
		names[i], classes[i], statuses[i], messages[i], times[i] = c.Name, c.Classname, string(c.Status), c.Message, c.TimeSeconds
	}
	err := pgx.BeginFunc(ctx, s.db.pool, func(tx pgx.Tx) error {
		var found bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM builds WHERE id = $1)`, buildID).Scan(&found); err != nil {
			return err
		}
		if !found {
			return slipway.Errorf(slipway.ENOTFOUND, "Build %d not found.", buildID)
		}
		if _, err := tx.Exec(ctx, `-- ReplaceTestCases
DELETE FROM test_cases WHERE build_id = $1 AND test = $2 AND platform = $3`, buildID, test, platform); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, `-- ReplaceTestCases
INSERT INTO test_cases (build_id, test, platform, name, classname, time_seconds, status, message)
SELECT $1, $2, $3, c.name, c.classname, c.time_seconds, c.status, c.message
FROM unnest($4::text[], $5::text[], $6::double precision[], $7::text[], $8::text[]) WITH ORDINALITY
	AS c (name, classname, time_seconds, status, message, no)
ORDER BY c.no`, buildID, test, platform, names, classes, times, statuses, messages)
		return err
	})
	if err != nil {
		var serr *slipway.Error
		if errors.As(err, &serr) {
			return err
		}
		return fmt.Errorf("storing the test cases of %s on %s of build %d: %w", test, platform, buildID, interpretError(err))
	}
	return nil
}

// FindTestCases implements slipway.TestCaseService.
func (s *TestCaseService) FindTestCases(ctx context.Context, buildID int64) ([]slipway.TestCase, error) {
	rows, err := s.db.pool.Query(ctx, `-- FindTestCases
SELECT test, platform, name, classname, time_seconds, status, message FROM test_cases WHERE build_id = $1
ORDER BY CASE status WHEN 'failed' THEN 0 WHEN 'error' THEN 0 WHEN 'skipped' THEN 1 ELSE 2 END, test, platform, id`, buildID)
	if err != nil {
		return nil, fmt.Errorf("finding the test cases of build %d: %w", buildID, unavailable(err))
	}
	out := []slipway.TestCase{}
	var c slipway.TestCase
	_, err = pgx.ForEachRow(rows, []any{&c.Test, &c.Platform, &c.Name, &c.Classname, &c.TimeSeconds, &c.Status, &c.Message}, func() error {
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("finding the test cases of build %d: %w", buildID, unavailable(err))
	}
	return out, nil
}
