package pod_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/pod"
	"github.com/slipway-ci/slipway/test/testenv"
)

// bundle is a Podman Runtime and the busybox base image, by the digest of
// each platform's manifest, in a local registry.
type bundle struct {
	rt      *pod.Podman
	images  map[string]string // platform → repo@sha256:…
	runName string            // a label value unique to the test run
}

func setup(t *testing.T) *bundle {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed: run `make deps`")
	}
	ctx := context.Background()
	host := testenv.StartRegistry(t)
	ref, err := testenv.PushBaseImage(ctx, host)
	require.NoError(t, err)
	digests, err := testenv.PlatformDigests(ref)
	require.NoError(t, err)
	b := &bundle{images: map[string]string{}, runName: randomHex(t)}
	for platform, digest := range digests {
		b.images[platform] = host + "/" + testenv.BaseImageRepo + "@" + digest
	}
	require.Len(t, b.images, 2)
	b.rt, err = pod.NewPodman(ctx, pod.PodmanConfig{Insecure: true, ConfDir: t.TempDir()})
	require.NoError(t, err)
	return b
}

func randomHex(t *testing.T) string {
	buf := make([]byte, 4)
	_, err := rand.Read(buf)
	require.NoError(t, err)
	return hex.EncodeToString(buf)
}

// spec is a Pod of one TCP "broker" on port 7000 (busybox nc answering
// every connection with a greeting) and a runner running script.
func (b *bundle) spec(t *testing.T, platform, script string) pod.Spec {
	return pod.Spec{
		Name:     pod.Name(randomHex(t), "slipway-test", platform),
		Labels:   map[string]string{pod.LabelTest: b.runName, pod.LabelPlatform: platform},
		Platform: platform,
		Services: []pod.Container{{
			Name:    "broker",
			Image:   b.images[platform],
			Command: []string{"/bin/sh", "-c", "echo broker listening on 7000 on $(uname -m); exec /bin/busybox nc -ll -p 7000 -e /bin/busybox echo hello from the broker"},
			Ports:   []int{7000},
			Ready:   &pod.Readiness{TCPPort: 7000, Timeout: 20 * time.Second},
		}},
		Runner: pod.Container{
			Name:    "runner",
			Image:   b.images[platform],
			Command: []string{"/bin/sh", "-c", script},
			Env:     map[string]string{"BROKER_PORT": "7000"},
		},
		Limits: pod.Limits{CPU: "1", Memory: "256Mi"},
	}
}

type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) log(container, line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, container+": "+line)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.l, "\n")
}

func (b *bundle) requireNoPods(t *testing.T) {
	t.Helper()
	left, err := b.rt.List(context.Background(), map[string]string{pod.LabelTest: b.runName})
	require.NoError(t, err)
	require.Empty(t, left)
}

func TestPodman(t *testing.T) {
	b := setup(t)
	ctx := context.Background()

	t.Run("services and runner share localhost, on both platforms at once", func(t *testing.T) {
		// Both Pods run side by side with a broker on the same port: each
		// has its own localhost, or one broker could not listen.
		var wg sync.WaitGroup
		for _, platform := range []string{"linux/amd64", "linux/arm64"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := b.spec(t, platform, `echo runner on $(uname -m); /bin/busybox nc 127.0.0.1 $BROKER_PORT </dev/null; exit 0`).Pod()
				require.NoError(t, err)
				var out lines
				res, err := b.rt.Run(ctx, p, out.log)
				require.NoError(t, err, out.String())
				require.Equal(t, 0, res.ExitCode)
				require.Nil(t, res.Report)
				require.NoError(t, res.ReportErr)
				arch := map[string]string{"linux/amd64": "x86_64", "linux/arm64": "aarch64"}[platform]
				require.Contains(t, out.String(), "broker: broker listening on 7000 on "+arch)
				require.Contains(t, out.String(), "runner: runner on "+arch)
				require.Contains(t, out.String(), "runner: hello from the broker")
			}()
		}
		wg.Wait()
		b.requireNoPods(t)
	})

	t.Run("the runner's exit code is the result", func(t *testing.T) {
		p, err := b.spec(t, "linux/amd64", "echo failing; exit 3").Pod()
		require.NoError(t, err)
		var out lines
		res, err := b.rt.Run(ctx, p, out.log)
		require.NoError(t, err)
		require.Equal(t, 3, res.ExitCode)
		require.Contains(t, out.String(), "runner: failing")
		b.requireNoPods(t)
	})

	t.Run("the report is copied out of the runner after it fails", func(t *testing.T) {
		s := b.spec(t, "linux/amd64", `mkdir -p /out && printf '<testsuite name="s"><testcase name="a"/></testsuite>' > /out/junit.xml; exit 1`)
		s.Report = "/out/junit.xml"
		p, err := s.Pod()
		require.NoError(t, err)
		require.Equal(t, "/out/junit.xml", p.Annotations[pod.ReportAnnotation])
		var out lines
		res, err := b.rt.Run(ctx, p, out.log)
		require.NoError(t, err, out.String())
		require.Equal(t, 1, res.ExitCode)
		require.NoError(t, res.ReportErr)
		require.Equal(t, `<testsuite name="s"><testcase name="a"/></testsuite>`, string(res.Report))
		b.requireNoPods(t)
	})

	t.Run("a missing, oversized, folder or host-symlinked report is ReportErr", func(t *testing.T) {
		hostFile := filepath.Join(t.TempDir(), "host-secret.xml")
		require.NoError(t, os.WriteFile(hostFile, []byte("<testsuite>host secret</testsuite>"), 0o644))
		for _, c := range []struct{ script, report, want string }{
			{"exit 0", "/out/none.xml", "report /out/none.xml does not exist in the runner"},
			{"mkdir -p /out/dir", "/out/dir", "/out/dir is not a regular file"},
			{"mkdir -p /out && head -c 5000000 /dev/zero > /out/big.xml", "/out/big.xml", "/out/big.xml is larger than 4 MiB"},
			// A link resolves inside the container (podman cp reads in its
			// root): a file that exists only on the host does not come out.
			{"mkdir -p /out && ln -s " + hostFile + " /out/link.xml", "/out/link.xml", "report /out/link.xml does not exist in the runner"},
		} {
			s := b.spec(t, "linux/amd64", c.script)
			s.Report = c.report
			p, err := s.Pod()
			require.NoError(t, err)
			res, err := b.rt.Run(ctx, p, (&lines{}).log)
			require.NoError(t, err)
			require.Equal(t, 0, res.ExitCode)
			require.Nil(t, res.Report, c.report)
			require.ErrorContains(t, res.ReportErr, c.want)
		}
		b.requireNoPods(t)

		// A link to a file of the container itself is that file: still the
		// container's own content, never the host's.
		s := b.spec(t, "linux/amd64", "mkdir -p /out && echo in-container > /out/real.xml && ln -s /out/real.xml /out/link.xml")
		s.Report = "/out/link.xml"
		p, err := s.Pod()
		require.NoError(t, err)
		res, err := b.rt.Run(ctx, p, (&lines{}).log)
		require.NoError(t, err)
		require.NoError(t, res.ReportErr)
		require.Equal(t, "in-container\n", string(res.Report))
		b.requireNoPods(t)
	})

	t.Run("a service that never becomes ready fails within its timeout", func(t *testing.T) {
		s := b.spec(t, "linux/amd64", "exit 0")
		s.Services[0].Command = []string{"/bin/sh", "-c", "echo starting the broker; echo no port for you; sleep 300"}
		s.Services[0].Ready.Timeout = 3 * time.Second
		p, err := s.Pod()
		require.NoError(t, err)
		started := time.Now()
		_, err = b.rt.Run(ctx, p, (&lines{}).log)
		var nr *pod.NotReadyError
		require.ErrorAs(t, err, &nr)
		require.Equal(t, "broker", nr.Service)
		require.Less(t, time.Since(started), 20*time.Second)
		require.Contains(t, err.Error(), "service broker was not ready within 3s")
		require.Contains(t, err.Error(), "no port for you")
		b.requireNoPods(t)
	})

	t.Run("a service that exits before it is ready", func(t *testing.T) {
		s := b.spec(t, "linux/amd64", "exit 0")
		s.Services[0].Command = []string{"/bin/sh", "-c", "echo bad config; exit 7"}
		p, err := s.Pod()
		require.NoError(t, err)
		_, err = b.rt.Run(ctx, p, (&lines{}).log)
		var nr *pod.NotReadyError
		require.ErrorAs(t, err, &nr)
		require.True(t, nr.Exited)
		require.Equal(t, 7, nr.ExitCode)
		require.Contains(t, err.Error(), "bad config")
		b.requireNoPods(t)
	})

	t.Run("an exec readiness check", func(t *testing.T) {
		s := b.spec(t, "linux/amd64", "cat /tmp/ready || exit 1")
		// The runner cannot see the service's files; it only checks that it
		// started after the check passed, through the broker.
		s.Runner.Command = []string{"/bin/sh", "-c", "/bin/busybox nc 127.0.0.1 7000 </dev/null"}
		s.Services[0].Command = []string{"/bin/sh", "-c", "sleep 2; touch /tmp/ready; exec /bin/busybox nc -ll -p 7000 -e /bin/busybox echo hello"}
		s.Services[0].Ready = &pod.Readiness{Command: []string{"test", "-e", "/tmp/ready"}, Timeout: 20 * time.Second}
		p, err := s.Pod()
		require.NoError(t, err)
		var out lines
		res, err := b.rt.Run(ctx, p, out.log)
		require.NoError(t, err)
		require.Equal(t, 0, res.ExitCode, out.String())
		require.Contains(t, out.String(), "runner: hello")
		b.requireNoPods(t)
	})

	t.Run("a canceled run leaves no pod", func(t *testing.T) {
		p, err := b.spec(t, "linux/amd64", "echo sleeping; sleep 300").Pod()
		require.NoError(t, err)
		cctx, cancel := context.WithCancelCause(ctx)
		var out lines
		done := make(chan error, 1)
		go func() {
			_, err := b.rt.Run(cctx, p, func(c, l string) {
				out.log(c, l)
				if l == "sleeping" {
					cancel(errors.New("build canceled"))
				}
			})
			done <- err
		}()
		select {
		case err := <-done:
			require.ErrorContains(t, err, "build canceled")
		case <-time.After(60 * time.Second):
			t.Fatal("Run did not return after the cancel")
		}
		b.requireNoPods(t)
	})

	t.Run("an image that cannot be pulled", func(t *testing.T) {
		s := b.spec(t, "linux/amd64", "exit 0")
		s.Services[0].Image = strings.Split(b.images["linux/amd64"], "@")[0] + "@sha256:" + strings.Repeat("0", 64)
		p, err := s.Pod()
		require.NoError(t, err)
		_, err = b.rt.Run(ctx, p, (&lines{}).log)
		require.ErrorContains(t, err, "pulling "+s.Services[0].Image)
		b.requireNoPods(t)
	})
}

func TestSpecReportPath(t *testing.T) {
	for _, bad := range []string{"out/junit.xml", "/", "/out/../junit.xml", "/out//j.xml"} {
		s := pod.Spec{Name: "p", Runner: pod.Container{Name: "runner", Image: "busybox"}, Report: bad}
		_, err := s.Pod()
		require.ErrorContains(t, err, "is not a clean absolute path", bad)
	}
}

func TestNewPodmanMissingBinary(t *testing.T) {
	// SLIPWAY_PODMAN naming nothing runnable is a clear error at start.
	_, err := pod.NewPodman(context.Background(), pod.PodmanConfig{Binary: "/nonexistent/podman", ConfDir: t.TempDir()})
	require.ErrorContains(t, err, "podman cannot run test pods")
	require.ErrorContains(t, err, "/nonexistent/podman")
}

func TestNewPodmanCABundle(t *testing.T) {
	// The CA bundle becomes ca.crt of podman's --cert-dir; a missing file is
	// a clear error at start.
	dir := t.TempDir()
	_, err := pod.NewPodman(context.Background(), pod.PodmanConfig{Binary: "/nonexistent/podman", ConfDir: dir, CAFile: filepath.Join(dir, "nope.pem")})
	require.ErrorContains(t, err, "reading the CA bundle for podman's pulls")
	ca := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644))
	_, err = pod.NewPodman(context.Background(), pod.PodmanConfig{Binary: "/nonexistent/podman", ConfDir: dir, CAFile: ca})
	require.ErrorContains(t, err, "podman cannot run test pods")
	got, err := os.ReadFile(filepath.Join(dir, "certs", "ca.crt"))
	require.NoError(t, err)
	require.Equal(t, "-----BEGIN CERTIFICATE-----\n", string(got))
}

// TestComposeContainersConf: the containers.conf of the compose workers'
// image (deploy/compose/containers.conf, for podman run by hand there) holds
// the settings ContainersConf gives slipway's own podman commands.
func TestComposeContainersConf(t *testing.T) {
	var want, got map[string]any
	_, err := toml.Decode(pod.ContainersConf, &want)
	require.NoError(t, err)
	_, err = toml.DecodeFile(filepath.Join("..", "deploy", "compose", "containers.conf"), &got)
	require.NoError(t, err)
	require.Equal(t, want, got, "deploy/compose/containers.conf and pod.ContainersConf differ")
	require.Contains(t, want["containers"], "default_ulimits")
}
