package postgres

import (
	"context"
	"fmt"
	"time"
)

// JobStats is a snapshot of the queue for metrics.
type JobStats struct {
	// Available is the number of jobs waiting to be claimed.
	Available int
	// Running is the number of jobs under a worker's lease.
	Running int
	// OldestAvailable is how long the oldest waiting job has waited; zero when none waits.
	OldestAvailable time.Duration
}

// JobStats: reads without locking, so a scrape never waits on a claim. Both
// partial indexes (jobs_available, jobs_running) serve it.
const sqlJobStats = `-- JobStats
SELECT
    (SELECT count(*) FROM jobs WHERE state = 'available')::int,
    (SELECT count(*) FROM jobs WHERE state = 'running')::int,
    coalesce(extract(epoch FROM now() - (SELECT min(created_at) FROM jobs WHERE state = 'available')), 0)::float8`

// JobStats counts waiting and running jobs and measures the oldest wait.
func (db *DB) JobStats(ctx context.Context) (JobStats, error) {
	var s JobStats
	var oldest float64
	if err := db.pool.QueryRow(ctx, sqlJobStats).Scan(&s.Available, &s.Running, &oldest); err != nil {
		return JobStats{}, fmt.Errorf("reading queue stats: %w", interpretError(err))
	}
	s.OldestAvailable = time.Duration(oldest * float64(time.Second))
	return s, nil
}
