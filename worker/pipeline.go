package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/buildkit"
	"github.com/slipway-ci/slipway/metrics"
	"github.com/slipway-ci/slipway/registry"
)

// checkoutBuild checks build's commit out into dir. A build queued without a
// commit first resolves its ref with git ls-remote and records the full ref
// and the commit (build is updated too); a commit a user named with the ref
// (build.VerifyRef) must belong to it. Both happen before anything is built.
// The commit's subject becomes the build's message when it has none of its
// own. A ref or commit the build cannot use is an errUserRef.
func (w *Worker) checkoutBuild(ctx context.Context, job *slipway.Job, build *slipway.Build, dir string, authEnv []string, sink *logSink) error {
	log := func(s string) { sink.Add("", "checkout", s) }
	var remote remoteRef
	if build.Commit == "" || build.VerifyRef {
		log(fmt.Sprintf("Resolving %s of %s", build.Ref, redactURLs(build.CloneURL)))
		var err error
		if remote, err = lsRemoteRef(ctx, w.cfg.Git, build.CloneURL, build.Ref, authEnv...); err != nil {
			return err
		}
	}
	if build.Commit == "" {
		log(fmt.Sprintf("%s is at %s", remote.Ref, remote.Commit))
		if err := w.jobs.JobUpdateBuild(ctx, job, slipway.BuildUpdate{Ref: &remote.Ref, Commit: &remote.Commit}); err != nil {
			return fmt.Errorf("recording the resolved commit: %w", err)
		}
		build.Ref, build.Commit = remote.Ref, remote.Commit
	}
	log(fmt.Sprintf("Checking out %s at %s (%s)", redactURLs(build.CloneURL), build.Commit, build.Ref))
	if err := checkout(ctx, w.cfg.Git, dir, build.CloneURL, build.Ref, build.Commit, log, authEnv...); err != nil {
		return err
	}
	if build.VerifyRef {
		if err := verifyOnRef(ctx, w.cfg.Git, dir, remote, build.Commit, log, authEnv...); err != nil {
			return err
		}
	}
	if build.Message == "" || build.Message == slipway.APITriggerPlaceholder {
		subject, err := commitSubject(ctx, w.cfg.Git, dir)
		if err != nil {
			return err
		}
		if err := w.jobs.JobUpdateBuild(ctx, job, slipway.BuildUpdate{Message: &subject}); err != nil {
			return fmt.Errorf("recording the commit's message: %w", err)
		}
		build.Message = subject
	}
	return nil
}

// pipeline runs the stations of one build and returns the build's final
// update, or the *buildFailure that ended it. Intermediate states (image ref,
// testing, digests) are written as they become known, under the job's lease;
// the build's platforms go to att once known.
func (w *Worker) pipeline(ctx context.Context, job *slipway.Job, build *slipway.Build, sink *logSink, att *attempt) (slipway.BuildUpdate, error) {
	// fail is the failure with the formatted message; the errors among args
	// that the Builder or the Registry returned stand behind it (newFailure).
	fail := func(format string, args ...any) *buildFailure {
		var errs []error
		for _, a := range args {
			if err, ok := a.(error); ok {
				errs = append(errs, err)
			}
		}
		return newFailure(ctx, sink, fmt.Sprintf(format, args...), errs...)
	}
	update := func(u slipway.BuildUpdate) error { return w.jobs.JobUpdateBuild(ctx, job, u) }

	dir, err := os.MkdirTemp(w.cfg.WorkspaceDir, fmt.Sprintf("build-%d-pid%d-", build.ID, os.Getpid()))
	if err != nil {
		return slipway.BuildUpdate{}, fail("creating workspace: %v", err)
	}
	defer os.RemoveAll(dir)

	started := time.Now()
	rc, err := w.openRepoCredentials(ctx, build, sink)
	if err != nil {
		return slipway.BuildUpdate{}, fail("checkout failed: %v", err)
	}
	authEnv, err := w.cloneAuth(ctx, build, rc, build.CloneURL, sink)
	if err != nil {
		return slipway.BuildUpdate{}, fail("checkout failed: %v", err)
	}
	sshEnv, removeKey, err := w.sshAuth(build, rc, build.CloneURL, sink)
	if err != nil {
		return slipway.BuildUpdate{}, fail("checkout failed: %v", err)
	}
	err = w.checkoutBuild(ctx, job, build, dir, append(authEnv, sshEnv...), sink)
	removeKey() // the deploy key's file lives only as long as the checkout
	if err != nil {
		var user errUserRef
		if errors.As(err, &user) {
			return slipway.BuildUpdate{}, fail("%s", user.msg)
		}
		if hint := sshHint(build.CloneURL, err); hint != "" {
			return slipway.BuildUpdate{}, fail("checkout failed: %v%s", err, hint)
		}
		_, ownToken := repoToken(build, rc, build.CloneURL)
		return slipway.BuildUpdate{}, fail("checkout failed: %v%s", err, authHint(build.Forge, err, ownToken))
	}
	cfg, err := LoadRepoConfig(dir)
	if err != nil {
		return slipway.BuildUpdate{}, fail("%v", err)
	}
	if cfg.WantSubmodules() {
		auth := func(u string) ([]string, error) { return w.cloneAuth(ctx, build, rc, u, sink) }
		if err := updateSubmodules(ctx, w.cfg.Git, dir, build.CloneURL, w.cfg.SubmoduleHosts, auth, func(s string) { sink.Add("", "checkout", s) }); err != nil {
			return slipway.BuildUpdate{}, fail("checkout failed: %v", err)
		}
	}
	if len(build.TargetPlatforms) > 0 {
		cfg.Platforms = build.TargetPlatforms // the repository's setting wins over .slipway.yml
	}
	if !cfg.BranchAllowed(build.Ref) {
		state := slipway.BuildCanceled
		msg := fmt.Sprintf("skipped: branch %s is not in the branches of %s (%s)", slipway.RefName(build.Ref), RepoConfigFile, strings.Join(cfg.Branches, ", "))
		sink.Add("", "checkout", msg)
		return slipway.BuildUpdate{State: &state, Error: &msg}, nil
	}
	// Nothing from the checkout reaches BuildKit before it is checked: a
	// context or Dockerfile that leads out of the checkout, or a file that is
	// not a regular one within its cap, fails here as the author's error.
	contextDir, err := checkBuildFiles(dir, cfg)
	if err != nil {
		return slipway.BuildUpdate{}, fail("%v", err)
	}
	ctx, cancelTimeout := context.WithTimeoutCause(ctx, cfg.Timeout, fmt.Errorf("timed out after %s", cfg.Timeout))
	defer cancelTimeout()
	fork := build.PullRequest != nil && build.PullRequest.Fork
	regAuths, err := w.openRegistryAuths(ctx, build, fork, sink)
	if err != nil {
		return slipway.BuildUpdate{}, fail("%v", err)
	}
	// Every registry call of this build (verify, tags, charts, a release's
	// promotion, test image lookups) uses them first.
	ctx = registry.WithRepoAuths(ctx, regAuths)
	releaseTags, isRelease := cfg.Release.releaseTags(build.Ref)
	if isRelease {
		// The tag's own templates ({{tag}} gives v1.2.3) come along, after the release tags.
		all := slices.Clone(releaseTags)
		own, _ := entitledTags(build, RenderTags(cfg.Tags, TagValues(build.Ref, build.Commit)), sink)
		for _, t := range own {
			if !slices.Contains(all, t) {
				all = append(all, t)
			}
		}
		chart := func(image, digest string) (*slipway.ReleaseChart, error) {
			return w.checkChart(ctx, dir, cfg, image, digest, releaseTags[0], true, sink)
		}
		if u, done, err := w.releaseTested(ctx, job, build, all, chart, sink, fail); done {
			return u, err
		}
		if cfg.Release.Untested == UntestedRefuse {
			return slipway.BuildUpdate{}, fail("release %s refused: commit %s has no tested build, and %s says release.untested: refuse",
				slipway.RefName(build.Ref), build.Commit, RepoConfigFile)
		}
		sink.Add("", "release", "No tested build of "+build.Commit+" yet: building and testing it before the release")
	}
	var secrets map[string][]byte
	if fork && (len(cfg.Secrets) > 0 || cfg.Integration != nil) {
		// Untrusted code gets no build secret and calls no integration webhook.
		sink.Add("", "checkout", "Pull request from a fork: no build secrets and no integration webhook")
	}
	if len(cfg.Secrets) > 0 && !fork {
		if w.cfg.Secrets == nil {
			return slipway.BuildUpdate{}, fail("%s names secrets, but this worker has no secret store (set SLIPWAY_SECRET_KEY)", RepoConfigFile)
		}
		secrets, err = w.cfg.Secrets.OpenSecrets(ctx, build.RepoID, cfg.Secrets)
		if err != nil {
			return slipway.BuildUpdate{}, fail("opening build secrets: %s", slipway.ErrorMessage(err))
		}
		values := make([][]byte, 0, len(secrets))
		for _, v := range secrets {
			values = append(values, v)
		}
		sink.Mask(values)
	}
	att.platforms = cfg.Platforms
	metrics.BuildStarted(cfg.Platforms, queuedFor(build))
	sink.Add("", "checkout", fmt.Sprintf("Checked out in %s; platforms %s, %d test(s)", since(started), strings.Join(cfg.Platforms, ", "), len(cfg.Tests)))

	ref := build.Image + ":" + slipway.CommitTag(build.Commit)
	if err := update(slipway.BuildUpdate{ImageRef: &ref}); err != nil {
		return slipway.BuildUpdate{}, fail("recording image: %v", err)
	}
	started = time.Now()
	sink.Add("", "build", "Building "+ref+" for "+strings.Join(cfg.Platforms, ", "))
	spec := buildkit.BuildSpec{
		ContextDir: contextDir,
		Dockerfile: cfg.Dockerfile,
		Platforms:  cfg.Platforms,
		Ref:        ref,
		Insecure:   w.cfg.InsecureRegistry,
		Target:     cfg.Target,
		BuildArgs:  cfg.BuildArgs,
		Secrets:    secrets,
		RepoAuths:  regAuths,
	}
	if cfg.Cache != CacheOff {
		spec.CacheRepo, spec.CacheMode = build.Image, cfg.Cache
	}
	if cfg.Provenance != ProvenanceOff {
		spec.Provenance = cfg.Provenance
	}
	// Reproducible images: dated by the commit, not by the build.
	if epoch, err := commitTime(ctx, dir); err == nil {
		spec.SourceDateEpoch = epoch
	} else {
		sink.Add("", "build", fmt.Sprintf("Reading the commit's time for SOURCE_DATE_EPOCH failed (%v); the image is dated by the build.", err))
	}
	digest, err := w.builder.Build(ctx, spec, func(platform, text string) { sink.Add(platform, "build", text) })
	if err != nil {
		return slipway.BuildUpdate{}, fail("build failed: %v", fromService(err))
	}
	sink.Add("", "build", fmt.Sprintf("Built and pushed %s@%s in %s", ref, digest, since(started)))

	// Verify by digest, not by tag: another build of the same commit may have
	// moved sha-… meanwhile (each build's provenance makes its own index).
	index, platforms, err := w.registry.VerifyIndex(ctx, build.Image+"@"+digest, cfg.Platforms)
	if err != nil {
		return slipway.BuildUpdate{}, fail("verifying the pushed image failed: %v", fromService(err))
	}
	if index != digest {
		return slipway.BuildUpdate{}, fail("verifying the pushed image failed: %s@%s is %s", build.Image, digest, index)
	}
	for _, p := range platforms {
		sink.Add(p.Platform, "verify", "Verified "+p.Platform+" manifest "+p.Digest)
	}
	if msg := w.sameAsBefore(ctx, build, index, platforms); msg != "" {
		sink.Add("", "verify", msg)
	}
	// The chart is linted and templated on every build (pinned to this
	// index); a release pushes it once the image is released.
	chartVersion := "0.0.0-" + slipway.CommitTag(build.Commit)
	if isRelease {
		chartVersion = releaseTags[0]
	}
	if _, err := w.checkChart(ctx, dir, cfg, build.Image, index, chartVersion, false, sink); err != nil {
		return slipway.BuildUpdate{}, fail("%v", err)
	}
	testing := slipway.BuildTesting
	if err := update(slipway.BuildUpdate{State: &testing, IndexDigest: &index, Platforms: platforms}); err != nil {
		return slipway.BuildUpdate{}, fail("recording digests: %v", err)
	}

	targets, err := w.buildTestTargets(ctx, build, cfg, spec, sink)
	if err != nil {
		return slipway.BuildUpdate{}, fail("%v", err)
	}
	results, testErrs := w.runTests(ctx, build, cfg, platforms, targets, sink)
	if err := update(slipway.BuildUpdate{Tests: results}); err != nil {
		return slipway.BuildUpdate{}, fail("recording test results: %v", err)
	}
	for _, r := range results {
		if !r.Passed {
			f := newFailure(ctx, sink, fmt.Sprintf("test %q failed on %s: %s", r.Name, r.Platform, r.Error), testErrs...)
			f.tests = results
			return slipway.BuildUpdate{}, f
		}
	}
	if cfg.Integration != nil && !fork {
		ext, err := w.runIntegration(ctx, build, cfg.Integration, index, platforms, sink)
		results = append(results, ext...)
		if err != nil {
			f := fail("%v", err)
			f.tests = results
			return slipway.BuildUpdate{}, f
		}
		if err := update(slipway.BuildUpdate{Tests: results}); err != nil {
			return slipway.BuildUpdate{}, fail("recording test results: %v", err)
		}
	}

	tags := RenderTags(cfg.Tags, TagValues(build.Ref, build.Commit))
	if pr, ok := slipway.PullRequestTags(build.Ref); ok {
		tags = pr // a pull request moves no branch, version or latest tag
	} else if slipway.TagForRef(build.Ref) == "" {
		sink.Add("", "tag", fmt.Sprintf("The ref %s makes no image tag: none of its characters may stand in a tag; the image keeps only %s.",
			build.Ref, slipway.CommitTag(build.Commit)))
	}
	tags, notOwn := entitledTags(build, tags, sink)
	tags, skipped := w.guardTags(ctx, build, tags, sink)
	skipped = append(notOwn, skipped...)
	if len(tags) > 0 {
		if err := w.registry.Tag(ctx, build.Image, index, tags); err != nil {
			return slipway.BuildUpdate{}, fail("tagging %s failed: %v", strings.Join(tags, ", "), fromService(err))
		}
		sink.Add("", "tag", fmt.Sprintf("Tagged %s:%s → %s", build.Image, strings.Join(tags, ", "), index))
	}
	if isRelease {
		// Tested now (every test passed on every platform): released
		// through the same promotion as a tested build.
		build.IndexDigest, build.Platforms = index, platforms
		chart := func(image, digest string) (*slipway.ReleaseChart, error) {
			return w.checkChart(ctx, dir, cfg, image, digest, releaseTags[0], true, sink)
		}
		// The promotion service releases only a succeeded build; this one is,
		// but its row says so only once this update is written.
		tested := *build
		tested.State = slipway.BuildSucceeded
		if err := w.releaseAndRecord(ctx, build, &tested, releaseTags, chart, sink); err != nil {
			f := fail("releasing %s failed: %v", slipway.RefName(build.Ref), err)
			f.tests = results
			return slipway.BuildUpdate{}, f
		}
		for _, t := range releaseTags {
			if !slices.Contains(tags, t) {
				tags = append(tags, t)
			}
		}
	}
	state := slipway.BuildSucceeded
	return slipway.BuildUpdate{State: &state, Tags: tags, SkippedTags: skipped, Tests: results}, nil
}

// runTests runs every test on every platform: platforms side by side, the tests of
// one platform in file order. Results come back in (test, platform) order,
// with the errors that made tests fail (see runTest).
func (w *Worker) runTests(ctx context.Context, build *slipway.Build, cfg *RepoConfig, platforms []slipway.PlatformDigest, targets targetDigests, sink *logSink) ([]slipway.TestResult, []error) {
	results := make([]slipway.TestResult, len(cfg.Tests)*len(platforms))
	errs := make([]error, len(results))
	var wg sync.WaitGroup
	for pi, p := range platforms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ti, t := range cfg.Tests {
				if !t.RunsOn(p.Platform) {
					continue
				}
				i := ti*len(platforms) + pi
				results[i], errs[i] = w.runTest(ctx, build, cfg, t, p, targets, sink)
			}
		}()
	}
	wg.Wait()
	// Tests limited to some platforms left holes for the others.
	return slices.DeleteFunc(results, func(r slipway.TestResult) bool { return r.Name == "" }),
		slices.DeleteFunc(errs, func(err error) bool { return err == nil })
}

// runTest runs test t on platform p. The error is what made the test fail
// when it was not its exit code or its own timeout; nil otherwise.
func (w *Worker) runTest(ctx context.Context, build *slipway.Build, cfg *RepoConfig, t TestSpec, p slipway.PlatformDigest, targets targetDigests, sink *logSink) (slipway.TestResult, error) {
	step := "test:" + t.Name
	res := slipway.TestResult{Name: t.Name, Platform: p.Platform, ExitCode: -1}
	env := make([]string, 0, len(t.Env))
	for k, v := range t.Env {
		env = append(env, k+"="+v)
	}
	sink.Add(p.Platform, step, fmt.Sprintf("Running test %q: %s", t.Name, strings.Join(t.Run.Args, " ")))
	tctx, cancel := context.WithTimeoutCause(ctx, t.Timeout, fmt.Errorf("timed out after %s", t.Timeout))
	defer cancel()
	started := time.Now()
	code := -1
	image, err := w.image(tctx, build, t.Image, t.Target, p, targets)
	switch {
	case err != nil:
	case t.InPod():
		code, res.Cases, err = w.runPodTest(tctx, build, cfg, t, p, image, targets, sink)
	default:
		code, err = w.builder.RunTest(tctx, buildkit.TestSpec{
			Image:     image,
			Platform:  p.Platform,
			Args:      t.Run.Args,
			Env:       env,
			Insecure:  w.cfg.InsecureRegistry,
			RepoAuths: registry.RepoAuthsFrom(tctx),
		}, func(_, text string) { sink.Add(p.Platform, step, text) })
		err = fromService(err)
	}
	res.DurationMS = time.Since(started).Milliseconds()
	var failed error
	switch {
	case tctx.Err() != nil:
		res.Error = context.Cause(tctx).Error()
	case err != nil:
		res.Error = slipway.OneLine(err.Error())
		failed = err
	case code != 0:
		res.ExitCode = code
		res.Error = fmt.Sprintf("exit code %d", code)
	default:
		res.ExitCode = 0
		res.Passed = true
	}
	verdict := "passed"
	if !res.Passed {
		verdict = "failed: " + res.Error
	}
	sink.Add(p.Platform, step, fmt.Sprintf("Test %q %s (%s)", t.Name, verdict, time.Duration(res.DurationMS)*time.Millisecond))
	return res, failed
}

// SecretOpener opens the build secrets of a repository; slipway.SecretService
// implements it. A name not stored is an EINVALID error that names it.
type SecretOpener interface {
	OpenSecrets(ctx context.Context, repoID int64, names []string) (map[string][]byte, error)
}

// RepoCredentialOpener opens a repository's own clone credentials;
// slipway.RepoCredentialService implements it.
type RepoCredentialOpener interface {
	OpenRepoCredentials(ctx context.Context, repoID int64) (*slipway.RepoCredentials, error)
}

var workspacePID = regexp.MustCompile(`^build-[0-9]+-pid([0-9]+)-`)

// cleanWorkspaces removes the build folders that workers which are no longer
// running left in dir (after a crash or a kill -9). Folders of live processes
// are kept: workers on one machine may share dir.
func cleanWorkspaces(dir string, logger zerolog.Logger) {
	entries, _ := os.ReadDir(dir)
	var left []string
	for _, e := range entries {
		m := workspacePID.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH {
			left = append(left, filepath.Join(dir, e.Name()))
		}
	}
	for _, p := range left {
		if err := os.RemoveAll(p); err != nil {
			logger.Warn().Err(err).Str("path", p).Msg("Removing a stale workspace")
		}
	}
	if len(left) > 0 {
		logger.Info().Int("removed", len(left)).Msg("Removed stale workspaces")
	}
}

func since(t time.Time) time.Duration { return time.Since(t).Round(10 * time.Millisecond) }

// queuedFor is how long the build waited for a worker: from its creation to its
// first start (a retried attempt still counts from the push).
func queuedFor(build *slipway.Build) time.Duration {
	if build.StartedAt != nil {
		return build.StartedAt.Sub(build.CreatedAt)
	}
	return time.Since(build.CreatedAt)
}
