package registry_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/registry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testBundle is a ggcr in-memory registry behind a handler that records every
// request, and the repository name to use in it.
type testBundle struct {
	host string // 127.0.0.1:port
	repo string // host/acme/app

	mu       sync.Mutex
	requests []string // "METHOD /path"
}

func (b *testBundle) record(r *http.Request) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.requests = append(b.requests, r.Method+" "+r.URL.Path)
}

func (b *testBundle) resetRequests() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.requests = nil
}

func (b *testBundle) recorded() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.requests...)
}

type setupOpts struct {
	// basicAuth, when set, makes the registry demand these credentials
	// ("user:password") on every request.
	basicAuth string
}

func setup(t *testing.T, opts setupOpts) (*registry.Client, *testBundle) {
	t.Helper()
	b := &testBundle{}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.record(r)
		if opts.basicAuth != "" {
			user, pass, ok := r.BasicAuth()
			if !ok || user+":"+pass != opts.basicAuth {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	b.host = strings.TrimPrefix(srv.URL, "http://")
	b.repo = b.host + "/acme/app"

	// A transport of our own, so the test can close its idle connections and
	// goleak sees no keep-alive goroutines.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return registry.New(registry.WithTransport(tr)), b
}

// platformImage is a random image whose config names platform p.
func platformImage(t *testing.T, p v1.Platform) v1.Image {
	t.Helper()
	img, err := random.Image(64, 1)
	require.NoError(t, err)
	cf, err := img.ConfigFile()
	require.NoError(t, err)
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	img, err = mutate.ConfigFile(img, cf)
	require.NoError(t, err)
	return img
}

type entry struct {
	listed v1.Platform  // the platform in the index
	config *v1.Platform // the platform in the image config; nil: same as listed
	attest bool         // an attestation manifest as BuildKit writes it
}

// pushIndex writes an OCI index of the entries to repo:tag and returns its digest.
func pushIndex(t *testing.T, b *testBundle, tag string, entries ...entry) string {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, e := range entries {
		cfgPlatform := e.listed
		if e.config != nil {
			cfgPlatform = *e.config
		}
		img := platformImage(t, cfgPlatform)
		d := v1.Descriptor{Platform: &e.listed}
		if e.attest {
			d.Annotations = map[string]string{"vnd.docker.reference.type": "attestation-manifest"}
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: d})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	ref, err := name.ParseReference(b.repo + ":" + tag)
	require.NoError(t, err)
	require.NoError(t, remote.WriteIndex(ref, idx, remote.WithContext(context.Background())))
	h, err := idx.Digest()
	require.NoError(t, err)
	closeIdle()
	return h.String()
}

// closeIdle drops keep-alive connections of ggcr's default transport, which
// the test helpers above use to push fixtures.
func closeIdle() {
	if tr, ok := remote.DefaultTransport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}

func manifestDigest(t *testing.T, b *testBundle, ref string, p v1.Platform) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	require.NoError(t, err)
	idx, err := remote.Index(r)
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	closeIdle()
	for _, m := range im.Manifests {
		if m.Platform != nil && m.Platform.Equals(p) {
			return m.Digest.String()
		}
	}
	t.Fatalf("no %v in %s", p, ref)
	return ""
}

var (
	amd64   = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64   = v1.Platform{OS: "linux", Architecture: "arm64"}
	arm64v8 = v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	unknown = v1.Platform{OS: "unknown", Architecture: "unknown"}
)

func TestClientVerifyIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("TwoPlatformsInWantedOrder", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})
		want := pushIndex(t, b, "ok", entry{listed: amd64}, entry{listed: arm64})

		got, platforms, err := c.VerifyIndex(ctx, b.repo+":ok", []string{"linux/arm64", "linux/amd64"})
		require.NoError(t, err)
		require.Equal(t, want, got)
		require.Equal(t, []slipway.PlatformDigest{
			{Platform: "linux/arm64", Digest: manifestDigest(t, b, b.repo+":ok", arm64)},
			{Platform: "linux/amd64", Digest: manifestDigest(t, b, b.repo+":ok", amd64)},
		}, platforms)

		// By digest too.
		got, _, err = c.VerifyIndex(ctx, b.repo+"@"+want, []string{"linux/amd64"})
		require.NoError(t, err)
		require.Equal(t, want, got)
	})

	t.Run("AttestationsSkipped", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})
		// BuildKit adds one attestation manifest per platform, all unknown/unknown;
		// they must not count as doubled platforms.
		want := pushIndex(t, b, "attest",
			entry{listed: amd64}, entry{listed: arm64},
			entry{listed: unknown, attest: true}, entry{listed: unknown, attest: true})

		got, platforms, err := c.VerifyIndex(ctx, b.repo+":attest", []string{"linux/amd64", "linux/arm64"})
		require.NoError(t, err)
		require.Equal(t, want, got)
		require.Len(t, platforms, 2)
	})

	t.Run("VariantImpliedByArch", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})
		pushIndex(t, b, "v8", entry{listed: arm64v8})

		_, platforms, err := c.VerifyIndex(ctx, b.repo+":v8", []string{"linux/arm64"})
		require.NoError(t, err)
		require.Equal(t, "linux/arm64", platforms[0].Platform)
	})

	t.Run("MissingPlatform", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})
		pushIndex(t, b, "amd64only", entry{listed: amd64}, entry{listed: unknown, attest: true})

		_, _, err := c.VerifyIndex(ctx, b.repo+":amd64only", []string{"linux/amd64", "linux/arm64"})
		require.Error(t, err)
		require.Contains(t, err.Error(), "missing platforms linux/arm64 (has linux/amd64)")
		require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err))
	})

	t.Run("SingleImage", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})
		ref, err := name.ParseReference(b.repo + ":single")
		require.NoError(t, err)
		require.NoError(t, remote.Write(ref, platformImage(t, amd64)))
		closeIdle()

		_, _, err = c.VerifyIndex(ctx, b.repo+":single", []string{"linux/amd64", "linux/arm64"})
		require.Error(t, err)
		require.Contains(t, err.Error(), "single image")
		require.Contains(t, err.Error(), "missing platforms linux/amd64, linux/arm64")
		require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err))
	})

	t.Run("DoubledPlatform", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})
		pushIndex(t, b, "double", entry{listed: amd64}, entry{listed: amd64})

		_, _, err := c.VerifyIndex(ctx, b.repo+":double", []string{"linux/amd64"})
		require.ErrorContains(t, err, "2 manifests for platform linux/amd64")
	})

	t.Run("ConfigDisagrees", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})
		pushIndex(t, b, "liar", entry{listed: amd64}, entry{listed: arm64, config: &amd64})

		_, _, err := c.VerifyIndex(ctx, b.repo+":liar", []string{"linux/amd64", "linux/arm64"})
		require.ErrorContains(t, err, "listed as linux/arm64 has a config for linux/amd64")
	})

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})

		_, _, err := c.VerifyIndex(ctx, b.repo+":nope", []string{"linux/amd64"})
		require.Error(t, err)
		require.Equal(t, slipway.ENOTFOUND, slipway.ErrorCode(err))
		require.Contains(t, err.Error(), "registry answered 404 Not Found: NAME_UNKNOWN: Unknown name")
		require.NotContains(t, err.Error(), "http://", "the request URL stays out of the message")
		var terr *transport.Error
		require.ErrorAs(t, err, &terr)
		require.Equal(t, http.StatusNotFound, terr.StatusCode)
	})

	t.Run("BadPlatform", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})

		_, _, err := c.VerifyIndex(ctx, b.repo+":x", []string{"linux"})
		require.ErrorContains(t, err, `invalid platform "linux"`)
		require.Empty(t, b.recorded(), "no request for bad input")
	})
}

func TestClientTag(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("ManifestOnly", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})
		digest := pushIndex(t, b, "sha-0123456789ab",
			entry{listed: amd64}, entry{listed: arm64}, entry{listed: unknown, attest: true})
		b.resetRequests()

		require.NoError(t, c.Tag(ctx, b.repo, digest, []string{"v1.2.3", "latest"}))

		// One read of the index by digest, then one PUT per tag: no blob is
		// read or uploaded, and the child manifests are not even looked at.
		var puts []string
		for _, r := range b.recorded() {
			switch {
			case r == "GET /v2/", r == "GET /v2/acme/app/manifests/"+digest:
			case strings.HasPrefix(r, "PUT /v2/acme/app/manifests/"):
				puts = append(puts, r)
			default:
				t.Errorf("unexpected request %s", r)
			}
		}
		require.Equal(t, []string{
			"PUT /v2/acme/app/manifests/v1.2.3",
			"PUT /v2/acme/app/manifests/latest",
		}, puts)

		for _, tag := range []string{"v1.2.3", "latest"} {
			ref, err := name.ParseReference(b.repo + ":" + tag)
			require.NoError(t, err)
			desc, err := remote.Head(ref)
			require.NoError(t, err)
			require.Equal(t, digest, desc.Digest.String(), "tag %s", tag)
			require.Equal(t, types.OCIImageIndex, desc.MediaType)
		}
		closeIdle()
	})

	t.Run("UnknownDigest", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})

		err := c.Tag(ctx, b.repo, "sha256:"+strings.Repeat("ab", 32), []string{"latest"})
		require.Error(t, err)
		require.Equal(t, slipway.ENOTFOUND, slipway.ErrorCode(err))
		require.Contains(t, err.Error(), "404 Not Found")
	})

	t.Run("InvalidTag", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})

		err := c.Tag(ctx, b.repo, "sha256:"+strings.Repeat("ab", 32), []string{"other/repo:v1"})
		require.ErrorContains(t, err, `invalid tag "other/repo:v1"`)
		require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err))
		require.Empty(t, b.recorded(), "no request for bad input")
	})
}

func TestClientKeychain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("AnonymousRefused", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{basicAuth: "ci:s3cret"})

		_, _, err := c.VerifyIndex(ctx, b.repo+":x", []string{"linux/amd64"})
		require.Error(t, err)
		require.Equal(t, slipway.EFORBIDDEN, slipway.ErrorCode(err))
		require.Contains(t, err.Error(), "401 Unauthorized: UNAUTHORIZED: authentication required")
	})

	t.Run("KeychainUsed", func(t *testing.T) {
		t.Parallel()
		_, b := setup(t, setupOpts{basicAuth: "ci:s3cret"})
		tr := http.DefaultTransport.(*http.Transport).Clone()
		t.Cleanup(tr.CloseIdleConnections)
		kc := staticKeychain{authn.FromConfig(authn.AuthConfig{Username: "ci", Password: "s3cret"})}
		c := registry.New(registry.WithKeychain(kc), registry.WithTransport(tr), registry.WithInsecure(true))

		// The registry knows nothing yet: a 404 shows that authentication passed.
		_, _, err := c.VerifyIndex(ctx, b.repo+":x", []string{"linux/amd64"})
		require.Equal(t, slipway.ENOTFOUND, slipway.ErrorCode(err), "%v", err)
		require.NotContains(t, err.Error(), "s3cret")
	})
}

type staticKeychain struct{ auth authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.auth, nil }

func TestClientAttestations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, b := setup(t, setupOpts{})
	amd, arm := platformImage(t, amd64), platformImage(t, arm64)
	att := platformImage(t, unknown)
	digestOf := func(img v1.Image) string {
		d, err := img.Digest()
		require.NoError(t, err)
		return d.String()
	}
	// An attestation for amd64 only; arm64 has none.
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &amd64}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &arm64}},
		mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{Platform: &unknown, Annotations: map[string]string{
			"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": digestOf(amd)}}},
	), types.OCIImageIndex)
	ref, err := name.ParseReference(b.repo + ":att")
	require.NoError(t, err)
	require.NoError(t, remote.WriteIndex(ref, idx))
	closeIdle()
	h, err := idx.Digest()
	require.NoError(t, err)

	got, err := c.Attestations(ctx, b.repo+"@"+h.String())
	require.NoError(t, err)
	require.Equal(t, map[string]string{digestOf(amd): digestOf(att)}, got)

	_, err = c.Attestations(ctx, b.repo+":missing")
	require.Error(t, err)
	require.Equal(t, slipway.ENOTFOUND, slipway.ErrorCode(err), "%v", err)
}
