package deploytest

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
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
}
