package e2e

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// TestRealRepositoryShapes pushes the repository shapes teams have every day
// and builds each for real: an annotated tag from GitHub and from Gitea (the
// payload's after is the tag object; the build is of the commit it points
// at, and the tag is written), a GitLab project in a subgroup (its image path
// keeps the groups), and a repository named ".dotfiles" (mapped to a valid
// image path).
func TestRealRepositoryShapes(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	s := newStack(t, "SLIPWAY_GITLAB_WEBHOOK_TOKEN="+gitlabToken, "SLIPWAY_GITEA_WEBHOOK_SECRET="+giteaSecret)
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-shapes")
	r := newRepos(t)

	succeeded := func(id int64) *slipway.Build {
		t.Helper()
		b := s.waitDone(id)
		require.Equal(t, slipway.BuildSucceeded, b.State, "build %d: %s\nlog:\n%s", id, b.Error, s.logs(id))
		return b
	}
	digestOf := func(ref string) string {
		t.Helper()
		d, err := remote.Head(mustRef(t, ref))
		require.NoError(t, err, ref)
		return d.Digest.String()
	}
	annotate := func(repo, tag string) (object, commit string) {
		t.Helper()
		dir := filepath.Join(r.base, repo+".git")
		out, err := gitCmd(dir, "-c", "user.name=t", "-c", "user.email=t@t.invalid", "tag", "-a", "-m", "Release "+tag, tag, "HEAD")
		require.NoError(t, err, "%s", out)
		object, err = gitCmd(dir, "rev-parse", "refs/tags/"+tag)
		require.NoError(t, err)
		commit, err = gitCmd(dir, "rev-parse", "refs/tags/"+tag+"^{commit}")
		require.NoError(t, err)
		require.NotEqual(t, object, commit, "an annotated tag is an object of its own")
		return object, commit
	}

	t.Run("GitHubAnnotatedTag", func(t *testing.T) {
		cloneURL, _ := r.add("ghtag", map[string]string{"Dockerfile": dockerfile(base, "")})
		object, commit := annotate("ghtag", "v2.0.0")
		body := push(t, testenv.PushParams{Owner: "acme", Name: "ghtag", CloneURL: cloneURL,
			Ref: "refs/tags/v2.0.0", After: object, HeadCommit: commit})
		code, out := s.webhook("push", "shapes-gh-tag", body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		b := succeeded(int64(out["build_id"].(float64)))
		require.Equal(t, commit, b.Commit, "the build is of the commit, not the tag object")
		require.Equal(t, b.IndexDigest, digestOf(s.image("acme", "ghtag")+":v2.0.0"))
		require.Equal(t, b.IndexDigest, digestOf(s.image("acme", "ghtag")+":"+slipway.CommitTag(commit)))
	})

	t.Run("GiteaAnnotatedTag", func(t *testing.T) {
		cloneURL, _ := r.add("gttag", map[string]string{"Dockerfile": dockerfile(base, "")})
		object, commit := annotate("gttag", "v3.1.0")
		p := sample(t, "gitea/push-tag-annotated.json")
		p["ref"], p["after"] = "refs/tags/v3.1.0", object
		p["head_commit"].(map[string]any)["id"] = commit
		repo := p["repository"].(map[string]any)
		repo["name"], repo["full_name"], repo["clone_url"] = "gttag", "acme/gttag", cloneURL
		repo["owner"].(map[string]any)["login"], repo["owner"].(map[string]any)["username"] = "acme", "acme"
		_, out := s.deliver("gitea", map[string]string{"X-Gitea-Event": "push", "X-Gitea-Delivery": "shapes-gt-tag"}, p)
		b := succeeded(int64(out["build_id"].(float64)))
		require.Equal(t, commit, b.Commit)
		require.Equal(t, b.IndexDigest, digestOf(s.image("acme", "gttag")+":v3.1.0"))
	})

	t.Run("GitLabSubgroup", func(t *testing.T) {
		cloneURL, commit := r.add("glsub", map[string]string{"Dockerfile": dockerfile(base, "")})
		p := sample(t, "gitlab/push-subgroup.json")
		p["after"], p["checkout_sha"] = commit, commit
		proj := p["project"].(map[string]any)
		proj["path_with_namespace"], proj["name"], proj["git_http_url"] = "acme/team/glsub", "glsub", cloneURL
		_, out := s.deliver("gitlab", map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": gitlabToken,
			"Idempotency-Key": "shapes-gl-sub"}, p)
		b := succeeded(int64(out["build_id"].(float64)))
		require.Equal(t, "acme/team/glsub", b.Repo)
		image := s.registry + "/acme/team/glsub"
		require.Equal(t, image, b.Image, "the image path keeps the groups")
		require.Equal(t, b.IndexDigest, digestOf(image+":main"))

		// The API takes the owner percent-encoded, as GitLab's own does.
		code, body := s.api("/repos/"+url.PathEscape("acme/team")+"/glsub?forge=gitlab", nil)
		require.Equal(t, http.StatusOK, code, "%s", body)
		require.Contains(t, string(body), `"owner":"acme/team"`)
		code, body = s.api("/builds?repo="+url.QueryEscape("acme/team/glsub"), nil)
		require.Equal(t, http.StatusOK, code, "%s", body)
		require.Contains(t, string(body), `"repo":"acme/team/glsub"`)
	})

	t.Run("DotRepositoryName", func(t *testing.T) {
		cloneURL, commit := r.add("dotfiles", map[string]string{"Dockerfile": dockerfile(base, "")})
		body := push(t, testenv.PushParams{Owner: "acme", Name: ".dotfiles", CloneURL: cloneURL,
			Ref: "refs/heads/main", After: commit})
		code, out := s.webhook("push", "shapes-dot", body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		b := succeeded(int64(out["build_id"].(float64)))
		image := s.registry + "/acme/" + slipway.ImagePathComponent(".dotfiles")
		require.Equal(t, image, b.Image)
		_, err := name.NewRepository(image, name.StrictValidation)
		require.NoError(t, err)
		require.Equal(t, b.IndexDigest, digestOf(image+":main"))
	})
}
