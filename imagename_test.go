package slipway

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/stretchr/testify/require"
)

// TestImageRepository is the table of names forges allow: each gives an image
// go-containerregistry's strict parser accepts, or a clear refusal.
func TestImageRepository(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 100)
	tests := []struct {
		owner, repo string
		want        string // "" with refused
		refused     string
	}{
		{owner: "octo-org", repo: "hello-app", want: "r.test:5000/octo-org/hello-app"},
		{owner: "Codertocat", repo: "Hello-World", want: "r.test:5000/codertocat/hello-world"},
		{owner: "a_b", repo: "c__d", want: "r.test:5000/a_b/c__d"},
		{owner: "x", repo: "a---b", want: "r.test:5000/x/a---b"},
		{owner: "x", repo: "v1.2", want: "r.test:5000/x/v1.2"},
		// Leading and trailing separators.
		{owner: "x", repo: ".dotfiles", want: "r.test:5000/x/dotfiles-" + hash8(".dotfiles")},
		{owner: "x", repo: ".github", want: "r.test:5000/x/github-" + hash8(".github")},
		{owner: "x", repo: "app-", want: "r.test:5000/x/app-" + hash8("app-")},
		{owner: "-x-", repo: "_app_", want: "r.test:5000/x-" + hash8("-x-") + "/app-" + hash8("_app_")},
		// Runs the spec does not allow.
		{owner: "x", repo: "a..b", want: "r.test:5000/x/a-b-" + hash8("a..b")},
		{owner: "x", repo: "a___b", want: "r.test:5000/x/a-b-" + hash8("a___b")},
		{owner: "x", repo: "a._-b", want: "r.test:5000/x/a-b-" + hash8("a._-b")},
		{owner: "x", repo: "A.-B", want: "r.test:5000/x/a-b-" + hash8("A.-B")},
		// Characters outside [a-z0-9._-] (older forges, GitLab display names).
		{owner: "x", repo: "app+tools", want: "r.test:5000/x/app-tools-" + hash8("app+tools")},
		{owner: "x", repo: "ünïcode", want: "r.test:5000/x/n-code-" + hash8("ünïcode")},
		// GitLab subgroups keep their groups.
		{owner: "platform/backend", repo: "api-server", want: "r.test:5000/platform/backend/api-server"},
		{owner: "Platform/.Ops", repo: "api", want: "r.test:5000/platform/ops-" + hash8(".Ops") + "/api"},
		// Nothing left, or too long.
		{owner: "x", repo: "...", refused: "no letter or digit"},
		{owner: "x", repo: "-_-", refused: "no letter or digit"},
		{owner: "a//b", repo: "c", refused: "no letter or digit"},
		{owner: long + "/" + long, repo: long, refused: "over the 255"},
	}
	for _, tt := range tests {
		t.Run(tt.owner+"/"+tt.repo, func(t *testing.T) {
			t.Parallel()
			got, err := ImageRepository("r.test:5000", tt.owner, tt.repo)
			if tt.refused != "" {
				require.Equal(t, EINVALID, ErrorCode(err), "%v", err)
				require.Contains(t, ErrorMessage(err), tt.refused)
				require.Contains(t, ErrorMessage(err), "explicit image")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			ref, err := name.NewTag(got+":latest", name.StrictValidation)
			require.NoError(t, err)
			require.Equal(t, got, ref.Repository.Name())
		})
	}
}

// TestImagePathComponentKeepsNamesApart: names that differ by more than case
// never share an image path component.
func TestImagePathComponentKeepsNamesApart(t *testing.T) {
	t.Parallel()
	names := []string{"github", ".github", "github.", "_github", "git-hub", "git--hub", "git.hub", "git..hub",
		"git_hub", "git__hub", "git___hub", "git-.hub", "dotfiles", ".dotfiles", "dot.files", "dot_files"}
	seen := map[string]string{}
	for _, n := range names {
		c := ImagePathComponent(n)
		require.NotEmpty(t, c, n)
		require.Regexp(t, `^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$`, c, n)
		if prev, ok := seen[c]; ok {
			t.Fatalf("%q and %q both map to %q", prev, n, c)
		}
		seen[c] = n
		require.Equal(t, c, ImagePathComponent(n), "the mapping is stable")
	}
	require.Equal(t, ImagePathComponent("Hello-World"), ImagePathComponent("hello-world"), "case alone is no difference")
}

// TestTagForRef: every ref git allows gives a tag the OCI grammar accepts
// ([A-Za-z0-9_][A-Za-z0-9._-]{0,127}), or "" (no tag).
func TestTagForRef(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"refs/heads/main":                        "main",
		"refs/heads/feature/login":               "feature-login",
		"refs/tags/v1.2.3":                       "v1.2.3",
		"refs/heads/.hidden":                     "hidden",
		"refs/heads/-dash":                       "dash",
		"refs/heads/_under":                      "_under",
		"refs/heads/UPPER":                       "UPPER",
		"refs/heads/fix ü":                       "fix-",
		"refs/heads/" + strings.Repeat("b", 200): strings.Repeat("b", 128),
		"refs/heads/日本":                          "",
		"refs/heads/...":                         "",
	}
	for ref, want := range tests {
		got := TagForRef(ref)
		require.Equal(t, want, got, ref)
		if got != "" {
			_, err := name.NewTag("r.test/x/y:"+got, name.StrictValidation)
			require.NoError(t, err, ref)
		}
	}
}

// hash8 is the suffix ImagePathComponent gives a name it changed.
func hash8(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}
