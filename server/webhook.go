package server

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"github.com/rs/zerolog/hlog"
	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/forge"
	"github.com/slipway-ci/slipway/metrics"
)

// webhookHooks is the forge of each webhook route, /webhooks/{Name()}, with
// its webhook settings from cfg.
func webhookHooks(cfg Config) []forge.Hook {
	return []forge.Hook{
		&forge.GitHub{Webhook: forge.Webhook{Secret: cfg.GitHubWebhookSecret, AllowedOwners: cfg.GitHubAllowedOwners}},
		&forge.GitLab{Webhook: forge.Webhook{Secret: cfg.GitLabWebhookToken, AllowedOwners: cfg.GitLabAllowedOwners}},
		&forge.Gitea{Webhook: forge.Webhook{Secret: cfg.GiteaWebhookSecret, AllowedOwners: cfg.GiteaAllowedOwners}},
	}
}

// handleWebhook receives one forge's deliveries.
//
// The order matters. The body is read whole under a cap, and in budget (see
// bodyBudget.readBody) until the answer is written. The repository is
// looked up (reads only) to learn whether it has its own secret; then the
// signature is checked over the raw bytes before the payload is trusted, and a
// push is answered 202 only after EnqueueTriggerID returned, that is after the
// build and its queue job were committed. An unsigned or wrongly signed request
// writes nothing.
func handleWebhook(cfg Config, budget *bodyBudget, hook forge.Hook, repos slipway.RepoService, builds slipway.BuildService) http.HandlerFunc {
	type accepted struct {
		BuildID   int64  `json:"build_id"`
		URL       string `json:"url"`
		Duplicate bool   `json:"duplicate"`
	}
	type ignored struct {
		Ignored string `json:"ignored"`
	}
	type pong struct {
		OK  bool   `json:"ok"`
		Zen string `json:"zen,omitempty"`
	}

	return func(w http.ResponseWriter, r *http.Request) {
		log := hlog.FromRequest(r)
		log.UpdateContext(func(c zerolog.Context) zerolog.Context { return c.Str("forge", hook.Name()) })
		body, release, err := budget.readBody(w, r, cfg.MaxWebhookBytes)
		defer release()
		if err != nil {
			writeError(w, r, err)
			return
		}
		payload, payloadErr := hook.Payload(r.Header, body)

		secret, secretSetting := hook.WebhookSecret()
		repo := (*slipway.Repo)(nil)
		locOwner, locName, located := hook.Locate(payload)
		if located && payloadErr == nil && repos != nil {
			found, own, err := repos.FindRepoWebhookSecret(r.Context(), hook.Name(), locOwner, locName)
			if err != nil {
				writeError(w, r, err)
				return
			}
			repo = found
			if own != "" {
				secret = own
			}
		}
		if secret == "" {
			writeError(w, r, slipway.Errorf(slipway.EUNAVAILABLE,
				"%s webhooks are disabled: %s is unset and the repository has no webhook secret of its own.", hook.Title(), secretSetting))
			return
		}
		if err := hook.Verify([]byte(secret), r.Header, body); err != nil {
			if slipway.ErrorCode(err) == slipway.EUNAUTHORIZED && (!located || payloadErr != nil) {
				// A repository's own secret applies only to a payload that names
				// it: say so, or a malformed body reads as a wrong secret.
				why := "it names no repository"
				if payloadErr != nil {
					why = slipway.ErrorMessage(payloadErr)
				}
				err = slipway.Errorf(slipway.EUNAUTHORIZED, "%s slipway could not read the repository from the payload (%s), so it checked the signature with %s only, not with a repository's own secret.",
					slipway.ErrorMessage(err), strings.TrimSuffix(why, "."), secretSetting)
			}
			writeError(w, r, err)
			return
		}

		event, delivery, err := hook.Delivery(r.Header)
		log.UpdateContext(func(c zerolog.Context) zerolog.Context {
			return c.Str("event", event).Str("delivery", delivery)
		})
		if err != nil {
			writeError(w, r, err)
			return
		}
		if payloadErr != nil {
			writeError(w, r, payloadErr)
			return
		}
		ev, err := hook.Parse(event, delivery, payload)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := sameRepository(ev, located, locOwner, locName); err != nil {
			writeError(w, r, err)
			return
		}
		ev = ev.Policy(repo)

		switch {
		case ev.Ping:
			log.Info().Msg("Webhook ping")
			writeJSON(w, r, http.StatusOK, pong{OK: true, Zen: ev.Zen})
			return
		case ev.Ignored != "":
			log.Info().Str("reason", ev.Ignored).Msg("Webhook ignored")
			metrics.SetWebhookOutcome(r.Context(), metrics.WebhookIgnored)
			writeJSON(w, r, http.StatusAccepted, ignored{Ignored: ev.Ignored})
			return
		}

		if ev.Cancel != nil {
			cancelPullRequest(w, r, hook, builds, ev.Cancel)
			return
		}
		t := *ev.Trigger
		log.UpdateContext(func(c zerolog.Context) zerolog.Context { return c.Str("repo", t.Owner+"/"+t.Name) })
		if err := hook.OwnerAllowed(t.Owner); err != nil {
			writeError(w, r, err)
			return
		}
		if repo == nil && !cfg.AutoRegister {
			writeError(w, r, slipway.Errorf(slipway.EFORBIDDEN,
				"Repository %s/%s is not registered on this slipway. An admin registers it with `slipway repo add %s %s/%s` (or POST /api/v1/repos), or sets SLIPWAY_AUTO_REGISTER=true to let signed deliveries register repositories.",
				t.Owner, t.Name, hook.Name(), t.Owner, t.Name))
			return
		}
		// The clone URL is a setting: a registered repository keeps its own
		// (EnqueueTrigger never changes it), a new one gets its forge's.
		if repo == nil && !cfg.CloneURLFromPayload {
			u, err := forgeCloneURL(cfg, t.Forge, t.Owner, t.Name)
			if err != nil {
				writeError(w, r, err)
				return
			}
			t.CloneURL = u
		}
		if cfg.Registry == "" {
			writeError(w, r, slipway.Errorf(slipway.EUNAVAILABLE, "Builds are disabled: SLIPWAY_REGISTRY is unset."))
			return
		}
		// A registered repository keeps its own image setting: EnqueueTrigger
		// uses the stored one and this only names the image of a new repository
		// (slipway.ImageRepository: one rule maps every name a forge allows).
		// A name that maps to no image is answered 202 ignored, not 4xx: a
		// forge disables a webhook that keeps failing, and a group webhook
		// serves every other project too.
		image, err := slipway.ImageRepository(cfg.Registry, t.Owner, t.Name)
		if err != nil && repo == nil {
			reason := slipway.ErrorMessage(err)
			log.Warn().Str("reason", reason).Msg("Webhook ignored")
			metrics.SetWebhookOutcome(r.Context(), metrics.WebhookIgnored)
			writeJSON(w, r, http.StatusAccepted, ignored{Ignored: reason})
			return
		}

		if repo != nil {
			t.RepoID = repo.ID // looked up once, for its secret and settings
		}
		res, err := builds.EnqueueTriggerID(r.Context(), t, image)
		if err != nil {
			writeError(w, r, err)
			return
		}
		id := res.BuildID
		log.UpdateContext(func(c zerolog.Context) zerolog.Context { return c.Int64("build_id", id) })
		if res.Created {
			log.Info().Str("ref", t.Ref).Str("commit", t.Commit).Msg("Build queued")
		} else {
			log.Info().Msg("Delivery seen before")
		}
		u := cfg.PublicURL + "/api/v1/builds/" + strconv.FormatInt(id, 10)
		w.Header().Set("Location", u)
		writeJSON(w, r, http.StatusAccepted, accepted{BuildID: id, URL: u, Duplicate: !res.Created})
	}
}

// sameRepository refuses an event about another repository than the one
// Locate found in the same payload: the signature was checked with the
// located repository's secret, so only that repository's builds may be queued
// or canceled by it. Names compare as the forges do, ignoring case. The
// forges' Locate and Parse read the same field with the same decoder, so
// this holds for every payload today; it is checked here so that no change of
// either can let one repository's secret sign for another.
func sameRepository(ev forge.Event, located bool, owner, name string) error {
	var evOwner, evName string
	switch {
	case ev.Trigger != nil:
		evOwner, evName = ev.Trigger.Owner, ev.Trigger.Name
	case ev.Cancel != nil:
		evOwner, evName = ev.Cancel.Owner, ev.Cancel.Name
	default:
		return nil
	}
	if !located || !strings.EqualFold(owner, evOwner) || !strings.EqualFold(name, evName) {
		return slipway.Errorf(slipway.EINVALID,
			"The payload names two repositories (%s/%s where its signature was checked, %s/%s in the event); it is refused.",
			shortQuote(owner), shortQuote(name), shortQuote(evOwner), shortQuote(evName))
	}
	return nil
}

// cancelPullRequest answers a closed pull request: its builds still on their
// way are canceled, 202 with their ids.
func cancelPullRequest(w http.ResponseWriter, r *http.Request, hook forge.Hook, builds slipway.BuildService, c *forge.RefCancel) {
	type canceled struct {
		Canceled []int64 `json:"canceled"`
	}
	if err := hook.OwnerAllowed(c.Owner); err != nil {
		writeError(w, r, err)
		return
	}
	ids, err := builds.CancelRefBuilds(r.Context(), c.Forge, c.Owner, c.Name, c.Ref, c.Reason)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if ids == nil {
		ids = []int64{}
	}
	hlog.FromRequest(r).Info().Str("repo", c.Owner+"/"+c.Name).Str("ref", c.Ref).Ints64("canceled", ids).Msg("Pull request closed")
	writeJSON(w, r, http.StatusAccepted, canceled{Canceled: ids})
}

// forgeCloneURL is the clone URL of owner/name on forge: the forge's base URL
// setting, then /owner/name.git. EUNAVAILABLE names the setting when the
// forge has no base URL.
func forgeCloneURL(cfg Config, forge, owner, name string) (string, error) {
	var base, setting string
	switch forge {
	case slipway.ForgeGitHub:
		base, setting = cfg.GitHubURL, "SLIPWAY_GITHUB_URL"
	case slipway.ForgeGitLab:
		base, setting = cfg.GitLabURL, "SLIPWAY_GITLAB_URL"
	case slipway.ForgeGitea:
		base, setting = cfg.GiteaURL, "SLIPWAY_GITEA_URL"
	}
	if base == "" {
		return "", slipway.Errorf(slipway.EUNAVAILABLE,
			"Repository %s/%s is not registered and %s is unset: set it to the forge's URL, or register the repository with its clone URL (POST /api/v1/repos).",
			owner, name, setting)
	}
	return strings.TrimRight(base, "/") + "/" + owner + "/" + name + ".git", nil
}

// shortQuote keeps messages about a bad value short whatever its size.
func shortQuote(s string) string { return slipway.Printable(s, 100) }
