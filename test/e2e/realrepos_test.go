package e2e

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
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

	t.Run("RefWithoutTagName", func(t *testing.T) {
		cloneURL, commit := r.add("kanji", map[string]string{"Dockerfile": dockerfile(base, "")})
		body := push(t, testenv.PushParams{Owner: "acme", Name: "kanji", CloneURL: cloneURL,
			Ref: "refs/heads/日本", After: commit})
		code, out := s.webhook("push", "shapes-kanji", body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		b := succeeded(int64(out["build_id"].(float64)))
		require.Contains(t, s.logs(b.ID), "makes no image tag")
		require.Equal(t, b.IndexDigest, digestOf(s.image("acme", "kanji")+":"+slipway.CommitTag(commit)))
		require.Empty(t, b.Tags)
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

// withSubmodule adds a commit to the bare repository dir whose tree holds a
// Dockerfile, .gitmodules naming url for vendor/lib, and the gitlink
// vendor/lib at libCommit, plus .slipway.yml when slipwayYML is set. It
// returns the new commit.
func withSubmodule(t *testing.T, dir, dockerfile, url, libCommit, slipwayYML string) string {
	t.Helper()
	run := gitRunner(t, dir)
	blob := func(s string) string { return run(s, "hash-object", "-w", "--stdin") }
	vendor := run("160000 commit "+libCommit+"\tlib\n", "mktree")
	entries := "100644 blob " + blob(dockerfile) + "\tDockerfile\n" +
		"100644 blob " + blob("[submodule \"vendor/lib\"]\n\tpath = vendor/lib\n\turl = "+url+"\n") + "\t.gitmodules\n" +
		"040000 tree " + vendor + "\tvendor\n"
	if slipwayYML != "" {
		entries += "100644 blob " + blob(slipwayYML) + "\t.slipway.yml\n"
	}
	tree := run(entries, "mktree")
	commit := run("", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit-tree", "-p", "HEAD", "-m", "with a submodule", tree)
	run("", "update-ref", "refs/heads/main", commit)
	return commit
}

// TestSubmodules: a submodule (a relative URL in .gitmodules, as teams write
// them) is checked out at the commit the tree records and its file is in the
// image; submodules: false leaves it out; a submodule that cannot be fetched
// fails the build with its path in the error.
func TestSubmodules(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	s := newStack(t)
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-submodules")
	r := newRepos(t)
	_, libCommit := r.add("sublib", map[string]string{"lib.txt": "from the submodule\n"})
	// A second commit on the submodule's branch: the build must take the
	// recorded one, not the branch's head.
	libDir := filepath.Join(r.base, "sublib.git")
	lib := gitRunner(t, libDir)
	lib("", "update-ref", "refs/heads/main", lib("", "-c", "user.name=t", "-c", "user.email=t@t.invalid",
		"commit-tree", "-p", libCommit, "-m", "later", lib("", "mktree")))

	df := dockerfile(base, "COPY vendor /vendor\n")
	n := 0
	build := func(name, url, slipwayYML string) *slipway.Build {
		t.Helper()
		n++
		cloneURL, _ := r.add(name, map[string]string{"README.md": "app\n"})
		commit := withSubmodule(t, filepath.Join(r.base, name+".git"), df, url, libCommit, slipwayYML)
		body := push(t, testenv.PushParams{Owner: "acme", Name: name, CloneURL: cloneURL, Ref: "refs/heads/main", After: commit})
		code, out := s.webhook("push", fmt.Sprintf("sub-%d", n), body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		return s.waitDone(int64(out["build_id"].(float64)))
	}
	files := func(b *slipway.Build) map[string]string {
		t.Helper()
		img, err := remote.Image(mustRef(t, b.Image+"@"+b.IndexDigest), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
		require.NoError(t, err)
		return imageFiles(t, img, "vendor/")
	}

	with := build("subapp", "../sublib.git", "")
	require.Equal(t, slipway.BuildSucceeded, with.State, "%s\n%s", with.Error, s.logs(with.ID))
	require.Equal(t, "from the submodule\n", files(with)["vendor/lib/lib.txt"])
	require.Contains(t, s.logs(with.ID), "submodule vendor/lib from")

	without := build("subapp-off", "../sublib.git", "submodules: false\n")
	require.Equal(t, slipway.BuildSucceeded, without.State, "%s\n%s", without.Error, s.logs(without.ID))
	require.NotContains(t, files(without), "vendor/lib/lib.txt")

	missing := build("subapp-missing", "../no-such-lib.git", "")
	require.Equal(t, slipway.BuildFailed, missing.State)
	require.Contains(t, missing.Error, "submodule vendor/lib")
	require.Contains(t, missing.Error, "could not be fetched")

	elsewhere := build("subapp-elsewhere", "https://example.invalid/lib.git", "")
	require.Equal(t, slipway.BuildFailed, elsewhere.State)
	require.Contains(t, elsewhere.Error, "submodule vendor/lib")
	require.Contains(t, elsewhere.Error, "SLIPWAY_SUBMODULE_HOSTS")
}

// gitRunner runs git in dir with stdin, failing the test on an error, and
// returns its trimmed output.
func gitRunner(t *testing.T, dir string) func(stdin string, args ...string) string {
	return func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "git %v: %s", args, out)
		return strings.TrimSpace(string(out))
	}
}

// imageFiles returns the regular files of img under prefix (no leading
// slash) with their contents.
func imageFiles(t *testing.T, img v1.Image, prefix string) map[string]string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		name := strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
		if h.Typeflag == tar.TypeReg && strings.HasPrefix(name, prefix) {
			data, err := io.ReadAll(tr)
			require.NoError(t, err)
			out[name] = string(data)
		}
	}
}

// TestWhoMovesATag: a branch and a tag with the same name (edge: a
// version-like name such as v2 a branch never writes at all), in both orders,
// and a promoted tag a branch's .slipway.yml names. A build never moves a
// tag another ref's build or a promotion wrote, except that a git tag's build
// takes its name over from a branch's; the log and the build's skipped_tags
// say what was skipped.
func TestWhoMovesATag(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	s := newStack(t)
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-who-tags")
	r := newRepos(t)
	digestOf := func(ref string) string {
		t.Helper()
		d, err := remote.Head(mustRef(t, ref))
		require.NoError(t, err, ref)
		return d.Digest.String()
	}
	n := 0
	build := func(name, ref, label string) *slipway.Build {
		t.Helper()
		n++
		dir := filepath.Join(r.base, name+".git")
		run := gitRunner(t, dir)
		commit := run("", "rev-parse", "HEAD")
		if label != "" {
			tree := run("100644 blob "+run(dockerfile(base, "LABEL v="+label+"\n"), "hash-object", "-w", "--stdin")+"\tDockerfile\n"+
				"100644 blob "+run("tags: [\"{{branch}}\", \"{{tag}}\", stable]\n", "hash-object", "-w", "--stdin")+"\t.slipway.yml\n", "mktree")
			commit = run("", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit-tree", "-p", "HEAD", "-m", label, tree)
			run("", "update-ref", "refs/heads/main", commit)
		}
		body := push(t, testenv.PushParams{Owner: "acme", Name: name, CloneURL: r.url + name + ".git", Ref: ref, After: commit})
		code, out := s.webhook("push", fmt.Sprintf("who-%d", n), body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		b := s.waitDone(int64(out["build_id"].(float64)))
		require.Equal(t, slipway.BuildSucceeded, b.State, "%s\n%s", b.Error, s.logs(b.ID))
		return b
	}

	t.Run("BranchAfterTag", func(t *testing.T) {
		r.add("ta", map[string]string{"Dockerfile": dockerfile(base, "")})
		tag := build("ta", "refs/tags/edge", "tag")
		branch := build("ta", "refs/heads/edge", "branch")
		require.NotEqual(t, tag.IndexDigest, branch.IndexDigest)
		require.Equal(t, tag.IndexDigest, digestOf(s.image("acme", "ta")+":edge"), ":edge stays the tag's")
		require.NotContains(t, branch.Tags, "edge")
		reasons := map[string]string{}
		for _, st := range branch.SkippedTags {
			reasons[st.Tag] = st.Reason
		}
		require.Contains(t, reasons["edge"], fmt.Sprintf("build %d of refs/tags/edge", tag.ID))
		require.Contains(t, s.logs(branch.ID), "Not moving "+s.image("acme", "ta")+":edge")
	})

	t.Run("TagAfterBranch", func(t *testing.T) {
		r.add("tb", map[string]string{"Dockerfile": dockerfile(base, "")})
		branch := build("tb", "refs/heads/edge", "branch")
		require.Equal(t, branch.IndexDigest, digestOf(s.image("acme", "tb")+":edge"))
		tag := build("tb", "refs/tags/edge", "tag")
		require.Equal(t, tag.IndexDigest, digestOf(s.image("acme", "tb")+":edge"), "the git tag takes its name over")
		require.Contains(t, s.logs(tag.ID), "takes "+s.image("acme", "tb")+":edge over from build")
		again := build("tb", "refs/heads/edge", "branch-again")
		require.Equal(t, tag.IndexDigest, digestOf(s.image("acme", "tb")+":edge"), "and the branch never takes it back")
		require.Contains(t, again.SkippedTags, slipway.SkippedTag{Tag: "edge", Reason: fmt.Sprintf(
			"build %d of refs/tags/edge wrote it, and a build of refs/heads/edge does not move another ref's tag", tag.ID)})
	})

	t.Run("PromotedTag", func(t *testing.T) {
		r.add("tc", map[string]string{"Dockerfile": dockerfile(base, "")})
		first := build("tc", "refs/heads/main", "one")
		require.Contains(t, first.Tags, "stable", "nobody owned stable yet")
		code, out := s.post(fmt.Sprintf("/builds/%d/promote", first.ID), adminToken, map[string]any{"tags": []string{"stable"}, "force": true})
		require.Equal(t, http.StatusOK, code, "%v", out)
		second := build("tc", "refs/heads/main", "two")
		require.Equal(t, first.IndexDigest, digestOf(s.image("acme", "tc")+":stable"), "a promoted tag is moved only by promotion")
		require.Contains(t, second.Tags, "main")
		require.Equal(t, []slipway.SkippedTag{{Tag: "stable", Reason: second.SkippedTags[0].Reason}}, second.SkippedTags)
		require.Contains(t, second.SkippedTags[0].Reason, "a promotion wrote it")
	})
}
