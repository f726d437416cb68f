package registry

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types of a Helm chart stored in an OCI registry, as Helm 3.8+ writes
// and reads them (helm.sh/helm/v3/pkg/registry, "Use OCI-based registries").
const (
	HelmConfigMediaType  types.MediaType = "application/vnd.cncf.helm.config.v1+json"
	HelmContentMediaType types.MediaType = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
)

// PushChart uploads a packaged Helm chart to ref ("host/owner/charts/name:1.2.3",
// the tag being the chart version) as Helm's OCI artifact: an OCI image
// manifest whose config (HelmConfigMediaType) is the chart's metadata as JSON
// (Chart.yaml's fields) and whose one layer (HelmContentMediaType) is the .tgz.
// `helm pull oci://host/owner/charts/name --version 1.2.3` reads it back.
// It returns the manifest digest ("sha256:…").
func (c *Client) PushChart(ctx context.Context, ref string, metadata any, tgz []byte) (string, error) {
	tag, err := name.NewTag(ref, c.nameOptions()...)
	if err != nil {
		return "", errorf("EINVALID", "chart reference %q is not repository:tag: %v", ref, err)
	}
	cfg, err := json.Marshal(metadata)
	if err != nil {
		return "", fmt.Errorf("encoding the chart's metadata: %w", err)
	}
	repo := tag.Context()
	opts := c.remoteOptions(ctx)
	var descs [2]v1.Descriptor
	for i, blob := range []struct {
		data []byte
		mt   types.MediaType
	}{{cfg, HelmConfigMediaType}, {tgz, HelmContentMediaType}} {
		l := static.NewLayer(blob.data, blob.mt)
		if err := remote.WriteLayer(repo, l, opts...); err != nil {
			return "", interpretError(ctx, "pushing the chart "+ref, err)
		}
		d, _ := l.Digest()
		descs[i] = v1.Descriptor{MediaType: blob.mt, Digest: d, Size: int64(len(blob.data))}
	}
	manifest, err := json.Marshal(v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        descs[0],
		Layers:        []v1.Descriptor{descs[1]},
	})
	if err != nil {
		return "", fmt.Errorf("encoding the chart manifest: %w", err)
	}
	if err := remote.Put(tag, rawManifest(manifest), opts...); err != nil {
		return "", interpretError(ctx, "pushing the chart "+ref, err)
	}
	d, _, err := v1.SHA256(bytesReader(manifest))
	if err != nil {
		return "", fmt.Errorf("hashing the chart manifest: %w", err)
	}
	return d.String(), nil
}

type rawManifest []byte

func (r rawManifest) RawManifest() ([]byte, error)        { return r, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
