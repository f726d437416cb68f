package worker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"sigs.k8s.io/yaml"

	"github.com/slipway-ci/slipway"
)

// Bounds on the chart folder a push names: its files are hostile.
const (
	chartMaxFiles     = 1000
	chartMaxFileBytes = 1 << 20 // one file
	chartMaxBytes     = 8 << 20 // all files together
)

// ChartImageKeys are the values keys a packaged chart's image is pinned
// under: image.repository (no tag) and image.digest ("sha256:…"); image.tag
// is removed so a template cannot fall back to a moving tag.
var ChartImageKeys = [2]string{"image.repository", "image.digest"}

// ValidateChartPath checks .slipway.yml's chart: a relative, clean folder
// path inside the checkout ("deploy/chart"), no "..", no absolute path.
func ValidateChartPath(p string) error {
	if p == "" {
		return nil
	}
	if path.IsAbs(p) || strings.Contains(p, `\`) || path.Clean(p) != p || p == "." ||
		p == ".." || strings.HasPrefix(p, "../") {
		return fmt.Errorf("chart: %q must be a clean relative folder inside the repository, such as deploy/chart", p)
	}
	return nil
}

// LoadChartDir reads the chart folder rel inside the checkout root and loads
// it with Helm's loader. Nothing outside root is read: the folder is opened
// through os.Root, and a symlink, device, socket or other non-regular file
// anywhere in it is an error, as are more than 1000 files, a file over 1 MiB
// or more than 8 MiB together.
func LoadChartDir(root, rel string) (*chart.Chart, error) {
	if err := ValidateChartPath(rel); err != nil {
		return nil, err
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("opening the checkout: %w", err)
	}
	defer r.Close()
	// Every component of rel must be a real folder, not a symlink.
	cur := ""
	for _, part := range strings.Split(rel, "/") {
		cur = path.Join(cur, part)
		fi, err := r.Lstat(cur)
		if err != nil {
			return nil, fmt.Errorf("chart: reading %s: %w", cur, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("chart: %s is not a folder (symlinks are not followed)", cur)
		}
	}
	sub, err := r.OpenRoot(rel)
	if err != nil {
		return nil, fmt.Errorf("chart: opening %s: %w", rel, err)
	}
	defer sub.Close()
	var files []*loader.BufferedFile
	var total int64
	err = fs.WalkDir(sub.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s/%s is not a regular file (symlinks and special files are refused)", rel, p)
		}
		if len(files) >= chartMaxFiles {
			return fmt.Errorf("%s has more than %d files", rel, chartMaxFiles)
		}
		f, err := sub.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, chartMaxFileBytes+1))
		if err != nil {
			return err
		}
		if len(data) > chartMaxFileBytes {
			return fmt.Errorf("%s/%s is over %d bytes", rel, p, chartMaxFileBytes)
		}
		total += int64(len(data))
		if total > chartMaxBytes {
			return fmt.Errorf("%s is over %d bytes in all", rel, chartMaxBytes)
		}
		files = append(files, &loader.BufferedFile{Name: p, Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("chart: reading %s: %w", rel, err)
	}
	ch, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("chart: loading %s: %w", rel, err)
	}
	return ch, nil
}

// PinChart sets the chart's version and appVersion to version (a SemVer
// release version, "1.2.3") and pins its image: values image.repository =
// repository, image.digest = digest ("sha256:…"), image.tag removed. The
// values.yaml is rewritten (its comments are lost).
func PinChart(ch *chart.Chart, version, repository, digest string) error {
	ch.Metadata.Version = version
	ch.Metadata.AppVersion = version
	if ch.Values == nil {
		ch.Values = map[string]any{}
	}
	img, _ := ch.Values["image"].(map[string]any)
	if img == nil {
		img = map[string]any{}
	}
	delete(img, "tag")
	img["repository"] = repository
	img["digest"] = digest
	ch.Values["image"] = img
	data, err := yaml.Marshal(ch.Values)
	if err != nil {
		return fmt.Errorf("writing values.yaml: %w", err)
	}
	found := false
	for _, f := range ch.Raw {
		if f.Name == chartutil.ValuesfileName {
			f.Data, found = data, true
		}
	}
	if !found {
		ch.Raw = append(ch.Raw, &chart.File{Name: chartutil.ValuesfileName, Data: data})
	}
	return ch.Validate()
}

// CheckChart lints the chart (Helm's lint rules; errors, not warnings, fail)
// and renders its templates with its own values; a failure names the file.
// It returns the rendered manifests, file name to text.
func CheckChart(ch *chart.Chart) (map[string]string, error) {
	dir, tgz, err := saveChart(ch)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	res := action.NewLint().Run([]string{tgz}, nil)
	var msgs []string
	for _, m := range res.Messages {
		if m.Severity >= 4 { // support.ErrorSev
			msgs = append(msgs, m.Error())
		}
	}
	for _, e := range res.Errors {
		if len(msgs) == 0 {
			msgs = append(msgs, e.Error())
		}
	}
	if len(msgs) > 0 {
		return nil, fmt.Errorf("the chart fails helm lint: %s", strings.Join(msgs, "; "))
	}
	vals, err := chartutil.ToRenderValues(ch, nil, chartutil.ReleaseOptions{Name: ch.Name(), Namespace: "default"}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, fmt.Errorf("templating the chart: %w", err)
	}
	out, err := engine.Render(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("templating the chart: %w", err)
	}
	return out, nil
}

// PackageChart returns the chart as a Helm package (.tgz bytes), the layer of
// its OCI artifact.
func PackageChart(ch *chart.Chart) ([]byte, error) {
	dir, p, err := saveChart(ch)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	data, err := os.ReadFile(filepath.Clean(p))
	if err != nil {
		return nil, fmt.Errorf("packaging the chart: %w", err)
	}
	return bytes.Clone(data), nil
}

// saveChart writes ch as a .tgz into a new temporary folder, which the caller
// removes, and returns both paths.
func saveChart(ch *chart.Chart) (dir, tgz string, err error) {
	dir, err = os.MkdirTemp("", "slipway-chart-")
	if err != nil {
		return "", "", fmt.Errorf("packaging the chart: %w", err)
	}
	tgz, err = chartutil.Save(ch, dir)
	if err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("packaging the chart: %w", err)
	}
	return dir, tgz, nil
}

// ChartRepository is where a release pushes the chart named name of image:
// beside it, the image's last path element replaced by charts/name
// ("host/owner/app" → "host/owner/charts/name", helm's
// oci://host/owner/charts/name; a prefix such as host/team/owner/app stays).
func ChartRepository(image, name string) string {
	return path.Dir(image) + "/charts/" + name
}

// checkChart loads, pins and checks cfg.Chart of the checkout dir against
// image@digest; with push (a release of version) it also pushes it and returns
// what it pushed: reference "oci://host/owner/charts/name:version" and the
// manifest digest. Without a chart, or without push, it returns nil.
func (w *Worker) checkChart(ctx context.Context, dir string, cfg *RepoConfig, image, digest, version string, push bool, sink *logSink) (*slipway.ReleaseChart, error) {
	if cfg.Chart == "" {
		return nil, nil
	}
	ch, err := LoadChartDir(dir, cfg.Chart)
	if err != nil {
		return nil, err
	}
	if err := PinChart(ch, version, image, digest); err != nil {
		return nil, fmt.Errorf("chart %s: %w", cfg.Chart, err)
	}
	if _, err := CheckChart(ch); err != nil {
		return nil, fmt.Errorf("chart %s: %w", cfg.Chart, err)
	}
	sink.Add("", "chart", fmt.Sprintf("Chart %s (%s) passes helm lint and template with image %s@%s", ch.Name(), cfg.Chart, image, digest))
	if !push {
		return nil, nil
	}
	tgz, err := PackageChart(ch)
	if err != nil {
		return nil, err
	}
	repo := ChartRepository(image, ch.Name())
	d, err := w.registry.PushChart(ctx, repo+":"+version, ch.Metadata, tgz)
	if err != nil {
		return nil, err
	}
	pushed := &slipway.ReleaseChart{Name: ch.Name(), Reference: "oci://" + repo + ":" + version, Digest: d,
		Version: ch.Metadata.Version, AppVersion: ch.Metadata.AppVersion}
	sink.Add("", "chart", "Pushed chart "+pushed.Reference+"@"+d)
	return pushed, nil
}
