// Package registry checks and tags the images slipway pushes, with
// go-containerregistry. It talks to one registry API per call and stays silent:
// it logs nothing, and every failure comes back as an error.
//
// Credentials come only from the keychain given to New (anonymous by default),
// never from the host's Docker config.
package registry

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-ci/slipway"
)

// Client reads and writes manifests in container registries. It holds no
// connection state of its own and is safe for concurrent use.
type Client struct {
	keychain  authn.Keychain
	insecure  bool
	transport http.RoundTripper
	remotes   remoteCache // see promote.go
}

// Option configures a Client.
type Option func(*Client)

// WithKeychain sets where the Client finds credentials for a registry. Without
// it the Client is anonymous.
func WithKeychain(kc authn.Keychain) Option {
	return func(c *Client) { c.keychain = kc }
}

// WithInsecure makes the Client speak plain http to registries when insecure is
// true. go-containerregistry already does so for localhost and 127.0.0.1.
func WithInsecure(insecure bool) Option {
	return func(c *Client) { c.insecure = insecure }
}

// WithTransport sets the http.RoundTripper requests go through, for example
// one that trusts a private CA, or one that counts requests in tests.
func WithTransport(rt http.RoundTripper) Option {
	return func(c *Client) { c.transport = rt }
}

// New returns a Client configured by opts.
func New(opts ...Option) *Client {
	c := &Client{
		keychain:  anonymousKeychain{},
		transport: remote.DefaultTransport,
	}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

// anonymousKeychain resolves every registry to anonymous access; it is the
// default so that a host's ~/.docker/config.json never leaks into requests.
type anonymousKeychain struct{}

func (anonymousKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return authn.Anonymous, nil
}

func (c *Client) nameOptions() []name.Option {
	if c.insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

func (c *Client) remoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(RepoKeychain(RepoAuthsFrom(ctx), c.keychain)),
		remote.WithTransport(c.transport),
		remote.WithUserAgent("slipway"),
	}
}

// VerifyIndex fetches ref (by tag or by digest) and checks that it is an image
// index holding exactly one image manifest for each platform in wanted (such
// as "linux/arm64" or "linux/arm/v7"), and that each of those image's config
// names the same os, architecture and variant. Entries with the platform
// unknown/unknown, the attestation manifests BuildKit adds, are skipped, and so
// are platforms nobody asked for.
//
// It returns the index digest and, in the order of wanted, the digest of each
// platform's image manifest. A single image instead of an index, a missing or
// doubled platform, or a config that disagrees with its platform is an error
// with code slipway.EINVALID that names the problem. Registry failures keep the
// registry's status and message (see the package errors).
func (c *Client) VerifyIndex(ctx context.Context, ref string, wanted []string) (indexDigest string, platforms []slipway.PlatformDigest, err error) {
	if len(wanted) == 0 {
		return "", nil, errorf(slipway.EINVALID, "verifying %s: no platforms wanted", ref)
	}
	want := make([]v1.Platform, len(wanted))
	for i, w := range wanted {
		p, err := parsePlatform(w)
		if err != nil {
			return "", nil, err
		}
		want[i] = p
	}
	r, err := name.ParseReference(ref, c.nameOptions()...)
	if err != nil {
		return "", nil, errorf(slipway.EINVALID, "verifying %s: %v", ref, err)
	}

	desc, err := remote.Get(r, c.remoteOptions(ctx)...)
	if err != nil {
		return "", nil, interpretError(ctx, fmt.Sprintf("fetching %s", ref), err)
	}
	if !desc.MediaType.IsIndex() {
		return "", nil, errorf(slipway.EINVALID,
			"verifying %s: it is a single image (%s), not an index; missing platforms %s",
			ref, desc.MediaType, strings.Join(wanted, ", "))
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return "", nil, fmt.Errorf("reading index %s: %w", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return "", nil, interpretError(ctx, fmt.Sprintf("reading index %s", ref), err)
	}

	found := make([][]v1.Descriptor, len(want))
	for _, m := range im.Manifests {
		if m.Platform == nil || (m.Platform.OS == "unknown" && m.Platform.Architecture == "unknown") {
			continue // attestation manifest
		}
		for i, p := range want {
			if samePlatform(*m.Platform, p) {
				found[i] = append(found[i], m)
			}
		}
	}
	var missing []string
	for i, f := range found {
		switch {
		case len(f) == 0:
			missing = append(missing, wanted[i])
		case len(f) > 1:
			return "", nil, errorf(slipway.EINVALID, "verifying %s: %d manifests for platform %s, want one", ref, len(f), wanted[i])
		case !f[0].MediaType.IsImage():
			return "", nil, errorf(slipway.EINVALID, "verifying %s: platform %s is a %s, not an image manifest", ref, wanted[i], f[0].MediaType)
		}
	}
	if len(missing) > 0 {
		return "", nil, errorf(slipway.EINVALID, "verifying %s: index %s is missing platforms %s (has %s)",
			ref, desc.Digest, strings.Join(missing, ", "), strings.Join(listPlatforms(im.Manifests), ", "))
	}

	platforms = make([]slipway.PlatformDigest, len(want))
	for i, f := range found {
		m := f[0]
		img, err := idx.Image(m.Digest)
		if err != nil {
			return "", nil, interpretError(ctx, fmt.Sprintf("fetching %s image %s", wanted[i], m.Digest), err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return "", nil, interpretError(ctx, fmt.Sprintf("fetching %s config of %s", wanted[i], m.Digest), err)
		}
		got := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
		if !samePlatform(got, want[i]) {
			return "", nil, errorf(slipway.EINVALID, "verifying %s: image %s listed as %s has a config for %s",
				ref, m.Digest, wanted[i], formatPlatform(got))
		}
		platforms[i] = slipway.PlatformDigest{Platform: wanted[i], Digest: m.Digest.String()}
	}
	return desc.Digest.String(), platforms, nil
}

// Tag points each of tags in repo (such as "registry:5000/acme/app") at the
// manifest with digest, by PUTting that manifest's exact bytes and media type
// under each tag. No blob is read or uploaded and nothing is re-encoded, so
// every tag resolves to digest afterwards. Tags are applied in order; on an
// error the earlier ones stay.
func (c *Client) Tag(ctx context.Context, repo string, digest string, tags []string) error {
	src, err := name.NewDigest(repo+"@"+digest, c.nameOptions()...)
	if err != nil {
		return errorf(slipway.EINVALID, "tagging %s@%s: %v", repo, digest, err)
	}
	refs := make([]name.Tag, len(tags))
	for i, t := range tags {
		// Tags are bare: "v1.2", never "other/repo:v1.2".
		if strings.ContainsAny(t, ":/@") {
			return errorf(slipway.EINVALID, "tagging %s: invalid tag %q", repo, t)
		}
		tag, err := name.NewTag(repo+":"+t, c.nameOptions()...)
		if err != nil {
			return errorf(slipway.EINVALID, "tagging %s: invalid tag %q: %v", repo, t, err)
		}
		refs[i] = tag
	}

	opts := c.remoteOptions(ctx)
	// remote.Get checks that the bytes it got hash to digest.
	desc, err := remote.Get(src, opts...)
	if err != nil {
		return interpretError(ctx, fmt.Sprintf("fetching %s", src), err)
	}
	pusher, err := remote.NewPusher(opts...)
	if err != nil {
		return fmt.Errorf("tagging %s: %w", src, err)
	}
	for _, tag := range refs {
		// A *remote.Descriptor is Taggable with its raw manifest and media type,
		// so Put sends the bytes as fetched.
		if err := pusher.Put(ctx, tag, desc); err != nil {
			return interpretError(ctx, fmt.Sprintf("tagging %s as %s", src, tag.TagStr()), err)
		}
	}
	return nil
}

func parsePlatform(s string) (v1.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") {
		return v1.Platform{}, errorf(slipway.EINVALID, "invalid platform %q: want os/arch or os/arch/variant", s)
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// samePlatform compares os, architecture and variant, treating the variants
// that are implied by the architecture as equal to none, as containerd does
// (arm64 is arm64/v8, arm is arm/v7, amd64 is amd64/v1).
func samePlatform(a, b v1.Platform) bool {
	return a.OS == b.OS && a.Architecture == b.Architecture &&
		normalVariant(a.Architecture, a.Variant) == normalVariant(b.Architecture, b.Variant)
}

func normalVariant(arch, variant string) string {
	switch {
	case arch == "arm64" && variant == "v8", arch == "amd64" && variant == "v1":
		return ""
	case arch == "arm" && variant == "":
		return "v7"
	}
	return variant
}

func formatPlatform(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func listPlatforms(ms []v1.Descriptor) []string {
	var out []string
	for _, m := range ms {
		if m.Platform == nil || (m.Platform.OS == "unknown" && m.Platform.Architecture == "unknown") {
			continue
		}
		out = append(out, formatPlatform(*m.Platform))
	}
	if len(out) == 0 {
		return []string{"none"}
	}
	return out
}

// Attestations reads the index ref (by tag or by digest) and returns, for
// each image manifest that has one, the digest of the attestation manifest
// BuildKit attached to it (an entry annotated vnd.docker.reference.type
// "attestation-manifest" whose vnd.docker.reference.digest names the image):
// image manifest digest → attestation manifest digest, both "sha256:…". An
// index without attestations (provenance: off) gives an empty map. Registry
// failures keep the registry's status and message.
func (c *Client) Attestations(ctx context.Context, ref string) (map[string]string, error) {
	r, err := name.ParseReference(ref, c.nameOptions()...)
	if err != nil {
		return nil, errorf(slipway.EINVALID, "reading the attestations of %s: %v", ref, err)
	}
	idx, err := remote.Index(r, c.remoteOptions(ctx)...)
	if err != nil {
		return nil, interpretError(ctx, fmt.Sprintf("fetching %s", ref), err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, interpretError(ctx, fmt.Sprintf("reading index %s", ref), err)
	}
	out := map[string]string{}
	for _, m := range im.Manifests {
		if m.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
			if target := m.Annotations["vnd.docker.reference.digest"]; target != "" {
				out[target] = m.Digest.String()
			}
		}
	}
	return out, nil
}
