package server

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/forge"
)

// maxRepoBodyBytes caps the body of a repository create or update.
const maxRepoBodyBytes = 64 << 10

// handleRepoList answers GET /api/v1/repos.
func handleRepoList(repos slipway.RepoService) http.HandlerFunc {
	type response struct {
		Repos []*slipway.Repo `json:"repos"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		list, err := repos.FindRepos(r.Context())
		if err != nil {
			writeError(w, r, err)
			return
		}
		if list == nil {
			list = []*slipway.Repo{}
		}
		writeJSON(w, r, http.StatusOK, response{Repos: list})
	}
}

// repoSettings is the body of POST and PATCH /api/v1/repos…; a missing field is
// left as is (PATCH) or takes the global setting (POST).
type repoSettings struct {
	Forge           *string   `json:"forge"`
	Owner           *string   `json:"owner"`
	Name            *string   `json:"name"`
	CloneURL        *string   `json:"clone_url"`
	Image           *string   `json:"image"`
	WebhookSecret   *string   `json:"webhook_secret"`
	Platforms       *[]string `json:"platforms"`
	AllowedBranches *[]string `json:"allowed_branches"`
	MaxRunning      *int      `json:"max_running"`
	Supersede       *bool     `json:"supersede"`
	// PromotionTargets: see slipway.PromotionTargetAllowed.
	PromotionTargets *[]string `json:"promotion_targets"`
	// TrustedAssociations: see slipway.ForkTrusted.
	TrustedAssociations *[]string `json:"trusted_associations"`
	// GenerateWebhookSecret makes slipway choose the repository's own webhook
	// secret (32 random bytes, hex) and answer it once, in webhook_secret.
	GenerateWebhookSecret bool `json:"generate_webhook_secret"`
}

// repoAnswer is a repository as POST and PATCH answer it: with the generated
// webhook secret, once, and the URL its forge's webhook is to call.
type repoAnswer struct {
	*slipway.Repo
	WebhookSecret string `json:"webhook_secret,omitempty"`
	WebhookURL    string `json:"webhook_url"`
}

// answerRepo wraps repo with the webhook URL of its forge and secret ("" when
// none was generated).
func answerRepo(cfg Config, repo *slipway.Repo, secret string) repoAnswer {
	return repoAnswer{Repo: repo, WebhookSecret: secret, WebhookURL: cfg.PublicURL + "/webhooks/" + repo.Forge}
}

// generateSecret applies s.GenerateWebhookSecret: it returns a new random
// secret and sets s.WebhookSecret to it, or "" when none was asked for.
func (s *repoSettings) generateSecret() (string, error) {
	if !s.GenerateWebhookSecret {
		return "", nil
	}
	if s.WebhookSecret != nil {
		return "", slipway.Errorf(slipway.EINVALID, "Send webhook_secret or generate_webhook_secret, not both.")
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a webhook secret: %w", err)
	}
	secret := hex.EncodeToString(b)
	s.WebhookSecret = &secret
	return secret, nil
}

// decodeRepoSettings reads a strict JSON body: unknown fields are refused, so a
// misspelt setting is not silently ignored.
func decodeRepoSettings(w http.ResponseWriter, r *http.Request) (repoSettings, error) {
	var s repoSettings
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRepoBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return s, slipway.Errorf(slipway.ETOOLARGE, "The body is larger than %d bytes.", maxRepoBodyBytes)
		}
		if errors.Is(err, io.EOF) {
			return s, slipway.Errorf(slipway.EINVALID, "The body must be a JSON object of repository settings.")
		}
		return s, slipway.Errorf(slipway.EINVALID, "Malformed JSON body: %v.", err)
	}
	if dec.More() {
		return s, slipway.Errorf(slipway.EINVALID, "The body must hold one JSON object.")
	}
	if s.CloneURL != nil {
		// git@host:owner/name.git, as forges show it, is stored as ssh://.
		u := slipway.SSHCloneURL(*s.CloneURL)
		s.CloneURL = &u
	}
	return s, s.validate()
}

var platformRE = regexp.MustCompile(`^[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_.]+)?$`)

// validate checks every setting present; EINVALID names the field.
func (s repoSettings) validate() error {
	if s.Forge != nil && !slices.Contains(slipway.Forges, *s.Forge) {
		return slipway.Errorf(slipway.EINVALID, "forge must be one of %s.", strings.Join(slipway.Forges, ", "))
	}
	if s.Owner != nil && !forge.ValidName(*s.Owner) && (s.Forge == nil || *s.Forge != slipway.ForgeGitLab || !forge.ValidOwner(*s.Forge, *s.Owner)) {
		return slipway.Errorf(slipway.EINVALID, "owner must be 1 to 100 letters, digits, '.', '_' or '-' (for GitLab, up to 20 such group names separated by '/').")
	}
	if s.Name != nil && !forge.ValidName(*s.Name) {
		return slipway.Errorf(slipway.EINVALID, "name must be 1 to 100 letters, digits, '.', '_' or '-'.")
	}
	if s.CloneURL != nil {
		if err := forge.ValidateCloneURL("clone_url", *s.CloneURL); err != nil {
			return err
		}
	}
	if s.Image != nil {
		if _, err := name.NewRepository(*s.Image, name.StrictValidation); err != nil || strings.ContainsAny(*s.Image, "@") {
			return slipway.Errorf(slipway.EINVALID, "image must be a lower-case image repository with its registry and no tag, e.g. registry.example.com/team/app.")
		}
	}
	if s.WebhookSecret != nil && (len(*s.WebhookSecret) > 1024 || strings.ContainsFunc(*s.WebhookSecret, unicode.IsControl)) {
		return slipway.Errorf(slipway.EINVALID, "webhook_secret must be at most 1024 printable characters (\"\" removes it).")
	}
	if s.Platforms != nil {
		if len(*s.Platforms) > 16 {
			return slipway.Errorf(slipway.EINVALID, "platforms lists at most 16 platforms.")
		}
		for i, p := range *s.Platforms {
			if !platformRE.MatchString(p) {
				return slipway.Errorf(slipway.EINVALID, "platforms[%d] must be os/arch[/variant], e.g. linux/arm64.", i)
			}
			if slices.Contains((*s.Platforms)[:i], p) {
				return slipway.Errorf(slipway.EINVALID, "platforms lists %s twice.", p)
			}
		}
	}
	if s.AllowedBranches != nil {
		if len(*s.AllowedBranches) > 100 {
			return slipway.Errorf(slipway.EINVALID, "allowed_branches lists at most 100 patterns.")
		}
		for i, p := range *s.AllowedBranches {
			if _, err := path.Match(p, ""); err != nil || p == "" || len(p) > 255 || strings.ContainsFunc(p, unicode.IsControl) {
				return slipway.Errorf(slipway.EINVALID, "allowed_branches[%d] must be a branch name or a glob such as release/*.", i)
			}
		}
	}
	if s.PromotionTargets != nil {
		if err := slipway.ValidatePromotionTargets("promotion_targets", *s.PromotionTargets); err != nil {
			return err
		}
	}
	if s.TrustedAssociations != nil {
		forge := ""
		if s.Forge != nil {
			forge = *s.Forge
		}
		if err := slipway.ValidateTrustedAssociations("trusted_associations", forge, *s.TrustedAssociations); err != nil {
			return err
		}
	}
	if s.MaxRunning != nil && (*s.MaxRunning < 1 || *s.MaxRunning > 100) {
		return slipway.Errorf(slipway.EINVALID, "max_running must be from 1 to 100.")
	}
	return nil
}

// handleRepoCreate answers POST /api/v1/repos with 201 and the repository.
// Without an image the repository gets $SLIPWAY_REGISTRY/<owner>/<name>.
func handleRepoCreate(cfg Config, repos slipway.RepoService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := decodeRepoSettings(w, r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		for i, v := range []*string{s.Forge, s.Owner, s.Name} {
			if v == nil {
				writeError(w, r, slipway.Errorf(slipway.EINVALID, "%s is required.", []string{"forge", "owner", "name"}[i]))
				return
			}
		}
		// Without clone_url the forge's base URL and the path make it, as
		// for a repository a delivery registers.
		if s.CloneURL == nil {
			u, err := forgeCloneURL(cfg, *s.Forge, *s.Owner, *s.Name)
			if err != nil {
				writeError(w, r, slipway.Errorf(slipway.EINVALID, "clone_url is required: %s", slipway.ErrorMessage(err)))
				return
			}
			s.CloneURL = &u
		}
		secret, err := s.generateSecret()
		if err != nil {
			writeError(w, r, err)
			return
		}
		c := slipway.RepoCreate{Forge: *s.Forge, Owner: *s.Owner, Name: *s.Name, CloneURL: *s.CloneURL, Supersede: s.Supersede}
		switch {
		case s.Image != nil:
			c.Image = *s.Image
		case cfg.Registry != "":
			image, err := slipway.ImageRepository(cfg.Registry, c.Owner, c.Name)
			if err != nil {
				writeError(w, r, err)
				return
			}
			c.Image = image
		default:
			writeError(w, r, slipway.Errorf(slipway.EINVALID, "image is required while SLIPWAY_REGISTRY is unset."))
			return
		}
		if s.WebhookSecret != nil {
			c.WebhookSecret = *s.WebhookSecret
		}
		if s.Platforms != nil {
			c.Platforms = *s.Platforms
		}
		if s.AllowedBranches != nil {
			c.AllowedBranches = *s.AllowedBranches
		}
		if s.MaxRunning != nil {
			c.MaxRunning = *s.MaxRunning
		}
		if s.PromotionTargets != nil {
			c.PromotionTargets = *s.PromotionTargets
		}
		if s.TrustedAssociations != nil {
			c.TrustedAssociations = *s.TrustedAssociations
		}
		repo, err := repos.CreateRepo(r.Context(), c)
		if err != nil {
			writeError(w, r, err)
			return
		}
		w.Header().Set("Location", cfg.PublicURL+"/api/v1/repos/"+repo.Owner+"/"+repo.Name)
		writeJSON(w, r, http.StatusCreated, answerRepo(cfg, repo, secret))
	}
}

// repoKey reads {owner}/{name} and ?forge= (needed only when the same name
// exists on two forges).
func repoKey(r *http.Request) (slipway.RepoKey, error) {
	owner, name := repoParams(r)
	k := slipway.RepoKey{Forge: r.URL.Query().Get("forge"), Owner: owner, Name: name}
	if k.Forge != "" && !slices.Contains(slipway.Forges, k.Forge) {
		return k, slipway.Errorf(slipway.EINVALID, "forge must be one of %s.", strings.Join(slipway.Forges, ", "))
	}
	if !forge.ValidOwner(slipway.ForgeGitLab, k.Owner) || !forge.ValidName(k.Name) {
		return k, slipway.Errorf(slipway.ENOTFOUND, "Repository %s/%s not found.", shortQuote(k.Owner), shortQuote(k.Name))
	}
	return k, nil
}

// handleRepoView answers GET /api/v1/repos/{owner}/{name}.
func handleRepoView(repos slipway.RepoService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		k, err := repoKey(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		repo, err := repos.FindRepo(r.Context(), k)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, repo)
	}
}

// handleRepoUpdate answers PATCH /api/v1/repos/{owner}/{name}: the fields sent
// change, the others stay. An empty list, or an empty webhook_secret, goes back
// to the global setting.
func handleRepoUpdate(cfg Config, repos slipway.RepoService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		k, err := repoKey(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		s, err := decodeRepoSettings(w, r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if s.Forge != nil || s.Owner != nil || s.Name != nil {
			writeError(w, r, slipway.Errorf(slipway.EINVALID, "forge, owner and name cannot change; delete the repository and create it again."))
			return
		}
		if s.TrustedAssociations != nil && len(*s.TrustedAssociations) > 0 {
			// Only a GitHub repository's deliveries name an association.
			repo, err := repos.FindRepo(r.Context(), k)
			if err == nil {
				err = slipway.ValidateTrustedAssociations("trusted_associations", repo.Forge, *s.TrustedAssociations)
			}
			if err != nil {
				writeError(w, r, err)
				return
			}
		}
		secret, err := s.generateSecret()
		if err != nil {
			writeError(w, r, err)
			return
		}
		repo, err := repos.UpdateRepo(r.Context(), k, slipway.RepoUpdate{
			CloneURL: s.CloneURL, Image: s.Image, WebhookSecret: s.WebhookSecret, Platforms: s.Platforms,
			AllowedBranches: s.AllowedBranches, MaxRunning: s.MaxRunning, Supersede: s.Supersede,
			PromotionTargets: s.PromotionTargets, TrustedAssociations: s.TrustedAssociations,
		})
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, answerRepo(cfg, repo, secret))
	}
}

// handleRepoDelete answers DELETE /api/v1/repos/{owner}/{name} with 204. The
// repository's builds go with it.
func handleRepoDelete(repos slipway.RepoService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		k, err := repoKey(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := repos.DeleteRepo(r.Context(), k); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}
