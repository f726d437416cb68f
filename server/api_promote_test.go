package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/registry"
	"github.com/slipway-ci/slipway/test/testenv"
)

// promoteBundle is a server whose promotions go through counting proxies in
// front of two real registries: the test's (TEST_REGISTRY) and a second one.
type promoteBundle struct {
	*testBundle
	main, other *testenv.CountingProxy
	tr          *http.Transport
}

func setupPromote(t testing.TB) *promoteBundle {
	t.Helper()
	upstream := testenv.Getenv(t, testenv.EnvRegistry)
	p := &promoteBundle{
		main:  testenv.NewCountingProxy(t, upstream),
		other: testenv.NewCountingProxy(t, testenv.StartRegistry(t)),
		tr:    http.DefaultTransport.(*http.Transport).Clone(),
	}
	t.Cleanup(p.tr.CloseIdleConnections)
	p.testBundle = setup(t, &setupOpts{registry: registry.New(registry.WithTransport(p.tr)), config: func(c *Config) {
		// Other repositories are promotion targets only where listed.
		c.PromotionTargets = []string{p.main.Host + "/released*/app", p.other.Host + "/mirror/{name}"}
	}})
	return p
}

// pushedIndex is a two-platform index with one attestation manifest per
// platform, as BuildKit pushes it.
type pushedIndex struct {
	repo     string // host/path
	digest   string
	children []string // every child manifest digest
	blobs    int64    // bytes of every layer and config
}

// pushIndex pushes a new random two-platform index with attestations to repo
// (by digest only: no tag) and returns it.
func pushIndex(t testing.TB, repo string, opts ...remote.Option) pushedIndex {
	t.Helper()
	out := pushedIndex{repo: repo}
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(512, 2)
		require.NoError(t, err)
		cf, err := img.ConfigFile()
		require.NoError(t, err)
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", arch
		img, err = mutate.ConfigFile(img, cf)
		require.NoError(t, err)
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		d, err := img.Digest()
		require.NoError(t, err)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})

		att, err := random.Image(128, 1)
		require.NoError(t, err)
		att = mutate.MediaType(att, types.OCIManifestSchema1)
		adds = append(adds, mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{
			Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": d.String()},
		}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	for _, a := range adds {
		img := a.Add.(v1.Image)
		d, err := img.Digest()
		require.NoError(t, err)
		out.children = append(out.children, d.String())
		layers, err := img.Layers()
		require.NoError(t, err)
		for _, l := range layers {
			n, err := l.Size()
			require.NoError(t, err)
			out.blobs += n
		}
	}
	h, err := idx.Digest()
	require.NoError(t, err)
	out.digest = h.String()
	ref, err := name.NewDigest(repo + "@" + out.digest)
	require.NoError(t, err)
	require.NoError(t, remote.WriteIndex(ref, idx, opts...))
	return out
}

// succeededBuild stores a succeeded build of owner/name whose image is idx.
func (p *promoteBundle) succeededBuild(t testing.TB, idx pushedIndex, state slipway.BuildState, buildErr string) *slipway.Build {
	t.Helper()
	ctx := context.Background()
	res, err := p.builds.EnqueueTrigger(ctx, slipway.Trigger{
		Forge: "github", DeliveryID: fmt.Sprintf("d-%d", time.Now().UnixNano()), Event: "push",
		Owner: "acme", Name: "app", CloneURL: "https://github.com/acme/app.git",
		Ref: "refs/heads/main", Commit: strings.Repeat("cd", 20),
	}, idx.repo)
	require.NoError(t, err)
	finished := any(nil)
	if state.Done() {
		finished = time.Now()
	}
	_, err = p.db.Pool().Exec(ctx, `UPDATE builds SET state = $2, index_digest = $3, error = $4, finished_at = $5, image = $6 WHERE id = $1`,
		res.Build.ID, string(state), idx.digest, buildErr, finished, idx.repo)
	require.NoError(t, err)
	b, err := p.builds.FindBuildByID(ctx, res.Build.ID)
	require.NoError(t, err)
	return b
}

// send makes an API request with token and a JSON body.
func (p *promoteBundle) send(t testing.TB, method, path, token string, body any) (*http.Response, map[string]any) {
	t.Helper()
	var r *bytes.Reader
	if body != nil {
		data, err := json.Marshal(body)
		require.NoError(t, err)
		r = bytes.NewReader(data)
	} else {
		r = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, p.srv.URL+path, r)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	return do(t, p.srv.Client(), req)
}

func (p *promoteBundle) token(t testing.TB, name string, role slipway.Role) string {
	t.Helper()
	resp, out := p.send(t, http.MethodPost, "/api/v1/tokens", testToken, map[string]any{"name": name, "role": role})
	require.Equal(t, http.StatusCreated, resp.StatusCode, out["_raw"])
	return out["token"].(string)
}

func (p *promoteBundle) promote(t testing.TB, token string, id int64, body map[string]any) (*http.Response, map[string]any) {
	t.Helper()
	return p.send(t, http.MethodPost, "/api/v1/builds/"+strconv.FormatInt(id, 10)+"/promote", token, body)
}

// tagDigest reads repo:tag from the registry directly.
func tagDigest(t *testing.T, repo, tag string) string {
	t.Helper()
	ref, err := name.NewTag(repo + ":" + tag)
	require.NoError(t, err)
	d, err := remote.Head(ref)
	require.NoError(t, err, "HEAD %s", ref)
	return d.Digest.String()
}

func (p *promoteBundle) promotions(t *testing.T, query string) []slipway.Promotion {
	t.Helper()
	resp, out := p.send(t, http.MethodGet, "/api/v1/promotions?"+query, testToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
	var list struct{ Promotions []slipway.Promotion }
	require.NoError(t, json.Unmarshal([]byte(out["_raw"].(string)), &list))
	return list.Promotions
}

func TestPromote(t *testing.T) {
	t.Parallel()
	p := setupPromote(t)
	defer closeDefaultIdle()
	repo := p.main.Host + fmt.Sprintf("/promote%d/acme/app", time.Now().UnixNano()%1e9)
	idx := pushIndex(t, repo)
	build := p.succeededBuild(t, idx, slipway.BuildSucceeded, "")
	viewer := p.token(t, "viewer-1", slipway.RoleViewer)
	rm := p.token(t, "release-1", slipway.RoleReleaseManager)

	t.Run("SameRepositoryIsOneManifestPutPerTag", func(t *testing.T) {
		p.main.Reset()
		resp, out := p.promote(t, rm, build.ID, map[string]any{"tags": []string{"v1.2.3", "stable"}})
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.Equal(t, 0, p.main.Count("", "blobs")+p.main.Count("", "uploads"), "no blob read or upload: %v", p.main.Requests())
		require.Zero(t, p.main.UploadBytes())
		require.Equal(t, 2, p.main.Count(http.MethodPut, "manifests"), "%v", p.main.Requests())
		t.Logf("MEASURE same-repository promotion of 2 tags: %d registry requests: %v", len(p.main.Requests()), p.main.Requests())
		for _, tag := range []string{"v1.2.3", "stable"} {
			require.Equal(t, idx.digest, tagDigest(t, repo, tag))
		}

		// Again: the tags already hold the digest, so nothing is written.
		p.main.Reset()
		resp, out = p.promote(t, rm, build.ID, map[string]any{"tags": []string{"v1.2.3"}})
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.Equal(t, "unchanged", out["tags"].([]any)[0].(map[string]any)["outcome"])
		require.Equal(t, 0, p.main.Count(http.MethodPut, "manifests"), "%v", p.main.Requests())
	})

	t.Run("PullRequestBuildIsRefused", func(t *testing.T) {
		prIdx := pushIndex(t, repo)
		pr := p.succeededBuild(t, prIdx, slipway.BuildSucceeded, "")
		_, err := p.db.Pool().Exec(context.Background(),
			`UPDATE builds SET ref = 'refs/pull/9/head', pull_request = 9, pr_title = 'Try' WHERE id = $1`, pr.ID)
		require.NoError(t, err)
		p.main.Reset()
		resp, out := p.promote(t, rm, pr.ID, map[string]any{"tags": []string{"pr-try"}})
		msg := requireError(t, resp, out, http.StatusConflict, slipway.ECONFLICT)
		require.Contains(t, msg, "pull request 9")
		require.Equal(t, 0, p.main.Count(http.MethodPut, "manifests"), "a refusal writes nothing: %v", p.main.Requests())
		rows := p.promotions(t, "build="+strconv.FormatInt(pr.ID, 10))
		require.Len(t, rows, 1, "the refusal is in the audit trail")
		require.Equal(t, slipway.PromotionRefused, rows[0].Outcome)
	})

	t.Run("OtherRepositoryMountsBlobs", func(t *testing.T) {
		target := p.main.Host + fmt.Sprintf("/released%d/app", time.Now().UnixNano()%1e9)
		p.main.Reset()
		resp, out := p.promote(t, rm, build.ID, map[string]any{"tags": []string{"1.0"}, "repository": target})
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.Zero(t, p.main.UploadBytes(), "zero blob bytes uploaded: %v", p.main.Requests())
		require.Equal(t, 0, p.main.Count(http.MethodGet, "blobs"), "no blob downloaded")
		require.Positive(t, p.main.Mounts(), "blobs cross-mounted: %v", p.main.Requests())
		require.Equal(t, idx.digest, tagDigest(t, target, "1.0"))
		requireChildren(t, target, idx)
		t.Logf("MEASURE cross-repository promotion: %d registry requests, %d mounts, %d blob bytes uploaded",
			len(p.main.Requests()), p.main.Mounts(), p.main.UploadBytes())
	})

	t.Run("OtherRegistryCopiesWithTheSameDigest", func(t *testing.T) {
		target := p.other.Host + "/mirror/app"
		p.other.Reset()
		resp, out := p.promote(t, rm, build.ID, map[string]any{"tags": []string{"v1.2.3"}, "repository": target})
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.Equal(t, idx.digest, tagDigest(t, target, "v1.2.3"), "digest unchanged")
		requireChildren(t, target, idx)
		require.GreaterOrEqual(t, p.other.UploadBytes(), idx.blobs, "every layer streamed to the other registry")
		t.Logf("MEASURE cross-registry promotion: %d registry requests, %d blob bytes uploaded", len(p.other.Requests()), p.other.UploadBytes())
	})

	t.Run("TargetNotAllowedIsRefusedBeforeAnyRegistryCall", func(t *testing.T) {
		// An attacker's build must not become someone else's image, and
		// promotion must not probe hosts nobody allowed.
		for _, target := range []string{p.other.Host + "/victim/app", p.main.Host + "/victim/app", "169.254.169.254:80/x/y"} {
			p.main.Reset()
			p.other.Reset()
			resp, out := p.promote(t, rm, build.ID, map[string]any{"tags": []string{"latest"}, "repository": target})
			msg := requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN)
			require.Contains(t, msg, target)
			require.Contains(t, msg, "promotion_targets", "the refusal says what to change")
			require.Empty(t, p.main.Requests(), "no registry call")
			require.Empty(t, p.other.Requests(), "no registry call")
		}
		rows := p.promotions(t, "build="+strconv.FormatInt(build.ID, 10)+"&tag=latest")
		require.NotEmpty(t, rows)
		require.Equal(t, slipway.PromotionRefused, rows[0].Outcome, "the refusal is audited")

		// The repository's own list replaces the global one.
		target := p.other.Host + "/team-releases/app"
		resp, out := p.send(t, http.MethodPatch, "/api/v1/repos/acme/app", testToken,
			map[string]any{"promotion_targets": []string{p.other.Host + "/team-releases/{name}"}})
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		resp, out = p.promote(t, rm, build.ID, map[string]any{"tags": []string{"1.0"}, "repository": target})
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.Equal(t, idx.digest, tagDigest(t, target, "1.0"))
		resp, out = p.promote(t, rm, build.ID, map[string]any{"tags": []string{"1.0"}, "repository": p.other.Host + "/mirror/app"})
		requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN)

		resp, out = p.send(t, http.MethodPatch, "/api/v1/repos/acme/app", testToken,
			map[string]any{"promotion_targets": []string{"*/anything"}})
		msg := requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
		require.Contains(t, msg, "promotion_targets[0]")
		resp, out = p.send(t, http.MethodPatch, "/api/v1/repos/acme/app", testToken, map[string]any{"promotion_targets": []string{}})
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
	})

	t.Run("RolesForceAndAudit", func(t *testing.T) {
		admin := p.token(t, "admin-1", slipway.RoleAdmin)
		idx2 := pushIndex(t, repo)
		build2 := p.succeededBuild(t, idx2, slipway.BuildSucceeded, "")
		resp, out := p.promote(t, rm, build.ID, map[string]any{"tags": []string{"v1.0.0"}})
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])

		resp, out = p.promote(t, viewer, build2.ID, map[string]any{"tags": []string{"v1.0.0"}})
		msg := requireError(t, resp, out, http.StatusForbidden, slipway.EFORBIDDEN)
		require.Contains(t, msg, "release-manager")

		resp, out = p.promote(t, rm, build2.ID, map[string]any{"tags": []string{"v1.0.0"}})
		msg = requireError(t, resp, out, http.StatusConflict, slipway.ECONFLICT)
		require.Contains(t, msg, "v1.0.0")
		require.Contains(t, msg, "force")
		resp, out = p.promote(t, rm, build2.ID, map[string]any{"tags": []string{"v1.0.0"}, "force": true})
		msg = requireError(t, resp, out, http.StatusConflict, slipway.ECONFLICT)
		require.Contains(t, msg, "admin")
		require.Equal(t, idx.digest, tagDigest(t, repo, "v1.0.0"), "a refusal writes nothing")

		resp, out = p.promote(t, admin, build2.ID, map[string]any{"tags": []string{"v1.0.0"}, "force": true})
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])
		require.Equal(t, idx2.digest, tagDigest(t, repo, "v1.0.0"))

		// A tag that is not a version moves without force.
		resp, out = p.promote(t, rm, build2.ID, map[string]any{"tags": []string{"stable"}})
		require.Equal(t, http.StatusOK, resp.StatusCode, out["_raw"])

		rows := p.promotions(t, "repo=acme/app&tag=v1.0.0")
		require.Len(t, rows, 5, "every attempt is audited: %+v", rows)
		want := []struct {
			actor    string
			outcome  slipway.PromotionOutcome
			build    int64
			previous string
		}{
			{"admin-1", slipway.PromotionPromoted, build2.ID, idx.digest},
			{"release-1", slipway.PromotionRefused, build2.ID, idx.digest},
			{"release-1", slipway.PromotionRefused, build2.ID, idx.digest},
			{"viewer-1", slipway.PromotionRefused, build2.ID, ""},
			{"release-1", slipway.PromotionPromoted, build.ID, ""},
		}
		for i, w := range want {
			r := rows[i]
			require.Equal(t, w.actor, r.Actor, "row %d", i)
			require.Equal(t, w.outcome, r.Outcome, "row %d", i)
			require.Equal(t, w.build, r.BuildID, "row %d", i)
			require.Equal(t, w.previous, r.PreviousDigest, "row %d", i)
			require.Equal(t, repo+":v1.0.0", r.Target)
			require.Equal(t, repo, r.TargetRepo)
			require.False(t, r.CreatedAt.IsZero())
		}
		require.Equal(t, idx2.digest, rows[0].Digest)
		require.Equal(t, repo+"@"+idx2.digest, rows[0].Source)
		require.True(t, rows[0].Forced)
		require.NotEmpty(t, rows[1].Reason)
	})

	t.Run("OnlySucceededBuilds", func(t *testing.T) {
		failedIdx := pushIndex(t, repo)
		failed := p.succeededBuild(t, failedIdx, slipway.BuildFailed, `test "arch" failed on linux/arm64: exit code 1`)
		resp, out := p.promote(t, rm, failed.ID, map[string]any{"tags": []string{"candidate"}})
		msg := requireError(t, resp, out, http.StatusConflict, slipway.ECONFLICT)
		require.Contains(t, msg, "linux/arm64")
		require.Contains(t, msg, "failed")
		rows := p.promotions(t, "tag=candidate")
		require.Len(t, rows, 1)
		require.Equal(t, slipway.PromotionRefused, rows[0].Outcome)
	})

	t.Run("BadRequests", func(t *testing.T) {
		before := len(p.promotions(t, ""))
		for body, want := range map[string]string{
			`{}`:                                     "tags",
			`{"tags": ["bad tag"]}`:                  "not a valid tag",
			`{"tags": ["a", "a"]}`:                   "twice",
			`{"tags": ["a"], "repository": "x"}`:     "repository",
			`{"tags": ["a"], "repository": "h/a:b"}`: "repository",
			`{"tags": ["a"], "extra": 1}`:            "extra",
			`not json`:                               "JSON",
		} {
			req, err := http.NewRequest(http.MethodPost, p.srv.URL+"/api/v1/builds/"+strconv.FormatInt(build.ID, 10)+"/promote", strings.NewReader(body))
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+rm)
			resp, out := do(t, p.srv.Client(), req)
			msg := requireError(t, resp, out, http.StatusBadRequest, slipway.EINVALID)
			require.Contains(t, msg, want, body)
		}
		resp, out := p.promote(t, rm, 999999, map[string]any{"tags": []string{"x"}})
		requireError(t, resp, out, http.StatusNotFound, slipway.ENOTFOUND)
		require.Len(t, p.promotions(t, ""), before, "bad requests write no audit row")
	})
}

// requireChildren checks that every platform and attestation manifest of idx
// is in repo, by digest.
func requireChildren(t *testing.T, repo string, idx pushedIndex) {
	t.Helper()
	for _, d := range idx.children {
		ref, err := name.NewDigest(repo + "@" + d)
		require.NoError(t, err)
		img, err := remote.Image(ref)
		require.NoError(t, err, "child %s in %s", d, repo)
		layers, err := img.Layers()
		require.NoError(t, err)
		for _, l := range layers {
			ld, err := l.Digest()
			require.NoError(t, err)
			_, err = remote.Layer(ref.Context().Digest(ld.String()))
			require.NoError(t, err)
		}
	}
}

// closeDefaultIdle drops keep-alive connections of ggcr's default transport,
// which the fixtures use, so goleak sees none.
func closeDefaultIdle() {
	if tr, ok := remote.DefaultTransport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}
