package postgres

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
)

// listener holds one connection that LISTENs on channels and hands every
// notification to onNotify, until ctx ends. When the connection fails it
// reconnects with backoff (250ms doubling to 10s) and calls onReconnect first,
// since notifications sent while nobody listened are lost: NOTIFY is a hint,
// and whoever relies on it must look at the tables again.
type listener struct {
	db          *DB
	logger      zerolog.Logger
	name        string // for the log: "Job listener", "Log listener"
	channels    []string
	onNotify    func(n *pgconn.Notification)
	onReconnect func()
}

// run listens until ctx ends; it returns nil then.
func (l *listener) run(ctx context.Context) error {
	backoff := 250 * time.Millisecond
	for {
		err := l.listenOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		l.logger.Warn().Err(err).Dur("retry_in", backoff).Msg(l.name + " lost its connection")
		l.onReconnect()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (l *listener) listenOnce(ctx context.Context) error {
	pc, err := l.db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A hijacked connection leaves the pool for good, so a LISTEN never leaks
	// into another user's session.
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+strings.Join(l.channels, "; LISTEN ")); err != nil {
		return err
	}
	// Anything sent before the LISTEN took effect was missed.
	l.onReconnect()
	for {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			l.onNotify(n)
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			// Idle: prove the connection still works.
			if err := conn.Ping(ctx); err != nil {
				return err
			}
		default:
			return err
		}
	}
}
