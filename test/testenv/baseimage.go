package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BaseImageRepo and BaseImageTag name the base image in a registry:
// PushBaseImage writes <registry>/library/busybox:latest, which the tests'
// Dockerfiles name in FROM.
const (
	BaseImageRepo = "library/busybox"
	BaseImageTag  = "latest"
)

// BaseImagePlatforms are the architectures of the base image, all linux.
var BaseImagePlatforms = []string{"amd64", "arm64"}

// busyboxApplets get a symlink to /bin/busybox in the base image: what
// Dockerfiles and .slipway.yml tests of the test suite and the demo call.
var busyboxApplets = []string{
	"sh", "ash", "cat", "echo", "uname", "ls", "test", "[", "[[", "true", "false",
	"env", "grep", "sleep", "mkdir", "rm", "rmdir", "cp", "mv", "ln", "chmod",
	"touch", "head", "tail", "wc", "sed", "awk", "printf", "pwd", "date", "id",
	"tr", "cut", "sort", "uniq", "find", "tee", "xargs", "basename", "dirname",
	"which", "hostname", "whoami", "sha256sum", "md5sum", "du", "df", "ps",
	"kill", "tar", "gzip", "gunzip", "stat", "readlink", "realpath", "seq",
	"expr", "yes", "diff", "cmp", "nproc", "timeout",
}

// layerTime is every entry's mtime, so that the same packages always give
// the same digests.
var layerTime = time.Unix(0, 0).UTC()

// DebsDir returns the folder holding the busybox-static packages that
// `make deps` downloads: $SLIPWAY_BUSYBOX_DEBS, or .cache/debs in the
// repository.
func DebsDir() (string, error) {
	if dir := os.Getenv(EnvBusyboxDebs); dir != "" {
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("%w (%s is not set and %v)", errNoDebs, EnvBusyboxDebs, err)
	}
	return filepath.Join(root, ".cache", "debs"), nil
}

// BusyboxDebs returns the busybox-static package file for each of
// BaseImagePlatforms, found in debDir. Its error names `make deps` when one
// is missing.
func BusyboxDebs(debDir string) (map[string]string, error) {
	debs := make(map[string]string, len(BaseImagePlatforms))
	for _, arch := range BaseImagePlatforms {
		matches, err := filepath.Glob(filepath.Join(debDir, "busybox-static_*_"+arch+".deb"))
		if err != nil {
			return nil, fmt.Errorf("finding the %s busybox-static package: %w", arch, err)
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("%w (no busybox-static_*_%s.deb in %s)", errNoDebs, arch, debDir)
		}
		debs[arch] = matches[len(matches)-1]
	}
	return debs, nil
}

// BaseImage builds the multi-platform busybox base image: an OCI index with
// one image per architecture of BaseImagePlatforms, each made of a single
// layer holding /bin/busybox from that architecture's busybox-static package
// (unpacked with dpkg-deb), symlinks for common applets and /usr/bin/env, an
// /etc/passwd naming root, and a /tmp.
func BaseImage(ctx context.Context, debDir string) (v1.ImageIndex, error) {
	debs, err := BusyboxDebs(debDir)
	if err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range BaseImagePlatforms {
		img, err := busyboxImage(ctx, arch, debs[arch])
		if err != nil {
			return nil, err
		}
		idx = appendPlatform(idx, img, arch)
	}
	return idx, nil
}

// appendPlatform adds img to idx as the linux image of arch.
func appendPlatform(idx v1.ImageIndex, img v1.Image, arch string) v1.ImageIndex {
	return mutate.AppendManifests(idx, mutate.IndexAddendum{
		Add: img,
		Descriptor: v1.Descriptor{
			MediaType: types.OCIManifestSchema1,
			Platform:  &v1.Platform{OS: "linux", Architecture: arch},
		},
	})
}

// PushBaseImage builds BaseImage from the packages in DebsDir and pushes it
// to registryHost (host:port; plain HTTP on loopback) as
// library/busybox:latest, returning that reference for a Dockerfile's FROM.
// Pushing it again, from any process, writes the same digests.
func PushBaseImage(ctx context.Context, registryHost string, opts ...remote.Option) (string, error) {
	return pushIndex(ctx, BaseImage, registryHost+"/"+BaseImageRepo+":"+BaseImageTag, opts...)
}

// pushIndex builds an index with build from the packages in DebsDir and
// pushes it as ref, returning ref.
func pushIndex(ctx context.Context, build func(context.Context, string) (v1.ImageIndex, error), ref string, opts ...remote.Option) (string, error) {
	debDir, err := DebsDir()
	if err != nil {
		return "", err
	}
	idx, err := build(ctx, debDir)
	if err != nil {
		return "", err
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("parsing image reference %q: %w", ref, err)
	}
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	if err := remote.WriteIndex(r, idx, opts...); err != nil {
		return "", fmt.Errorf("pushing image %s: %w", r, err)
	}
	return r.String(), nil
}

func busyboxImage(ctx context.Context, arch, deb string) (v1.Image, error) {
	busybox, err := debFile(ctx, deb, "./bin/busybox")
	if err != nil {
		return nil, err
	}
	layerTar, err := busyboxLayerTar(busybox)
	if err != nil {
		return nil, fmt.Errorf("writing the %s busybox layer: %w", arch, err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		OS:           "linux",
		Architecture: arch,
		Created:      v1.Time{Time: layerTime},
		Config: v1.Config{
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd: []string{"sh"},
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, fmt.Errorf("setting the %s image config: %w", arch, err)
	}
	img, err = appendTarLayer(img, layerTar, "slipway testenv: busybox-static from "+filepath.Base(deb))
	if err != nil {
		return nil, fmt.Errorf("adding the %s busybox layer: %w", arch, err)
	}
	return img, nil
}

// debFile returns the content of the file at path (as dpkg-deb lists it,
// e.g. "./bin/busybox") inside the Debian package deb.
func debFile(ctx context.Context, deb, path string) ([]byte, error) {
	out, err := debTar(ctx, deb)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("reading %s: no %s in it", deb, path)
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", deb, err)
		}
		if hdr.Name == path && hdr.Typeflag == tar.TypeReg {
			return io.ReadAll(tr)
		}
	}
}

func busyboxLayerTar(busybox []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: layerTime, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: layerTime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	link := func(name, target string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: layerTime, Format: tar.FormatPAX})
	}
	steps := []func() error{
		func() error { return dir("bin", 0o755) },
		func() error { return file("bin/busybox", 0o755, busybox) },
	}
	for _, applet := range busyboxApplets {
		steps = append(steps, func() error { return link("bin/"+applet, "busybox") })
	}
	steps = append(steps,
		func() error { return dir("etc", 0o755) },
		func() error {
			return file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
		},
		func() error { return file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")) },
		func() error { return dir("root", 0o700) },
		func() error { return dir("tmp", 0o1777) },
		func() error { return dir("usr", 0o755) },
		func() error { return dir("usr/bin", 0o755) },
		// Scripts start with #!/usr/bin/env.
		func() error { return link("usr/bin/env", "/bin/busybox") },
		tw.Close,
	)
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}
