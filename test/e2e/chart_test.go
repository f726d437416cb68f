package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

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

	failed := pushRef("badchart", badURL, "refs/heads/main", c2)
	require.Equal(t, slipway.BuildFailed, failed.State)
	require.Contains(t, failed.Error, "deploy.yaml", "the error names the chart file")
	_, err = hc.Pull(chartRepo + ":0.0.0-" + slipway.CommitTag(c2))
	require.Error(t, err, "a branch build pushes no chart")
}
