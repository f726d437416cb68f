package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func validEnv() map[string]string {
	return map[string]string{
		"SLIPWAY_DATABASE_URL":          "postgres://u@127.0.0.1:1/db",
		"SLIPWAY_GITHUB_WEBHOOK_SECRET": "s",
		"SLIPWAY_ADMIN_TOKEN":           "0123456789",
		"SLIPWAY_REGISTRY":              "127.0.0.1:5000",
		"SLIPWAY_BUILDKIT_ADDR":         "unix:///run/buildkit.sock",
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		c, err := loadConfig(env(validEnv()), role{server: true, worker: true}, "/tmp")
		require.NoError(t, err)
		require.Equal(t, "127.0.0.1:8080", c.Addr)
		require.Equal(t, "http://127.0.0.1:8080", c.PublicURL)
		require.True(t, c.RegistryInsecure, "loopback registries speak plain HTTP")
		require.Equal(t, 1, c.WorkerConcurrency)
		require.Equal(t, "127.0.0.1:8081", c.WorkerAddr)
		require.Equal(t, "/tmp/slipway-work", c.WorkspaceDir)
		require.EqualValues(t, 64<<20, c.WebhookMemory)
		require.Equal(t, 500, c.MaxLogFollowers)
		require.Equal(t, 5*time.Second, c.PollInterval)
		require.Equal(t, 30*time.Second, c.StaleAfter)
		require.Equal(t, time.Hour, c.BuildTimeout)
		require.Equal(t, 5*time.Minute, c.RetryMaxBackoff)
		require.Equal(t, "podman", c.Podman)
		require.Equal(t, "2Gi", c.PodMemory)
		require.Equal(t, "https://api.github.com", c.GitHubAPIURL)
		require.Equal(t, "https://github.com", c.GitHubURL)
		require.Equal(t, "info", c.LogLevel)
	})
	t.Run("WebhookMemory", func(t *testing.T) {
		t.Parallel()
		for v, want := range map[string]int64{"1GiB": 1 << 30, "100MiB": 100 << 20, "30000000": 30000000, "40960 KiB": 40 << 20} {
			e := validEnv()
			e["SLIPWAY_WEBHOOK_MEMORY"] = v
			c, err := loadConfig(env(e), role{server: true}, "/tmp")
			require.NoError(t, err, v)
			require.Equal(t, want, c.WebhookMemory, v)
		}
	})
	t.Run("MissingNamesEveryVariable", func(t *testing.T) {
		t.Parallel()
		_, err := loadConfig(env(nil), role{server: true, worker: true}, "/tmp")
		require.Error(t, err)
		for _, name := range []string{"SLIPWAY_DATABASE_URL", "SLIPWAY_GITHUB_WEBHOOK_SECRET", "SLIPWAY_ADMIN_TOKEN", "SLIPWAY_REGISTRY", "SLIPWAY_BUILDKIT_ADDR"} {
			require.Contains(t, err.Error(), name+": is required")
		}
	})
	t.Run("ForgeSettings", func(t *testing.T) {
		t.Parallel()
		e := validEnv()
		delete(e, "SLIPWAY_GITHUB_WEBHOOK_SECRET")
		e["SLIPWAY_GITLAB_WEBHOOK_TOKEN"] = "gl"
		e["SLIPWAY_GITEA_API_URL"] = "https://gitea.example/api/v1/"
		e["SLIPWAY_GITEA_TOKEN"] = "tok"
		c, err := loadConfig(env(e), role{server: true}, "/tmp")
		require.NoError(t, err, "a GitLab-only installation needs no GitHub secret")
		require.Equal(t, "https://api.github.com", c.GitHubAPIURL)
		require.Equal(t, "https://gitlab.com/api/v4", c.GitLabAPIURL)
		require.Equal(t, "https://gitea.example/api/v1", c.GiteaAPIURL)
		clients, err := forgeClients(c)
		require.NoError(t, err)
		require.Len(t, clients, 1, "only Gitea has a token")
		require.Contains(t, clients, "gitea")
	})
	t.Run("WorkerNeedsNoServerSecrets", func(t *testing.T) {
		t.Parallel()
		e := validEnv()
		delete(e, "SLIPWAY_GITHUB_WEBHOOK_SECRET")
		delete(e, "SLIPWAY_ADMIN_TOKEN")
		_, err := loadConfig(env(e), role{worker: true}, "/tmp")
		require.NoError(t, err)
	})
	t.Run("PodSettings", func(t *testing.T) {
		t.Parallel()
		c, err := loadConfig(env(validEnv()), role{worker: true}, "/tmp")
		require.NoError(t, err)
		require.Equal(t, "podman", c.Podman)
		require.Equal(t, "2", c.PodCPU)
		require.Equal(t, "2Gi", c.PodMemory)
		e := validEnv()
		e["SLIPWAY_PODMAN"] = "/usr/local/bin/podman"
		e["SLIPWAY_POD_CPU"] = "500m"
		e["SLIPWAY_POD_MEMORY"] = "512Mi"
		c, err = loadConfig(env(e), role{worker: true}, "/tmp")
		require.NoError(t, err)
		require.Equal(t, "/usr/local/bin/podman", c.Podman)
		require.Equal(t, "500m", c.PodCPU)
		require.Equal(t, "512Mi", c.PodMemory)
	})
	for name, tc := range map[string]struct{ key, value, want string }{
		"BadPodCPU":          {"SLIPWAY_POD_CPU", "two", "SLIPWAY_POD_CPU: \"two\" is not a positive Kubernetes quantity"},
		"ZeroPodMemory":      {"SLIPWAY_POD_MEMORY", "0", "SLIPWAY_POD_MEMORY: \"0\" is not a positive Kubernetes quantity"},
		"BadPodMemory":       {"SLIPWAY_POD_MEMORY", "2GB!", "SLIPWAY_POD_MEMORY"},
		"BadDuration":        {"SLIPWAY_BUILD_TIMEOUT", "forever", "SLIPWAY_BUILD_TIMEOUT: \"forever\" is not a positive duration"},
		"StaleTooShort":      {"SLIPWAY_STALE_AFTER", "6s", "SLIPWAY_STALE_AFTER: 6s must be at least twice SLIPWAY_HEARTBEAT_INTERVAL"},
		"BadConcurrency":     {"SLIPWAY_WORKER_CONCURRENCY", "0", "SLIPWAY_WORKER_CONCURRENCY"},
		"RegistryScheme":     {"SLIPWAY_REGISTRY", "https://reg", "SLIPWAY_REGISTRY: \"https://reg\" must be host[:port][/prefix] without a scheme"},
		"BuildkitScheme":     {"SLIPWAY_BUILDKIT_ADDR", "/run/bk.sock", "SLIPWAY_BUILDKIT_ADDR"},
		"ShortToken":         {"SLIPWAY_ADMIN_TOKEN", "short", "SLIPWAY_ADMIN_TOKEN: must be at least 8 characters"},
		"BadAddr":            {"SLIPWAY_ADDR", "8080", "SLIPWAY_ADDR"},
		"BadPublicURL":       {"SLIPWAY_PUBLIC_URL", "ftp://x", "SLIPWAY_PUBLIC_URL"},
		"BadLogLevel":        {"SLIPWAY_LOG_LEVEL", "loud", "SLIPWAY_LOG_LEVEL"},
		"BadInsecure":        {"SLIPWAY_REGISTRY_INSECURE", "maybe", "SLIPWAY_REGISTRY_INSECURE"},
		"BadSecretKey":       {"SLIPWAY_SECRET_KEY", "too-short", "SLIPWAY_SECRET_KEY: the key must be 32 bytes"},
		"BadAPIURL":          {"SLIPWAY_GITHUB_API_URL", "api.github.com", "SLIPWAY_GITHUB_API_URL: \"api.github.com\" is not an http(s) URL"},
		"WebhookMemorySmall": {"SLIPWAY_WEBHOOK_MEMORY", "1MiB", "SLIPWAY_WEBHOOK_MEMORY: \"1MiB\" is not a size of at least 25MiB"},
		"MaxFollowersZero":   {"SLIPWAY_MAX_LOG_FOLLOWERS", "0", "SLIPWAY_MAX_LOG_FOLLOWERS: \"0\" is not a number from 1"},
		"WebhookMemoryBad":   {"SLIPWAY_WEBHOOK_MEMORY", "64MB", "SLIPWAY_WEBHOOK_MEMORY"},
		"GiteaTokenNoURL":    {"SLIPWAY_GITEA_TOKEN", "tok", "SLIPWAY_GITEA_API_URL: is required with SLIPWAY_GITEA_TOKEN"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := validEnv()
			e[tc.key] = tc.value
			if tc.key == "SLIPWAY_STALE_AFTER" {
				e["SLIPWAY_HEARTBEAT_INTERVAL"] = "5s"
			}
			_, err := loadConfig(env(e), role{server: true, worker: true}, "/tmp")
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("Version", func(t *testing.T) {
		t.Parallel()
		var out bytes.Buffer
		require.NoError(t, run(ctx, []string{"slipway", "version"}, env(nil), &out, &out))
		require.True(t, strings.HasPrefix(out.String(), "slipway "))
	})
	t.Run("UnknownCommand", func(t *testing.T) {
		t.Parallel()
		var out bytes.Buffer
		require.ErrorContains(t, run(ctx, []string{"slipway", "frobnicate"}, env(nil), &out, &out), `unknown command "frobnicate"`)
		require.Contains(t, out.String(), "usage: slipway")
	})
	t.Run("InvalidConfigStopsStartup", func(t *testing.T) {
		t.Parallel()
		var out bytes.Buffer
		err := run(ctx, []string{"slipway", "server"}, env(map[string]string{"SLIPWAY_DATABASE_URL": "postgres://x:topsecret@127.0.0.1:1/db"}), &out, &out)
		require.ErrorContains(t, err, "SLIPWAY_GITHUB_WEBHOOK_SECRET: is required")
		require.NotContains(t, err.Error(), "topsecret")
	})
	t.Run("UnreachableDatabaseHidesPassword", func(t *testing.T) {
		t.Parallel()
		e := validEnv()
		e["SLIPWAY_DATABASE_URL"] = "postgres://x:topsecret@127.0.0.1:1/db?connect_timeout=2"
		var out bytes.Buffer
		err := run(ctx, []string{"slipway", "migrate"}, env(e), &out, &out)
		require.Error(t, err)
		require.NotContains(t, err.Error(), "topsecret")
		require.NotContains(t, out.String(), "topsecret")
	})
}

// TestLiteralDefaults: every default the settings list gives as a literal
// is one loadConfig takes when the setting is unset, and a value it accepts
// when set to it (the documented default is a valid setting, the same
// config either way); placeholders such as `<hostname>-<pid>` are not used.
func TestLiteralDefaults(t *testing.T) {
	t.Parallel()
	unset, err := loadConfig(env(validEnv()), role{server: true, worker: true}, "/tmp")
	require.NoError(t, err)
	n := 0
	for _, s := range settings {
		v := literalDefault(s.Name)
		if v == "" {
			require.False(t, strings.HasPrefix(s.Default, "`") && !strings.ContainsAny(s.Default, "<$ "),
				"%s: default %s looks literal but is not used", s.Name, s.Default)
			continue
		}
		n++
		e := validEnv()
		e[s.Name] = v
		set, err := loadConfig(env(e), role{server: true, worker: true}, "/tmp")
		require.NoError(t, err, "%s=%s (its documented default)", s.Name, v)
		require.Equal(t, unset, set, "%s unset and %s=%s give the same config", s.Name, s.Name, v)
	}
	require.Greater(t, n, 15, "literal defaults found")
}

// TestSettingsDocumented keeps the README's settings table and the code in step.
func TestSettingsDocumented(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	for _, s := range settings {
		require.Contains(t, string(readme), "`"+s.Name+"`", "README.md must document %s", s.Name)
	}
	src, err := os.ReadFile("config.go")
	require.NoError(t, err)
	for _, line := range strings.Split(string(src), "\n") {
		for _, f := range strings.Split(line, `"`) {
			if strings.HasPrefix(f, "SLIPWAY_") && !strings.ContainsAny(f, " :$") {
				found := false
				for _, s := range settings {
					found = found || s.Name == f
				}
				require.True(t, found, "%s is read in config.go but missing from settings", f)
			}
		}
	}
}
