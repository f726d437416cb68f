package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slipway-ci/slipway"
)

// MergeIndex writes one OCI image index that holds every manifest of parts, and
// points ref (repository:tag) at it. parts are digests in ref's repository that
// BuildKit pushed by digest only, one per builder: each is an index (one or more
// platforms, with their attestation manifests) or a single image manifest.
// Entries of a part index are copied as they are, annotations included, so the
// attestation manifests keep pointing at their images; an image manifest gets
// its platform from its config. No blob is read or uploaded.
//
// It returns the digest of the merged index. The tag is written last, with the
// complete index: it never points at part of the build. A platform found in two
// parts is an EINVALID error.
func (c *Client) MergeIndex(ctx context.Context, ref string, parts []string) (string, error) {
	tag, err := name.NewTag(ref, c.nameOptions()...)
	if err != nil {
		return "", errorf(slipway.EINVALID, "merging into %s: %v", ref, err)
	}
	opts := c.remoteOptions(ctx)
	merged := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	seen := map[string]string{}
	for _, part := range parts {
		d, err := name.NewDigest(tag.Context().Name()+"@"+part, c.nameOptions()...)
		if err != nil {
			return "", errorf(slipway.EINVALID, "merging into %s: part %q: %v", ref, part, err)
		}
		desc, err := remote.Get(d, opts...)
		if err != nil {
			return "", interpretError(ctx, fmt.Sprintf("fetching %s", d), err)
		}
		var add []v1.Descriptor
		if desc.MediaType.IsIndex() {
			im, err := v1.ParseIndexManifest(bytesReader(desc.Manifest))
			if err != nil {
				return "", fmt.Errorf("reading index %s: %w", d, err)
			}
			add = im.Manifests
		} else {
			img, err := desc.Image()
			if err != nil {
				return "", fmt.Errorf("reading image %s: %w", d, err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				return "", interpretError(ctx, fmt.Sprintf("fetching config of %s", d), err)
			}
			one := desc.Descriptor
			one.Platform = &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
			add = []v1.Descriptor{one}
		}
		for _, m := range add {
			if m.Platform != nil && !(m.Platform.OS == "unknown" && m.Platform.Architecture == "unknown") {
				p := formatPlatform(*m.Platform)
				if other, dup := seen[p]; dup {
					return "", errorf(slipway.EINVALID, "merging into %s: platform %s is in both %s and %s", ref, p, other, part)
				}
				seen[p] = part
			}
			merged.Manifests = append(merged.Manifests, m)
		}
	}
	raw, err := json.Marshal(merged)
	if err != nil {
		return "", fmt.Errorf("encoding index for %s: %w", ref, err)
	}
	idx := rawIndex(raw)
	dgst, _, err := v1.SHA256(bytesReader(raw))
	if err != nil {
		return "", err
	}
	if err := remote.Put(tag, idx, opts...); err != nil {
		return "", interpretError(ctx, fmt.Sprintf("pushing index %s", ref), err)
	}
	return dgst.String(), nil
}

// rawIndex is an OCI index manifest as bytes, for remote.Put.
type rawIndex []byte

func (r rawIndex) RawManifest() ([]byte, error)        { return r, nil }
func (r rawIndex) MediaType() (types.MediaType, error) { return types.OCIImageIndex, nil }

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
