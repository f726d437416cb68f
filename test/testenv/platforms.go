package testenv

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// PlatformDigests returns the manifest digest of each platform ("linux/amd64")
// of the image index ref (such as PushBaseImage's), read from its registry
// over plain HTTP or HTTPS as the reference's host allows.
func PlatformDigests(ref string, opts ...remote.Option) (map[string]string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	idx, err := remote.Index(r, opts...)
	if err != nil {
		return nil, fmt.Errorf("reading index %s: %w", ref, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading index %s: %w", ref, err)
	}
	out := map[string]string{}
	for _, d := range m.Manifests {
		if d.Platform != nil {
			out[d.Platform.OS+"/"+d.Platform.Architecture] = d.Digest.String()
		}
	}
	return out, nil
}
