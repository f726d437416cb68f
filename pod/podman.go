package pod

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// PodmanConfig configures the Podman Runtime.
type PodmanConfig struct {
	// Binary is the podman executable; default "podman" (found in PATH).
	Binary string
	// Insecure pulls over plain http and without TLS verification
	// (--tls-verify=false), as SLIPWAY_REGISTRY_INSECURE says.
	Insecure bool
	// AuthFile is a Docker config.json (SLIPWAY_DOCKER_CONFIG) podman reads
	// the pull credentials from (--authfile); empty: anonymous pulls. The
	// credentials never reach a container.
	AuthFile string
	// CAFile is a PEM bundle of certificate authorities (SLIPWAY_CA_BUNDLE)
	// that pulls trust beside the system's: NewPodman copies it into a
	// folder of ConfDir given to podman as --cert-dir (containers/image
	// reads every *.crt there as a root). Empty: the system's roots only.
	CAFile string
	// ConfDir is where the Runtime writes its containers.conf; default a
	// new temporary folder.
	ConfDir string
}

// ContainersConf is the containers.conf every podman command of the Runtime
// reads (through CONTAINERS_CONF, so the machine's own configuration is left
// alone). Podman's default ulimits are above what these machines allow, and
// runc then fails with "error setting rlimits for ready process"; netavark
// is the network backend (a test Pod gets no network but its own localhost).
const ContainersConf = `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[network]
network_backend = "netavark"
`

// Podman runs test Pods with the podman command line (Debian's podman 4.3,
// as root): `podman kube play --start=false` creates the Pod from its YAML,
// then the containers are started one by one.
//
// Why the command line and `kube play`, not Podman's REST API: the Pod YAML
// is the same document a Kubernetes runtime applies, so what Podman runs is
// what Kubernetes will run; the CLI needs no service socket to be started
// and kept (the REST API needs `podman system service`, one more daemon per
// worker); and --authfile/--tls-verify give pulls the worker's Docker
// config without the credentials going anywhere else. Podman 4.3 ignores
// startup probes and starts every container at once, so the Pod is played
// with --start=false and this Runtime does the probes itself: a tcpSocket
// probe connects to the port inside the Pod's network namespace (the Pod
// has no network but its localhost, so two Pods never see each other's
// services), an exec probe runs `podman exec`.
type Podman struct {
	cfg     PodmanConfig
	conf    string // path of the containers.conf
	certDir string // --cert-dir holding CAFile as ca.crt; "" without CAFile
}

// NewPodman returns a Podman Runtime. It writes the containers.conf and
// checks that `podman version` runs; an error names what is missing.
func NewPodman(ctx context.Context, cfg PodmanConfig) (*Podman, error) {
	if cfg.Binary == "" {
		cfg.Binary = "podman"
	}
	dir := cfg.ConfDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "slipway-podman-"); err != nil {
			return nil, fmt.Errorf("creating podman's configuration folder: %w", err)
		}
	}
	p := &Podman{cfg: cfg, conf: filepath.Join(dir, "containers.conf")}
	if err := os.WriteFile(p.conf, []byte(ContainersConf), 0o644); err != nil {
		return nil, fmt.Errorf("writing podman's containers.conf: %w", err)
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the CA bundle for podman's pulls: %w", err)
		}
		p.certDir = filepath.Join(dir, "certs")
		if err := os.MkdirAll(p.certDir, 0o755); err != nil {
			return nil, fmt.Errorf("creating podman's certificate folder: %w", err)
		}
		if err := os.WriteFile(filepath.Join(p.certDir, "ca.crt"), pem, 0o644); err != nil {
			return nil, fmt.Errorf("writing the CA bundle for podman's pulls: %w", err)
		}
	}
	if _, err := p.podman(ctx, "version", "--format", "{{.Client.Version}}"); err != nil {
		return nil, fmt.Errorf("podman cannot run test pods (install Debian's podman, see scripts/deps.sh): %w", err)
	}
	return p, nil
}

func (p *Podman) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, p.cfg.Binary, args...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// podman runs one podman command and returns its stdout; an error carries
// its stderr's last line.
func (p *Podman) podman(ctx context.Context, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := p.command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", context.Cause(ctx)
		}
		msg := lastLine(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return "", fmt.Errorf("podman %s: %s", args[0], msg)
	}
	return strings.TrimSpace(stdout.String()), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.Contains(l, "level=warning") {
			return l
		}
	}
	return ""
}

func (p *Podman) registryFlags(ctx context.Context) []string {
	flags := []string{"--tls-verify=" + strconv.FormatBool(!p.cfg.Insecure)}
	if p.certDir != "" {
		flags = append(flags, "--cert-dir", p.certDir)
	}
	if f, ok := ctx.Value(authFileKey{}).(string); ok {
		flags = append(flags, "--authfile", f)
	} else if p.cfg.AuthFile != "" {
		flags = append(flags, "--authfile", p.cfg.AuthFile)
	}
	return flags
}

type authFileKey struct{}

// WithAuthFile returns ctx making the pulls of a Run with it read their
// credentials from the Docker config.json at path instead of
// PodmanConfig.AuthFile: a build's own file (a repository's registry
// credentials beside the worker's), which the caller removes after Run.
func WithAuthFile(ctx context.Context, path string) context.Context {
	return context.WithValue(ctx, authFileKey{}, path)
}

// Run implements Runtime.
func (p *Podman) Run(ctx context.Context, pod *corev1.Pod, log LogFunc) (Result, error) {
	code, report, reportErr, err := p.run(ctx, pod, log)
	return Result{ExitCode: code, Report: report, ReportErr: reportErr}, err
}

func (p *Podman) run(ctx context.Context, pod *corev1.Pod, log LogFunc) (code int, report []byte, reportErr, err error) {
	runnerName := pod.Annotations[RunnerAnnotation]
	var runner *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == runnerName {
			runner = &pod.Spec.Containers[i]
		}
	}
	if runner == nil {
		return -1, nil, nil, fmt.Errorf("pod %s: no runner container %q", pod.Name, runnerName)
	}
	platform := ""
	if arch := pod.Spec.NodeSelector["kubernetes.io/arch"]; arch != "" {
		platform = "linux/" + arch
	}
	// Podman 4.3 publishes every containerPort on the host, and refuses to
	// without a network; ports are only informative here (the runner reaches
	// the services on the Pod's localhost), so they stay out of the YAML.
	played := pod.DeepCopy()
	for i := range played.Spec.Containers {
		played.Spec.Containers[i].Ports = nil
	}
	doc, err := YAML(played)
	if err != nil {
		return -1, nil, nil, err
	}
	// Pull first, each image for the Pod's platform: kube play would pull
	// for the host's platform and say less about a failure.
	pulled := map[string]bool{}
	for _, c := range pod.Spec.Containers {
		if pulled[c.Image] {
			continue
		}
		pulled[c.Image] = true
		args := append([]string{"pull", "--quiet"}, p.registryFlags(ctx)...)
		if platform != "" {
			args = append(args, "--platform", platform)
		}
		if _, err := p.podman(ctx, append(args, c.Image)...); err != nil {
			if strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
				return -1, nil, nil, fmt.Errorf("pulling %s: %w (its registry is signed by a CA slipway does not trust: put the CA in the PEM file SLIPWAY_CA_BUNDLE names)", c.Image, err)
			}
			return -1, nil, nil, fmt.Errorf("pulling %s: %w", c.Image, err)
		}
	}
	file, err := os.CreateTemp("", "slipway-pod-*.yaml")
	if err != nil {
		return -1, nil, nil, fmt.Errorf("writing the pod YAML: %w", err)
	}
	defer os.Remove(file.Name())
	if _, err := file.Write(doc); err != nil {
		file.Close()
		return -1, nil, nil, fmt.Errorf("writing the pod YAML: %w", err)
	}
	if err := file.Close(); err != nil {
		return -1, nil, nil, fmt.Errorf("writing the pod YAML: %w", err)
	}

	logs := &followers{}
	defer func() {
		// Always: on success, failure, timeout and cancel. The log followers
		// end once their containers are gone.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = p.Remove(rctx, pod.Name)
		logs.wait()
	}()
	args := append([]string{"kube", "play", "--start=false", "--network", "none"}, p.registryFlags(ctx)...)
	if _, err := p.podman(ctx, append(args, file.Name())...); err != nil {
		return -1, nil, nil, fmt.Errorf("creating pod %s: %w", pod.Name, err)
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == runnerName {
			continue
		}
		if err := p.startService(ctx, pod.Name, c, logs, log); err != nil {
			return -1, nil, nil, err
		}
	}
	ctr := pod.Name + "-" + runnerName
	if _, err := p.podman(ctx, "start", ctr); err != nil {
		return -1, nil, nil, fmt.Errorf("starting the runner: %w", err)
	}
	logs.follow(ctx, p, ctr, runnerName, log)
	out, err := p.podman(ctx, "wait", ctr)
	if err != nil {
		return -1, nil, nil, fmt.Errorf("waiting for the runner: %w", err)
	}
	code, err = strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return -1, nil, nil, fmt.Errorf("reading the runner's exit code %q: %w", out, err)
	}
	if path := pod.Annotations[ReportAnnotation]; path != "" {
		report, reportErr = p.copyFile(ctx, ctr, path, MaxReportSize)
	}
	// The runner's last lines reach log before Run returns.
	logs.waitFor(ctr, 10*time.Second)
	return code, report, reportErr, nil
}

// copyFile reads the regular file path of container ctr (running or
// exited) through `podman cp CTR:PATH -`, a tar stream that podman makes
// from inside the container's root: a symlink there is followed within that
// root and cannot reach a host file. More than limit bytes, or anything but
// a regular file, is an error.
func (p *Podman) copyFile(ctx context.Context, ctr, path string, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := p.command(ctx, "cp", ctr+":"+path, "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("copying %s out of the runner: %w", path, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("copying %s out of the runner: %w", path, err)
	}
	data, readErr := readTarFile(out, path, limit)
	if readErr != nil {
		cancel() // stops podman when the file was too big or not one
	}
	// On success readTarFile read the stream to its end, and podman exits
	// by itself.
	waitErr := cmd.Wait()
	if readErr == nil && waitErr != nil {
		readErr = fmt.Errorf("copying %s out of the runner: %w", path, waitErr)
	}
	if readErr != nil {
		msg := lastLine(stderr.String())
		switch {
		case strings.Contains(msg, "no such file or directory") || strings.Contains(msg, "could not find"):
			return nil, fmt.Errorf("report %s does not exist in the runner", path)
		case errors.Is(readErr, errNotTar) && msg != "":
			return nil, fmt.Errorf("copying %s out of the runner: %s", path, msg)
		}
		return nil, readErr
	}
	return data, nil
}

var errNotTar = errors.New("podman cp wrote no tar stream")

// readTarFile returns the content of the first entry of the tar stream r,
// which must be a regular file of at most limit bytes.
func readTarFile(r io.Reader, path string, limit int64) ([]byte, error) {
	tr := tar.NewReader(r)
	h, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNotTar, err)
	}
	if h.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if h.Size > limit {
		return nil, fmt.Errorf("%s is larger than %d MiB (%d bytes)", path, limit>>20, h.Size)
	}
	data, err := io.ReadAll(io.LimitReader(tr, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s from podman's tar stream: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d MiB", path, limit>>20)
	}
	_, _ = io.Copy(io.Discard, r)
	return data, nil
}

// startService starts one service container and waits for its startup
// probe, or until it exits.
func (p *Podman) startService(ctx context.Context, podName string, c corev1.Container, logs *followers, log LogFunc) error {
	ctr := podName + "-" + c.Name
	if _, err := p.podman(ctx, "start", ctr); err != nil {
		return fmt.Errorf("starting service %s: %w", c.Name, err)
	}
	logs.follow(ctx, p, ctr, c.Name, log)
	ready := readiness(c.StartupProbe)
	if ready == nil {
		return nil
	}
	deadline := time.Now().Add(ready.Timeout)
	for {
		state, code, pid, err := p.state(ctx, ctr)
		if err != nil {
			return fmt.Errorf("service %s: %w", c.Name, err)
		}
		if state != "running" && state != "created" && state != "configured" && state != "initialized" {
			logs.waitFor(ctr, 5*time.Second)
			return &NotReadyError{Service: c.Name, Timeout: ready.Timeout, Exited: true, ExitCode: code, Last: logs.last(ctr)}
		}
		if pid > 0 && p.probe(ctx, ctr, pid, ready) {
			return nil
		}
		if time.Now().After(deadline) {
			return &NotReadyError{Service: c.Name, Timeout: ready.Timeout, Last: logs.last(ctr)}
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(time.Second):
		}
	}
}

func (p *Podman) state(ctx context.Context, ctr string) (state string, exitCode, pid int, err error) {
	out, err := p.podman(ctx, "inspect", "--type", "container", "--format", "{{.State.Status}} {{.State.ExitCode}} {{.State.Pid}}", ctr)
	if err != nil {
		return "", 0, 0, err
	}
	f := strings.Fields(out)
	if len(f) != 3 {
		return "", 0, 0, fmt.Errorf("podman inspect %s: unexpected %q", ctr, out)
	}
	exitCode, _ = strconv.Atoi(f[1])
	pid, _ = strconv.Atoi(f[2])
	return f[0], exitCode, pid, nil
}

func (p *Podman) probe(ctx context.Context, ctr string, pid int, r *Readiness) bool {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if r.TCPPort > 0 {
		return dialInNetns(pctx, pid, r.TCPPort) == nil
	}
	_, err := p.podman(pctx, append([]string{"exec", ctr}, r.Command...)...)
	return err == nil
}

// Remove implements Runtime.
func (p *Podman) Remove(ctx context.Context, name string) error {
	if _, err := p.podman(ctx, "pod", "rm", "--force", "--ignore", "--time", "0", name); err != nil {
		return fmt.Errorf("removing pod %s: %w", name, err)
	}
	return nil
}

// List implements Runtime.
func (p *Podman) List(ctx context.Context, selector map[string]string) ([]Info, error) {
	args := []string{"pod", "ps", "--format", "json", "--filter", "label=" + LabelManaged + "=true"}
	for k, v := range selector {
		args = append(args, "--filter", "label="+k+"="+v)
	}
	out, err := p.podman(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	var pods []struct {
		Name   string
		Labels map[string]string
	}
	if out != "" {
		if err := json.Unmarshal([]byte(out), &pods); err != nil {
			return nil, fmt.Errorf("listing pods: reading podman's answer: %w", err)
		}
	}
	infos := make([]Info, 0, len(pods))
	for _, p := range pods {
		infos = append(infos, Info{Name: p.Name, Labels: p.Labels})
	}
	return infos, nil
}

// followers streams the output of containers (`podman logs --follow`) and
// keeps each one's last lines.
type followers struct {
	mu    sync.Mutex
	wg    sync.WaitGroup
	tails map[string]*tail
	done  map[string]chan struct{}
}

func (f *followers) follow(ctx context.Context, p *Podman, ctr, name string, log LogFunc) {
	f.mu.Lock()
	if f.tails == nil {
		f.tails, f.done = map[string]*tail{}, map[string]chan struct{}{}
	}
	t := &tail{n: 10}
	done := make(chan struct{})
	f.tails[ctr], f.done[ctr] = t, done
	f.mu.Unlock()
	// Not ctx: the follower must outlive a cancel until the container is
	// removed, so that its last lines are kept.
	cmd := p.command(context.WithoutCancel(ctx), "logs", "--follow", ctr)
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		defer close(done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			f.mu.Lock()
			t.add(line)
			f.mu.Unlock()
			log(name, line)
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	go func() {
		defer f.wg.Done()
		err := cmd.Run()
		w.CloseWithError(err)
	}()
}

// waitFor waits up to d for the follower of ctr to reach the end of its output.
func (f *followers) waitFor(ctr string, d time.Duration) {
	f.mu.Lock()
	done := f.done[ctr]
	f.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(d):
	}
}

func (f *followers) last(ctr string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.tails[ctr]; t != nil {
		return append([]string(nil), t.lines...)
	}
	return nil
}

func (f *followers) wait() { f.wg.Wait() }
