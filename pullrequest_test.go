package slipway

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPullRequestRefs(t *testing.T) {
	t.Parallel()
	require.Equal(t, "refs/pull/7/head", PullRequestRef(ForgeGitHub, 7))
	require.Equal(t, "refs/pull/7/head", PullRequestRef(ForgeGitea, 7))
	require.Equal(t, "refs/merge-requests/7/head", PullRequestRef(ForgeGitLab, 7))
	for ref, want := range map[string]int{
		"refs/pull/7/head": 7, "refs/merge-requests/12/head": 12,
		"refs/pull/7/merge": 0, "refs/pull/07/head": 0, "refs/pull//head": 0, "refs/pull/-1/head": 0,
		"refs/heads/pull/7/head": 0, "refs/pull/1234567890/head": 0, "refs/tags/v1": 0,
	} {
		n, ok := PullRequestNumber(ref)
		require.Equal(t, want, n, ref)
		require.Equal(t, want > 0, ok, ref)
	}
	tags, ok := PullRequestTags("refs/pull/7/head")
	require.True(t, ok)
	require.Equal(t, []string{"pr-7"}, tags)
	_, ok = PullRequestTags("refs/heads/main")
	require.False(t, ok)
}
