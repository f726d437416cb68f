package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// GitBaseImageRepo is where PushGitBaseImage pushes, under the registry host.
const GitBaseImageRepo = "library/busybox-git"

// GitPackages are the Debian packages GitBaseImage adds to the busybox base,
// in layer order: git and the libraries its binary links. Without libcurl git
// has no http(s) remotes; git://, file and local fetches work, and so does
// everything slipway's checkout runs.
var GitPackages = []string{"libc6", "zlib1g", "libpcre2-8-0", "git"}

// GitBaseImage is BaseImage with one more layer per package of GitPackages,
// each the package's files as dpkg-deb unpacks them: a base for an image that
// runs slipway's worker, which checks commits out with the git CLI.
func GitBaseImage(ctx context.Context, debDir string) (v1.ImageIndex, error) {
	base, err := BaseImage(ctx, debDir)
	if err != nil {
		return nil, err
	}
	im, err := base.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the base index: %w", err)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, desc := range im.Manifests {
		arch := desc.Platform.Architecture
		img, err := base.Image(desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading the %s base image: %w", arch, err)
		}
		for _, pkg := range GitPackages {
			matches, err := filepath.Glob(filepath.Join(debDir, pkg+"_*_"+arch+".deb"))
			if err != nil || len(matches) == 0 {
				return nil, fmt.Errorf("%w (no %s_*_%s.deb in %s)", errNoDebs, pkg, arch, debDir)
			}
			deb := matches[len(matches)-1]
			data, err := debTar(ctx, deb)
			if err != nil {
				return nil, err
			}
			layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(data)), nil
			}, tarball.WithMediaType(types.OCILayer))
			if err != nil {
				return nil, fmt.Errorf("making the %s layer of %s: %w", arch, pkg, err)
			}
			img, err = mutate.Append(img, mutate.Addendum{
				Layer:     layer,
				MediaType: types.OCILayer,
				History: v1.History{
					Created:   v1.Time{Time: layerTime},
					CreatedBy: "slipway testenv: " + filepath.Base(deb),
				},
			})
			if err != nil {
				return nil, fmt.Errorf("adding the %s layer of %s: %w", arch, pkg, err)
			}
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			MediaType: types.OCIManifestSchema1,
			Platform:  &v1.Platform{OS: "linux", Architecture: arch},
		}})
	}
	return idx, nil
}

// PushGitBaseImage builds GitBaseImage from the packages in DebsDir and pushes
// it to registryHost as library/busybox-git:latest, returning that reference.
func PushGitBaseImage(ctx context.Context, registryHost string, opts ...remote.Option) (string, error) {
	debDir, err := DebsDir()
	if err != nil {
		return "", err
	}
	idx, err := GitBaseImage(ctx, debDir)
	if err != nil {
		return "", err
	}
	ref, err := name.ParseReference(registryHost + "/" + GitBaseImageRepo + ":" + BaseImageTag)
	if err != nil {
		return "", fmt.Errorf("parsing the git base image reference for registry %q: %w", registryHost, err)
	}
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	if err := remote.WriteIndex(ref, idx, opts...); err != nil {
		return "", fmt.Errorf("pushing git base image %s: %w", ref, err)
	}
	return ref.String(), nil
}

// debTar returns a Debian package's files as one tar stream (dpkg-deb --fsys-tarfile).
func debTar(ctx context.Context, deb string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("unpacking %s: %w: %s", deb, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}
