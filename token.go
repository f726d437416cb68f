package slipway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"time"
)

// Role is what an API token may do. Each role may do everything the roles
// before it in Roles may do. The values mirror the CHECK constraint on
// api_tokens.role.
type Role string

// Roles, weakest first.
const (
	// RoleViewer reads builds, logs and promotions.
	RoleViewer Role = "viewer"
	// RoleDeveloper also triggers, retries and cancels builds.
	RoleDeveloper Role = "developer"
	// RoleReleaseManager also promotes builds.
	RoleReleaseManager Role = "release-manager"
	// RoleAdmin also manages repositories, secrets and tokens, and may force
	// a version tag to move.
	RoleAdmin Role = "admin"
)

// Roles lists every role, weakest first.
var Roles = []Role{RoleViewer, RoleDeveloper, RoleReleaseManager, RoleAdmin}

func (r Role) rank() int {
	for i, v := range Roles {
		if r == v {
			return i
		}
	}
	return -1
}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool { return r.rank() >= 0 }

// Allows reports whether a token with role r may do what needs role need.
func (r Role) Allows(need Role) bool { return r.Valid() && r.rank() >= need.rank() }

// Token is an API token as stored: everything but its secret.
type Token struct {
	ID         int64      `json:"id"`
	Name       string     `json:"name"`
	Role       Role       `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

// tokenNameRE mirrors the CHECK constraint on api_tokens.name.
var tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$`)

// ValidTokenName reports whether name may name a token: 1 to 100 letters,
// digits and "_.@-", starting with a letter or digit.
func ValidTokenName(name string) bool { return tokenNameRE.MatchString(name) }

// TokenPrefix starts every token secret slipway makes, so that secret scanners
// and people can tell one when they see it.
const TokenPrefix = "slw_"

// NewTokenSecret returns a new random token secret: TokenPrefix and 32 random
// bytes in URL-safe base64.
func NewTokenSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// HashToken returns the SHA-256 of a token secret, the form in which it is
// stored and looked up.
func HashToken(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// TokenService stores API tokens. Implementations are safe for concurrent use.
type TokenService interface {
	// CreateToken stores a token for secret (only its hash is kept). EINVALID
	// for a bad name or role, ECONFLICT when the name is taken.
	CreateToken(ctx context.Context, name string, role Role, secret string) (*Token, error)
	// FindTokens returns every token, oldest first.
	FindTokens(ctx context.Context) ([]*Token, error)
	// DeleteToken deletes a token; ENOTFOUND when there is none with id.
	DeleteToken(ctx context.Context, id int64) error
	// AuthenticateToken returns the token whose secret is secret and records
	// its use; ENOTFOUND when there is none.
	AuthenticateToken(ctx context.Context, secret string) (*Token, error)
}

// Session is a dashboard sign-in, stored server-side: the browser's cookie
// holds only a random id (see NewTokenSecret), of which the store keeps the
// SHA-256 (HashToken). A session of a stored token (TokenID set) ends when
// the token is deleted; one of the bootstrap admin token holds AdminSHA256,
// the SHA-256 of the admin token it signed in with.
type Session struct {
	TokenID     *int64
	AdminSHA256 []byte
	// Token is the stored token's name and role (nil for the admin token).
	Token     *Token
	ExpiresAt time.Time
}

// SessionService stores dashboard sessions. Implementations are safe for
// concurrent use.
type SessionService interface {
	// CreateSession stores a session under the SHA-256 of id that ends at
	// expires; exactly one of tokenID and adminSHA256 is set.
	CreateSession(ctx context.Context, id string, tokenID *int64, adminSHA256 []byte, expires time.Time) error
	// FindSession returns the unexpired session of id, with its token;
	// ENOTFOUND when there is none (expired, signed out, token deleted).
	FindSession(ctx context.Context, id string) (*Session, error)
	// DeleteSession ends the session of id; no error when there is none.
	DeleteSession(ctx context.Context, id string) error
}
