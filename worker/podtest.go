package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/rs/zerolog"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/buildkit"
	"github.com/slipway-ci/slipway/pod"
)

// targetDigests maps a test target (a Dockerfile stage) to its manifest
// digest per platform.
type targetDigests map[string]map[string]string

// buildTestTargets builds the Dockerfile stages the tests run in (TestSpec.Target)
// for the build's platforms, as spec builds the image, and pushes each to
// the build's repository by digest only: never tagged, so no tag of the
// repository ever points at a test image. Each target is its own solve; the
// stages it shares with the image come from BuildKit's cache.
func (w *Worker) buildTestTargets(ctx context.Context, build *slipway.Build, cfg *RepoConfig, spec buildkit.BuildSpec, sink *logSink) (targetDigests, error) {
	out := targetDigests{}
	for _, target := range cfg.TestTargets() {
		started := time.Now()
		step := "build:" + target
		sink.Add("", step, fmt.Sprintf("Building the test target %s for %s (pushed by digest only)", target, strings.Join(cfg.Platforms, ", ")))
		s := spec
		s.Target, s.Ref, s.PushByDigest = target, build.Image, true
		s.CacheScope = target // the image's cache is the image's
		s.Provenance = ""     // a test image is not released
		digest, err := w.builder.Build(ctx, s, func(platform, text string) { sink.Add(platform, step, text) })
		if err != nil {
			return nil, fmt.Errorf("building test target %s failed: %w", target, fromService(err))
		}
		_, platforms, err := w.registry.VerifyIndex(ctx, build.Image+"@"+digest, cfg.Platforms)
		if err != nil {
			return nil, fmt.Errorf("verifying test target %s failed: %w", target, fromService(err))
		}
		out[target] = map[string]string{}
		for _, p := range platforms {
			out[target][p.Platform] = build.Image + "@" + p.Digest
		}
		sink.Add("", step, fmt.Sprintf("Built and pushed test target %s as %s@%s in %s", target, build.Image, digest, since(started)))
	}
	return out, nil
}

// image returns the image of a test's runner or a service on platform p:
// image AppImage is the tested image's manifest, a target the test
// target's, any other image reference the platform's manifest of its index
// (a single-platform image is used as it is).
func (w *Worker) image(ctx context.Context, build *slipway.Build, image, target string, p slipway.PlatformDigest, targets targetDigests) (string, error) {
	switch {
	case target != "":
		if ref := targets[target][p.Platform]; ref != "" {
			return ref, nil
		}
		return "", fmt.Errorf("test target %s was not built for %s", target, p.Platform)
	case image == "" || image == AppImage:
		return build.Image + "@" + p.Digest, nil
	}
	_, platforms, err := w.registry.VerifyIndex(ctx, image, []string{p.Platform})
	if err == nil && len(platforms) == 1 {
		ref, perr := name.ParseReference(image)
		if perr != nil {
			return "", perr
		}
		return ref.Context().String() + "@" + platforms[0].Digest, nil
	}
	if err == nil || strings.Contains(err.Error(), "is a single image") {
		return image, nil // an image manifest, not an index (registry.VerifyIndex's words)
	}
	return "", fmt.Errorf("resolving %s for %s: %w", image, p.Platform, fromService(err))
}

// runPodTest runs test t on platform p in a Pod beside its services, the
// runner from runnerImage. Service output goes to one log step per service
// (service:NAME) and platform, the runner's to the test's step. When the
// test names a JUnit report, its cases are stored and counted (see
// storeReport); the counts are nil without one.
func (w *Worker) runPodTest(ctx context.Context, build *slipway.Build, cfg *RepoConfig, t TestSpec, p slipway.PlatformDigest, runnerImage string, targets targetDigests, sink *logSink) (int, *slipway.TestCaseCounts, error) {
	if w.cfg.Pods == nil {
		return -1, nil, fmt.Errorf("test %s has services, but this worker has no pod runtime: %s", t.Name, w.cfg.PodsMissing)
	}
	host, _ := os.Hostname()
	spec := pod.Spec{
		Name: pod.Name(randomSuffix(), "slipway", strconv.FormatInt(build.ID, 10), t.Name, p.Platform),
		Labels: map[string]string{
			pod.LabelBuild: strconv.FormatInt(build.ID, 10), pod.LabelTest: t.Name, pod.LabelPlatform: p.Platform,
			pod.LabelWorkerHost: host, pod.LabelWorkerPID: strconv.Itoa(os.Getpid()),
		},
		Platform: p.Platform,
		Runner:   pod.Container{Name: RunnerName, Image: runnerImage, Command: t.Run.Args, Env: t.Env},
		Limits:   w.cfg.PodLimits,
		Report:   t.JUnit,
	}
	for _, n := range t.Services {
		s := cfg.Service(n)
		img, err := w.image(ctx, build, s.Image, "", p, targets)
		if err != nil {
			return -1, nil, fmt.Errorf("service %s: %w", n, err)
		}
		c := pod.Container{Name: s.Name, Image: img, Args: s.Args, Env: s.Env, Ports: s.Ports}
		if s.Command != nil {
			c.Command = s.Command.Args
		}
		if r := s.Readiness; r != nil {
			c.Ready = &pod.Readiness{TCPPort: r.Port, Timeout: r.Timeout}
			if r.Run != nil {
				c.Ready.Command = r.Run.Args
			}
		}
		spec.Services = append(spec.Services, c)
		sink.Add(p.Platform, "service:"+n, fmt.Sprintf("Service %s for test %q: %s", n, t.Name, img))
	}
	po, err := spec.Pod()
	if err != nil {
		return -1, nil, err
	}
	step := "test:" + t.Name
	sink.Add(p.Platform, step, fmt.Sprintf("Running in pod %s, runner %s", po.Name, runnerImage))
	authFile, removeAuth, err := podAuthFile(ctx, w.cfg.DockerConfig)
	if err != nil {
		return -1, nil, err
	}
	defer removeAuth()
	if authFile != "" {
		ctx = pod.WithAuthFile(ctx, authFile)
	}
	res, err := w.cfg.Pods.Run(ctx, po, func(container, line string) {
		if container == RunnerName {
			sink.Add(p.Platform, step, line)
		} else {
			sink.Add(p.Platform, "service:"+container, line)
		}
	})
	if err != nil {
		return -1, nil, err
	}
	var counts *slipway.TestCaseCounts
	if t.JUnit != "" {
		counts = w.storeReport(ctx, build, t, p.Platform, res, sink)
	}
	return res.ExitCode, counts, nil
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// cleanPods removes the test Pods that workers of this host which are no
// longer running left behind (a SIGKILL gives a worker no chance to remove
// its own). Pods of live workers are kept: workers may share a host.
func cleanPods(ctx context.Context, rt pod.Runtime, logger zerolog.Logger) {
	host, _ := os.Hostname()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	pods, err := rt.List(ctx, map[string]string{pod.LabelWorkerHost: pod.Label(host)})
	if err != nil {
		logger.Warn().Err(err).Msg("Listing stale test pods")
		return
	}
	removed := 0
	for _, p := range pods {
		pid, err := strconv.Atoi(p.Labels[pod.LabelWorkerPID])
		if err == nil && (pid == os.Getpid() || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)) {
			continue
		}
		if err := rt.Remove(ctx, p.Name); err != nil {
			logger.Warn().Err(err).Str("pod", p.Name).Msg("Removing a stale test pod")
			continue
		}
		removed++
	}
	if removed > 0 {
		logger.Info().Int("removed", removed).Msg("Removed stale test pods")
	}
}
