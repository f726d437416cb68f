package slipway

import "testing"

func TestSSHCloneURL(t *testing.T) {
	for in, want := range map[string]string{
		"git@github.com:acme/app.git":        "ssh://git@github.com/acme/app.git",
		"git@gitlab.example.com:grp/sub/app": "ssh://git@gitlab.example.com/grp/sub/app",
		"gitea.internal:acme/app.git":        "ssh://gitea.internal/acme/app.git",
		"ssh://git@github.com/acme/app.git":  "ssh://git@github.com/acme/app.git",
		"https://github.com/acme/app.git":    "https://github.com/acme/app.git",
		"git@github.com:/etc/passwd":         "git@github.com:/etc/passwd", // absolute path: left alone
		"git@github.com:../other/app.git":    "git@github.com:../other/app.git",
		"git@-oProxyCommand=x:acme/app.git":  "git@-oProxyCommand=x:acme/app.git",
		"ext::sh -c touch% /tmp/pwned":       "ext::sh -c touch% /tmp/pwned",
		"C:acme/app":                         "ssh://C/acme/app", // a one-letter host is a host to git on Linux
		"git@github.com:acme/app.git\nx":     "git@github.com:acme/app.git\nx",
		"user@host:path with space":          "user@host:path with space",
	} {
		if got := SSHCloneURL(in); got != want {
			t.Errorf("SSHCloneURL(%q) = %q, want %q", in, got, want)
		}
	}
	// What it returns is either unchanged or passes the clone URL check.
	if err := (GitPolicy{}).CheckCloneURL("clone_url", SSHCloneURL("git@github.com:acme/app.git")); err != nil {
		t.Fatal(err)
	}
	if err := (GitPolicy{}).CheckCloneURL("clone_url", SSHCloneURL("git@github.com:/etc/passwd")); err == nil {
		t.Fatal("an absolute scp-like path is refused")
	}
}
