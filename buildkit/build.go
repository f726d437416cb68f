package buildkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session/secrets/secretsprovider"
	"github.com/tonistiigi/fsutil"
	"golang.org/x/sync/errgroup"
)

// BuildSpec says what Build builds and where it pushes the result.
type BuildSpec struct {
	// ContextDir is the build context: the checkout directory. Required.
	ContextDir string
	// Dockerfile is the Dockerfile's path relative to ContextDir; it may not
	// leave ContextDir. Default "Dockerfile".
	Dockerfile string
	// Platforms to build, such as linux/amd64 and linux/arm64. At least one.
	Platforms []string
	// Ref is the full image reference to push, such as
	// 127.0.0.1:5000/acme/app:sha-0123456789ab. Required.
	Ref string
	// Insecure says the registry of Ref (and of CacheRef) speaks plain http.
	Insecure bool
	// CacheRef, when set, is a registry reference (such as
	// 127.0.0.1:5000/acme/app:buildcache-linux-amd64) the build imports its
	// cache from and exports its layers to. A missing cache is not an error.
	CacheRef string
	// CacheRepo, when set and CacheRef is not, is the repository of a cache
	// per platform: a solve exports to CacheRepo:buildcache-<os>-<arch> (for a
	// solve of several platforms, their names joined by "_") and imports that
	// and each of its platforms' own.
	CacheRepo string
	// CacheScope, with CacheRepo, gives the solve a cache of its own (a test
	// target's, named by the target): see ScopedCacheRefs. Empty: the
	// image's cache.
	CacheScope string
	// CacheFrom lists more cache references to import (never exported to).
	CacheFrom []string
	// CacheMode is "max" (default: every layer, intermediate stages too) or
	// "min" (only the final image's layers).
	CacheMode string
	// Target is the Dockerfile stage to build; default the last one.
	Target string
	// BuildArgs are the Dockerfile's ARG values. Never put a secret here: build
	// arguments end up in the image history and the provenance.
	BuildArgs map[string]string
	// Secrets are served to the build over the session, one per id, for
	// RUN --mount=type=secret,id=NAME. They are never written to the image, the
	// cache or the build definition.
	Secrets map[string][]byte
	// Auth gives the solve registry credentials and CAs (see Auth); the
	// zero Auth is anonymous. A Pool fills it from Pool.Auth when empty.
	Auth Auth
	// RepoAuths are the building repository's own registry credentials,
	// preferred over Auth's Docker config for their hosts (push, FROM
	// pulls, cache); nil for none.
	RepoAuths RepoAuths
	// Provenance is the mode of the SLSA provenance attestation BuildKit attaches
	// to each platform's image: "min", "max", or "" for none.
	Provenance string
	// PushByDigest pushes the result by digest only: Ref names the repository
	// (no tag) and no tag is written. The caller tags the digest later.
	PushByDigest bool
	// SourceDateEpoch, when above 0, makes the images reproducible: it is
	// passed as the SOURCE_DATE_EPOCH build argument (Unix seconds; BuildKit
	// dates the image config and history with it) and the exporter rewrites
	// the timestamps of the files in new layers to it (rewrite-timestamp).
	// Two builds of one commit then push the same image manifest per
	// platform. Provenance, when attached, still records each solve's own
	// start, finish and invocation id, so the index around them differs.
	SourceDateEpoch int64
}

func (s *BuildSpec) validate() error {
	if s.ContextDir == "" {
		return errors.New("build spec: ContextDir is required")
	}
	if s.Dockerfile == "" {
		s.Dockerfile = "Dockerfile"
	}
	if !filepath.IsLocal(s.Dockerfile) {
		return fmt.Errorf("build spec: Dockerfile %q must be a path inside the context", s.Dockerfile)
	}
	if len(s.Platforms) == 0 {
		return errors.New("build spec: Platforms is empty")
	}
	for _, p := range s.Platforms {
		if _, err := platforms.Parse(p); err != nil {
			return fmt.Errorf("build spec: platform %q: %w", p, err)
		}
	}
	if s.Ref == "" {
		return errors.New("build spec: Ref is required")
	}
	switch s.CacheMode {
	case "", "min", "max":
	default:
		return fmt.Errorf("build spec: CacheMode %q is not min or max", s.CacheMode)
	}
	switch s.Provenance {
	case "", "min", "max":
	default:
		return fmt.Errorf("build spec: Provenance %q is not min or max", s.Provenance)
	}
	return nil
}

// Build builds the Dockerfile of spec with BuildKit's dockerfile.v0 frontend
// for all of spec.Platforms in one solve, and pushes the result to spec.Ref as
// one OCI image index (oci-mediatypes=true; one image manifest per platform,
// and with spec.Provenance one attestation manifest per platform). It returns
// the digest of the pushed index. With spec.PushByDigest nothing is tagged, and
// a single platform without provenance returns an image manifest's digest.
// spec.Secrets travel only over the session, for RUN --mount=type=secret.
//
// Progress goes to log: each step's name when it starts (BuildKit names steps
// of multi-platform builds like "[linux/arm64 2/2] RUN uname -m > /arch": log
// gets that platform, and the name without it, "[2/2] RUN uname -m > /arch"),
// the output of RUN steps line by line, warnings, and the error of a failed
// step.
//
// A failed build returns an error whose message is BuildKit's, on one line,
// such as `process "/bin/sh -c exit 3" did not complete successfully: exit
// code: 3` or `dockerfile parse error on line 2: unknown instruction: FOO`,
// prefixed with "building <ref>: ". Canceling ctx stops the solve in buildkitd;
// the error then matches context.Canceled (or the cause of ctx, if any).
//
// buildkitd takes registry credentials only from the client's session: Build
// attaches an auth provider reading spec.Auth's Docker config (anonymous
// without one), so credentials never reach log or buildkitd's configuration.
// A registry that refuses them (401, 403) fails with a message naming the
// host and SLIPWAY_DOCKER_CONFIG; an unknown CA names SLIPWAY_CA_BUNDLE.
// Insecure covers the push and the cache; pulls
// (FROM) use buildkitd's own configuration, which speaks plain http to
// localhost and 127.0.0.1 by itself and to other hosts only when
// buildkitd.toml says [registry."host:port"] http = true.
func (b *Builder) Build(ctx context.Context, spec BuildSpec, log LogFunc) (indexDigest string, err error) {
	if err := spec.validate(); err != nil {
		return "", err
	}
	if log == nil {
		log = func(string, string) {}
	}
	dockerfilePath, err := insideDir(spec.ContextDir, spec.Dockerfile)
	if err != nil {
		return "", fmt.Errorf("building %s: %w", spec.Ref, err)
	}
	contextFS, err := fsutil.NewFS(spec.ContextDir)
	if err != nil {
		return "", fmt.Errorf("building %s: opening context %s: %w", spec.Ref, spec.ContextDir, err)
	}
	dockerfileFS, err := fsutil.NewFS(filepath.Dir(dockerfilePath))
	if err != nil {
		return "", fmt.Errorf("building %s: opening %s: %w", spec.Ref, spec.Dockerfile, err)
	}

	opt := solveOpt(spec, filepath.Base(dockerfilePath))
	authRefs := append([]string{spec.Ref, spec.CacheRef}, spec.CacheFrom...)
	if spec.CacheRepo != "" {
		authRefs = append(authRefs, spec.CacheRepo)
	}
	ap, err := spec.Auth.attachable(spec.RepoAuths, authRefs...)
	if err != nil {
		return "", fmt.Errorf("building %s: %w", spec.Ref, err)
	}
	if ap != nil {
		opt.Session = append(opt.Session, ap)
	}
	opt.LocalMounts = map[string]fsutil.FS{
		"context":    contextFS,
		"dockerfile": dockerfileFS,
	}

	defaultPlatform := ""
	if len(spec.Platforms) == 1 {
		// Single-platform builds have no platform in step names.
		defaultPlatform = spec.Platforms[0]
	}
	prog := newProgress(log, defaultPlatform)
	ch := make(chan *client.SolveStatus)
	var resp *client.SolveResponse
	eg, egctx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		var err error
		resp, err = b.c.Solve(egctx, nil, opt, ch) // closes ch
		return err
	})
	eg.Go(func() error {
		prog.consume(ch)
		return nil
	})
	if err := eg.Wait(); err != nil {
		return "", solveError(ctx, "building "+spec.Ref, err, spec.RepoAuths)
	}

	dgst := resp.ExporterResponse["containerimage.digest"]
	if dgst == "" {
		return "", fmt.Errorf("building %s: buildkitd returned no image digest", spec.Ref)
	}
	return dgst, nil
}

// CacheRefs returns the cache reference a solve of plats exports to, and the
// single-platform ones it also imports: repo:buildcache-linux-amd64, or for
// linux/amd64 and linux/arm64 together repo:buildcache-linux-amd64_linux-arm64
// importing repo:buildcache-linux-amd64 and repo:buildcache-linux-arm64.
func CacheRefs(repo string, plats []string) (export string, more []string) {
	slug := func(p string) string { return strings.ReplaceAll(p, "/", "-") }
	names := make([]string, len(plats))
	for i, p := range plats {
		names[i] = slug(p)
	}
	export = repo + ":buildcache-" + strings.Join(names, "_")
	if len(plats) > 1 {
		for _, n := range names {
			more = append(more, repo+":buildcache-"+n)
		}
	}
	return export, more
}

// ScopedCacheRefs is CacheRefs for a solve with a cache of its own, such as
// a test target built beside the image: it exports to CacheRefs' export
// with "-"+scope appended (the tag cut to the 128 characters a tag may
// have), and imports that and what CacheRefs gives (the image's caches), so
// its layers shared with the image come from the image's cache and the
// image's cache stays as the image's solve wrote it. An empty scope is
// CacheRefs.
func ScopedCacheRefs(repo string, plats []string, scope string) (export string, more []string) {
	export, more = CacheRefs(repo, plats)
	if scope == "" {
		return export, more
	}
	own := export + "-" + scope
	if i := strings.LastIndex(own, ":"); len(own)-i-1 > 128 {
		own = own[:i+1+128]
	}
	return own, append([]string{export}, more...)
}

// solveOpt is the SolveOpt of spec, without the local mounts.
func solveOpt(spec BuildSpec, dockerfile string) client.SolveOpt {
	insecure := strconv.FormatBool(spec.Insecure)
	export := map[string]string{
		"name":              spec.Ref,
		"push":              "true",
		"oci-mediatypes":    "true",
		"registry.insecure": insecure,
	}
	if spec.PushByDigest {
		export["push-by-digest"] = "true"
	}
	if spec.SourceDateEpoch > 0 {
		export["rewrite-timestamp"] = "true"
	}
	opt := client.SolveOpt{
		Frontend: "dockerfile.v0",
		FrontendAttrs: map[string]string{
			"filename": dockerfile,
			"platform": strings.Join(spec.Platforms, ","),
		},
		Exports: []client.ExportEntry{{Type: client.ExporterImage, Attrs: export}},
	}
	if spec.Target != "" {
		opt.FrontendAttrs["target"] = spec.Target
	}
	for k, v := range spec.BuildArgs {
		opt.FrontendAttrs["build-arg:"+k] = v
	}
	if spec.SourceDateEpoch > 0 {
		opt.FrontendAttrs["build-arg:SOURCE_DATE_EPOCH"] = strconv.FormatInt(spec.SourceDateEpoch, 10)
	}
	if spec.Provenance != "" {
		opt.FrontendAttrs["attest:provenance"] = "mode=" + spec.Provenance
	}
	if len(spec.Secrets) > 0 {
		opt.Session = append(opt.Session, secretsprovider.FromMap(spec.Secrets))
	}
	if spec.CacheRef == "" && spec.CacheRepo != "" {
		spec.CacheRef, spec.CacheFrom = ScopedCacheRefs(spec.CacheRepo, spec.Platforms, spec.CacheScope)
	}
	for _, ref := range append([]string{spec.CacheRef}, spec.CacheFrom...) {
		if ref != "" {
			opt.CacheImports = append(opt.CacheImports, client.CacheOptionsEntry{
				Type:  "registry",
				Attrs: map[string]string{"ref": ref, "registry.insecure": insecure},
			})
		}
	}
	if spec.CacheRef != "" {
		mode := spec.CacheMode
		if mode == "" {
			mode = "max"
		}
		opt.CacheExports = []client.CacheOptionsEntry{{
			Type: "registry",
			Attrs: map[string]string{
				"ref":               spec.CacheRef,
				"mode":              mode,
				"oci-mediatypes":    "true",
				"image-manifest":    "true",
				"registry.insecure": insecure,
			},
		}}
	}
	return opt
}

// insideDir joins dir and the local path rel, and checks that the directory it
// names is inside dir once symlinks are resolved: a repository must not point
// the Dockerfile mount at the worker's own files through a symlinked folder.
// The Dockerfile itself, when it exists, must be a regular file, not a link.
func insideDir(dir, rel string) (string, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("opening context: %w", err)
	}
	p := filepath.Join(root, rel)
	parent, err := filepath.EvalSymlinks(filepath.Dir(p))
	if err != nil {
		return "", fmt.Errorf("opening Dockerfile %s: %w", rel, err)
	}
	if r, err := filepath.Rel(root, parent); err != nil || !filepath.IsLocal(r) && r != "." {
		return "", fmt.Errorf("opening Dockerfile %s: it is outside the context", rel)
	}
	p = filepath.Join(parent, filepath.Base(p))
	// BuildKit follows a symlinked Dockerfile; a link to /dev/zero or a
	// device would then be read without end.
	if fi, err := os.Lstat(p); err == nil && !fi.Mode().IsRegular() {
		what := "not a regular file"
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			what = "a symlink"
		case fi.IsDir():
			what = "a folder"
		}
		return "", fmt.Errorf("opening Dockerfile %s: it is %s; commit it as a regular file", rel, what)
	}
	return p, nil
}
