package worker

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/slipway-ci/slipway"
)

// commitTime returns the committer time of HEAD in the checkout at dir, in
// Unix seconds: the build's SOURCE_DATE_EPOCH.
func commitTime(ctx context.Context, dir string) (int64, error) {
	out, err := exec.CommandContext(ctx, "git", "-C", dir, "log", "-1", "--format=%ct", "HEAD").Output()
	if err != nil {
		return 0, fmt.Errorf("git log: %w", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("git log: no commit time in %q", strings.TrimSpace(string(out)))
	}
	return n, nil
}

// sameAsBefore compares a rebuild's result with the latest earlier succeeded
// build of the same commit, and says so when they match: the same index, or
// the same image on every platform with only the provenance (which records
// each build's own times) differing. "" when there is no earlier build or the
// images differ.
func (w *Worker) sameAsBefore(ctx context.Context, build *slipway.Build, index string, platforms []slipway.PlatformDigest) string {
	list, err := w.builds.FindBuilds(ctx, slipway.BuildFilter{Repo: build.Repo, Commit: build.Commit, State: slipway.BuildSucceeded, Limit: 5})
	if err != nil {
		return ""
	}
	for _, prev := range list {
		if prev.ID == build.ID || prev.Image != build.Image || len(prev.Platforms) == 0 {
			continue
		}
		if prev.IndexDigest == index {
			return fmt.Sprintf("The rebuild produced the same image as build %d: index %s.", prev.ID, index)
		}
		if samePlatforms(prev.Platforms, platforms) {
			return fmt.Sprintf("The rebuild produced the same image as build %d on every platform; the index differs (%s was %s) only because the provenance attestation records each build's own start, finish and invocation id (provenance: off in .slipway.yml keeps the index too).",
				prev.ID, index, prev.IndexDigest)
		}
		return fmt.Sprintf("The rebuild's image differs from build %d of the same commit (index %s was %s): the Dockerfile's steps are not reproducible (network downloads, unpinned base images, random data).",
			prev.ID, index, prev.IndexDigest)
	}
	return ""
}

// samePlatforms reports whether a and b hold the same digest per platform.
func samePlatforms(a, b []slipway.PlatformDigest) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]string{}
	for _, p := range a {
		m[p.Platform] = p.Digest
	}
	for _, p := range b {
		if m[p.Platform] != p.Digest {
			return false
		}
	}
	return true
}
