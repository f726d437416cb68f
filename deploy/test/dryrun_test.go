package deploytest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	sigsyaml "sigs.k8s.io/yaml"
)

// TestChartServerDryRun goes one step further than TestChart's strict
// decoding: a real kube-apiserver (bin/kube-apiserver, built by `make deps`
// from k8s.io/kubernetes, on Debian's etcd) accepts every object that every
// value set renders, in a server-side dry run with strict field validation,
// so its admission, defaulting and validation (ports, names, label
// selectors, pod security fields, the ServiceMonitor's CRD schema) all pass.
// Mutated objects show that the dry run does refuse what is wrong.
func TestChartServerDryRun(t *testing.T) {
	api := startAPIServer(t)
	ctx := t.Context()
	const ns = "slipway"
	_, err := api.dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(ctx,
		&unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}},
		metav1.CreateOptions{FieldValidation: "Strict"})
	require.NoError(t, err, "creating the namespace")
	api.installCRD(t, filepath.Join("testdata", "crds", "servicemonitors.yaml"), schema.GroupKind{Group: "monitoring.coreos.com", Kind: "ServiceMonitor"})
	mapper := api.mapper(t)

	kinds := map[string]int{}
	var deployment, serviceMonitor *unstructured.Unstructured
	for _, vs := range valueSets {
		t.Run(valueSetName(vs), func(t *testing.T) {
			for _, doc := range templateDocs(t, vs) {
				obj := decodeUnstructured(t, doc)
				id := obj.GetKind() + " " + obj.GetName()
				err := api.dryRunCreate(ctx, mapper, ns, obj)
				require.NoError(t, err, "the API server refuses %s (values %q):\n%s", id, vs, doc)
				kinds[obj.GetKind()]++
				switch obj.GetKind() {
				case "Deployment":
					if deployment == nil {
						deployment = obj
					}
				case "ServiceMonitor":
					serviceMonitor = obj
				}
			}
		})
	}
	t.Logf("dry-run created: %v", kinds)
	require.Empty(t, api.warnings(), "the API server warned about rendered objects")
	for _, k := range []string{"ConfigMap", "Secret", "Service", "Deployment", "StatefulSet", "Job", "PodDisruptionBudget", "Ingress", "ServiceMonitor"} {
		require.Positive(t, kinds[k], "no value set renders a %s: the dry run covers less than the chart", k)
	}

	// A dry run stores nothing.
	list, err := api.dyn.Resource(schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}).Namespace(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Empty(t, list.Items, "a dry run left Deployments behind")

	// What is wrong is refused.
	t.Run("refused", func(t *testing.T) {
		require.NotNil(t, deployment)
		require.NotNil(t, serviceMonitor)
		cases := []struct {
			name   string
			obj    *unstructured.Unstructured
			mutate func(o map[string]any)
			is     func(error) bool
			says   string
		}{
			{"unknown container field", deployment, func(o map[string]any) {
				changeFirstContainer(t, o, func(c map[string]any) { c["imagePulPolicy"] = "Always" })
			}, apierrors.IsBadRequest, `unknown field "spec.template.spec.containers[0].imagePulPolicy"`},
			{"container port out of range", deployment, func(o map[string]any) {
				changeFirstContainer(t, o, func(c map[string]any) {
					c["ports"] = []any{map[string]any{"name": "http", "containerPort": int64(70000)}}
				})
			}, apierrors.IsInvalid, "containerPort"},
			{"unknown ServiceMonitor field", serviceMonitor, func(o map[string]any) {
				require.NoError(t, unstructured.SetNestedField(o, "/metrics", "spec", "endpoints_path"))
			}, apierrors.IsBadRequest, `unknown field "spec.endpoints_path"`},
			{"bad ServiceMonitor interval", serviceMonitor, func(o map[string]any) {
				eps, _, err := unstructured.NestedSlice(o, "spec", "endpoints")
				require.NoError(t, err)
				require.NotEmpty(t, eps)
				eps[0].(map[string]any)["interval"] = "half a minute"
				require.NoError(t, unstructured.SetNestedSlice(o, eps, "spec", "endpoints"))
			}, apierrors.IsInvalid, "spec.endpoints[0].interval"},
		}
		for _, c := range cases {
			obj := c.obj.DeepCopy()
			c.mutate(obj.Object)
			err := api.dryRunCreate(ctx, mapper, ns, obj)
			require.Error(t, err, "%s: the API server accepts %s", c.name, obj.GetKind())
			require.True(t, c.is(err), "%s: %v", c.name, err)
			require.ErrorContains(t, err, c.says, c.name)
		}
	})
}

// changeFirstContainer calls change on the first container of the pod
// template in o and writes it back.
func changeFirstContainer(t *testing.T, o map[string]any, change func(c map[string]any)) {
	t.Helper()
	cs, _, err := unstructured.NestedSlice(o, "spec", "template", "spec", "containers")
	require.NoError(t, err)
	require.NotEmpty(t, cs)
	change(cs[0].(map[string]any))
	require.NoError(t, unstructured.SetNestedSlice(o, cs, "spec", "template", "spec", "containers"))
}

func decodeUnstructured(t *testing.T, doc []byte) *unstructured.Unstructured {
	t.Helper()
	js, err := sigsyaml.YAMLToJSON(doc)
	require.NoError(t, err)
	obj := &unstructured.Unstructured{}
	require.NoError(t, obj.UnmarshalJSON(js), "decoding:\n%s", doc)
	return obj
}

// apiServer is a kube-apiserver on a loopback port with its etcd, both
// stopped when the test ends.
type apiServer struct {
	config *rest.Config
	dyn    *dynamic.DynamicClient
	disc   *discovery.DiscoveryClient

	mu    sync.Mutex
	warns []string
}

// HandleWarningHeader collects the API server's warnings (rest.WarningHandler).
func (a *apiServer) HandleWarningHeader(code int, agent, text string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.warns = append(a.warns, text)
}

func (a *apiServer) warnings() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.warns...)
}

// dryRunCreate POSTs obj with ?dryRun=All&fieldValidation=Strict into ns (for
// a namespaced kind).
func (a *apiServer) dryRunCreate(ctx context.Context, mapper meta.RESTMapper, ns string, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("mapping %s: %w", gvk, err)
	}
	var r dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		r = a.dyn.Resource(m.Resource).Namespace(ns)
	}
	_, err = r.Create(ctx, obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
	return err
}

// installCRD creates the CustomResourceDefinition in file and waits until
// discovery serves gk.
func (a *apiServer) installCRD(t *testing.T, file string, gk schema.GroupKind) {
	t.Helper()
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	crd := decodeUnstructured(t, data)
	_, err = a.dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).
		Create(t.Context(), crd, metav1.CreateOptions{FieldValidation: "Strict"})
	require.NoError(t, err, "creating the CRD in %s", file)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := a.mapper(t).RESTMapping(gk)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("discovery does not serve %s 30s after its CRD was created: %v", gk, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// mapper maps kinds to resources from what discovery serves now.
func (a *apiServer) mapper(t *testing.T) meta.RESTMapper {
	t.Helper()
	groups, err := restmapper.GetAPIGroupResources(a.disc)
	require.NoError(t, err, "discovering the API server's resources")
	return restmapper.NewDiscoveryRESTMapper(groups)
}

// binDir is where `make deps` puts its binaries: $SLIPWAY_BIN_DIR, or bin/ in
// the repository.
func binDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SLIPWAY_BIN_DIR")
	if dir == "" {
		dir = filepath.Join(root, "bin")
	}
	abs, err := filepath.Abs(dir)
	require.NoError(t, err)
	return abs
}

// startAPIServer starts etcd (Debian's etcd-server) and bin/kube-apiserver in
// a temporary folder on free loopback ports, waits until /readyz answers ok,
// and stops both when the test ends. The client signs in with a token from
// the server's token file (group system:masters), and trusts the server's own
// self-signed certificate. It fails, naming `make deps`, when either binary is
// missing.
func startAPIServer(t *testing.T) *apiServer {
	t.Helper()
	kubeAPIServer := filepath.Join(binDir(t), "kube-apiserver")
	if _, err := os.Stat(kubeAPIServer); err != nil {
		t.Fatalf("%s is missing: run `make deps` (it builds kube-apiserver from k8s.io/kubernetes)", kubeAPIServer)
	}
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd is not installed: run `make deps` (it installs Debian's etcd-server)")
	}
	dir := t.TempDir()
	ports := freePorts(t, 3)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	startProcess(t, "etcd", filepath.Join(dir, "etcd.log"), etcd,
		"--name", "dryrun",
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "dryrun="+peerURL,
		"--log-level", "warn")

	// The admin's token, in the server's token file only.
	tokenBytes := make([]byte, 24)
	_, err = rand.Read(tokenBytes)
	require.NoError(t, err)
	token := hex.EncodeToString(tokenBytes)
	tokenFile := filepath.Join(dir, "tokens.csv")
	require.NoError(t, os.WriteFile(tokenFile, []byte(token+`,dryrun-admin,dryrun-admin,"system:masters"`+"\n"), 0o600))

	// The key pair service-account tokens are signed and checked with.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	priv, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	saKey, saPub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	require.NoError(t, os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: priv}), 0o600))
	require.NoError(t, os.WriteFile(saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644))

	certDir := filepath.Join(dir, "certs")
	api := startProcess(t, "kube-apiserver", filepath.Join(dir, "kube-apiserver.log"), kubeAPIServer,
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(ports[2]),
		"--cert-dir", certDir,
		"--token-auth-file", tokenFile,
		"--service-account-key-file", saPub,
		"--service-account-signing-key-file", saKey,
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--authorization-mode", "RBAC",
		"--allow-privileged=true",
		"--profiling=false")

	a := &apiServer{}
	a.config = &rest.Config{
		Host:            fmt.Sprintf("https://127.0.0.1:%d", ports[2]),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(certDir, "apiserver.crt")},
		WarningHandler:  a,
		QPS:             100,
		Burst:           200,
	}
	// The server writes its certificate when it starts serving, so the
	// clients are made once /readyz answers.
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for {
		if api.exited() {
			t.Fatalf("kube-apiserver exited before it was ready:\n%s", api.tail())
		}
		if last = readyz(t.Context(), a.config); last == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver is not ready after 2 minutes: %v\n%s", last, api.tail())
		}
		time.Sleep(250 * time.Millisecond)
	}
	a.dyn, err = dynamic.NewForConfig(a.config)
	require.NoError(t, err)
	a.disc, err = discovery.NewDiscoveryClientForConfig(a.config)
	require.NoError(t, err)
	return a
}

// readyz asks the server's /readyz; nil means it answered 200 ok.
func readyz(ctx context.Context, config *rest.Config) error {
	if _, err := os.Stat(config.CAFile); err != nil {
		return fmt.Errorf("no serving certificate yet: %w", err)
	}
	transport, err := rest.TransportFor(config)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, config.Host+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %s: %s", resp.Status, body.String())
	}
	return nil
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		require.NoError(t, l.Close())
	}
	return ports
}

// process is a child process whose output goes to a log file.
type process struct {
	name, log string
	done      chan struct{}
	err       error
}

// startProcess starts bin with args, its output in logFile, and stops it when
// the test ends: SIGTERM, then SIGKILL after 15 s. A process that ended by
// itself before then fails the test with its log's tail.
func startProcess(t *testing.T, name, logFile, bin string, args ...string) *process {
	t.Helper()
	f, err := os.Create(logFile)
	require.NoError(t, err)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	require.NoError(t, cmd.Start(), "starting %s", name)
	p := &process{name: name, log: logFile, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.exited() {
			t.Errorf("%s ended by itself: %v\n%s", name, p.err, p.tail())
			return
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
			t.Errorf("%s did not stop within 15s of SIGTERM; killed", name)
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.tail())
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail is the last 40 lines of the process's log.
func (p *process) tail() string {
	data, err := os.ReadFile(p.log)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", p.log, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}
