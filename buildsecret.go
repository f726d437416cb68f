package slipway

import (
	"context"
	"regexp"
	"time"
)

// SecretNameRE is what a build secret's name must match: the id a Dockerfile
// gives in RUN --mount=type=secret,id=NAME.
var SecretNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,99}$`)

// Limits of a build secret's value. Values shorter than MinSecretLen are
// refused because masking them in logs would blank out ordinary text.
const (
	MinSecretLen = 4
	MaxSecretLen = 64 << 10
)

// SecretInfo describes a stored build secret. It never holds the value.
type SecretInfo struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// SecretService stores build secrets of repositories, sealed at rest. Values go
// in through SetSecret and out only through OpenSecrets, to the worker that
// mounts them into a build. Implementations are safe for concurrent use.
type SecretService interface {
	// SetSecret creates or replaces a repository's secret. EINVALID for a bad
	// name or value, ENOTFOUND for an unknown repository.
	SetSecret(ctx context.Context, repoID int64, name string, value []byte) (*SecretInfo, error)
	// DeleteSecret removes a secret; ENOTFOUND when there is none.
	DeleteSecret(ctx context.Context, repoID int64, name string) error
	// FindSecrets lists a repository's secrets by name.
	FindSecrets(ctx context.Context, repoID int64) ([]SecretInfo, error)
	// OpenSecrets returns the values of the named secrets. A name that is not
	// stored is an EINVALID error that names it.
	OpenSecrets(ctx context.Context, repoID int64, names []string) (map[string][]byte, error)
	// FindRepoID finds a repository by owner and name (any forge); ENOTFOUND when
	// there is none, ECONFLICT when several forges have one by that name and
	// forge is "".
	FindRepoID(ctx context.Context, forge, owner, name string) (int64, error)
}
