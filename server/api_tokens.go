package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog/hlog"

	"github.com/slipway-ci/slipway"
)

// maxJSONBody caps the body of a JSON API request.
const maxJSONBody = 1 << 20

// decodeJSON reads r's body into v: at most maxJSONBody bytes, one JSON
// object, no unknown fields. EINVALID (or ETOOLARGE) says what is wrong.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return slipway.Errorf(slipway.ETOOLARGE, "The request body is larger than %d bytes.", maxJSONBody)
		case errors.Is(err, io.EOF):
			return slipway.Errorf(slipway.EINVALID, "The request body is empty; send a JSON object.")
		}
		return slipway.Errorf(slipway.EINVALID, "The request body is not valid JSON for this route: %s.",
			strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return slipway.Errorf(slipway.EINVALID, "The request body holds more than one JSON value.")
	}
	return nil
}

// unavailable is the error of a route whose service is not configured.
func unavailable(what string) error {
	return slipway.Errorf(slipway.EUNAVAILABLE, "%s is not available on this server.", what)
}

// handleTokenCreate answers POST /api/v1/tokens {"name", "role"} with 201 and
// the new token, the only time its secret is shown.
func handleTokenCreate(tokens slipway.TokenService) http.HandlerFunc {
	type request struct {
		Name string       `json:"name"`
		Role slipway.Role `json:"role"`
	}
	type response struct {
		ID    int64        `json:"id"`
		Name  string       `json:"name"`
		Role  slipway.Role `json:"role"`
		Token string       `json:"token"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if tokens == nil {
			writeError(w, r, unavailable("Token storage"))
			return
		}
		var req request
		if err := decodeJSON(w, r, &req); err != nil {
			writeError(w, r, err)
			return
		}
		secret := slipway.NewTokenSecret()
		t, err := tokens.CreateToken(r.Context(), req.Name, req.Role, secret)
		if err != nil {
			writeError(w, r, err)
			return
		}
		hlog.FromRequest(r).Info().Int64("token_id", t.ID).Str("token_name", t.Name).Str("role", string(t.Role)).Msg("Token created")
		writeJSON(w, r, http.StatusCreated, response{ID: t.ID, Name: t.Name, Role: t.Role, Token: secret})
	}
}

// handleTokenList answers GET /api/v1/tokens with every token, secrets left out.
func handleTokenList(tokens slipway.TokenService) http.HandlerFunc {
	type response struct {
		Tokens []*slipway.Token `json:"tokens"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if tokens == nil {
			writeError(w, r, unavailable("Token storage"))
			return
		}
		list, err := tokens.FindTokens(r.Context())
		if err != nil {
			writeError(w, r, err)
			return
		}
		if list == nil {
			list = []*slipway.Token{}
		}
		writeJSON(w, r, http.StatusOK, response{Tokens: list})
	}
}

// handleTokenDelete answers DELETE /api/v1/tokens/{id} with 204.
func handleTokenDelete(tokens slipway.TokenService) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tokens == nil {
			writeError(w, r, unavailable("Token storage"))
			return
		}
		s := chi.URLParam(r, "id")
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id < 1 {
			writeError(w, r, slipway.Errorf(slipway.EINVALID, "%q is not a token id.", s))
			return
		}
		if err := tokens.DeleteToken(r.Context(), id); err != nil {
			writeError(w, r, err)
			return
		}
		hlog.FromRequest(r).Info().Int64("token_id", id).Msg("Token deleted")
		w.WriteHeader(http.StatusNoContent)
	}
}
