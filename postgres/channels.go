package postgres

// The LISTEN/NOTIFY channels of slipway, in one place: Go code sends and
// listens on these constants, and a migration that calls pg_notify must use
// the same literal (TestChannelNamesOfMigrations checks it). Payloads are
// small ids, far below PostgreSQL's 8,000-byte limit. A notification is a
// hint, never the truth: whoever acts on one reads the tables again.
const (
	// ChannelJobs carries a build id (or "released", "rescued") when a job
	// may be claimable: it wakes idle workers.
	ChannelJobs = "slipway_jobs"
	// ChannelBuilds carries "<build id>" whenever a build row changes (state,
	// result, a platform's current step): it wakes the dashboard's Now page
	// and the status sender (Notifier.WatchBuilds).
	ChannelBuilds = "slipway_builds"
	// ChannelCancel carries "<job id> <reason>" when a running job should stop.
	ChannelCancel = "slipway_cancel"
	// ChannelLogs carries "<build id> <last line>" when log lines are stored
	// and "<build id> end" when a build reaches a final state (the
	// builds_notify_done trigger of migration 00006 sends that one).
	ChannelLogs = "build_log"
)

// Channels lists every channel above, for tests and tools.
var Channels = []string{ChannelJobs, ChannelBuilds, ChannelCancel, ChannelLogs}
