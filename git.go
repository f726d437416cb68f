package slipway

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode"
)

// MaxCloneURLBytes caps a clone URL; it matches the schema's CHECK constraint.
const MaxCloneURLBytes = 2048

// GitPolicy says which clone URLs slipway runs git against. Server and worker
// apply the same one: the server when an admin sets a clone URL or a forge base
// URL, the worker again before every fetch and through GIT_ALLOW_PROTOCOL.
//
// A clone URL is always a setting (derived from a forge's base URL or set
// through the admin API), never a field of a webhook payload: a payload that
// could name it would let anyone who knows a forge's secret point an existing
// repository at other code.
type GitPolicy struct {
	// DevProtocols also allows git://, http:// and file:// URLs
	// (SLIPWAY_GIT_DEV_PROTOCOLS). They carry no authentication of the server
	// (git, http) or read the worker's own disk (file), so they are for a
	// development machine only.
	DevProtocols bool
}

// Protocols is the value of GIT_ALLOW_PROTOCOL: the transports git may use,
// colon-separated. Remote helpers (ext::, fd::, or any git-remote-* program)
// are not among them, so git refuses them.
func (p GitPolicy) Protocols() string {
	if p.DevProtocols {
		return "https:ssh:git:http:file"
	}
	return "https:ssh"
}

// CheckCloneURL returns EINVALID, naming field, unless s is a URL git may fetch
// under the policy: https:// or ssh:// with a host (with DevProtocols also
// git://, http:// and file://). A URL starting with "-" could pass for an
// option of git and is refused too.
func (p GitPolicy) CheckCloneURL(field, s string) error {
	if s == "" {
		return Errorf(EINVALID, "%s is empty.", field)
	}
	u, err := url.Parse(s)
	if err != nil || strings.HasPrefix(s, "-") || strings.ContainsFunc(s, unicode.IsControl) || len(s) > MaxCloneURLBytes {
		return Errorf(EINVALID, "%s is not a URL: %q.", field, Truncate(s, 100))
	}
	switch u.Scheme {
	case "https", "ssh":
	case "git", "http", "file":
		if !p.DevProtocols {
			return Errorf(EINVALID, "%s uses %s://, which is allowed only with SLIPWAY_GIT_DEV_PROTOCOLS=true (development machines); use an https:// or ssh:// URL.", field, u.Scheme)
		}
	default:
		return Errorf(EINVALID, "%s must be an https:// or ssh:// URL, e.g. https://github.com/owner/name.git: %q.", field, Truncate(s, 100))
	}
	if u.Scheme != "file" && (u.Host == "" || strings.HasPrefix(u.Host, "-")) {
		return Errorf(EINVALID, "%s has no host: %q.", field, Truncate(s, 100))
	}
	return nil
}

// scpLikeRE matches git's scp-like ssh syntax, [user@]host:path, as git
// tells it from a URL and a local path (git-clone(1), "GIT URLS"): no "/"
// before the first ":", and a path that does not start with "/" (which
// would make it host:/abs, still scp-like but not a forge repository).
var scpLikeRE = regexp.MustCompile(`^(?:([A-Za-z0-9._-]+)@)?([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):([A-Za-z0-9._~-][A-Za-z0-9._~/-]*)$`)

// SSHCloneURL rewrites a clone URL in git's scp-like syntax, as forges show
// it (git@github.com:acme/app.git), into the same address as an ssh:// URL
// (ssh://git@github.com/acme/app.git), which CheckCloneURL and the worker
// take; any other string is returned as it is. A path with ".." or a host
// starting with "-" is not rewritten (and so is refused as not a URL).
func SSHCloneURL(s string) string {
	m := scpLikeRE.FindStringSubmatch(s)
	if m == nil || strings.Contains(m[3], "..") {
		return s
	}
	user := ""
	if m[1] != "" {
		user = m[1] + "@"
	}
	return "ssh://" + user + m[2] + "/" + m[3]
}

// ForgeCloneURL is the clone URL of owner/name on a forge whose web or git
// base URL is base (https://github.com): base/owner/name.git. owner may hold
// slashes (GitLab subgroups). It returns "" when base is "".
func ForgeCloneURL(base, owner, name string) string {
	if base == "" {
		return ""
	}
	return strings.TrimRight(base, "/") + "/" + owner + "/" + name + ".git"
}

// gitEnvKept lists the variables of slipway's own environment that git and
// its helpers (ssh, credential helpers the admin configured) still need.
// Everything else is left out: slipway's settings (SLIPWAY_SECRET_KEY, the
// database URL, the admin token) and any other token the process holds.
var gitEnvKept = []string{
	"PATH", "HOME", "USER", "LANG", "LANGUAGE", "TZ", "TMPDIR",
	"SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY", "all_proxy",
	"SSH_AUTH_SOCK", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT",
	// Where the admin's git configuration lives (insteadOf rewrites,
	// credential helpers).
	"GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM", "XDG_CONFIG_HOME",
}

// GitEnv is the whole environment of a git process started from one with
// environ (os.Environ()): the few variables in gitEnvKept and LC_*, then the
// policy's GIT_ALLOW_PROTOCOL, no terminal prompts and no askpass program.
// Callers append what their process needs (credentials for that one process
// only) to the result.
func (p GitPolicy) GitEnv(environ []string) []string {
	env := make([]string, 0, 16)
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LC_") || slices.Contains(gitEnvKept, k) {
			env = append(env, kv)
		}
	}
	return append(env,
		"GIT_ALLOW_PROTOCOL="+p.Protocols(),
		"GIT_PROTOCOL_FROM_USER=0",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_ASKPASS=/bin/false",
		"SSH_ASKPASS=/bin/false",
		"GCM_INTERACTIVE=never",
	)
}
