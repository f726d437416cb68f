package forge

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/slipway-ci/slipway"
)

// The fuzz targets below run their seeds (slipway's own webhook samples plus
// the corpus in testdata/fuzz) as ordinary tests; `make fuzz` runs each one
// for a while.

// addFixtureSeeds adds every sample of forge with each of events.
func addFixtureSeeds(f *testing.F, forge string, events ...string) {
	files, err := filepath.Glob(filepath.Join(sampleDir(forge), "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no %s fixtures: %v", forge, err)
	}
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		for _, e := range events {
			f.Add(e, b)
		}
	}
}

// checkParsed holds for whatever a parser returns: a clear EINVALID, or exactly
// one outcome, and a trigger that the schema and git accept.
func checkParsed(t *testing.T, forge string, ev Event, err error) {
	if err != nil {
		if slipway.ErrorCode(err) != slipway.EINVALID || slipway.ErrorMessage(err) == "" {
			t.Fatalf("error is not a clear EINVALID: %v", err)
		}
		if len(slipway.ErrorMessage(err)) > 2000 {
			t.Fatalf("message of %d bytes", len(slipway.ErrorMessage(err)))
		}
		return
	}
	n := 0
	for _, b := range []bool{ev.Ping, ev.Ignored != "", ev.Trigger != nil} {
		if b {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("want exactly one outcome, got %+v", ev)
	}
	tr := ev.Trigger
	if tr == nil {
		return
	}
	switch {
	case tr.Forge != forge:
		t.Fatalf("forge %q", tr.Forge)
	case !commitRE.MatchString(tr.Commit) || strings.ToLower(tr.Commit) != tr.Commit:
		t.Fatalf("commit %q", tr.Commit)
	case !strings.HasPrefix(tr.Ref, "refs/heads/") && !strings.HasPrefix(tr.Ref, "refs/tags/"), len(tr.Ref) > maxRefBytes, !ValidRefName(tr.Ref):
		t.Fatalf("ref %q", tr.Ref)
	case !ValidOwner(forge, tr.Owner) || !ValidName(tr.Name):
		t.Fatalf("repository %q/%q", tr.Owner, tr.Name)
	case ValidateCloneURL("clone_url", tr.CloneURL) != nil:
		t.Fatalf("clone URL %q", tr.CloneURL)
	case len(tr.Message) > maxMessageBytes || strings.ContainsFunc(tr.Message+tr.Sender+tr.DefaultBranch, unicode.IsControl):
		t.Fatalf("message, sender or default branch not printable: %q %q %q", tr.Message, tr.Sender, tr.DefaultBranch)
	case skipCIRE.MatchString(tr.Message):
		t.Fatalf("a [skip ci] subject was built: %q", tr.Message)
	}
	// Every repository maps to a valid image, or is refused clearly.
	if image, err := slipway.ImageRepository("r.test:5000", tr.Owner, tr.Name); err != nil {
		if slipway.ErrorCode(err) != slipway.EINVALID {
			t.Fatalf("image of %q/%q: %v", tr.Owner, tr.Name, err)
		}
	} else if _, err := name.NewRepository(image, name.StrictValidation); err != nil {
		t.Fatalf("image %q of %q/%q: %v", image, tr.Owner, tr.Name, err)
	}
}

func FuzzParseGitHub(f *testing.F) {
	addFixtureSeeds(f, "github", "push", "ping")
	f.Fuzz(func(t *testing.T, event string, payload []byte) {
		ev, err := parseGitHubEvent(event, "d-1", payload)
		checkParsed(t, "github", ev, err)
	})
}

func FuzzParseGitLab(f *testing.F) {
	addFixtureSeeds(f, "gitlab", "Push Hook", "Tag Push Hook")
	f.Fuzz(func(t *testing.T, event string, payload []byte) {
		ev, err := parseGitLabEvent(event, "d-1", payload)
		checkParsed(t, "gitlab", ev, err)
		if ev.Ping {
			t.Fatal("GitLab has no ping")
		}
	})
}

func FuzzParseGitea(f *testing.F) {
	addFixtureSeeds(f, "gitea", "push", "create")
	f.Fuzz(func(t *testing.T, event string, payload []byte) {
		ev, err := parseGiteaEvent(event, "d-1", payload)
		checkParsed(t, "gitea", ev, err)
		if ev.Ping {
			t.Fatal("Gitea has no ping")
		}
	})
}

// fuzzSecret keys the signature fuzz targets.
const fuzzSecret = "fuzz-secret"

// addSignatureSeeds adds each fixture with its correct signature, and with a
// signature of one changed byte.
func addSignatureSeeds(f *testing.F, forge string, sign func(body []byte) string) {
	files, _ := filepath.Glob(filepath.Join(sampleDir(forge), "*.json"))
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sign(b), b)
		s := []byte(sign(b))
		s[len(s)-1] ^= 1
		f.Add(string(s), b)
	}
	f.Add("", []byte{})
}

// FuzzVerifyGitHub: a signature is accepted exactly when it is the right one
// (hex digits in either case).
func FuzzVerifyGitHub(f *testing.F) {
	addSignatureSeeds(f, "github", func(b []byte) string { return signGitHub(fuzzSecret, b) })
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := verifyGitHubSignature([]byte(fuzzSecret), header, body)
		want := strings.EqualFold(header, signGitHub(fuzzSecret, body)) && strings.HasPrefix(header, "sha256=")
		if (err == nil) != want {
			t.Fatalf("header %q: err %v, want accepted %v", header, err, want)
		}
		if err != nil && slipway.ErrorCode(err) != slipway.EUNAUTHORIZED {
			t.Fatalf("error code %s", slipway.ErrorCode(err))
		}
	})
}

func FuzzVerifyGitea(f *testing.F) {
	addSignatureSeeds(f, "gitea", func(b []byte) string { return signHex(fuzzSecret, b) })
	f.Fuzz(func(t *testing.T, sig string, body []byte) {
		h := http.Header{}
		h.Set(giteaSignatureHeader, sig)
		err := verifyGiteaSignature([]byte(fuzzSecret), h, body)
		want := sig != "" && strings.EqualFold(sig, signHex(fuzzSecret, body))
		if (err == nil) != want {
			t.Fatalf("signature %q: err %v, want accepted %v", sig, err, want)
		}
		if err != nil && slipway.ErrorCode(err) != slipway.EUNAUTHORIZED {
			t.Fatalf("error code %s", slipway.ErrorCode(err))
		}
	})
}

func FuzzVerifyGitLab(f *testing.F) {
	f.Add(fuzzSecret)
	f.Add(fuzzSecret + " ")
	f.Add("")
	f.Add(strings.Repeat("a", 4096))
	f.Fuzz(func(t *testing.T, token string) {
		err := verifyGitLabToken([]byte(fuzzSecret), token)
		if (err == nil) != (token == fuzzSecret) {
			t.Fatalf("token %q: err %v", token, err)
		}
	})
}
