package server

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// TestRepositoryNamesAtIntake: a repository name that is not an image path
// component builds under the mapped image; one that maps to nothing is
// answered 202 ignored with the reason (a 4xx would get a group webhook
// disabled), and nothing is written.
func TestRepositoryNamesAtIntake(t *testing.T) {
	t.Parallel()
	base := string(readFixture(t, "push-branch.json"))
	named := func(name string) []byte {
		return []byte(strings.Replace(base, `"name": "hello-app"`, `"name": "`+name+`"`, 1))
	}

	b := setup(t, nil)
	resp, out := b.post(t, delivery{event: "push", id: "d-dot", body: named(".dotfiles")})
	require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
	build, err := b.builds.FindBuildByID(context.Background(), buildIDOf(t, out))
	require.NoError(t, err)
	require.Equal(t, "octo-org/.dotfiles", build.Repo)
	require.Equal(t, testRegistry+"/octo-org/"+slipway.ImagePathComponent(".dotfiles"), build.Image)
	_, err = name.NewRepository(build.Image, name.StrictValidation)
	require.NoError(t, err)

	b = setup(t, nil)
	resp, out = b.post(t, delivery{event: "push", id: "d-dots", body: named("...")})
	require.Equal(t, http.StatusAccepted, resp.StatusCode, out["_raw"])
	require.Contains(t, out["ignored"], "no letter or digit")
	require.Contains(t, out["ignored"], "explicit image")
	b.requireNoRows(t)
}
