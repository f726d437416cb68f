package promote

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

func TestValidate(t *testing.T) {
	b := &slipway.Build{ID: 1, Image: "registry.test/acme/app", IndexDigest: "sha256:aa"}
	for _, tc := range []struct {
		req  Request
		want string // "" valid
	}{
		{Request{Build: b, Tags: []string{"v1.2.3", "stable"}}, ""},
		{Request{Build: b}, "tags is required"},
		{Request{Build: b, Tags: []string{"a", "a"}}, `"a" is listed twice`},
		{Request{Build: b, Tags: []string{"-bad"}}, "not a valid tag"},
		{Request{Build: b, Tags: make([]string, MaxTags+1)}, "At most 20 tags"},
		{Request{Build: b, Tags: []string{"v1"}, Target: "app"}, "not a repository with its registry"},
		{Request{Build: b, Tags: []string{"v1"}, Target: "registry.test/acme/app:v1"}, "not a repository with its registry"},
		{Request{Build: b, Tags: []string{"v1"}, Target: "registry.test/releases/app"}, ""},
	} {
		err := tc.req.Validate()
		if tc.want == "" {
			require.NoError(t, err, "%+v", tc.req)
			continue
		}
		require.Error(t, err, "%+v", tc.req)
		require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err))
		require.Contains(t, err.Error(), tc.want)
	}
}

func TestCheckActorAndState(t *testing.T) {
	ok := &slipway.Build{ID: 7, State: slipway.BuildSucceeded, IndexDigest: "sha256:aa"}
	require.Nil(t, checkActor(Request{Build: ok, Role: slipway.RoleReleaseManager}))
	require.Nil(t, checkActor(Request{Build: ok, Release: true}), "a tag push needs no role")
	err := checkActor(Request{Build: ok, Actor: "ci", Role: slipway.RoleDeveloper})
	require.Equal(t, slipway.EFORBIDDEN, err.Code)
	require.Contains(t, err.Message, `token "ci" has the developer role`)
	pr := &slipway.Build{ID: 8, State: slipway.BuildSucceeded, PullRequest: &slipway.PullRequest{Number: 12}}
	err = checkActor(Request{Build: pr, Release: true})
	require.Equal(t, slipway.ECONFLICT, err.Code)
	require.Contains(t, err.Message, "pull request 12")

	require.Nil(t, checkState(ok))
	err = checkState(&slipway.Build{ID: 9, State: slipway.BuildFailed, Error: "test arm failed on linux/arm64"})
	require.Equal(t, slipway.ECONFLICT, err.Code)
	require.Contains(t, err.Message, "linux/arm64")
}

func TestCheckImmutable(t *testing.T) {
	b := &slipway.Build{ID: 1, IndexDigest: "sha256:new"}
	for _, tc := range []struct {
		name     string
		req      Request
		previous []string
		refused  bool
		reasons  []string
	}{
		{"new tags", Request{Tags: []string{"v1.0.0", "latest"}, Role: slipway.RoleReleaseManager}, []string{"", ""}, false, nil},
		{"same digest again", Request{Tags: []string{"v1.0.0"}}, []string{"sha256:new"}, false, nil},
		{"a floating tag moves", Request{Tags: []string{"stable"}}, []string{"sha256:old"}, false, nil},
		{"a version tag does not move", Request{Tags: []string{"v1.0.0", "stable"}, Role: slipway.RoleReleaseManager},
			[]string{"sha256:old", ""}, true,
			[]string{"version tag v1.0.0 points at sha256:old", "not written: another tag of the same request was refused"}},
		{"force needs admin", Request{Tags: []string{"1.2"}, Force: true, Role: slipway.RoleReleaseManager}, []string{"sha256:old"}, true, nil},
		{"admin forces", Request{Tags: []string{"1.2"}, Force: true, Role: slipway.RoleAdmin}, []string{"sha256:old"}, false, nil},
		{"a release's floating versions follow", Request{Tags: []string{"1.3.0", "1.3", "1", "latest"}, Release: true},
			[]string{"", "sha256:old", "sha256:old", "sha256:old"}, false, nil},
		{"a released version never moves, even forced", Request{Tags: []string{"1.3.0", "1.3"}, Release: true, Force: true, Role: slipway.RoleAdmin},
			[]string{"sha256:old", ""}, true, nil},
	} {
		tc.req.Build = b
		err, reasons := checkImmutable(tc.req, tc.previous)
		if !tc.refused {
			require.Nil(t, err, tc.name)
			continue
		}
		require.NotNil(t, err, tc.name)
		require.Equal(t, slipway.ECONFLICT, err.Code, tc.name)
		require.Contains(t, err.Message, "Nothing was changed", tc.name)
		if tc.reasons != nil {
			require.Equal(t, tc.reasons, reasons, tc.name)
		}
	}
}
