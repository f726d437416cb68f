package buildkit

import (
	"strings"
	"testing"
)

func TestExplainRegistry(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"failed to resolve source metadata for r.example/a:b: unexpected status from HEAD request to https://r.example:5000/v2/a/manifests/b: 401 Unauthorized",
			"r.example:5000 refused the credentials: check its entry in the Docker config SLIPWAY_DOCKER_CONFIG names"},
		{"failed to push r.example/a:b: server message: insufficient_scope: authorization failed", "SLIPWAY_DOCKER_CONFIG"},
		{`failed to do request: Head "https://reg.corp/v2/x/manifests/y": tls: failed to verify certificate: x509: certificate signed by unknown authority`,
			`reg.corp is signed by a CA slipway does not trust: put it in the PEM file SLIPWAY_CA_BUNDLE names`},
	} {
		if got := explainRegistry(tc.in, nil); !strings.Contains(got, tc.want) || !strings.HasPrefix(got, tc.in) {
			t.Errorf("explainRegistry(%q) = %q, want it to keep the message and add %q", tc.in, got, tc.want)
		}
	}
	repo := RepoAuths{"r.example:5000": {Username: "u", Password: "p"}}
	denied := "failed to resolve source metadata for r.example:5000/a:b: unexpected status from HEAD request to https://r.example:5000/v2/a/manifests/b: 401 Unauthorized"
	if got := explainRegistry(denied, repo); !strings.Contains(got, "r.example:5000 refused the repository's registry credential") || strings.Contains(got, "SLIPWAY_DOCKER_CONFIG") {
		t.Errorf("a 401 with the repository's credential = %q, want it to name the repository's registry credential", got)
	}
	if got := explainRegistry(strings.ReplaceAll(denied, "r.example:5000", "other.example"), repo); !strings.Contains(got, "SLIPWAY_DOCKER_CONFIG") {
		t.Errorf("a 401 of another registry = %q, want the Docker config hint", got)
	}
	plain := `process "/bin/sh -c exit 3" did not complete successfully: exit code: 3`
	if got := explainRegistry(plain, nil); got != plain {
		t.Errorf("a failing RUN step got a registry hint: %q", got)
	}
}
