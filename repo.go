package slipway

import (
	"context"
	"path"
	"strings"
)

// Forges slipway receives webhooks from. The values mirror the CHECK constraint
// on repos.forge.
const (
	ForgeGitHub = "github"
	ForgeGitLab = "gitlab"
	ForgeGitea  = "gitea" // Gitea and Forgejo
)

// Forges lists every forge.
var Forges = []string{ForgeGitHub, ForgeGitLab, ForgeGitea}

// RepoCreate registers a repository with its settings. Zero fields take the
// global setting (Image: $SLIPWAY_REGISTRY/<owner>/<name>; MaxRunning 2;
// Supersede true).
type RepoCreate struct {
	Forge           string
	Owner           string
	Name            string
	CloneURL        string
	Image           string
	WebhookSecret   string // "": the forge's global secret applies
	Platforms       []string
	AllowedBranches []string
	MaxRunning      int
	Supersede       *bool
	// PromotionTargets: see Repo.PromotionTargets.
	PromotionTargets []string
	// TrustedAssociations: see Repo.TrustedAssociations.
	TrustedAssociations []string
}

// RepoUpdate changes a repository's settings. A nil field is left as is; an
// empty list or an empty WebhookSecret goes back to the global setting.
type RepoUpdate struct {
	CloneURL        *string
	Image           *string
	WebhookSecret   *string
	Platforms       *[]string
	AllowedBranches *[]string
	MaxRunning      *int
	Supersede       *bool
	// PromotionTargets: see Repo.PromotionTargets.
	PromotionTargets *[]string
	// TrustedAssociations: see Repo.TrustedAssociations.
	TrustedAssociations *[]string
}

// RepoKey names a repository. An empty Forge matches any forge; a name that
// exists on two forges then gives ECONFLICT.
type RepoKey struct {
	Forge string
	Owner string
	Name  string
}

// RepoService stores repositories and their settings. Implementations are safe
// for concurrent use. Webhook secrets are stored sealed and only
// FindRepoWebhookSecret ever returns one; no method's error text holds a secret.
type RepoService interface {
	// FindRepos returns every repository, ordered by forge, owner and name.
	FindRepos(ctx context.Context) ([]*Repo, error)
	// FindRepo returns ENOTFOUND when there is no such repository.
	FindRepo(ctx context.Context, k RepoKey) (*Repo, error)
	// CreateRepo returns ECONFLICT when the repository exists, EINVALID for a
	// bad setting, EUNAVAILABLE for a webhook secret while no key seals it.
	CreateRepo(ctx context.Context, c RepoCreate) (*Repo, error)
	// UpdateRepo returns the updated repository; errors as CreateRepo and FindRepo.
	UpdateRepo(ctx context.Context, k RepoKey, u RepoUpdate) (*Repo, error)
	// DeleteRepo deletes a repository and, with it, its builds.
	DeleteRepo(ctx context.Context, k RepoKey) error
	// FindRepoWebhookSecret returns the repository and its own webhook secret
	// ("" when it has none, or when the repository is unknown: then repo is nil).
	// Webhook receivers call it before checking a delivery's signature.
	FindRepoWebhookSecret(ctx context.Context, forge, owner, name string) (repo *Repo, secret string, err error)
}

// BranchAllowed reports whether a push to ref may be built under the
// repository's AllowedBranches (path.Match patterns). Tags and every branch are
// allowed when the list is empty.
func (r *Repo) BranchAllowed(ref string) bool {
	branch, ok := strings.CutPrefix(ref, "refs/heads/")
	if !ok || r == nil || len(r.AllowedBranches) == 0 {
		return true
	}
	for _, p := range r.AllowedBranches {
		if m, err := path.Match(p, branch); err == nil && m {
			return true
		}
	}
	return false
}
