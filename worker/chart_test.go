package worker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chart/loader"
	helmregistry "helm.sh/helm/v3/pkg/registry"

	"github.com/slipway-ci/slipway/registry"
	"github.com/slipway-ci/slipway/test/testenv"
)

const testDigest = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"

func writeChart(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, "deploy/chart", name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	}
}

func goodChart() map[string]string {
	return map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: app\nversion: 0.0.0\n",
		"values.yaml": "replicas: 2\nimage:\n  repository: example.org/moving\n  tag: latest\n",
		"templates/deploy.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n" +
			"data:\n  image: \"{{ .Values.image.repository }}@{{ .Values.image.digest }}\"\n",
	}
}

// TestChartHostileFiles: a chart folder that leaves the checkout, holds a
// symlink, a file over the bound, or is a symlink itself is refused.
func TestChartHostileFiles(t *testing.T) {
	for _, bad := range []string{"../x", "/etc", "deploy/../../x", "."} {
		require.Error(t, ValidateChartPath(bad), bad)
	}
	require.NoError(t, ValidateChartPath("deploy/chart"))

	root := t.TempDir()
	writeChart(t, root, goodChart())
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(root, "deploy/chart/templates/passwd.yaml")))
	_, err := LoadChartDir(root, "deploy/chart")
	require.ErrorContains(t, err, "not a regular file")

	root = t.TempDir()
	writeChart(t, root, goodChart())
	require.NoError(t, os.WriteFile(filepath.Join(root, "deploy/chart/big.txt"), make([]byte, chartMaxFileBytes+1), 0o644))
	_, err = LoadChartDir(root, "deploy/chart")
	require.ErrorContains(t, err, "over")

	root = t.TempDir()
	outside := t.TempDir()
	writeChart(t, outside, goodChart())
	require.NoError(t, os.Symlink(filepath.Join(outside, "deploy"), filepath.Join(root, "deploy")))
	_, err = LoadChartDir(root, "deploy/chart")
	require.ErrorContains(t, err, "symlinks are not followed")
}

// TestChartLintFails: a chart whose Chart.yaml has no name, or whose template
// does not parse, fails the check.
func TestChartLintFails(t *testing.T) {
	root := t.TempDir()
	files := goodChart()
	files["templates/broken.yaml"] = "kind: {{ .Values.image.repository \n"
	writeChart(t, root, files)
	ch, err := LoadChartDir(root, "deploy/chart")
	require.NoError(t, err)
	require.NoError(t, PinChart(ch, "1.2.3", "r.example/acme/app", testDigest))
	_, err = CheckChart(ch)
	require.ErrorContains(t, err, "broken.yaml")
}

// TestChartPushPull: the pinned chart goes to a real registry as Helm's OCI
// artifact; Helm's own registry client pulls it back, and its values and
// rendered templates hold the exact digest.
func TestChartPushPull(t *testing.T) {
	root := t.TempDir()
	writeChart(t, root, goodChart())
	ch, err := LoadChartDir(root, "deploy/chart")
	require.NoError(t, err)
	require.NoError(t, PinChart(ch, "1.2.3", "r.example/acme/app", testDigest))
	rendered, err := CheckChart(ch)
	require.NoError(t, err)
	require.Contains(t, rendered["app/templates/deploy.yaml"], "r.example/acme/app@"+testDigest)
	tgz, err := PackageChart(ch)
	require.NoError(t, err)

	host := testenv.StartRegistry(t)
	ref := host + "/acme/charts/app:1.2.3"
	dgst, err := registry.New(registry.WithInsecure(true)).PushChart(context.Background(), ref, ch.Metadata, tgz)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(dgst, "sha256:"))

	hc, err := helmregistry.NewClient(helmregistry.ClientOptPlainHTTP())
	require.NoError(t, err)
	res, err := hc.Pull(ref)
	require.NoError(t, err)
	require.Equal(t, dgst, res.Manifest.Digest)
	pulled, err := loader.LoadArchive(strings.NewReader(string(res.Chart.Data)))
	require.NoError(t, err)
	require.Equal(t, "1.2.3", pulled.Metadata.Version)
	require.Equal(t, "1.2.3", pulled.Metadata.AppVersion)
	img := pulled.Values["image"].(map[string]any)
	require.Equal(t, testDigest, img["digest"])
	require.Equal(t, "r.example/acme/app", img["repository"])
	require.NotContains(t, img, "tag", "no moving tag is left beside the digest")
	require.EqualValues(t, 2, pulled.Values["replicas"], "the chart's other values are kept")
	again, err := CheckChart(pulled)
	require.NoError(t, err)
	require.Contains(t, again["app/templates/deploy.yaml"], "r.example/acme/app@"+testDigest)
}

func TestChartRepository(t *testing.T) {
	require.Equal(t, "r.example/acme/charts/web", ChartRepository("r.example/acme/app", "web"))
	require.Equal(t, "r.example:5000/team/acme/charts/web", ChartRepository("r.example:5000/team/acme/app", "web"))
}
