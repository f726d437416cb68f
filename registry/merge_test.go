package registry_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

func TestClientMergeIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("PartsBecomeOneIndex", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})
		// One builder pushed an index with its attestation, the other a bare image.
		amdPart := pushIndex(t, b, "part-amd64", entry{listed: amd64}, entry{listed: unknown, attest: true})
		img := platformImage(t, arm64)
		d, err := img.Digest()
		require.NoError(t, err)
		require.NoError(t, remote.Write(mustParse(t, b.repo+"@"+d.String()), img))
		closeIdle()
		b.resetRequests()

		got, err := c.MergeIndex(ctx, b.repo+":sha-1", []string{amdPart, d.String()})
		require.NoError(t, err)
		for _, r := range b.recorded() {
			require.NotContains(t, r, "/blobs/uploads", "no blob is uploaded")
		}
		idx, platforms, err := c.VerifyIndex(ctx, b.repo+":sha-1", []string{"linux/amd64", "linux/arm64"})
		require.NoError(t, err)
		require.Equal(t, got, idx, "the tag points at the merged index")
		require.Equal(t, d.String(), platforms[1].Digest, "digests are kept")
		ri, err := remote.Index(mustParse(t, b.repo+"@"+got))
		require.NoError(t, err)
		im, err := ri.IndexManifest()
		require.NoError(t, err)
		closeIdle()
		require.Len(t, im.Manifests, 3, "the attestation came along")
		require.Equal(t, "attestation-manifest", im.Manifests[1].Annotations["vnd.docker.reference.type"])
	})

	t.Run("PlatformTwice", func(t *testing.T) {
		t.Parallel()
		c, b := setup(t, setupOpts{})
		one := pushIndex(t, b, "one", entry{listed: amd64})
		two := pushIndex(t, b, "two", entry{listed: amd64})
		_, err := c.MergeIndex(ctx, b.repo+":sha-2", []string{one, two})
		require.Equal(t, slipway.EINVALID, slipway.ErrorCode(err))
		require.Contains(t, err.Error(), "platform linux/amd64 is in both")
		_, err = remote.Head(mustParse(t, b.repo+":sha-2"))
		closeIdle()
		require.Error(t, err, "nothing was tagged")
		require.True(t, strings.Contains(err.Error(), "404") || strings.Contains(err.Error(), "MANIFEST_UNKNOWN"), err.Error())
	})
}

func mustParse(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	require.NoError(t, err)
	return r
}
