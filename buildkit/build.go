package buildkit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client"
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
	// 127.0.0.1:5000/acme/app:buildcache) the build imports its cache from and
	// exports all its layers to (mode=max). A missing cache is not an error.
	CacheRef string
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
	return nil
}

// Build builds the Dockerfile of spec with BuildKit's dockerfile.v0 frontend
// for all of spec.Platforms in one solve, and pushes the result to spec.Ref as
// one OCI image index (oci-mediatypes=true; one image manifest per platform).
// It returns the digest of the pushed index.
//
// Progress goes to log: each step's name when it starts (BuildKit names steps
// of multi-platform builds like "[linux/arm64 2/2] RUN uname -m > /arch", and
// log gets that platform), the output of RUN steps line by line, warnings, and
// the error of a failed step.
//
// A failed build returns an error whose message is BuildKit's, on one line,
// such as `process "/bin/sh -c exit 3" did not complete successfully: exit
// code: 3` or `dockerfile parse error on line 2: unknown instruction: FOO`,
// prefixed with "building <ref>: ". Canceling ctx stops the solve in buildkitd;
// the error then matches context.Canceled (or the cause of ctx, if any).
//
// Build attaches no credentials: buildkitd takes registry credentials only
// from the client's session, so pulls and pushes are anonymous and nothing
// secret can reach log. (A registry that needs a login needs an auth session
// attachable here first.) Insecure covers the push and the cache; pulls
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

	insecure := strconv.FormatBool(spec.Insecure)
	opt := client.SolveOpt{
		Frontend: "dockerfile.v0",
		FrontendAttrs: map[string]string{
			"filename": filepath.Base(dockerfilePath),
			"platform": strings.Join(spec.Platforms, ","),
		},
		LocalMounts: map[string]fsutil.FS{
			"context":    contextFS,
			"dockerfile": dockerfileFS,
		},
		Exports: []client.ExportEntry{{
			Type: client.ExporterImage,
			Attrs: map[string]string{
				"name":              spec.Ref,
				"push":              "true",
				"oci-mediatypes":    "true",
				"registry.insecure": insecure,
			},
		}},
	}
	if spec.CacheRef != "" {
		opt.CacheImports = []client.CacheOptionsEntry{{
			Type:  "registry",
			Attrs: map[string]string{"ref": spec.CacheRef, "registry.insecure": insecure},
		}}
		opt.CacheExports = []client.CacheOptionsEntry{{
			Type: "registry",
			Attrs: map[string]string{
				"ref":               spec.CacheRef,
				"mode":              "max",
				"oci-mediatypes":    "true",
				"image-manifest":    "true",
				"registry.insecure": insecure,
			},
		}}
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
		return "", solveError(ctx, "building "+spec.Ref, err)
	}

	dgst := resp.ExporterResponse["containerimage.digest"]
	if dgst == "" {
		return "", fmt.Errorf("building %s: buildkitd returned no image digest", spec.Ref)
	}
	return dgst, nil
}

// insideDir joins dir and the local path rel, and checks that the directory it
// names is inside dir once symlinks are resolved: a repository must not point
// the Dockerfile mount at the worker's own files through a symlinked folder.
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
	return filepath.Join(parent, filepath.Base(p)), nil
}
