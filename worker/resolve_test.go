package worker

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/buildkit"
	"github.com/slipway-ci/slipway/postgres"
	"github.com/slipway-ci/slipway/postgres/pgtest"
	"github.com/slipway-ci/slipway/test/testenv"
)

// stopBuilder is a Builder that records the specs it was asked to build and
// builds nothing: the tests below only need to know whether the pipeline got
// as far as building, and which commit it checked out.
type stopBuilder struct {
	mu    sync.Mutex
	specs []buildkit.BuildSpec
}

var errStopBuilder = errors.New("stopBuilder builds nothing")

func (b *stopBuilder) Build(ctx context.Context, spec buildkit.BuildSpec, log buildkit.LogFunc) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.specs = append(b.specs, spec)
	return "", errStopBuilder
}

func (b *stopBuilder) RunTest(ctx context.Context, spec buildkit.TestSpec, log buildkit.LogFunc) (int, error) {
	return 0, errStopBuilder
}

func (b *stopBuilder) built() []buildkit.BuildSpec {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]buildkit.BuildSpec(nil), b.specs...)
}

// TestResolveRef: a build queued through the API without a commit (ref as
// given, commit "") is resolved by the worker with git ls-remote, which
// records the full ref, the commit and the commit's subject; a ref the
// repository lacks fails the build naming it; a commit a user named with a
// ref that it is not on (issue 12: "ref=main and any commit built that commit
// and tagged it main") fails before anything is built. The repository is
// real, served by git daemon under the development transports.
func TestResolveRef(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := t.TempDir()
	repo := filepath.Join(base, "app.git")
	first := testenv.NewGitRepo(t, repo, map[string]string{"Dockerfile": "FROM scratch\n"})
	git := func(args ...string) string {
		out, err := testenv.Git(ctx, repo, []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t.invalid",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t.invalid"}, args...)
		require.NoError(t, err)
		return out
	}
	git("tag", "-a", "v1.0.0", "-m", "release one", first) // annotated: ls-remote peels it
	git("checkout", "-q", "-b", "attacker")
	other, err := testenv.CommitFiles(ctx, repo, map[string]string{"Dockerfile": "FROM scratch\nLABEL evil=1\n"}, "Not on main")
	require.NoError(t, err)
	git("checkout", "-q", "main")
	tip, err := testenv.CommitFiles(ctx, repo, map[string]string{"Dockerfile": "FROM scratch\nLABEL v=2\n"}, "Second commit on main\n\nwith a body")
	require.NoError(t, err)
	cloneURL := testenv.ServeGit(t, base) + "app.git"

	db := pgtest.NewDB(t)
	builds := postgres.NewBuildService(db)
	jobs := postgres.NewJobQueue(db, zerolog.Nop())
	builder := &stopBuilder{}
	w, err := New(zerolog.New(zerolog.NewTestWriter(t)), Config{ID: "resolve-test", Git: devGit, WorkspaceDir: t.TempDir(),
		HeartbeatInterval: time.Second, StaleAfter: 10 * time.Second}, builds, jobs, builder, nil)
	require.NoError(t, err)

	// run queues a build as an API trigger does and runs it on w; the
	// subtests run one after another, so the claim takes that build.
	run := func(t *testing.T, ref, commit string) *slipway.Build {
		t.Helper()
		res, err := builds.EnqueueTrigger(ctx, slipway.Trigger{Forge: "github", DeliveryID: "api-" + t.Name(), Event: "api",
			Owner: "acme", Name: "app", CloneURL: cloneURL, Ref: ref, Commit: commit, Sender: "token dev",
			VerifyRef: commit != ""}, "127.0.0.1:1/acme/app")
		require.NoError(t, err)
		require.Equal(t, commit, res.Build.Commit)
		claimed, err := jobs.JobClaim(ctx, w.ID(), 1)
		require.NoError(t, err)
		require.Len(t, claimed, 1)
		require.Equal(t, res.Build.ID, claimed[0].BuildID)
		w.runJob(ctx, claimed[0])
		b, err := builds.FindBuildByID(ctx, res.Build.ID)
		require.NoError(t, err)
		return b
	}
	builtCommits := func() []string {
		var out []string
		for _, s := range builder.built() {
			out = append(out, strings.TrimPrefix(s.Ref, "127.0.0.1:1/acme/app:"))
		}
		return out
	}

	t.Run("BranchResolvedAndRecorded", func(t *testing.T) {
		b := run(t, "main", "")
		require.Equal(t, "refs/heads/main", b.Ref)
		require.Equal(t, tip, b.Commit)
		require.Equal(t, "Second commit on main", b.Message, "the commit's subject, not a placeholder")
		require.Equal(t, "token dev", b.Sender)
		require.Contains(t, b.Error, errStopBuilder.Error(), "it got as far as building")
		require.Equal(t, []string{slipway.CommitTag(tip)}, builtCommits())
	})

	t.Run("AnnotatedTagPeeled", func(t *testing.T) {
		b := run(t, "v1.0.0", "")
		require.Equal(t, "refs/tags/v1.0.0", b.Ref)
		require.Equal(t, first, b.Commit, "the commit, not the tag object")
		require.Equal(t, "Initial commit", b.Message)
	})

	t.Run("UnknownRefFails", func(t *testing.T) {
		before := len(builder.built())
		b := run(t, "no-such-branch", "")
		require.Equal(t, slipway.BuildFailed, b.State)
		require.Contains(t, b.Error, `no branch or tag "no-such-branch"`)
		require.Empty(t, b.Commit, "nothing was resolved")
		require.Equal(t, "no-such-branch", b.Ref)
		require.Len(t, builder.built(), before, "nothing was built")
		require.Equal(t, 1, b.Attempt, "a user error is not retried")
	})

	t.Run("UnknownBranchOfCommitFails", func(t *testing.T) {
		before := len(builder.built())
		b := run(t, "refs/heads/gone", first)
		require.Contains(t, b.Error, `no branch "refs/heads/gone"`)
		require.Len(t, builder.built(), before)
	})

	t.Run("CommitNotOnBranchFailsBeforeBuild", func(t *testing.T) {
		before := len(builder.built())
		b := run(t, "refs/heads/main", other)
		require.Equal(t, slipway.BuildFailed, b.State)
		require.Contains(t, b.Error, "commit "+other+" is not on branch main; pass a commit of that branch or no commit")
		require.Len(t, builder.built(), before, "nothing was built, pushed or tagged")
		require.Empty(t, b.Tags)
		require.Empty(t, b.ImageRef)
	})

	t.Run("OlderCommitOfBranchBuilds", func(t *testing.T) {
		b := run(t, "refs/heads/main", first)
		require.Equal(t, first, b.Commit)
		require.Equal(t, "Initial commit", b.Message)
		require.Contains(t, b.Error, errStopBuilder.Error(), "an ancestor of main's tip is on main")
		require.Contains(t, builtCommits(), slipway.CommitTag(first))
	})

	t.Run("CommitNotOfTagFails", func(t *testing.T) {
		before := len(builder.built())
		b := run(t, "refs/tags/v1.0.0", tip)
		require.Contains(t, b.Error, "commit "+tip+" is not the commit of tag v1.0.0 ("+first+")")
		require.Len(t, builder.built(), before)
	})
}
