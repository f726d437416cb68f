package server

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/slipway-ci/slipway"
)

// errNoRegistryAuths answers the registry-credential API when the server
// has no store for them.
var errNoRegistryAuths = slipway.Errorf(slipway.EUNAVAILABLE, "Per-repository registry credentials are not configured on this server (set SLIPWAY_SECRET_KEY).")

// registryAuthRepo finds the repository of a registry-credential route, as
// secretRepo does.
func registryAuthRepo(r *http.Request, secrets slipway.SecretService, auths slipway.RegistryAuthService) (int64, error) {
	if auths == nil {
		return 0, errNoRegistryAuths
	}
	return secretRepo(r, secrets)
}

// handleRegistryAuthList answers GET /api/v1/repos/{owner}/{name}/registry-auth
// with {"registry_auths": [{"registry": "ghcr.io", "username": "bot",
// "updated_at": "..."}]}, ordered by host; passwords are never returned.
func handleRegistryAuthList(secrets slipway.SecretService, auths slipway.RegistryAuthService) http.HandlerFunc {
	type response struct {
		RegistryAuths []*slipway.RegistryAuthInfo `json:"registry_auths"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		repoID, err := registryAuthRepo(r, secrets, auths)
		if err != nil {
			writeError(w, r, err)
			return
		}
		list, err := auths.FindRegistryAuths(r.Context(), repoID)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, response{RegistryAuths: list})
	}
}

// handleRegistryAuthPut answers PUT /api/v1/repos/{owner}/{name}/registry-auth
// with body {"registry": "ghcr.io", "username": "...", "password": "..."}:
// it stores (or replaces) the repository's credential for that registry
// host, sealed, and answers 200 with {"registry", "username",
// "updated_at"}. One host per call rather than a whole Docker config
// {"auths": {...}}: a config's base64 "auth" strings, credHelpers and
// credsStore cannot be checked or shown field by field, and per-host PUT
// matches the per-host DELETE. The password is never echoed, logged or
// returned.
func handleRegistryAuthPut(secrets slipway.SecretService, auths slipway.RegistryAuthService) http.HandlerFunc {
	type request struct {
		Registry string  `json:"registry"`
		Username string  `json:"username"`
		Password *string `json:"password"`
	}
	const shape = `{"registry": "ghcr.io", "username": "...", "password": "..."}`
	return func(w http.ResponseWriter, r *http.Request) {
		repoID, err := registryAuthRepo(r, secrets, auths)
		if err != nil {
			writeError(w, r, err)
			return
		}
		var req request
		if err := decodeSecretBody(w, r, 2*slipway.MaxRegistryPasswordLen, &req, shape, "a registry credential may be at most 16 KiB"); err != nil {
			writeError(w, r, err)
			return
		}
		if req.Password == nil || req.Registry == "" {
			writeError(w, r, slipway.Errorf(slipway.EINVALID, "registry and password are required: %s.", shape))
			return
		}
		info, err := auths.SetRegistryAuth(r.Context(), repoID, req.Registry, req.Username, *req.Password)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, info)
	}
}

// handleRegistryAuthDelete answers
// DELETE /api/v1/repos/{owner}/{name}/registry-auth/{registry} with 204;
// 404 when the repository has no credential for that host.
func handleRegistryAuthDelete(secrets slipway.SecretService, auths slipway.RegistryAuthService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		repoID, err := registryAuthRepo(r, secrets, auths)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := auths.DeleteRegistryAuth(r.Context(), repoID, chi.URLParam(r, "registry")); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}
