package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"

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
			if img, err = appendTarLayer(img, data, "slipway testenv: "+filepath.Base(deb)); err != nil {
				return nil, fmt.Errorf("adding the %s layer of %s: %w", arch, pkg, err)
			}
		}
		idx = appendPlatform(idx, img, arch)
	}
	return idx, nil
}

// PushGitBaseImage builds GitBaseImage from the packages in DebsDir and pushes
// it to registryHost as library/busybox-git:latest, returning that reference.
func PushGitBaseImage(ctx context.Context, registryHost string, opts ...remote.Option) (string, error) {
	return pushIndex(ctx, GitBaseImage, registryHost+"/"+GitBaseImageRepo+":"+BaseImageTag, opts...)
}

// appendTarLayer adds a layer made of the tar stream data to img.
func appendTarLayer(img v1.Image, data []byte, createdBy string) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	return mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: layerTime}, CreatedBy: createdBy},
	})
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
