package slipway

import (
	"strings"
	"testing"
)

func TestRoleAllows(t *testing.T) {
	t.Parallel()
	for i, have := range Roles {
		for j, need := range Roles {
			if got := have.Allows(need); got != (i >= j) {
				t.Errorf("%s.Allows(%s) = %v", have, need, got)
			}
		}
	}
	if Role("root").Allows(RoleViewer) || Role("").Valid() {
		t.Error("an unknown role allows nothing")
	}
}

func TestIsVersionTag(t *testing.T) {
	t.Parallel()
	for tag, want := range map[string]bool{
		"v1.2.3": true, "1.2": true, "1": true, "v2": true, "1.2.3-rc.1": true, "v1.0.0+build.5": true,
		"stable": false, "latest": false, "main": false, "sha-0123456789ab": false, "v1.2.3.4": false, "release-1.2": false,
	} {
		if got := IsVersionTag(tag); got != want {
			t.Errorf("IsVersionTag(%q) = %v, want %v", tag, got, want)
		}
	}
}

func TestTokenSecret(t *testing.T) {
	t.Parallel()
	a, b := NewTokenSecret(), NewTokenSecret()
	if a == b || !strings.HasPrefix(a, TokenPrefix) || len(a) < 40 {
		t.Fatalf("weak or repeated secrets: %q %q", a, b)
	}
	if len(HashToken(a)) != 32 || string(HashToken(a)) == string(HashToken(b)) {
		t.Fatal("HashToken is not SHA-256")
	}
}
