package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	helmregistry "helm.sh/helm/v3/pkg/registry"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

func chartFiles(template string) map[string]string {
	return map[string]string{
		"deploy/chart/Chart.yaml":            "apiVersion: v2\nname: chartapp\nversion: 0.1.0\n",
		"deploy/chart/values.yaml":           "image:\n  repository: example.org/moving\n  tag: latest\n",
		"deploy/chart/templates/deploy.yaml": template,
	}
}

const goodTemplate = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  image: \"{{ .Values.image.repository }}@{{ .Values.image.digest }}\"\n"

// TestReleaseChart: a version tag's release pushes the app's chart as Helm's
// OCI artifact to <registry>/<owner>/charts/<name>; Helm's registry client
// pulls it back, and its values and rendered templates hold the exact index
// digest of the tested build. A branch build of a chart that fails to
// template fails, and pushes no chart.
func TestReleaseChart(t *testing.T) {
	ctx := context.Background()
	registryHost := requireEnv(t, "TEST_REGISTRY")
	base, err := testenv.PushBaseImage(ctx, registryHost)
	require.NoError(t, err)
	s := newStack(t)
	s.start("worker", "SLIPWAY_WORKER_ID=e2e-chart")
	r := newRepos(t)
	files := chartFiles(goodTemplate)
	files["Dockerfile"] = dockerfile(base, "")
	files[".slipway.yml"] = archTest + "chart: deploy/chart\n"
	url, c1 := r.add("chartapp", files)
	bad := chartFiles("kind: {{ .Values.image.repository \n")
	bad["Dockerfile"] = dockerfile(base, "")
	bad[".slipway.yml"] = archTest + "chart: deploy/chart\n"
	badURL, c2 := r.add("badchart", bad)
	n := 0
	pushRef := func(repo, cloneURL, ref, commit string) *slipway.Build {
		t.Helper()
		n++
		body := push(t, testenv.PushParams{Owner: "acme", Name: repo, CloneURL: cloneURL, Ref: ref, After: commit})
		code, out := s.webhook("push", fmt.Sprintf("chart-%d", n), body, testenv.Sign(webhookSecret, body))
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		return s.waitDone(int64(out["build_id"].(float64)))
	}

	onMain := pushRef("chartapp", url, "refs/heads/main", c1)
	require.Equal(t, slipway.BuildSucceeded, onMain.State, "error %s\nlog:\n%s", onMain.Error, s.logs(onMain.ID))
	require.Contains(t, s.logs(onMain.ID), "passes helm lint and template")
	rel := pushRef("chartapp", url, "refs/tags/v1.2.3", c1)
	require.Equal(t, slipway.BuildSucceeded, rel.State, "error %s\nlog:\n%s", rel.Error, s.logs(rel.ID))
	image := s.image("acme", "chartapp")
	chartRepo := strings.TrimSuffix(image, "/chartapp") + "/charts/chartapp"
	chartRef := chartRepo + ":1.2.3"
	require.Contains(t, s.logs(rel.ID), "Pushed chart oci://"+chartRef+"@sha256:")

	hc, err := helmregistry.NewClient(helmregistry.ClientOptPlainHTTP())
	require.NoError(t, err)
	pulled, err := hc.Pull(chartRef)
	require.NoError(t, err, "helm pull oci://%s", chartRef)
	ch, err := loader.LoadArchive(bytes.NewReader(pulled.Chart.Data))
	require.NoError(t, err)
	require.Equal(t, "1.2.3", ch.Metadata.Version)
	require.Equal(t, "1.2.3", ch.Metadata.AppVersion)
	img := ch.Values["image"].(map[string]any)
	require.Equal(t, onMain.IndexDigest, img["digest"], "the chart pins the tested index digest")
	require.Equal(t, image, img["repository"])
	vals, err := chartutil.ToRenderValues(ch, nil, chartutil.ReleaseOptions{Name: "qa", Namespace: "qa"}, chartutil.DefaultCapabilities)
	require.NoError(t, err)
	out, err := engine.Render(ch, vals)
	require.NoError(t, err)
	require.Contains(t, out["chartapp/templates/deploy.yaml"], image+"@"+onMain.IndexDigest, "helm template shows the digest")

	requireReleaseRecord(t, s, image, onMain, rel, hc)

	failed := pushRef("badchart", badURL, "refs/heads/main", c2)
	require.Equal(t, slipway.BuildFailed, failed.State)
	require.Contains(t, failed.Error, "deploy.yaml", "the error names the chart file")
	_, err = hc.Pull(chartRepo + ":0.0.0-" + slipway.CommitTag(c2))
	require.Error(t, err, "a branch build pushes no chart")
}

// requireReleaseRecord checks the release record of v1.2.3 against the
// registry itself: its index digest is what tag 1.2.3 resolves to, its
// platform digests and provenance are the index's manifests, and its chart
// reference pulls by digest. The dashboard's release page shows the digests.
func requireReleaseRecord(t *testing.T, s *stack, image string, tested, tagBuild *slipway.Build, hc *helmregistry.Client) {
	t.Helper()
	var rel struct {
		Repo        string
		Version     string
		Commit      string
		IndexDigest string `json:"index_digest"`
		Platforms   []struct {
			Platform, Digest, Provenance string
			Tests                        []slipway.TestResult
		}
		Chart      *slipway.ReleaseChart
		Tags       []string
		ReleasedBy string             `json:"released_by"`
		Source     struct{ ID int64 } `json:"source_build"`
		Build      struct{ ID int64 }
	}
	code, body := s.api("/releases/acme/chartapp/v1.2.3", &rel)
	require.Equal(t, http.StatusOK, code, "%s", body)
	code, same := s.api("/releases/acme/chartapp/1.2.3", nil)
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, string(body), string(same), "v1.2.3 and 1.2.3 name one release")
	code, body = s.api("/releases/acme/chartapp/9.9.9", nil)
	require.Equal(t, http.StatusNotFound, code, "%s", body)

	ref, err := name.NewTag(image + ":1.2.3")
	require.NoError(t, err)
	idx, err := remote.Index(ref)
	require.NoError(t, err)
	d, err := idx.Digest()
	require.NoError(t, err)
	require.Equal(t, d.String(), rel.IndexDigest, "the record's index is what tag 1.2.3 resolves to")
	require.Equal(t, tested.IndexDigest, rel.IndexDigest)
	require.Equal(t, tested.Commit, rel.Commit)
	require.Equal(t, tested.ID, rel.Source.ID)
	require.Equal(t, tagBuild.ID, rel.Build.ID)
	require.Contains(t, rel.ReleasedBy, "tag push v1.2.3")
	require.Subset(t, rel.Tags, []string{"1.2.3", "1.2", "1", "latest"})

	im, err := idx.IndexManifest()
	require.NoError(t, err)
	images, attestations := map[string]string{}, map[string]string{}
	for _, m := range im.Manifests {
		if m.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
			attestations[m.Annotations["vnd.docker.reference.digest"]] = m.Digest.String()
		} else if m.Platform != nil {
			images[m.Platform.OS+"/"+m.Platform.Architecture] = m.Digest.String()
		}
	}
	require.Len(t, rel.Platforms, len(images), "one platform per image manifest of the index")
	for _, p := range rel.Platforms {
		require.Equal(t, images[p.Platform], p.Digest, p.Platform)
		require.NotEmpty(t, p.Provenance, "provenance: min by default")
		require.Equal(t, attestations[p.Digest], p.Provenance, "the attestation of %s", p.Platform)
		require.NotEmpty(t, p.Tests, "tests of %s", p.Platform)
		for _, tr := range p.Tests {
			require.Equal(t, p.Platform, tr.Platform)
			require.True(t, tr.Passed)
		}
	}

	require.NotNil(t, rel.Chart)
	require.Equal(t, "oci://"+strings.TrimSuffix(image, "/chartapp")+"/charts/chartapp:1.2.3", rel.Chart.Reference)
	require.Equal(t, "1.2.3", rel.Chart.Version)
	require.Equal(t, "1.2.3", rel.Chart.AppVersion)
	pulled, err := hc.Pull(strings.TrimPrefix(rel.Chart.Reference, "oci://") + "@" + rel.Chart.Digest)
	require.NoError(t, err, "helm pull %s@%s", rel.Chart.Reference, rel.Chart.Digest)
	require.Equal(t, rel.Chart.Digest, pulled.Manifest.Digest)

	// The dashboard's release page, with the admin token's session.
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar}
	form := url.Values{"token": {adminToken}, "next": {"/"}}
	resp, err := c.PostForm(s.url+"/signin", form)
	require.NoError(t, err)
	resp.Body.Close()
	html := pageOf(t, c, s.url+"/releases/acme/chartapp/v1.2.3")
	require.Contains(t, html, rel.IndexDigest)
	for _, p := range rel.Platforms {
		require.Contains(t, html, p.Digest)
		require.Contains(t, html, p.Provenance)
	}
	require.Contains(t, html, "helm pull "+rel.Chart.Reference+"@"+rel.Chart.Digest)
	require.Contains(t, html, "docker pull "+image+"@"+rel.IndexDigest)
	require.Contains(t, pageOf(t, c, s.url+"/releases/acme/chartapp"), `href="/releases/acme/chartapp/1.2.3"`)
}

// pageOf GETs a dashboard page with c and returns its HTML; it must answer 200.
func pageOf(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s: %s", u, data)
	return string(data)
}
