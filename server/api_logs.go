package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog/hlog"

	"github.com/slipway-ci/slipway"
)

// ssePoll is how often a live log stream looks at the database without a
// NOTIFY (which is only a hint), and sends a keep-alive comment.
const ssePoll = 5 * time.Second

// sseBatch is the most lines one read of a live log stream takes.
const sseBatch = 1000

// logEvent is the data of one "line" event of a live log stream.
type logEvent struct {
	No       int64     `json:"no"`
	Time     time.Time `json:"time"`
	Platform string    `json:"platform,omitempty"`
	Step     string    `json:"step,omitempty"`
	Text     string    `json:"text"`
}

// wantsFollow reports whether a log request asks for the live stream.
func wantsFollow(r *http.Request) bool {
	switch r.URL.Query().Get("follow") {
	case "1", "true":
		return true
	}
	return false
}

// streamBuildLog answers GET /api/v1/builds/{id}/logs?follow=1 with
// Server-Sent Events: the whole log (or, after a reconnect, what follows the
// Last-Event-ID), then new lines as they are stored, then an "end" event with
// the build's final state. Each "line" event's id is the line's number, so a
// client that reconnects with Last-Event-ID gets no line twice and misses none.
// Stored lines wake the stream through follow; it also polls every ssePoll.
func streamBuildLog(w http.ResponseWriter, r *http.Request, builds slipway.BuildService, follow slipway.LogFollower, id int64) {
	after := int64(0)
	if s := r.Header.Get("Last-Event-ID"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			writeError(w, r, slipway.Errorf(slipway.EINVALID, "Last-Event-ID must be a line number."))
			return
		}
		after = n
	}
	// A ResponseController reaches the connection's Flusher through middleware
	// writers that implement Unwrap.
	flusher := http.NewResponseController(w)
	// Subscribe before the first read, so nothing stored in between is missed.
	var wake <-chan struct{}
	if follow != nil {
		var stop func()
		wake, stop = follow.FollowLog(id)
		defer stop()
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if err := flusher.Flush(); err != nil {
		hlog.FromRequest(r).Error().Err(err).Msg("Streaming a log: the connection cannot flush")
		return
	}

	ctx := r.Context()
	logger := hlog.FromRequest(r)
	ticker := time.NewTicker(ssePoll)
	defer ticker.Stop()
	var sb strings.Builder
	for {
		b, err := builds.FindBuildByID(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				logger.Error().Err(err).Int64("build_id", id).Msg("Streaming build log")
			}
			return
		}
		done := b.State.Done()
		// Lines are stored before a build is completed, so once it is done one
		// more read drains the log.
		for {
			lines, err := builds.ReadLog(ctx, id, after, sseBatch)
			if err != nil {
				if ctx.Err() == nil {
					logger.Error().Err(err).Int64("build_id", id).Msg("Streaming build log")
				}
				return
			}
			sb.Reset()
			for _, l := range lines {
				data, _ := json.Marshal(logEvent{No: l.No, Time: l.Time, Platform: l.Platform, Step: l.Step, Text: l.Text})
				fmt.Fprintf(&sb, "id: %d\nevent: line\ndata: %s\n\n", l.No, data)
				after = l.No
			}
			if len(lines) > 0 {
				if _, err := w.Write([]byte(sb.String())); err != nil {
					return
				}
				flusher.Flush()
			}
			if len(lines) < sseBatch {
				break
			}
		}
		if done {
			data, _ := json.Marshal(map[string]any{"state": b.State, "error": b.Error, "lines": after})
			fmt.Fprintf(w, "event: end\ndata: %s\n\n", data)
			flusher.Flush()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-ticker.C:
			if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil {
				return
			}
			flusher.Flush()
		}
	}
}
