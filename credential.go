package slipway

import (
	"context"
	"errors"
	"strings"
	"unicode"

	"golang.org/x/crypto/ssh"
)

// Limits of a repository's own clone credentials.
const (
	MaxCloneTokenLen    = 4 << 10
	MaxCloneUsernameLen = 100
	MaxDeployKeyLen     = 16 << 10
)

// RepoCredentials are a repository's own clone credentials, opened for the
// worker that clones it. CloneURL is the repository's registered clone URL:
// the worker sends a credential only to it.
type RepoCredentials struct {
	CloneURL string
	// CloneUsername and CloneToken are sent as HTTP basic auth; CloneToken
	// is "" when the repository has none. CloneUsername is "" when the
	// admin named none: the forge's default applies.
	CloneUsername string
	CloneToken    string
	// DeployKey is an unencrypted OpenSSH private key (PEM), nil when the
	// repository has none.
	DeployKey []byte
}

// DeployKeyInfo is what the admin API answers for a stored deploy key: the
// public key to add to the forge (authorized_keys form) and its SHA256
// fingerprint (as ssh-keygen -l prints it).
type DeployKeyInfo struct {
	PublicKey   string `json:"public_key"`
	Fingerprint string `json:"fingerprint"`
}

// RepoCredentialService stores a repository's own clone credentials, sealed
// at rest like build secrets. Values go in through the Set methods and out
// only through OpenRepoCredentials, to the worker. Safe for concurrent use.
type RepoCredentialService interface {
	// SetCloneToken stores the token (and the username git sends it under,
	// "" for the forge's default). EINVALID for a bad token or username,
	// ENOTFOUND for an unknown repository, EUNAVAILABLE without a sealing key.
	SetCloneToken(ctx context.Context, repoID int64, username, token string) error
	// DeleteCloneToken removes it; ENOTFOUND when there is none.
	DeleteCloneToken(ctx context.Context, repoID int64) error
	// SetDeployKey stores an OpenSSH private key checked by ParseDeployKey
	// and returns its public half. Errors as SetCloneToken.
	SetDeployKey(ctx context.Context, repoID int64, privateKey []byte) (*DeployKeyInfo, error)
	// DeleteDeployKey removes it; ENOTFOUND when there is none.
	DeleteDeployKey(ctx context.Context, repoID int64) error
	// OpenRepoCredentials returns the repository's clone URL and opened
	// credentials (empty ones when it has none).
	OpenRepoCredentials(ctx context.Context, repoID int64) (*RepoCredentials, error)
}

// CheckCloneToken returns EINVALID unless token and username are fit to
// send as HTTP basic auth: a token of MinSecretLen to MaxCloneTokenLen bytes
// without spaces or control characters, a username without ':' (it ends
// the username in basic auth), spaces or control characters. The message
// never quotes the token.
func CheckCloneToken(username, token string) error {
	bad := func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }
	if len(token) < MinSecretLen || len(token) > MaxCloneTokenLen || strings.ContainsFunc(token, bad) {
		return Errorf(EINVALID, "token must be %d to %d bytes without spaces or control characters.", MinSecretLen, MaxCloneTokenLen)
	}
	if len(username) > MaxCloneUsernameLen || strings.ContainsFunc(username, bad) || strings.Contains(username, ":") {
		return Errorf(EINVALID, "username must be at most %d bytes without ':', spaces or control characters.", MaxCloneUsernameLen)
	}
	return nil
}

// ParseDeployKey checks an OpenSSH private key (the file ssh-keygen writes,
// or a PEM RSA/ECDSA key) and returns its public half. EINVALID, never
// quoting the key, for a key that is malformed, too large or protected by
// a passphrase (the worker has no one to ask for it).
func ParseDeployKey(privateKey []byte) (*DeployKeyInfo, error) {
	if len(privateKey) == 0 || len(privateKey) > MaxDeployKeyLen {
		return nil, Errorf(EINVALID, "private_key must be an OpenSSH private key of at most %d KiB.", MaxDeployKeyLen>>10)
	}
	signer, err := ssh.ParsePrivateKey(privateKey)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, Errorf(EINVALID, "The deploy key is protected by a passphrase; give one without (ssh-keygen -t ed25519 -N '' -f deploy_key).")
		}
		return nil, Errorf(EINVALID, "private_key is not an OpenSSH private key (the file ssh-keygen -t ed25519 -N '' writes, starting with -----BEGIN OPENSSH PRIVATE KEY-----).")
	}
	pub := signer.PublicKey()
	return &DeployKeyInfo{
		PublicKey:   strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))),
		Fingerprint: ssh.FingerprintSHA256(pub),
	}, nil
}
