package deploytest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientscheme "k8s.io/client-go/kubernetes/scheme"
)

var chartDir = filepath.Join(root, "deploy", "helm", "slipway")

const release = "ci"

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helm builds the helm CLI from the version pinned in this module's go.mod
// (a tool entry), once per test binary; the build cache makes later runs quick.
func helm(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		dir, err := os.MkdirTemp("", "slipway-helm-")
		if err != nil {
			helmErr = err
			return
		}
		helmPath = filepath.Join(dir, "helm")
		out, err := exec.Command("go", "build", "-o", helmPath, "helm.sh/helm/v3/cmd/helm").CombinedOutput()
		if err != nil {
			helmErr = fmt.Errorf("building helm: %v\n%s", err, out)
		}
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

func runHelm(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	// No kubeconfig, no repositories: lint and template work offline.
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir(), "KUBECONFIG=/dev/null")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// valueSets are the value files the chart is rendered with; "" is the defaults.
var valueSets = []string{"", "external-postgres.yaml", "two-pools.yaml", "ingress.yaml"}

// valueSetName names a value set for subtests: the file without .yaml, or
// "defaults".
func valueSetName(vs string) string {
	if vs == "" {
		return "defaults"
	}
	return strings.TrimSuffix(vs, ".yaml")
}

// scheme knows every kind the chart may render; a kind it does not know fails.
func newScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	require.NoError(t, clientscheme.AddToScheme(s))
	require.NoError(t, monitoringv1.AddToScheme(s))
	return s
}

// rendered is one value set's output, decoded.
type rendered struct {
	objects []runtime.Object
}

// render lints the chart with values (a file in testdata, "" for the
// defaults), renders it and decodes each object strictly into its API type.
func render(t *testing.T, values string) *rendered {
	t.Helper()
	lint := []string{"lint", chartDir, "--strict"}
	if values != "" {
		lint = append(lint, "-f", filepath.Join("testdata", values))
	}
	runHelm(t, lint...)

	scheme := newScheme(t)
	strict := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
	r := &rendered{}
	for _, doc := range templateDocs(t, values) {
		obj, gvk, err := strict.Decode(doc, nil, nil)
		require.NoError(t, err, "decoding strictly:\n%s", doc)
		_, unstructured := obj.(runtime.Unstructured)
		require.False(t, unstructured, "%s decoded into no API type", gvk)
		r.objects = append(r.objects, obj)
	}
	require.NotEmpty(t, r.objects)
	return r
}

// templateDocs runs `helm template` with values (a file in testdata, "" for
// the defaults) in the namespace slipway and returns each rendered object as
// its YAML document; documents holding only comments are left out.
func templateDocs(t *testing.T, values string) [][]byte {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", "slipway"}
	if values != "" {
		args = append(args, "-f", filepath.Join("testdata", values))
	}
	out := runHelm(t, args...)
	var docs [][]byte
	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		var probe map[string]any
		require.NoError(t, yaml.Unmarshal(doc, &probe))
		if len(probe) == 0 {
			continue // only comments
		}
		docs = append(docs, doc)
	}
	require.NotEmpty(t, docs)
	return docs
}

// podSpecs returns every pod template of r by owner name.
func (r *rendered) podSpecs() map[string]*corev1.PodSpec {
	out := map[string]*corev1.PodSpec{}
	for _, o := range r.objects {
		switch o := o.(type) {
		case *appsv1.Deployment:
			out[o.Name] = &o.Spec.Template.Spec
		case *appsv1.StatefulSet:
			out[o.Name] = &o.Spec.Template.Spec
		case *batchv1.Job:
			out[o.Name] = &o.Spec.Template.Spec
		}
	}
	return out
}

func objectsOf[T runtime.Object](r *rendered) []T {
	var out []T
	for _, o := range r.objects {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// envNames collects every SLIPWAY_* name the chart hands slipway: the keys of
// the release's ConfigMap and Secret (which slipway's containers load with
// envFrom) and the env entries of its containers. A secret setting set to a
// literal value, or put in the ConfigMap, fails the test.
func (r *rendered) envNames(t *testing.T, settings map[string]setting) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	add := func(where, name string) {
		if !strings.HasPrefix(name, "SLIPWAY_") {
			return
		}
		if s, ok := settings[name]; !ok || !s.deployed() {
			t.Errorf("%s sets %s, which slipway's server, worker and migrate do not read (see deploy/settings.txt)", where, name)
		}
		names[name] = true
	}
	full := release + "-slipway"
	for _, cm := range objectsOf[*corev1.ConfigMap](r) {
		for k := range cm.Data {
			if settings[k].secret {
				t.Errorf("ConfigMap %s holds %s, a secret setting", cm.Name, k)
			}
			add("ConfigMap "+cm.Name, k)
		}
	}
	for _, s := range objectsOf[*corev1.Secret](r) {
		if s.Name != full {
			continue // the database password and the migration hook's copy
		}
		for k := range s.StringData {
			add("Secret "+s.Name, k)
		}
		for k := range s.Data {
			add("Secret "+s.Name, k)
		}
	}
	for owner, spec := range r.podSpecs() {
		for _, c := range append(spec.InitContainers, spec.Containers...) {
			for _, e := range c.Env {
				if settings[e.Name].secret && e.Value != "" {
					t.Errorf("%s/%s sets secret %s as a literal value", owner, c.Name, e.Name)
				}
				add(owner+"/"+c.Name, e.Name)
			}
		}
	}
	return names
}

func TestChart(t *testing.T) {
	settings := readSettings(t)
	for _, vs := range valueSets {
		t.Run(valueSetName(vs), func(t *testing.T) {
			r := render(t, vs)
			names := r.envNames(t, settings)
			if vs != "ingress.yaml" { // with existingSecret the secret keys are the user's
				deployed := map[string]setting{}
				for k, s := range settings {
					if s.deployed() {
						deployed[k] = s
					}
				}
				onlyChart, onlySlipway := diffNames(names, deployed)
				require.Empty(t, onlyChart, "the chart sets variables slipway does not read")
				require.Empty(t, onlySlipway, "slipway reads variables the chart cannot set: add them to values.yaml (config or secrets) or a template")
			}
			checkWorkloads(t, r)
			switch vs {
			case "":
				require.Len(t, objectsOf[*networkingv1.Ingress](r), 0)
				require.Len(t, objectsOf[*monitoringv1.ServiceMonitor](r), 0)
				requireObject[*appsv1.StatefulSet](t, r, release+"-slipway-postgresql")
				requireHook(t, r, "post-install,pre-upgrade")
			case "external-postgres.yaml":
				for _, s := range objectsOf[*appsv1.StatefulSet](r) {
					require.NotContains(t, s.Name, "postgresql")
				}
				secret := requireObject[*corev1.Secret](t, r, release+"-slipway")
				require.Equal(t, "postgres://slipway:pw@db.example.com:5432/slipway?sslmode=require", secret.StringData["SLIPWAY_DATABASE_URL"])
				cm := requireObject[*corev1.ConfigMap](t, r, release+"-slipway")
				require.Equal(t, "https://ci.example.com", cm.Data["SLIPWAY_PUBLIC_URL"])
				requireHook(t, r, "pre-install,pre-upgrade")
				requireAuthMounts(t, r)
			case "two-pools.yaml":
				amd := requireObject[*appsv1.StatefulSet](t, r, release+"-slipway-buildkitd-amd64")
				arm := requireObject[*appsv1.StatefulSet](t, r, release+"-slipway-buildkitd-arm64")
				require.Equal(t, "amd64", amd.Spec.Template.Spec.NodeSelector["kubernetes.io/arch"])
				require.Equal(t, "arm64", arm.Spec.Template.Spec.NodeSelector["kubernetes.io/arch"])
				require.EqualValues(t, 2, *amd.Spec.Replicas)
				require.Len(t, amd.Spec.VolumeClaimTemplates, 1)
				require.Empty(t, arm.Spec.VolumeClaimTemplates, "an empty storage means an emptyDir")
				c := arm.Spec.Template.Spec.Containers[0]
				require.True(t, strings.HasSuffix(c.Image, "-rootless"))
				require.Nil(t, c.SecurityContext.Privileged)
				require.Contains(t, c.Args, "--oci-worker-no-process-sandbox")
				for _, pool := range []string{"amd64", "arm64"} {
					w := requireObject[*appsv1.Deployment](t, r, release+"-slipway-worker-"+pool)
					require.EqualValues(t, 3, *w.Spec.Replicas)
					require.Equal(t, "tcp://"+release+"-slipway-buildkitd-"+pool+":1234", envValue(w.Spec.Template.Spec.Containers[0], "SLIPWAY_BUILDKIT_ADDR"))
				}
			case "ingress.yaml":
				ing := requireObject[*networkingv1.Ingress](t, r, release+"-slipway")
				require.Equal(t, "ci.example.com", ing.Spec.Rules[0].Host)
				require.Equal(t, "ci-example-com-tls", ing.Spec.TLS[0].SecretName)
				sm := requireObject[*monitoringv1.ServiceMonitor](t, r, release+"-slipway")
				require.Equal(t, "/metrics", sm.Spec.Endpoints[0].Path)
				require.Equal(t, "prometheus", sm.Labels["release"])
				cm := requireObject[*corev1.ConfigMap](t, r, release+"-slipway")
				require.Equal(t, "https://ci.example.com", cm.Data["SLIPWAY_PUBLIC_URL"], "the public URL defaults to the ingress host")
				for _, s := range objectsOf[*corev1.Secret](r) {
					t.Errorf("with existingSecret the chart renders no Secret, got %s", s.Name)
				}
				for owner, spec := range r.podSpecs() {
					for _, c := range spec.Containers {
						for _, ef := range c.EnvFrom {
							if ef.SecretRef != nil {
								require.Equal(t, "slipway-secrets", ef.SecretRef.Name, owner)
							}
						}
					}
				}
				requireHook(t, r, "pre-install,pre-upgrade")
			}
		})
	}
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func requireObject[T interface {
	runtime.Object
	GetName() string
}](t *testing.T, r *rendered, name string) T {
	t.Helper()
	for _, o := range objectsOf[T](r) {
		if o.GetName() == name {
			return o
		}
	}
	var zero T
	t.Fatalf("no %T named %s rendered", zero, name)
	return zero
}

func requireHook(t *testing.T, r *rendered, hook string) {
	t.Helper()
	job := requireObject[*batchv1.Job](t, r, release+"-slipway-migrate")
	require.Equal(t, hook, job.Annotations["helm.sh/hook"])
	require.Equal(t, []string{"migrate"}, job.Spec.Template.Spec.Containers[0].Args)
}

// checkWorkloads holds for every value set: probes, grace period, disruption
// budgets covering every workload, the non-root slipway containers.
func checkWorkloads(t *testing.T, r *rendered) {
	t.Helper()
	pdbs := objectsOf[*policyv1.PodDisruptionBudget](r)
	covered := func(labels map[string]string) bool {
		for _, p := range pdbs {
			match := true
			for k, v := range p.Spec.Selector.MatchLabels {
				match = match && labels[k] == v
			}
			if match {
				return true
			}
		}
		return false
	}
	var workers int
	for _, d := range objectsOf[*appsv1.Deployment](r) {
		spec := d.Spec.Template.Spec
		c := spec.Containers[0]
		require.True(t, covered(d.Spec.Template.Labels), "no PodDisruptionBudget covers %s", d.Name)
		require.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path, d.Name)
		require.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path, d.Name)
		require.True(t, *spec.SecurityContext.RunAsNonRoot, d.Name)
		switch c.Args[0] {
		case "worker":
			workers++
			// The worker stops within its 20s shutdown; Kubernetes must wait longer.
			require.GreaterOrEqual(t, *spec.TerminationGracePeriodSeconds, int64(25), d.Name)
			require.NotEmpty(t, envValue(c, "SLIPWAY_BUILDKIT_ADDR"))
		case "server":
			require.Equal(t, "0.0.0.0:8080", envValue(c, "SLIPWAY_ADDR"))
		default:
			t.Errorf("%s runs %q", d.Name, c.Args)
		}
	}
	require.Positive(t, workers)
	for _, s := range objectsOf[*appsv1.StatefulSet](r) {
		if strings.Contains(s.Name, "buildkitd") {
			require.True(t, covered(s.Spec.Template.Labels), "no PodDisruptionBudget covers %s", s.Name)
			require.NotEmpty(t, s.Spec.Template.Spec.NodeSelector["kubernetes.io/arch"], s.Name)
		}
	}
}

// TestValuesDocumented: every value in values.yaml has a comment above it or
// above the block it belongs to (resources, securityContext); each setting
// under config and secrets has its own. What those say is generated from the
// settings list, and cmd/slipway's TestSettingsFile fails while one is stale.
func TestValuesDocumented(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal(data, &doc))
	var undocumented []string
	var walk func(n *yaml.Node, path string, covered bool)
	walk = func(n *yaml.Node, path string, covered bool) {
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := strings.TrimPrefix(path+"."+k.Value, ".")
			own := strings.TrimSpace(k.HeadComment) != ""
			ownNeeded := path == "config" || path == "secrets"
			if !own && (ownNeeded || !covered) && (v.Kind != yaml.MappingNode || len(v.Content) == 0) {
				undocumented = append(undocumented, p)
			}
			walk(v, p, (covered || own) && p != "config" && p != "secrets")
		}
	}
	walk(doc.Content[0], "", false)
	require.Empty(t, undocumented, "values.yaml: values without a comment")
}

// requireAuthMounts checks what external-postgres.yaml's registryAuth and
// caBundle render: the dockerconfigjson Secret and the CA ConfigMap mounted
// into server and workers with the settings pointing at the files, and
// buildkitd trusting the CA for the listed registry through its own config.
func requireAuthMounts(t *testing.T, r *rendered) {
	t.Helper()
	check := func(owner string, spec *corev1.PodSpec, c corev1.Container) {
		require.Equal(t, "/etc/slipway/docker/config.json", envValue(c, "SLIPWAY_DOCKER_CONFIG"), owner)
		require.Equal(t, "/etc/slipway/ca/ca.crt", envValue(c, "SLIPWAY_CA_BUNDLE"), owner)
		mounts := map[string]string{}
		for _, m := range c.VolumeMounts {
			mounts[m.Name] = m.MountPath
			if m.Name == "docker-config" || m.Name == "ca-bundle" {
				require.True(t, m.ReadOnly, "%s mounts %s read-only", owner, m.Name)
			}
		}
		require.Equal(t, "/etc/slipway/docker", mounts["docker-config"], owner)
		require.Equal(t, "/etc/slipway/ca", mounts["ca-bundle"], owner)
		vols := map[string]corev1.Volume{}
		for _, v := range spec.Volumes {
			vols[v.Name] = v
		}
		require.NotNil(t, vols["docker-config"].Secret, owner)
		require.Equal(t, "regcred", vols["docker-config"].Secret.SecretName, owner)
		require.Equal(t, []corev1.KeyToPath{{Key: ".dockerconfigjson", Path: "config.json"}}, vols["docker-config"].Secret.Items, owner)
		require.NotNil(t, vols["ca-bundle"].ConfigMap, owner)
		require.Equal(t, "corp-ca", vols["ca-bundle"].ConfigMap.Name, owner)
		// The GitHub App's key, for clones and statuses.
		require.Equal(t, "123456", envValue(c, "SLIPWAY_GITHUB_APP_ID"), owner)
		require.Equal(t, "/etc/slipway/github-app/private-key.pem", envValue(c, "SLIPWAY_GITHUB_APP_PRIVATE_KEY_FILE"), owner)
		require.Equal(t, "/etc/slipway/github-app", mounts["github-app"], owner)
		require.NotNil(t, vols["github-app"].Secret, owner)
		require.Equal(t, "github-app-key", vols["github-app"].Secret.SecretName, owner)
	}
	server := requireObject[*appsv1.Deployment](t, r, release+"-slipway-server")
	check("server", &server.Spec.Template.Spec, server.Spec.Template.Spec.Containers[0])
	worker := requireObject[*appsv1.Deployment](t, r, release+"-slipway-worker-amd64")
	check("worker", &worker.Spec.Template.Spec, worker.Spec.Template.Spec.Containers[0])

	cm := requireObject[*corev1.ConfigMap](t, r, release+"-slipway-buildkitd")
	require.Contains(t, cm.Data["buildkitd.toml"], `[registry."registry.example.com"]`)
	require.Contains(t, cm.Data["buildkitd.toml"], `ca = ["/etc/slipway/ca/ca.crt"]`)
	for _, bk := range objectsOf[*appsv1.StatefulSet](r) {
		if !strings.Contains(bk.Name, "buildkitd") {
			continue
		}
		c := bk.Spec.Template.Spec.Containers[0]
		require.Contains(t, c.Args, "/etc/slipway/buildkitd/buildkitd.toml", bk.Name)
		var hasCA bool
		for _, m := range c.VolumeMounts {
			hasCA = hasCA || m.Name == "ca-bundle" && m.MountPath == "/etc/slipway/ca"
		}
		require.True(t, hasCA, "%s mounts the CA bundle", bk.Name)
		for _, c := range append(bk.Spec.Template.Spec.Containers, bk.Spec.Template.Spec.InitContainers...) {
			for _, e := range c.Env {
				require.NotEqual(t, "SLIPWAY_DOCKER_CONFIG", e.Name, "buildkitd gets credentials over the session only")
			}
		}
	}
}
