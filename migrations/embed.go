// Package migrations holds slipway's numbered SQL migrations, embedded in the
// binary and applied by `slipway migrate` (and by `slipway dev` at start).
// Never edit a migration that has been merged: add a new one.
package migrations

import "embed"

// FS holds every migration file.
//
//go:embed *.sql
var FS embed.FS
