package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/slipway-ci/slipway"
)

// regError is what the Client returns for a failure it understood. Error() is
// one line fit for a build log. errors.As finds, besides it, a *slipway.Error
// with the same message when the failure has a domain code (EINVALID for a bad
// index or input, ENOTFOUND for a 404, EFORBIDDEN for a 401 or 403, EUNAVAILABLE
// for a 429 or 5xx), and the registry's *transport.Error when there was one.
type regError struct {
	msg   string
	code  string // "" when the failure is internal
	cause error
}

func (e *regError) Error() string { return e.msg }

func (e *regError) Unwrap() []error {
	var errs []error
	if e.code != "" {
		errs = append(errs, &slipway.Error{Code: e.code, Message: e.msg})
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

func errorf(code, format string, args ...any) error {
	return &regError{msg: fmt.Sprintf(format, args...), code: code}
}

// interpretError turns an error of a registry request into one whose message
// says what was done, the HTTP status and the registry's own message (without
// the request URL ggcr puts in front). Errors that are not registry answers,
// such as a canceled context or a refused connection, are wrapped as they are.
//
// A 401 or 403 of a host ctx has the repository's own credential for (see
// WithRepoAuths) names that credential instead of SLIPWAY_DOCKER_CONFIG.
func interpretError(ctx context.Context, what string, err error) error {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		if tlsErr := explainTLS(err); tlsErr != "" {
			return &regError{msg: what + ": " + tlsErr, code: slipway.EINVALID, cause: err}
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	var code string
	switch s := terr.StatusCode; {
	case s == http.StatusNotFound:
		code = slipway.ENOTFOUND
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		code = slipway.EFORBIDDEN
	case s == http.StatusTooManyRequests || s >= 500:
		code = slipway.EUNAVAILABLE
	}
	status := fmt.Sprintf("%d %s", terr.StatusCode, http.StatusText(terr.StatusCode))
	var detail string
	if len(terr.Errors) > 0 {
		diags := make([]string, len(terr.Errors))
		for i, d := range terr.Errors {
			diags[i] = d.String()
		}
		detail = "registry answered " + status + ": " + strings.Join(diags, "; ")
	} else {
		// Without diagnostics, ggcr's text holds the status and the raw body,
		// which is only reachable through Error(); drop the request prefix.
		bare := *terr
		bare.Request = nil
		detail = "registry answered " + strings.TrimPrefix(bare.Error(), "unexpected status code ")
	}
	if code == slipway.EFORBIDDEN && terr.Request != nil && terr.Request.URL != nil {
		host := terr.Request.URL.Host
		if _, ok := RepoAuthsFrom(ctx)[repoAuthKey(host)]; ok {
			detail += "; " + host + " refused " + RepoCredentialHint + ": check it with GET/PUT /api/v1/repos/{owner}/{name}/registry-auth"
		} else {
			detail += "; check the credentials for " + host + " in the Docker config " + DockerConfigSetting + " names, or the repository's own registry credential (PUT /api/v1/repos/{owner}/{name}/registry-auth)"
		}
	}
	return &regError{msg: what + ": " + slipway.OneLine(detail), code: code, cause: err}
}
