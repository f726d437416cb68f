package slipway

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// maxImageName is the longest image name (registry host and path, no tag) a
// reference may hold: the distribution reference grammar's 255 characters.
const maxImageName = 255

// ImageRepository returns the image a repository's builds push to by default:
// registry (host[:port][/path]), then each "/"-separated part of owner (a
// GitLab namespace may have subgroups: "group/sub"), then repo, each mapped
// to a path component of the OCI distribution spec
// ([a-z0-9]+(([._]|__|-+)[a-z0-9]+)*) by ImagePathComponent.
//
// It returns EINVALID when a part maps to nothing (it holds no letter or
// digit) or the whole name is longer than 255 characters; the message says
// to register the repository with an explicit image.
func ImageRepository(registry, owner, repo string) (string, error) {
	parts := append(strings.Split(owner, "/"), repo)
	path := make([]string, len(parts))
	for i, p := range parts {
		c := ImagePathComponent(p)
		if c == "" {
			return "", Errorf(EINVALID, "%q has no letter or digit, so it makes no image path component; "+
				"register the repository with an explicit image (POST /api/v1/repos).", p)
		}
		path[i] = c
	}
	image := strings.TrimRight(registry, "/") + "/" + strings.Join(path, "/")
	if len(image) > maxImageName {
		return "", Errorf(EINVALID, "The image name %q would be %d characters, over the %d an image reference allows; "+
			"register the repository with a shorter explicit image (POST /api/v1/repos).", image[:60]+"…", len(image), maxImageName)
	}
	if _, err := name.NewRepository(image, name.StrictValidation); err != nil {
		return "", Errorf(EINVALID, "The image name %q is not valid: %v; register the repository with an explicit image (POST /api/v1/repos).", image, err)
	}
	return image, nil
}

// ImagePathComponent maps one repository or namespace name onto an image
// path component, by one rule:
//
//   - upper case becomes lower case (forges treat names case-insensitively);
//   - every run of characters other than a-z and 0-9 is one separator: the
//     runs ".", "_", "__" and "-", "--", … the spec allows are kept, any other
//     run ("..", "._", "___", "+", …) becomes "-";
//   - separators at the start and the end are dropped;
//   - when the first two steps changed more than the case, "-" and the first
//     8 hex digits of the SHA-256 of the original name are appended, so two
//     names that would map alike (".github" and "github") keep apart.
//
// It returns "" when no letter or digit is left. The result of a name made of
// lower-case letters, digits and allowed separators is the name itself.
func ImagePathComponent(s string) string {
	lower := strings.ToLower(s)
	var b strings.Builder
	run := ""
	flush := func() {
		if run == "" {
			return
		}
		if b.Len() > 0 { // a separator at the start is dropped
			switch {
			case run == "." || run == "_" || run == "__" || strings.Trim(run, "-") == "":
				b.WriteString(run)
			default:
				b.WriteString("-")
			}
		}
		run = ""
	}
	for _, r := range lower {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			flush()
			b.WriteRune(r)
			continue
		}
		run += string(r)
	}
	// A run left at the end is a trailing separator: dropped.
	out := b.String()
	if out == "" {
		return ""
	}
	if out != lower {
		sum := sha256.Sum256([]byte(s))
		out += "-" + hex.EncodeToString(sum[:4])
	}
	return out
}

// SplitRepo splits a build's "owner/name" at its last slash: the owner of a
// GitLab project in a subgroup holds slashes ("group/sub"), a name never
// does. It returns "", "" for a string without a slash.
func SplitRepo(full string) (owner, name string) {
	i := strings.LastIndexByte(full, '/')
	if i < 0 {
		return "", ""
	}
	return full[:i], full[i+1:]
}
