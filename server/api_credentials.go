package server

import (
	"net/http"

	"github.com/slipway-ci/slipway"
)

// errNoCredentials answers the clone-credential API when the server has no
// credential store.
var errNoCredentials = slipway.Errorf(slipway.EUNAVAILABLE, "Per-repository clone credentials are not configured on this server (set SLIPWAY_SECRET_KEY).")

// credentialRepo finds the repository of a clone-credential route, as
// secretRepo does.
func credentialRepo(r *http.Request, secrets slipway.SecretService, creds slipway.RepoCredentialService) (int64, error) {
	if creds == nil {
		return 0, errNoCredentials
	}
	return secretRepo(r, secrets)
}

// credentialBody finds the repository of a credential PUT and decodes its
// body into v (see decodeSecretBody).
func credentialBody(w http.ResponseWriter, r *http.Request, secrets slipway.SecretService, creds slipway.RepoCredentialService,
	limit int64, v any, shape, tooLarge string) (int64, error) {
	repoID, err := credentialRepo(r, secrets, creds)
	if err != nil {
		return 0, err
	}
	return repoID, decodeSecretBody(w, r, limit, v, shape, tooLarge)
}

// handleCloneTokenPut answers PUT /api/v1/repos/{owner}/{name}/clone-token
// with body {"token": "...", "username": "..."} (username optional: the
// forge's default, x-access-token on GitHub, oauth2 on GitLab): it stores
// the token sealed and answers 204. Workers send it as HTTP basic auth to
// the repository's own clone URL only. The token is never echoed, logged
// or returned; the repository's JSON says has_clone_token.
func handleCloneTokenPut(secrets slipway.SecretService, creds slipway.RepoCredentialService) http.HandlerFunc {
	type request struct {
		Token    *string `json:"token"`
		Username string  `json:"username"`
	}
	const shape = `{"token": "...", "username": "..."}`
	return func(w http.ResponseWriter, r *http.Request) {
		var req request
		repoID, err := credentialBody(w, r, secrets, creds, 2*slipway.MaxCloneTokenLen, &req, shape, "a clone token may be at most 4 KiB")
		if err != nil {
			writeError(w, r, err)
			return
		}
		if req.Token == nil {
			writeError(w, r, slipway.Errorf(slipway.EINVALID, "token is required: %s.", shape))
			return
		}
		if err := creds.SetCloneToken(r.Context(), repoID, req.Username, *req.Token); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// handleCloneTokenDelete answers DELETE /api/v1/repos/{owner}/{name}/clone-token
// with 204; 404 when the repository has none.
func handleCloneTokenDelete(secrets slipway.SecretService, creds slipway.RepoCredentialService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		repoID, err := credentialRepo(r, secrets, creds)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := creds.DeleteCloneToken(r.Context(), repoID); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// handleDeployKeyPut answers PUT /api/v1/repos/{owner}/{name}/deploy-key with
// body {"private_key": "-----BEGIN OPENSSH PRIVATE KEY-----..."} (without a
// passphrase): it stores the key sealed and answers 200 with
// {"public_key": "ssh-ed25519 AAAA...", "fingerprint": "SHA256:..."}, the
// public half to add to the forge as a read-only deploy key. 400 for an
// encrypted or malformed key; the key is never echoed, logged or returned.
func handleDeployKeyPut(secrets slipway.SecretService, creds slipway.RepoCredentialService) http.HandlerFunc {
	type request struct {
		PrivateKey *string `json:"private_key"`
	}
	const shape = `{"private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\n..."}`
	return func(w http.ResponseWriter, r *http.Request) {
		var req request
		repoID, err := credentialBody(w, r, secrets, creds, 2*slipway.MaxDeployKeyLen, &req, shape, "a deploy key may be at most 16 KiB")
		if err != nil {
			writeError(w, r, err)
			return
		}
		if req.PrivateKey == nil {
			writeError(w, r, slipway.Errorf(slipway.EINVALID, "private_key is required: %s.", shape))
			return
		}
		info, err := creds.SetDeployKey(r.Context(), repoID, []byte(*req.PrivateKey))
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, info)
	}
}

// handleDeployKeyDelete answers DELETE /api/v1/repos/{owner}/{name}/deploy-key
// with 204; 404 when the repository has none.
func handleDeployKeyDelete(secrets slipway.SecretService, creds slipway.RepoCredentialService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		repoID, err := credentialRepo(r, secrets, creds)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := creds.DeleteDeployKey(r.Context(), repoID); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}
