package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/slipway-ci/slipway"
)

// errNoSecrets answers the secrets API when the server has no secret store.
var errNoSecrets = slipway.Errorf(slipway.EUNAVAILABLE, "Build secrets are not configured on this server (set SLIPWAY_SECRET_KEY).")

// secretRepo finds the repository of a secrets route: {owner}/{name}, and
// ?forge= when several forges have one by that name.
func secretRepo(r *http.Request, secrets slipway.SecretService) (int64, error) {
	if secrets == nil {
		return 0, errNoSecrets
	}
	forge := r.URL.Query().Get("forge")
	switch forge {
	case "", "github", "gitlab", "gitea":
	default:
		return 0, slipway.Errorf(slipway.EINVALID, "forge must be github, gitlab or gitea.")
	}
	owner, name := repoParams(r)
	return secrets.FindRepoID(r.Context(), forge, owner, name)
}

// handleSecretList answers GET /api/v1/repos/{owner}/{name}/secrets with the
// names and times of the repository's build secrets, never their values.
func handleSecretList(secrets slipway.SecretService) http.HandlerFunc {
	type response struct {
		Secrets []slipway.SecretInfo `json:"secrets"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		repoID, err := secretRepo(r, secrets)
		if err != nil {
			writeError(w, r, err)
			return
		}
		list, err := secrets.FindSecrets(r.Context(), repoID)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if list == nil {
			list = []slipway.SecretInfo{}
		}
		writeJSON(w, r, http.StatusOK, response{Secrets: list})
	}
}

// handleSecretPut answers PUT /api/v1/repos/{owner}/{name}/secrets/{secret}
// with body {"value": "..."}: it stores the value sealed and answers with the
// secret's name and times. The value is never echoed, logged or returned.
func handleSecretPut(secrets slipway.SecretService) http.HandlerFunc {
	type request struct {
		Value *string `json:"value"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		repoID, err := secretRepo(r, secrets)
		if err != nil {
			writeError(w, r, err)
			return
		}
		var req request
		if err := decodeSecretBody(w, r, slipway.MaxSecretLen*2, &req, `{"value": "..."}`, "a secret's value may be at most 64 KiB"); err != nil {
			writeError(w, r, err)
			return
		}
		if req.Value == nil {
			writeError(w, r, slipway.Errorf(slipway.EINVALID, `value is required: {"value": "..."}.`))
			return
		}
		info, err := secrets.SetSecret(r.Context(), repoID, chi.URLParam(r, "secret"), []byte(*req.Value))
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, info)
	}
}

// handleSecretDelete answers DELETE /api/v1/repos/{owner}/{name}/secrets/{secret} with 204.
func handleSecretDelete(secrets slipway.SecretService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		repoID, err := secretRepo(r, secrets)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := secrets.DeleteSecret(r.Context(), repoID, chi.URLParam(r, "secret")); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// decodeSecretBody decodes a body that carries a credential into v: one
// JSON object of the given shape, no unknown field, at most limit bytes
// (ETOOLARGE, with tooLarge as the reason). No error quotes the body: the
// decoder's own messages may hold part of the secret.
func decodeSecretBody(w http.ResponseWriter, r *http.Request, limit int64, v any, shape, tooLarge string) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return slipway.Errorf(slipway.ETOOLARGE, "The body is too large: %s.", tooLarge)
		}
		return slipway.Errorf(slipway.EINVALID, "The body must be JSON: %s.", shape)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return slipway.Errorf(slipway.EINVALID, "The body must be one JSON object: %s.", shape)
	}
	return nil
}
