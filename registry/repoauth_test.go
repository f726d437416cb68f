package registry

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/slipway-ci/slipway"
)

func TestRepoKeychain(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(`{"auths": {"ghcr.io": {"username": "global", "password": "global-pw"}, "quay.io": {"username": "q", "password": "quay-pw"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	global := DockerConfigKeychain(p)
	kc := RepoKeychain(map[string]slipway.RegistryAuth{
		"ghcr.io":   {Username: "team", Password: "team-pw"},
		"docker.io": {Username: "hub", Password: "hub-pw"},
	}, global)
	resolve := func(ref string) authn.AuthConfig {
		t.Helper()
		r, err := name.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		a, err := kc.Resolve(r.Context())
		if err != nil {
			t.Fatal(err)
		}
		c, err := a.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		return *c
	}
	for ref, want := range map[string]string{
		"ghcr.io/team/app:1":       "team:team-pw", // the repository's entry wins
		"library/alpine:3":         "hub:hub-pw",   // Docker Hub under its stored name
		"quay.io/other/app:1":      "q:quay-pw",    // falls back to the global file
		"registry.test:5000/x/y:1": ":",            // neither: anonymous
	} {
		c := resolve(ref)
		if got := c.Username + ":" + c.Password; got != want {
			t.Errorf("%s: got %q, want %q", ref, got, want)
		}
	}
	if RepoKeychain(nil, global) != global {
		t.Error("no repository credentials: want the fallback itself")
	}
}
