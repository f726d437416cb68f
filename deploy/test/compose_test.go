package deploytest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/stretchr/testify/require"
)

// loadCompose loads and validates docker-compose.yml (against the compose
// specification's schema and its consistency rules) with no variables from
// the environment, so the file's own ${VAR:-default}s apply.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	abs, err := filepath.Abs(root)
	require.NoError(t, err)
	opts, err := cli.NewProjectOptions([]string{filepath.Join(abs, "docker-compose.yml")},
		cli.WithWorkingDirectory(abs), cli.WithName("slipway"), cli.WithEnv(nil),
		cli.WithConsistency(true), cli.WithResolvedPaths(true))
	require.NoError(t, err)
	p, err := opts.LoadProject(context.Background())
	require.NoError(t, err, "docker-compose.yml does not load")
	return p
}

func TestCompose(t *testing.T) {
	settings := readSettings(t)
	p := loadCompose(t)

	for _, name := range []string{"postgres", "registry", "buildkitd", "migrate", "server"} {
		_, err := p.GetService(name)
		require.NoError(t, err, "docker-compose.yml needs a %s service", name)
	}
	bk, _ := p.GetService("buildkitd")
	require.True(t, bk.Privileged, "buildkitd needs privileged mode")

	roles := map[string]int{}
	secretKeys := map[string]bool{}
	for _, s := range p.Services {
		if s.Build == nil && !strings.HasPrefix(s.Image, "slipway") {
			continue
		}
		require.NotNil(t, s.Build, "%s: slipway's services build deploy/Dockerfile", s.Name)
		require.Equal(t, "deploy/Dockerfile", strings.TrimPrefix(s.Build.Dockerfile, p.WorkingDir+"/"))
		require.Len(t, s.Command, 1, s.Name)
		role := s.Command[0]
		roles[role]++
		env := map[string]string{}
		for k, v := range s.Environment {
			require.True(t, settings[k].deployed(), "%s sets %s, which slipway's server, worker and migrate do not read (see deploy/settings.txt)", s.Name, k)
			if v != nil {
				env[k] = *v
			}
		}
		require.NotEmpty(t, env["SLIPWAY_DATABASE_URL"], s.Name)
		if role != "migrate" {
			// slipway repo add and repository secrets need it, the same in
			// server and workers.
			require.Regexp(t, `^[0-9a-f]{64}$`, env["SLIPWAY_SECRET_KEY"], "%s needs SLIPWAY_SECRET_KEY", s.Name)
			secretKeys[env["SLIPWAY_SECRET_KEY"]] = true
		}
		switch role {
		case "server":
			for _, k := range []string{"SLIPWAY_ADDR", "SLIPWAY_GITHUB_WEBHOOK_SECRET", "SLIPWAY_ADMIN_TOKEN", "SLIPWAY_REGISTRY"} {
				require.NotEmpty(t, env[k], "server needs %s", k)
			}
			require.True(t, strings.HasPrefix(env["SLIPWAY_ADDR"], "0.0.0.0:"), "the server must listen beyond the container's loopback")
		case "worker":
			for _, k := range []string{"SLIPWAY_BUILDKIT_ADDR", "SLIPWAY_REGISTRY", "SLIPWAY_WORKER_ID"} {
				require.NotEmpty(t, env[k], "%s needs %s", s.Name, k)
			}
		case "migrate":
		default:
			t.Errorf("%s runs unknown command %q", s.Name, role)
		}
	}
	require.Equal(t, map[string]int{"migrate": 1, "server": 1, "worker": 2}, roles)
	require.Len(t, secretKeys, 1, "server and workers share one SLIPWAY_SECRET_KEY")
}

// podmanPackages are the Debian packages scripts/deps.sh installs for the
// Pods of tests with services; the worker image needs the same.
var podmanPackages = []string{"podman", "catatonit", "netavark", "aardvark-dns"}

// TestComposePods checks the wiring that lets the compose workers run Pod
// tests, as far as it can be checked without a Docker engine (none runs
// here): each worker builds a target of deploy/Dockerfile (parsed with
// BuildKit's own parser) that installs Debian's podman and its helpers, runs
// as root, and puts a containers.conf with default_ulimits in place; the
// worker service is privileged, shares the host's cgroup namespace, keeps
// podman's storage on a volume of its own and sets SLIPWAY_PODMAN to the
// podman of that image. The server and migrate stay on the default target,
// unprivileged, without podman and not as root.
func TestComposePods(t *testing.T) {
	p := loadCompose(t)
	stages := dockerfileStages(t, filepath.Join(root, "deploy", "Dockerfile"))
	storage := map[string]string{}
	for _, s := range p.Services {
		if s.Build == nil || len(s.Command) != 1 {
			continue
		}
		if s.Command[0] != "worker" {
			require.Empty(t, s.Build.Target, "%s builds deploy/Dockerfile's default target", s.Name)
			require.False(t, s.Privileged, "%s must not be privileged", s.Name)
			img := imageOf(t, stages, "")
			require.NotContains(t, img.packages, "podman", "%s's image needs no podman", s.Name)
			require.NotEqual(t, "root", img.user, "%s runs as slipway's own user", s.Name)
			continue
		}
		require.NotEmpty(t, s.Build.Target, "%s builds the worker target of deploy/Dockerfile", s.Name)
		img := imageOf(t, stages, s.Build.Target)
		for _, pkg := range podmanPackages {
			require.Contains(t, img.packages, pkg, "%s's image (deploy/Dockerfile, target %s) installs %s", s.Name, s.Build.Target, pkg)
		}
		require.Equal(t, "root", img.user, "%s: podman runs the Pods as root", s.Name)

		// containers.conf: what the image copies there is the repository's file.
		src, ok := img.copies["/etc/containers/containers.conf"]
		require.True(t, ok, "%s's image puts a containers.conf in /etc/containers", s.Name)
		var conf struct {
			Containers struct {
				DefaultUlimits []string `toml:"default_ulimits"`
			} `toml:"containers"`
		}
		_, err := toml.DecodeFile(filepath.Join(root, src), &conf)
		require.NoError(t, err, src)
		limits := map[string]string{}
		for _, u := range conf.Containers.DefaultUlimits {
			name, value, _ := strings.Cut(u, "=")
			limits[name] = value
		}
		for _, name := range []string{"nofile", "nproc"} {
			require.Regexp(t, `^[0-9]+:[0-9]+$`, limits[name], "%s: default_ulimits sets %s=SOFT:HARD within a container's limits", src, name)
		}

		require.True(t, s.Privileged, "%s runs podman inside its container: it needs privileged mode", s.Name)
		require.Equal(t, "host", s.Cgroup, "%s: podman sets the Pod containers' limits in cgroups of their own", s.Name)
		podman := s.Environment["SLIPWAY_PODMAN"]
		require.NotNil(t, podman, "%s sets SLIPWAY_PODMAN", s.Name)
		require.Equal(t, img.env["SLIPWAY_PODMAN"], *podman, "%s's SLIPWAY_PODMAN is the image's podman", s.Name)
		require.Equal(t, "/usr/bin/podman", *podman, "Debian's podman package installs /usr/bin/podman")

		var vol types.ServiceVolumeConfig
		for _, v := range s.Volumes {
			if v.Target == "/var/lib/containers" {
				vol = v
			}
		}
		require.Equal(t, types.VolumeTypeVolume, vol.Type, "%s keeps podman's storage (/var/lib/containers) on a named volume", s.Name)
		require.Contains(t, p.Volumes, vol.Source, "%s: volume %s is declared", s.Name, vol.Source)
		require.NotContains(t, storage, vol.Source, "%s and %s share podman's storage", s.Name, storage[vol.Source])
		storage[vol.Source] = s.Name
	}
	require.Len(t, storage, 2, "both workers run Pod tests")
}

// image is what a target of a Dockerfile ends up with, following its chain
// of stages within the file.
type image struct {
	packages []string          // every word after "apt-get install" in its RUNs
	user     string            // the last USER ("root" for 0, 0:0 or none)
	env      map[string]string // ENV
	copies   map[string]string // COPY destination -> source (from the context)
}

func dockerfileStages(t *testing.T, path string) []instructions.Stage {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	ast, err := parser.Parse(f)
	require.NoError(t, err)
	stages, _, err := instructions.Parse(ast.AST, nil)
	require.NoError(t, err, "%s does not parse", path)
	return stages
}

// imageOf returns the image of the stage named target ("": the last one,
// Docker's default target).
func imageOf(t *testing.T, stages []instructions.Stage, target string) image {
	t.Helper()
	byName := map[string]instructions.Stage{}
	for _, s := range stages {
		byName[strings.ToLower(s.Name)] = s
	}
	var chain []instructions.Stage
	s := stages[len(stages)-1]
	if target != "" {
		var ok bool
		s, ok = byName[strings.ToLower(target)]
		require.True(t, ok, "deploy/Dockerfile has no stage %q", target)
	}
	for {
		chain = append([]instructions.Stage{s}, chain...)
		base, ok := byName[strings.ToLower(s.BaseName)]
		if !ok {
			break
		}
		s = base
	}
	img := image{user: "root", env: map[string]string{}, copies: map[string]string{}}
	for _, s := range chain {
		for _, c := range s.Commands {
			switch c := c.(type) {
			case *instructions.RunCommand:
				line := strings.Join(c.CmdLine, " ")
				for _, part := range strings.Split(line, "&&") {
					if _, rest, ok := strings.Cut(part, "apt-get install"); ok {
						for _, w := range strings.Fields(rest) {
							if !strings.HasPrefix(w, "-") {
								img.packages = append(img.packages, w)
							}
						}
					}
				}
			case *instructions.UserCommand:
				img.user = c.User
				if u, _, _ := strings.Cut(c.User, ":"); u == "0" || u == "root" {
					img.user = "root"
				}
			case *instructions.EnvCommand:
				for _, kv := range c.Env {
					img.env[kv.Key] = kv.Value
				}
			case *instructions.CopyCommand:
				if c.From == "" && len(c.SourcePaths) == 1 {
					img.copies[c.DestPath] = c.SourcePaths[0]
				}
			}
		}
	}
	return img
}
